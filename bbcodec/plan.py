"""Every coding decision that is not the model's, made in one place (torch-free).

The API, the CLI, the worker pool and the bench all ask this module; nothing else decides:

- **which model** codes images of a kind and size by default (`DEFAULT_MODELS`);
- **batched or tiled**: images of the model's shape are coded in batches, many to a
  chunk; an image of any other shape is coded alone, tiled (`is_tiled`), its own chunk;
- **chunks**: how the images are cut into independently decodable chunks
  (`chunk_spans`), with ``chunk_images`` chosen to keep every worker busy (`plan_coding`);
- **bands**: an image of another size than the model's taller than ``band_rows`` is cut
  into horizontal bands of ``band_rows`` rows (the last one shorter), each coded as an image
  of its own in a chunk of its own (`image_bands`, `band_height`), so the workers code one
  photo side by side and a coder holds one band at a time;
- **workers and threads**: how many worker processes code chunks side by side and how many
  torch threads each uses (`plan_coding`, `default_workers`);
- **latents of tiled images**: coded with bits back, or not at all where the model's
  registry entry says its decoder ignores them (`TILE_LATENTS`, `plan_coding`).

Example:
    >>> plan = plan_coding([((28, 28), 2000)], (28, 28), workers=2, threads=2)
    >>> plan.chunk_images, plan.workers, plan.torch_threads, len(plan.spans)
    (1000, 2, 1, 2)
    >>> [s[:4] for s in plan_coding([((28, 28), 3), ((50, 40), 2)], (28, 28), workers=1).spans]
    [(0, 3, (28, 28), False), (3, 1, (50, 40), True), (4, 1, (50, 40), True)]
    >>> [(s.first, s.band, s.rows) for s in plan_coding([((60, 40), 1)], (28, 28), band_rows=28).spans]
    [(0, 0, (0, 28)), (0, 1, (28, 56)), (0, 2, (56, 60))]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bbcodec.errors import DecodeError, ImageKindError, UsageError

__all__ = [
    "DEFAULT_BAND_ROWS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODELS",
    "MAX_AUTO_CHUNK_IMAGES",
    "MAX_BAND_ROWS",
    "MAX_BATCH_LIMIT",
    "MAX_DATASET_PIXELS_FACTOR",
    "MIN_IMAGES_PER_WORKER",
    "TILE_LATENTS",
    "ChunkSpan",
    "CodingPlan",
    "band_height",
    "chunk_shape",
    "chunk_spans",
    "default_model_name",
    "default_workers",
    "describe_default_models",
    "image_bands",
    "is_tiled",
    "plan_chunks",
    "plan_coding",
]

Shape = tuple[int, ...]

#: The model chosen for each image kind and size when none is given; size ``None``: any
#: other size (coded tiled).
DEFAULT_MODELS: dict[tuple[str, tuple[int, int] | None], str] = {
    ("binary", (28, 28)): "vlae-bmnist",
    ("grey", (28, 28)): "vlae-mnist",
    ("rgb", (32, 32)): "vlae-cifar10",
    ("rgb", None): "vlae-photo-2",
    ("grey", None): "vlae-photo-grey-3",
}

#: Largest image, in pixels (H × W), read or decoded unless the caller raises the limit
#: (``--max-pixels``, ``max_pixels=``): 16 Mi pixels, e.g. 4096 × 4096 or a 12-megapixel
#: 4000 × 3000 photo. An image of another size than the model's is coded in bands of
#: rows (`DEFAULT_BAND_ROWS`, `image_bands`), each by a coder that holds the band's pixel
#: canvas (24 bytes a pixel, exact arithmetic) and the features of the tiles its wavefront
#: crosses (`bbcodec.codec.tiled`), besides ~250 MB for torch and the model; the caller
#: holds the image. Measured (vlae-cifar10, CPU, two workers of one thread, the API): a
#: 6000 × 4000 photo (24 M pixels, over this limit) encodes at a peak RSS of 1.16 GB
#: summed over the three processes and decodes at 1.10 GB (39 and 30 min on two shared
#: cores). ``bbcodec compress``'s summary −ELBO estimate runs the float network over the
#: whole image (~3 KB a pixel: 1.5 GB for 768 × 512). Inputs and files are checked
#: against the limit from their headers, before anything per-pixel is allocated
#: (`bbcodec.models.data`, `bbcodec.container.ContainerReader`), raising
#: `bbcodec.errors.SizeLimitError`.
DEFAULT_MAX_PIXELS = 1 << 24
#: Datasets read into memory whole (`bbcodec.models.data.load_images`: .npy, .npz, IDX,
#: CIFAR batches, PNG folders) and the images of one ``.bbc`` chunk may hold at most this
#: many times ``max_pixels`` pixels in all: 1 Gi pixels at the default (1 GiB of grey or
#: 3 GiB of RGB uint8 pixels; CIFAR-10's 50,000 training images are 51 M pixels).
MAX_DATASET_PIXELS_FACTOR = 64

#: Most images coded side by side by default (batches grow from 1 up to this).
DEFAULT_MAX_BATCH = 256
#: The largest batch a file can record (`bbcodec.codec.CodingSettings.from_dict` checks).
MAX_BATCH_LIMIT = 1 << 16
#: Largest chunk `plan_chunks` makes when ``chunk_images`` is left to it.
MAX_AUTO_CHUNK_IMAGES = 4096
#: Fewest images per worker `default_workers` starts a worker for. Each chunk ramps its
#: batch up from one image as bits-back bits accumulate on its stack; on binarized MNIST
#: that ramp takes 20–40 batches, as long as coding ~1500 images at full batch, and a
#: worker takes seconds to start (it imports torch): below this, one process is as fast.
MIN_IMAGES_PER_WORKER = 1024
#: Rows of a band, about, when ``band_rows`` is left to the plan (`band_height`: an even
#: number of bands of about this height, on the model's tile grid). Each band is coded as an image of its own: its
#: tiles and latents are the photo's (bands cut between tile rows), but its first rows see
#: zeros above instead of the band above, and its first tile group is coded without bits
#: back. Measured on Kodak (24 photos, tiled −ELBO at the same latent samples, against one
#: band; `benchmarks/band_edges.py`): vlae-photo, bands of 128, 256 and 512 rows: +0.16 %,
#: +0.06 %, +0.01 %; vlae-photo-grey (Kodak in grey), 256 rows: +0.03 %; vlae-cifar10,
#: 256 rows: −0.05 % (a gain: trained on 32 × 32 images, it predicts a tile's first rows
#: better from zeros than from the real rows above). Coded, kodim01 takes 495,140 bytes in
#: two bands against 494,934 in one with vlae-photo. 256 rows give a 768 × 512 photo two
#: bands, so two workers code it side by side (34 → 22 s each way, an idle 2-core machine);
#: a portrait one gets two bands of 384 rows rather than three of 256.
DEFAULT_BAND_ROWS = 256
#: Largest ``band_rows`` (an image side's limit: larger is one band anyway).
MAX_BAND_ROWS = 1 << 16


# ----- models ----------------------------------------------------------------------------


def default_model_name(kind: str, sizes: Iterable[tuple[int, int]]) -> str:
    """The shipped model for images of ``kind`` ("binary", "grey", "rgb") and these
    ``(H, W)`` sizes, or an `ImageKindError`.

    A model listed for the exact size wins; images of other (or several) sizes get the
    kind's any-size model, which codes them tiled.

    Example:
        >>> default_model_name("grey", [(28, 28)]), default_model_name("rgb", [(512, 768)])
        ('vlae-mnist', 'vlae-photo-2')
    """
    sizes = set(sizes)
    exact = (kind, next(iter(sizes))) if len(sizes) == 1 else None
    for key in (exact, (kind, None)):
        if key in DEFAULT_MODELS:
            return DEFAULT_MODELS[key]
    what = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else "several sizes"
    raise ImageKindError(
        f"no shipped model for {kind} images of {what} (models: {describe_default_models()})"
    )


def describe_default_models() -> str:
    """``binary 28x28 → vlae-bmnist; …``: the `DEFAULT_MODELS` for messages and help."""
    return "; ".join(
        f"{kind} {'any size' if hw is None else f'{hw[0]}x{hw[1]}'} → {name}"
        for (kind, hw), name in DEFAULT_MODELS.items()
    )


# ----- batched or tiled, and chunks ------------------------------------------------------


def is_tiled(image_shape: Shape, model_shape: Shape) -> bool:
    """Whether an image of ``image_shape`` is coded tiled (alone, one latent per tile)
    rather than in batches of images of the model's shape."""
    return tuple(image_shape) != tuple(model_shape)


def band_height(band_rows: int | None, tile_h: int, height: int = 0) -> int:
    """The band height to code with for a model of tiles ``tile_h`` rows high, for images
    at most ``height`` rows high (the tallest coded tiled; 0: none is).

    ``None``: the plan's. An image taller than `DEFAULT_BAND_ROWS` is cut into bands of
    about that many rows, in an even number of bands (one more band of 256 rows would leave
    one worker of two, or of four, coding it alone), as even as the tile grid allows: a
    768-row photo into two bands of 384 rows, not three of 256; 512 rows into two of 256,
    4000 into sixteen of 256. The height is rounded up to a multiple of ``tile_h``; with
    no image that tall it is `DEFAULT_BAND_ROWS` rounded down to a multiple of ``tile_h``
    (at least one tile), which cuts none. 0: never split an image; else ``band_rows``
    itself, which must be a multiple of ``tile_h`` (so the bands cut between tile rows:
    every tile lies in one band).

    Raises:
        UsageError: a value that is not such a multiple (or not an integer in range).

    Example:
        >>> band_height(None, 32), band_height(None, 28), band_height(0, 28), band_height(64, 32)
        (256, 252, 0, 64)
        >>> [band_height(None, 32, h) for h in (200, 512, 600, 768, 1024, 1280, 4000)]
        [256, 256, 320, 384, 256, 320, 256]
    """
    if band_rows is None:
        bands = -(-height // DEFAULT_BAND_ROWS)
        if bands < 2:
            return max(tile_h, DEFAULT_BAND_ROWS // tile_h * tile_h)
        bands -= bands % 2
        rows = -(-height // bands)
        return -(-rows // tile_h) * tile_h
    if (
        not isinstance(band_rows, int)
        or isinstance(band_rows, bool)
        or not 0 <= band_rows <= MAX_BAND_ROWS
    ):
        raise UsageError(
            f"band_rows must be an integer from 0 to {MAX_BAND_ROWS}, got {band_rows!r}"
        )
    if band_rows % tile_h:
        raise UsageError(
            f"band_rows must be a multiple of the model's tile height {tile_h} (or 0: one "
            f"band), got {band_rows}"
        )
    return band_rows


def image_bands(height: int, band_rows: int) -> list[tuple[int, int]]:
    """``(row0, row1)`` of each band of an image ``height`` rows high: bands of
    ``band_rows`` rows, the last one shorter; one band if ``band_rows`` is 0 or at least
    ``height``. The container splits its chunks by the same rule
    (`bbcodec.container.Chunk.band`).

    Example:
        >>> image_bands(600, 256), image_bands(512, 256), image_bands(512, 0)
        ([(0, 256), (256, 512), (512, 600)], [(0, 256), (256, 512)], [(0, 512)])
    """
    if band_rows <= 0 or height <= band_rows:
        return [(0, height)]
    return [(r, min(r + band_rows, height)) for r in range(0, height, band_rows)]


class ChunkSpan(NamedTuple):
    """One chunk of a file: images ``first .. first + count - 1``, all of ``shape``; or,
    for an image cut into bands, band ``band`` of ``bands`` of image ``first``: its rows
    ``rows``, ``shape`` being the band's."""

    first: int
    count: int
    shape: Shape
    tiled: bool
    band: int = 0
    bands: int = 1
    rows: tuple[int, int] | None = None


def chunk_spans(
    runs: Iterable[tuple[Shape, int]], model_shape: Shape, chunk_images: int, band_rows: int = 0
) -> Iterator[ChunkSpan]:
    """The chunks of images given as runs of ``(shape, count)`` in file order: images of
    the model's shape in chunks of ``chunk_images`` (a run's last one may be smaller), any
    other image alone (tiled), and an image taller than ``band_rows`` (> 0) as one chunk
    per band (`image_bands`), each band coded as an image of its own."""
    first = 0
    for shape, count in runs:
        shape = tuple(shape)
        bands = image_bands(shape[0], band_rows)
        if len(bands) > 1:
            for image in range(first, first + count):
                for band, (r0, r1) in enumerate(bands):
                    part = (r1 - r0, *shape[1:])
                    tiled = is_tiled(part, model_shape)
                    yield ChunkSpan(image, 1, part, tiled, band, len(bands), (r0, r1))
            first += count
            continue
        tiled = is_tiled(shape, model_shape)
        step = 1 if tiled else chunk_images
        for start in range(0, count, step):
            yield ChunkSpan(first + start, min(step, count - start), shape, tiled)
        first += count


def shape_runs(shapes: Sequence[Shape]) -> list[tuple[Shape, int]]:
    """Per-image shapes as runs of ``(shape, count)``, in order."""
    runs: list[tuple[Shape, int]] = []
    for shape in shapes:
        shape = tuple(shape)
        if runs and runs[-1][0] == shape:
            runs[-1] = (shape, runs[-1][1] + 1)
        else:
            runs.append((shape, 1))
    return runs


def chunk_shape(shapes: Iterable[Shape], count: int, model_shape: Shape) -> tuple[Shape, bool]:
    """``(shape, tiled)`` of a chunk of ``count`` images whose header gives ``shapes``, or a
    `DecodeError` if no encoder makes such a chunk (several shapes, or several images of
    another shape than the model's)."""
    shapes = {tuple(s) for s in shapes}
    if len(shapes) != 1 or (shapes != {tuple(model_shape)} and count != 1):
        raise DecodeError(
            f"a chunk of {count} images of shapes {sorted(shapes)}: the model codes "
            f"{tuple(model_shape)}, and images of other shapes one per chunk"
        )
    (shape,) = shapes
    return shape, is_tiled(shape, model_shape)


# ----- workers and threads ---------------------------------------------------------------


def plan_chunks(
    n_images: int, chunk_images: int | None, workers: int, device: str = "cpu"
) -> tuple[int, int]:
    """Images per chunk and worker processes for coding ``n_images`` batched images.

    Workers run on the CPU only (on another device coding stays in-process: 1 worker).
    ``chunk_images=None`` splits the images evenly into as few chunks as keep every worker
    busy: a multiple of the workers' count, each at most `MAX_AUTO_CHUNK_IMAGES`. An
    explicit ``chunk_images`` is kept. The workers are then capped at the number of chunks.

    Example:
        >>> plan_chunks(2000, None, 2), plan_chunks(10000, None, 2), plan_chunks(10000, None, 1)
        ((1000, 2), (2500, 2), (3334, 1))
        >>> plan_chunks(11, 4, 8), plan_chunks(2000, None, 2, device="cuda")
        ((4, 3), (2000, 1))
    """
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if not device.startswith("cpu"):
        workers = 1
    n = max(n_images, 1)
    if chunk_images is None:
        n_chunks = workers * math.ceil(n / (workers * MAX_AUTO_CHUNK_IMAGES))
        chunk_images = math.ceil(n / n_chunks)
    return chunk_images, min(workers, math.ceil(n / chunk_images))


def default_workers(n_images: int, n_tiled: int = 0, n_tiled_chunks: int | None = None) -> int:
    """The CLI's default worker count: one per CPU core (`os.cpu_count`), but at most one
    per `MIN_IMAGES_PER_WORKER` images, so small jobs stay in one process; each chunk of
    the ``n_tiled`` images of another size than the model's (a photo, its own chunk, or
    one chunk per band: ``n_tiled_chunks`` in all, default ``n_tiled``) counts as a
    worker's worth."""
    batched = (n_images - n_tiled) // MIN_IMAGES_PER_WORKER
    chunks = n_tiled if n_tiled_chunks is None else n_tiled_chunks
    return max(1, min(os.cpu_count() or 1, batched + chunks))


@dataclass(frozen=True)
class CodingPlan:
    """How a file's images are coded.

    Attributes:
        chunk_images: images per chunk of the model's shape (recorded in the file).
        workers: worker processes (1: in this process).
        torch_threads: torch threads of each coder (1 whenever several workers run).
        spans: the chunks, in file order.
        band_rows: rows of a band (0: no image is cut into bands; `band_height`).
        pixel_bins: first-stage bins of 8-bit pixels (`PHOTO_PIXEL_BINS`).
        tile_latents: how the latents of tiled images are coded (`TILE_LATENTS`).
    """

    chunk_images: int
    workers: int
    torch_threads: int
    spans: tuple[ChunkSpan, ...]
    band_rows: int = 0
    pixel_bins: int = 1
    tile_latents: str = "bits-back"


#: First-stage bins of 8-bit pixels in a file with photos (images coded tiled) on the exact
#: path, unless asked otherwise: a photo's decoder builds tables about 7 times smaller
#: (`bbcodec.codec.CodingSettings.pixel_bins`), at the same rate.
PHOTO_PIXEL_BINS = 16


#: How the latents of images coded tiled are coded (`bbcodec.codec.CodingSettings.
#: tile_latents`): with bits back, or none (each tile's latent is the prior's mean).
TILE_LATENTS = ("bits-back", "prior-mean")


#: Fewer pixels than this in all are coded with one torch thread: one 28×28 digit took 0.5 s
#: with one thread and 25 s with two when the other core was busy (a one-digit file).
MIN_PIXELS_FOR_THREADS = 1 << 16


def plan_coding(
    runs: Sequence[tuple[Shape, int]],
    model_shape: Shape,
    chunk_images: int | None = None,
    workers: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    band_rows: int | None = None,
    pixel_bins: int | None = None,
    eight_bit_exact: bool = True,
    tile_latents: str | None = None,
    model_tile_latents: str = "bits-back",
) -> CodingPlan:
    """Plan the coding of images given as runs of ``(shape, count)`` in file order.

    Args:
        runs: the images' shapes, run-length coded.
        model_shape: the model's image shape; other shapes are coded tiled.
        chunk_images: images per batched chunk (``None``: `plan_chunks` chooses).
        workers: worker processes wanted (``None``: `default_workers`); capped at the
            number of chunks, and 1 off the CPU.
        device: torch device the model runs on.
        threads: torch threads of this process, used when coding stays in-process and
            the images hold at least `MIN_PIXELS_FOR_THREADS` pixels (fewer: one thread,
            faster for so little work, and a file that records the default).
        band_rows: rows of a band (`band_height`: ``None`` the default, 0 no bands).
        pixel_bins: first-stage bins of 8-bit pixels (``None``: `PHOTO_PIXEL_BINS` if
            any image is coded tiled and ``eight_bit_exact``, else 1).
        eight_bit_exact: the model codes 8-bit values (not binary) with exact arithmetic.
        tile_latents: how the latents of tiled images are coded (`TILE_LATENTS`;
            ``None``: ``model_tile_latents`` if any image is coded tiled, else
            ``"bits-back"``).
        model_tile_latents: the model's registered choice (`bbcodec.zoo.ModelInfo`).

    Raises:
        UsageError: ``band_rows`` is not a multiple of the model's tile height.
    """
    tiled_heights = [shape[0] for shape, _ in runs if is_tiled(shape, model_shape)]
    band_rows = band_height(band_rows, model_shape[0], max(tiled_heights, default=0))
    n_images = sum(count for _, count in runs)
    if sum(shape[0] * shape[1] * count for shape, count in runs) < MIN_PIXELS_FOR_THREADS:
        threads = 1
    n_tiled = sum(count for shape, count in runs if is_tiled(shape, model_shape))
    n_tiled_chunks = sum(
        count * len(image_bands(shape[0], band_rows))
        for shape, count in runs
        if is_tiled(shape, model_shape)
    )
    requested = default_workers(n_images, n_tiled, n_tiled_chunks) if workers is None else workers
    chunk_images, _ = plan_chunks(n_images - n_tiled, chunk_images, requested, device)
    spans = tuple(chunk_spans(runs, model_shape, chunk_images, band_rows))
    workers = min(requested if device.startswith("cpu") else 1, max(len(spans), 1))
    if pixel_bins is None:
        pixel_bins = PHOTO_PIXEL_BINS if n_tiled and eight_bit_exact else 1
    if tile_latents is None:
        tile_latents = model_tile_latents if n_tiled else "bits-back"
    threads = 1 if workers > 1 else threads
    return CodingPlan(chunk_images, workers, threads, spans, band_rows, pixel_bins, tile_latents)
