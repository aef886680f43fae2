"""Every coding decision that is not the model's, made in one place (torch-free).

The API, the CLI, the worker pool and the bench all ask this module; nothing else decides:

- **which model** codes images of a kind and size by default (`DEFAULT_MODELS`);
- **batched or tiled**: images of the model's shape are coded in batches, many to a
  chunk; an image of any other shape is coded alone, tiled (`is_tiled`), its own chunk;
- **chunks**: how the images are cut into independently decodable chunks
  (`chunk_spans`), with ``chunk_images`` chosen to keep every worker busy (`plan_coding`);
- **workers and threads**: how many worker processes code chunks side by side and how many
  torch threads each uses (`plan_coding`, `default_workers`).

Example:
    >>> plan = plan_coding([((28, 28), 2000)], (28, 28), workers=2, threads=2)
    >>> plan.chunk_images, plan.workers, plan.torch_threads, len(plan.spans)
    (1000, 2, 1, 2)
    >>> [tuple(s) for s in plan_coding([((28, 28), 3), ((50, 40), 2)], (28, 28), workers=1).spans]
    [(0, 3, (28, 28), False), (3, 1, (50, 40), True), (4, 1, (50, 40), True)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bbcodec.errors import DecodeError, ImageKindError, UsageError

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODELS",
    "MAX_AUTO_CHUNK_IMAGES",
    "MAX_BATCH_LIMIT",
    "MAX_DATASET_PIXELS_FACTOR",
    "MIN_IMAGES_PER_WORKER",
    "ChunkSpan",
    "CodingPlan",
    "chunk_shape",
    "chunk_spans",
    "default_model_name",
    "default_workers",
    "describe_default_models",
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
    ("rgb", None): "vlae-cifar10",
}

#: Largest image, in pixels (H × W), read or decoded unless the caller raises the limit
#: (``--max-pixels``, ``max_pixels=``): 16 Mi pixels, e.g. 4096 × 4096 or a 12-megapixel
#: 4000 × 3000 photo. An image of another size than the model's is coded whole (tiled,
#: `bbcodec.codec.tiled`) with a float32 feature map of the whole image (4 bytes × 96
#: channels = 384 bytes a pixel for vlae-cifar10) besides the pixel canvas and the image.
#: Measured (peak RSS of one process, CPU, one thread, vlae-cifar10, Kodak kodim01 tiled
#: to 768 × 512 and 1536 × 1024): decode 416 → 880 MB, encode 444 → 926 MB, i.e. ~410
#: and ~430 bytes a pixel over ~250 MB for torch and the model. At this limit a decode
#: or an encode fits in ~7.5 GB (and takes ~35 min); 64 Mi pixels would need ~28 GB.
#: Inputs and files are checked against it from their headers, before anything per-pixel
#: is allocated (`bbcodec.models.data`, `bbcodec.container.ContainerReader`), raising
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


# ----- models ----------------------------------------------------------------------------


def default_model_name(kind: str, sizes: Iterable[tuple[int, int]]) -> str:
    """The shipped model for images of ``kind`` ("binary", "grey", "rgb") and these
    ``(H, W)`` sizes, or an `ImageKindError`.

    A model listed for the exact size wins; images of other (or several) sizes get the
    kind's any-size model, which codes them tiled.

    Example:
        >>> default_model_name("grey", [(28, 28)]), default_model_name("rgb", [(512, 768)])
        ('vlae-mnist', 'vlae-cifar10')
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


class ChunkSpan(NamedTuple):
    """One chunk of a file: images ``first .. first + count - 1``, all of ``shape``."""

    first: int
    count: int
    shape: Shape
    tiled: bool


def chunk_spans(
    runs: Iterable[tuple[Shape, int]], model_shape: Shape, chunk_images: int
) -> Iterator[ChunkSpan]:
    """The chunks of images given as runs of ``(shape, count)`` in file order: images of
    the model's shape in chunks of ``chunk_images`` (a run's last one may be smaller), any
    other image alone (tiled)."""
    first = 0
    for shape, count in runs:
        shape = tuple(shape)
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


def default_workers(n_images: int, n_tiled: int = 0) -> int:
    """The CLI's default worker count: one per CPU core (`os.cpu_count`), but at most one
    per `MIN_IMAGES_PER_WORKER` images, so small jobs stay in one process; each of the
    ``n_tiled`` images of another size than the model's (a photo, its own chunk) counts as
    a worker's worth."""
    batched = (n_images - n_tiled) // MIN_IMAGES_PER_WORKER
    return max(1, min(os.cpu_count() or 1, batched + n_tiled))


@dataclass(frozen=True)
class CodingPlan:
    """How a file's images are coded.

    Attributes:
        chunk_images: images per chunk of the model's shape (recorded in the file).
        workers: worker processes (1: in this process).
        torch_threads: torch threads of each coder (1 whenever several workers run).
        spans: the chunks, in file order.
    """

    chunk_images: int
    workers: int
    torch_threads: int
    spans: tuple[ChunkSpan, ...]


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
    """
    n_images = sum(count for _, count in runs)
    if sum(shape[0] * shape[1] * count for shape, count in runs) < MIN_PIXELS_FOR_THREADS:
        threads = 1
    n_tiled = sum(count for shape, count in runs if is_tiled(shape, model_shape))
    requested = default_workers(n_images, n_tiled) if workers is None else workers
    chunk_images, _ = plan_chunks(n_images - n_tiled, chunk_images, requested, device)
    spans = tuple(chunk_spans(runs, model_shape, chunk_images))
    workers = min(requested if device.startswith("cpu") else 1, max(len(spans), 1))
    return CodingPlan(chunk_images, workers, 1 if workers > 1 else threads, spans)
