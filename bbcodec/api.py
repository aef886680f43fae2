"""Public Python API: compress numpy images to ``.bbc`` bytes and back.

Example:
    >>> import numpy as np, bbcodec
    >>> digits = bbcodec.example_images()                           # doctest: +SKIP
    >>> data = bbcodec.compress(digits, model="vlae-bmnist")          # doctest: +SKIP
    >>> np.array_equal(bbcodec.decompress(data), digits)             # doctest: +SKIP
    True

A file names its model (registered name) and carries a fingerprint of the weights; decoding
with other weights is a clear `DecodeError`, never wrong pixels.

**Workers.** A file is a sequence of independently decodable chunks; ``workers=k`` codes
them in ``k`` worker processes (`bbcodec.parallel`), each running the model with one torch
thread. The bytes of a chunk do not depend on the number of workers. When the settings
leave ``chunk_images`` unset (``None``, the default), `plan_chunks` splits the images
evenly so every worker is busy; an explicit ``chunk_images`` is always obeyed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from bbcodec.coding import SEED_GENERATOR
from bbcodec.container import ContainerReader, ContainerWriter, Header, SeedPolicy
from bbcodec.image_codec import CodingSettings, DecodeError, split_chunks
from bbcodec.models.data import dataset_kind
from bbcodec.parallel import code_chunks, decode_chunk_checked, encode_chunk_at
from bbcodec.zoo import list_models, load_model

__all__ = [
    "CompressReport",
    "ImageKindError",
    "compress",
    "compress_to",
    "decompress",
    "decompress_from",
    "default_model_for",
    "default_workers",
    "describe_default_models",
    "load_model",
    "plan_chunks",
    "weights_fingerprint",
]

#: The model chosen for each image kind and size when none is given; size ``None``: any
#: other size (coded tiled).
DEFAULT_MODELS: dict[tuple[str, tuple[int, int] | None], str] = {
    ("binary", (28, 28)): "vlae-bmnist",
    ("grey", (28, 28)): "vlae-mnist",
    ("rgb", (32, 32)): "vlae-cifar10",
    ("rgb", None): "vlae-cifar10",
}


#: Largest chunk `plan_chunks` makes when ``chunk_images`` is left to it.
MAX_AUTO_CHUNK_IMAGES = 4096
#: Fewest images per worker `default_workers` starts a worker for. Each chunk ramps its
#: batch up from one image as bits-back bits accumulate on its stack; on binarized MNIST
#: that ramp takes 20–40 batches, as long as coding ~1500 images at full batch, and a
#: worker takes seconds to start (it imports torch): below this, one process is as fast.
MIN_IMAGES_PER_WORKER = 1024


class ImageKindError(ValueError):
    """Images the chosen model cannot code (shape, kind or dtype), with what would work."""


def plan_chunks(
    n_images: int, chunk_images: int | None, workers: int, device: str = "cpu"
) -> tuple[int, int]:
    """Images per chunk and worker processes for coding ``n_images`` images.

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
        raise ValueError(f"workers must be at least 1, got {workers}")
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
class CompressReport:
    """What a compression cost.

    Attributes:
        n_images: images coded.
        n_dims: sub-pixels of all images together.
        file_bits: every bit of the output, header, seed and trailers included.
        information_bits: information content of the coded symbols (net of bits back).
        net_bits: stack growth over the seeds, summed over chunks.
        initial_bits: seed bits, summed over chunks.
        chunk_batch_sizes: batch schedule of each chunk.
        chunk_stack_bits: bits on each chunk's stack (seed included) after each batch.
        image_information_bits: each image's share of ``information_bits``
            (−log₂ P(x|z̄) − log₂ P(z̄) + log₂ Q(z̄|x) for the z̄ popped for it), in image
            order; ``None`` if unavailable.
    """

    n_images: int
    n_dims: int
    file_bits: int
    information_bits: float
    net_bits: int
    initial_bits: int
    chunk_batch_sizes: tuple[tuple[int, ...], ...]
    chunk_stack_bits: tuple[tuple[int, ...], ...] = ()
    image_information_bits: tuple[float, ...] | None = None

    @property
    def achieved_bpd(self) -> float:
        """File bits per sub-pixel: the rate a user gets."""
        return self.file_bits / self.n_dims


def weights_fingerprint(model) -> bytes:
    """sha256 over the model's config and every tensor (name, dtype, shape, bytes), sorted."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(
            t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes()
        )
    return digest.digest()


def _as_runs(images) -> list[np.ndarray]:
    """Images as runs of equal shape, each (n, H, W[, 3]) uint8, in the given order.

    Accepts an (N, H, W[, 3]) array, one (H, W[, 3]) image, or a sequence of images whose
    shapes may differ.
    """
    if isinstance(images, np.ndarray):
        arrays = [images]
    else:
        arrays = [np.asarray(im) for im in images]
        bad = [a.shape for a in arrays if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3))]
        if bad:
            raise ImageKindError(f"each image must be (H, W) or (H, W, 3), got shape {bad[0]}")
        arrays = [
            np.stack(list(group)) for _, group in itertools.groupby(arrays, key=lambda a: a.shape)
        ]
    runs = []
    for arr in arrays:
        if arr.dtype != np.uint8:
            raise ImageKindError(f"images must be uint8, got {arr.dtype}")
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):  # one image
            arr = arr[None]
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3):
            raise ImageKindError(f"images must be (N, H, W) or (N, H, W, 3), got shape {arr.shape}")
        if min(arr.shape[1:3], default=0) < 1:
            raise ImageKindError(f"images of shape {arr.shape[1:]} have no pixels")
        if len(arr):
            runs.append(np.ascontiguousarray(arr))
    if not runs:
        raise ImageKindError("no images to compress")
    return runs


def default_model_for(images) -> str:
    """The shipped model for these images' kind and size, or an `ImageKindError`.

    A model listed for the exact size wins; images of other (or several) sizes get the
    kind's any-size model, which codes them tiled.
    """
    return _default_model_for_runs(_as_runs(images))


def _default_model_for_runs(runs: list[np.ndarray]) -> str:
    kinds = {dataset_kind(run) for run in runs}
    if len(kinds) > 1:
        raise ImageKindError(f"images of several kinds ({', '.join(sorted(kinds))}) in one file")
    (kind,) = kinds
    sizes = {tuple(run.shape[1:3]) for run in runs}
    exact = (kind, next(iter(sizes))) if len(sizes) == 1 else None
    for key in (exact, (kind, None)):
        if key in DEFAULT_MODELS:
            return DEFAULT_MODELS[key]
    known = describe_default_models()
    what = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else "several sizes"
    raise ImageKindError(f"no shipped model for {kind} images of {what} (models: {known})")


def describe_default_models() -> str:
    """``binary 28x28 → vlae-bmnist; …``: the `DEFAULT_MODELS` for messages and help."""
    return "; ".join(
        f"{kind} {'any size' if hw is None else f'{hw[0]}x{hw[1]}'} → {name}"
        for (kind, hw), name in DEFAULT_MODELS.items()
    )


def _check_images(model, runs: list[np.ndarray], model_id: str) -> None:
    config = model.config
    expected = config.image_shape
    for run in runs:
        if run.shape[3:] != expected[2:]:
            what = "RGB (H, W, 3)" if config.kind == "rgb" else f"{config.kind} (H, W)"
            raise ImageKindError(f"model {model_id} codes {what} images, got shape {run.shape[1:]}")
        if run.shape[1:] != expected and config.family != "vlae":
            raise ImageKindError(
                f"model {model_id} codes {config.kind} images of shape {expected} only (its "
                f"decoder sees the full causal past), got {run.shape[1:]}; images of other "
                "sizes need a VLAE (local decoder), which codes them tiled"
            )
        if config.kind == "binary" and run.max() > 1:
            raise ImageKindError(
                f"model {model_id} codes binary images (0/1), got values up to {run.max()}"
            )


def _resolve(model, runs: list[np.ndarray]) -> tuple[object, str]:
    """(model object, model id for the header: the registered name, else "custom")."""
    if model is None or model == "auto":
        model = _default_model_for_runs(runs)
    if not isinstance(model, str):
        return model, "custom"
    registered = {info.name for info in list_models()}
    return load_model(model), model if model in registered else "custom"


def _chunk_tasks(runs, model_shape, chunk_images: int) -> Iterator[tuple[np.ndarray, int]]:
    """(images, first) of each chunk: runs of the model's shape in ``chunk_images`` chunks,
    any other image alone (it is coded tiled)."""
    first = 0
    for run in runs:
        if run.shape[1:] == model_shape:
            for start, count in split_chunks(len(run), chunk_images):
                yield run[start : start + count], first + start
        else:
            for i in range(len(run)):
                yield run[i : i + 1], first + i
        first += len(run)


def compress_to(
    out: BinaryIO,
    images,
    model="auto",
    settings: CodingSettings | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> CompressReport:
    """Compress images into a ``.bbc`` stream written to ``out``, chunk by chunk.

    Args:
        out: binary file object (written sequentially).
        images: (N, H, W[, 3]) uint8 array, one image, or a sequence of images (shapes
            may differ). Images of the model's size are coded in batches; others one by
            one, tiled (VLAE models only).
        model: a registered name, a weights path, a `LatentVariableModel`, or ``"auto"``
            (chosen by the images' kind and shape).
        settings: coding settings (defaults: `CodingSettings()` with this process's torch
            thread count, or one thread with several workers). ``chunk_images=None``
            lets `plan_chunks` choose; the file records the size used.
        progress: called with the number of images finished, as they finish.
        workers: worker processes coding chunks side by side (``None``: 1, in this
            process); capped at the number of chunks (see `plan_chunks`). With more than
            one, ``settings.torch_threads`` must be 1.

    Raises:
        ImageKindError: images the model cannot code.
        ValueError: ``workers`` < 1, or several workers with ``torch_threads`` ≠ 1.
    """
    runs = _as_runs(images)
    model_obj, model_id = _resolve(model, runs)
    _check_images(model_obj, runs, model_id)
    model_shape = model_obj.config.image_shape
    requested = 1 if workers is None else workers
    if settings is None:
        threads = 1 if requested > 1 else torch.get_num_threads()
        settings = CodingSettings(torch_threads=threads)
    n_batched = sum(len(run) for run in runs if run.shape[1:] == model_shape)
    chunk_images, _ = plan_chunks(n_batched, settings.chunk_images, requested, settings.device)
    tasks = list(_chunk_tasks(runs, model_shape, chunk_images))  # views, no copies
    workers = min(1 if not settings.device.startswith("cpu") else requested, len(tasks))
    settings = dataclasses.replace(settings, chunk_images=chunk_images)
    if workers > 1 and settings.torch_threads != 1:
        raise ValueError(
            f"{workers} workers code with one torch thread each: pass settings with "
            f"torch_threads=1 (got {settings.torch_threads})"
        )
    shapes = tuple(run.shape[1:] for run in runs for _ in range(len(run)))
    header = Header(
        model_id=model_id, weights_sha256=weights_fingerprint(model_obj), settings=settings.to_dict(),
        # words=0: each chunk sizes its own seed and records it in its trailer.
        seed=SeedPolicy(SEED_GENERATOR, settings.seed, 0), shapes=shapes,
    )  # fmt: skip
    writer = ContainerWriter(out)
    writer.write_header(header)
    info = 0.0
    net = initial = 0
    schedules, stacks = [], []
    image_bits: list[float] | None = []
    results = code_chunks(model_obj, settings, workers, encode_chunk_at, tasks, progress)
    with contextlib.closing(results):  # an error here stops the workers at once
        for chunk, rate in results:
            writer.write_chunk(chunk)
            info, net, initial = (
                info + rate.information_bits,
                net + rate.net_bits,
                initial + rate.initial_bits,
            )
            schedules.append(rate.batch_sizes)
            stacks.append(rate.stack_bits)
            if image_bits is not None and rate.image_information_bits is not None:
                image_bits.extend(rate.image_information_bits)
            else:
                image_bits = None
    writer.finalize()
    file_bytes = writer.bytes_written
    per_image = None if image_bits is None else tuple(image_bits)
    n_dims = sum(run.size for run in runs)
    return CompressReport(len(shapes), n_dims, 8 * file_bytes, info, net,
                          initial, tuple(schedules), chunk_stack_bits=tuple(stacks),
                          image_information_bits=per_image)  # fmt: skip


def compress(
    images, model="auto", settings: CodingSettings | None = None, workers: int | None = None
) -> bytes:
    """Compress images to ``.bbc`` bytes (see `compress_to`)."""
    buffer = io.BytesIO()
    compress_to(buffer, images, model, settings, workers=workers)
    return buffer.getvalue()


def decompress_from(
    f: BinaryIO,
    model=None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> Iterator[np.ndarray]:
    """Decode a ``.bbc`` stream chunk by chunk, yielding (count, H, W[, 3]) uint8 arrays.

    Args:
        f: binary file object.
        model: the weights to decode with; by default the registered model the file names.
        progress: called with the number of images decoded, as they are.
        workers: worker processes decoding chunks side by side (``None``: 1, in this
            process), capped at the file's number of chunks; CPU files only (others decode
            in-process). Every worker runs torch with the thread count the file records.
            Chunks are yielded in file order either way.

    Raises:
        ContainerError: malformed file. DecodeError: wrong model, or a stream that does not
            decode. ChecksumError: pixels that do not match.
    """
    reader = ContainerReader(f)
    header = reader.header
    if model is None:
        if header.model_id == "custom":
            raise DecodeError(
                "this file was made with unregistered weights: pass the model to decode it"
            )
        model = header.model_id
    model_obj = load_model(model) if isinstance(model, str) else model
    if weights_fingerprint(model_obj) != header.weights_sha256:
        raise DecodeError(
            f"this file was made with other weights than the given model ({header.model_id!r} "
            f"in the file): decode it with the weights that made it"
        )
    settings = CodingSettings.from_dict(dict(header.settings))
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise DecodeError(f"this file was encoded on {settings.device}; decoding needs that device")
    _, workers = plan_chunks(header.image_count, settings.chunk_images, workers or 1,
                             settings.device)  # fmt: skip

    def tasks():
        for chunk in reader:
            yield chunk, frozenset(tuple(s) for s in header.shapes[chunk.first : chunk.stop])

    results = code_chunks(model_obj, settings, workers, decode_chunk_checked, tasks(), progress)
    with contextlib.closing(results):
        yield from results


def decompress(
    data: bytes, model=None, workers: int | None = None
) -> np.ndarray | list[np.ndarray]:
    """Decode ``.bbc`` bytes to (N, H, W[, 3]) uint8 images (a list where shapes differ)."""
    parts: Sequence[np.ndarray] = list(decompress_from(io.BytesIO(data), model, workers=workers))
    if len({part.shape[1:] for part in parts}) > 1:
        return [image for part in parts for image in part]
    return np.concatenate(parts) if parts else np.empty((0,), np.uint8)
