"""Decode bombs: small ``.bbc`` files whose header claims huge images (issue 12).

Each bomb is made in ``tmp_path`` from a real file of a tiny image whose header is rewritten
(every CRC recomputed) to claim a larger one, and decoded by the real API in a child
process that reports its peak RSS: the decode must end in one typed error before anything
the claimed size is allocated, and the child must stay under `MAX_PEAK_MB`.

- a claim over ``max_pixels`` (one 65536 × 65536 image: 1.6 TB of feature map before the
  fix) is a `SizeLimitError` when the header is read, before the model is even used;
- a claim under the limit (2000 × 2000, 1.8 GB before the fix) decodes until the short
  stream runs out (`DecodeError`), holding only the tiles reached: the tiled codec's
  feature map takes memory only where it is written (`TiledImage._zero_features`);
- a chunk of images under the per-image limit but over ``MAX_DATASET_PIXELS_FACTOR ×
  max_pixels`` in all is refused before its stream is read.

The model is a random VLAE with the feature width of vlae-cifar10 (96 channels, 384 bytes
of feature map a pixel), so the memory at stake is the real model's, at a tiny model's speed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO, child_script
from tiny import random_images, random_model, tiny_config

from bbcodec.api import compress, decompress, decompress_from
from bbcodec.codec import CodingSettings
from bbcodec.container import ContainerReader, ContainerWriter, loads, pixel_digest_bytes
from bbcodec.errors import DecodeError, SizeLimitError
from bbcodec.models.weights import save_weights
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_DATASET_PIXELS_FACTOR

#: Largest peak RSS of the decoding child (torch and the model take ~250 MB of it).
MAX_PEAK_MB = 500

_CHILD = child_script(
    "from bbcodec.api import decompress, load_model; "
    'decompress(open(sys.argv[1], "rb").read(), load_model(sys.argv[2]))'
)


def _model():
    """A random RGB VLAE (8 × 8 tiles) with vlae-cifar10's 96 feature channels."""
    return random_model(dataclasses.replace(tiny_config("vlae", "rgb", (8, 8)), channels=96))


def _claiming(data: bytes, shapes) -> bytes:
    """``data`` with its header's image shapes replaced (CRCs recomputed, streams kept; each
    pixel digest zeroed to the length the claimed shapes take, as it is never reached)."""
    reader = ContainerReader(io.BytesIO(data))
    header = dataclasses.replace(reader.header, shapes=tuple(shapes))
    out = io.BytesIO()
    writer = ContainerWriter(out)
    writer.write_header(header)
    for chunk in reader:
        subpixels = sum(math.prod(s) for s in header.shapes[chunk.first : chunk.stop])
        digest = bytes(pixel_digest_bytes(subpixels))
        writer.write_chunk(dataclasses.replace(chunk, pixels_digest=digest))
    writer.finalize()
    return out.getvalue()


@pytest.fixture(scope="module")
def tiled_file(tmp_path_factory) -> tuple[Path, bytes]:
    """(weights path, .bbc bytes) of one 16 × 16 RGB image coded tiled with `_model`."""
    torch.set_num_threads(1)
    model = _model()
    weights = tmp_path_factory.mktemp("bombs") / "wide.safetensors"
    save_weights(model, weights)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    return weights, compress(image, model)


def _decode_in_child(path: Path, weights: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(weights)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("side", "error", "message"),
    [
        (65536, "SizeLimitError", "65536×65536, 4,294,967,296 pixels) is over the limit"),
        (2000, "DecodeError", "does not decode"),
    ],
)
def test_a_small_file_claiming_a_huge_image_fails_cheaply(
    tiled_file, tmp_path, side, error, message
):
    weights, data = tiled_file
    bomb = tmp_path / f"claims-{side}.bbc"
    bomb.write_bytes(_claiming(data, [(side, side, 3)]))
    assert bomb.stat().st_size < 8 * 1024
    out = _decode_in_child(bomb, weights)
    assert out["error"] == error, out
    assert message in out["message"] and "\n" not in out["message"]
    assert out["peak_mb"] < MAX_PEAK_MB, out


def test_the_header_is_checked_before_the_model_is_used(tiled_file):
    _, data = tiled_file
    bomb = _claiming(data, [(8192, 8192, 3)])  # 67 M pixels: over the default limit
    with pytest.raises(SizeLimitError, match=r"image 0 of the file \(8192×8192") as info:
        next(decompress_from(io.BytesIO(bomb), model=object()))  # never reaches the model
    assert "--max-pixels" in str(info.value)
    assert 8192 * 8192 > DEFAULT_MAX_PIXELS


def test_max_pixels_is_the_limit(tiled_file):
    _, data = tiled_file
    model = _model()
    np.testing.assert_equal(decompress(data, model, max_pixels=256).shape, (1, 16, 16, 3))
    with pytest.raises(SizeLimitError, match=r"\(16×16, 256 pixels\) is over the limit of 255"):
        decompress(data, model, max_pixels=255)
    with pytest.raises(SizeLimitError):
        loads(data, max_pixels=255)
    assert loads(data, max_pixels=None)[0].shapes == ((16, 16, 3),)
    claim = _claiming(data, [(2000, 2000, 3)])
    with pytest.raises(DecodeError):  # no limit: the short stream runs out
        decompress(claim, model, max_pixels=None)


def test_a_chunk_over_the_total_limit_is_refused_before_its_stream():
    torch.set_num_threads(1)
    config = tiny_config("vlae", "grey", (4, 4))
    model = random_model(config)
    images = random_images(config, MAX_DATASET_PIXELS_FACTOR + 1)  # 16 pixels each
    data = compress(images, model, CodingSettings(chunk_images=len(images)))
    np.testing.assert_array_equal(decompress(data, model, max_pixels=17), images)
    with pytest.raises(SizeLimitError, match=r"chunk 0 at byte \d+ \(65 images, 1,040 pixels"):
        decompress(data, model, max_pixels=16)
