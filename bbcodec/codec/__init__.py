"""The image codec: trained models joined to the coding layer, chunk by chunk.

Modules, one job each:

* :mod:`~bbcodec.codec.adapter` — `ModelAdapter`, the one place a torch model meets the
  coding layer (posterior, prior and likelihood codecs);
* :mod:`~bbcodec.codec.batched` — `BatchedLayout`: images of the model's shape in batches
  that grow with the bits on the stack;
* :mod:`~bbcodec.codec.tiled` — `TiledLayout`: one image of any size (or one band of a
  photo cut into bands, coded as an image of its own), one latent per tile, pixels in a
  wavefront;
* :mod:`~bbcodec.codec.chunks` — `ImageCodec`: one encode path and one decode path for
  both layouts (seed, meter, trailer, checks, rate);
* :mod:`~bbcodec.codec.settings` — `CodingSettings`, what a file records for its decoder;
* :mod:`~bbcodec.codec.report` — `ChunkRate` and `CompressReport`, the rate chain;
* :mod:`~bbcodec.codec.workers` — `code_chunks`: chunks in this process or in a pool.

Which model, batched or tiled, how many chunks and workers: `bbcodec.plan` decides.
"""

from bbcodec.codec.chunks import ImageCodec, initial_seed_words
from bbcodec.codec.report import ChunkRate, CompressReport
from bbcodec.codec.settings import CodingSettings
from bbcodec.codec.workers import (
    code_chunks,
    decode_band_checked,
    decode_chunk_checked,
    encode_band_at,
    encode_chunk_at,
)

__all__ = [
    "ChunkRate",
    "CodingSettings",
    "CompressReport",
    "ImageCodec",
    "code_chunks",
    "decode_band_checked",
    "decode_chunk_checked",
    "encode_band_at",
    "encode_chunk_at",
    "initial_seed_words",
]
