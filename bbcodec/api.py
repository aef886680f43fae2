"""Public Python API: compress numpy images to ``.bbc`` bytes and back.

Example:
    >>> import numpy as np, bbcodec
    >>> digits = np.load("../shared/data/binarized_mnist.npz")["test"][:100]  # doctest: +SKIP
    >>> data = bbcodec.compress(digits, model="vlae-bmnist")          # doctest: +SKIP
    >>> np.array_equal(bbcodec.decompress(data), digits)             # doctest: +SKIP
    True

A file names its model (registered name) and carries a fingerprint of the weights; decoding
with other weights is a clear `DecodeError`, never wrong pixels. The name a file gives is
looked up in the registry only, never opened as a path (`model_for_file`).

**Workers.** A file is a sequence of independently decodable chunks; ``workers=k`` codes
them in ``k`` worker processes (`bbcodec.codec.workers`), each running the model with one
torch thread. The bytes of a chunk do not depend on the number of workers. A photo (an
image of another size than the model's) taller than ``settings.band_rows`` is cut into
bands of rows, each its own chunk, so the workers code one photo side by side, and the
decoder stacks the bands back. How images are cut into chunks and bands, and how many
workers run, is `bbcodec.plan.plan_coding`'s decision.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
import torch

from bbcodec.codec import (
    CodingSettings,
    CompressReport,
    code_chunks,
    decode_band_checked,
    encode_band_at,
)
from bbcodec.container import WEIGHTS_DIGEST_BYTES, ContainerReader, ContainerWriter, Header
from bbcodec.errors import DecodeError, ImageKindError, UsageError
from bbcodec.models.data import dataset_kind
from bbcodec.models.vae import LatentVariableModel
from bbcodec.plan import DEFAULT_MAX_PIXELS, default_model_name, plan_coding, shape_runs
from bbcodec.zoo import list_models, load_model, registered_tile_latents

__all__ = [
    "CompressReport",
    "compress",
    "compress_to",
    "decompress",
    "decompress_from",
    "default_model_for",
    "load_model",
    "model_for_file",
    "weights_fingerprint",
]


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
            # torch.from_numpy warns on read-only arrays (np.asarray(PIL image), memory maps):
            # copy those, and non-contiguous ones; a writable contiguous array is not copied.
            runs.append(np.require(arr, requirements=("C", "W")))
    if not runs:
        raise ImageKindError("no images to compress")
    return runs


def default_model_for(images) -> str:
    """The shipped model for these images' kind and size, or an `ImageKindError` (see
    `bbcodec.plan.default_model_name`)."""
    return _default_model_for_runs(_as_runs(images))


def _default_model_for_runs(runs: list[np.ndarray]) -> str:
    kinds = {dataset_kind(run) for run in runs}
    if len(kinds) > 1:
        raise ImageKindError(f"images of several kinds ({', '.join(sorted(kinds))}) in one file")
    return default_model_name(kinds.pop(), (tuple(run.shape[1:3]) for run in runs))


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


def _registered() -> set[str]:
    return {info.name for info in list_models()}


def _load(model, auto: bool = False) -> tuple[LatentVariableModel, str]:
    """(model object, model id for a header: the registered name, else "custom") of a
    registered name, a weights path (``str`` or `os.PathLike`) or a loaded model."""
    if isinstance(model, LatentVariableModel):
        return model, "custom"
    name = os.fspath(model) if isinstance(model, os.PathLike) else model
    if not isinstance(name, str):
        auto_text = ', or "auto"' if auto else ""
        raise UsageError(
            "model must be a registered name, a weights path (str or os.PathLike) or a "
            f"LatentVariableModel{auto_text}; got {type(model).__name__}"
        )
    return load_model(name), name if name in _registered() else "custom"


def _resolve(model, runs: list[np.ndarray]) -> tuple[LatentVariableModel, str]:
    """(model object, model id for the header: the registered name, else "custom")."""
    if model is None or (isinstance(model, str) and model == "auto"):
        model = _default_model_for_runs(runs)
    return _load(model, auto=True)


def model_for_file(header: Header, model=None, pass_as: str = "model=…") -> LatentVariableModel:
    """The model that decodes the file ``header`` starts, checked against its fingerprint.

    A file names a registered model, never a path: without ``model``, the file's model id
    is looked up in the registry (`bbcodec.zoo.list_models`) and nothing else; weights of
    any other origin must be given by the caller.

    Args:
        header: the file's header (`bbcodec.container.ContainerReader.header`).
        model: the caller's weights: a registered name, a weights path (``str`` or
            `os.PathLike`) or a loaded model; ``None``: the registered model the file names.
        pass_as: how the caller passes weights, for the error messages (the CLI says
            ``--model PATH``).

    Raises:
        DecodeError: the file names no registered model and none is given, or the weights
            are not those that made the file. WeightsError: weights that do not load.
        UsageError: ``model`` of another type.
    """
    if model is None:
        if header.model_id == "custom":
            raise DecodeError(
                f"this file was made with unregistered weights: pass the model to decode it "
                f"({pass_as})"
            )
        if header.model_id not in _registered():
            raise DecodeError(
                f"the file names model {header.model_id!r}, which is not a registered model; "
                f"pass the weights with {pass_as}"
            )
        model = header.model_id
    model_obj, _ = _load(model)
    if not weights_fingerprint(model_obj).startswith(header.weights_digest):
        raise DecodeError(
            f"this file was made with other weights than the given model ({header.model_id!r} "
            f"in the file): decode it with the weights that made it"
        )
    return model_obj


def _check_workers(workers) -> None:
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise UsageError(f"workers must be an integer, at least 1 (or None), got {workers!r}")


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
        model: a registered name, a weights path (``str`` or `os.PathLike`), a
            `LatentVariableModel`, or ``"auto"`` (chosen by the images' kind and shape).
        settings: coding settings (defaults: `CodingSettings()` with this process's torch
            thread count, or one thread with several workers). ``chunk_images=None``
            lets `bbcodec.plan.plan_coding` choose; the file records the size used.
            ``band_rows``: the rows of a band a photo is cut into (``None``: the plan's
            default, an even number of bands of about 256 rows, `bbcodec.plan.band_height`;
            0: never cut); the file records the height used if it cut a photo.
        progress: called with the number of images finished, as they finish.
        workers: worker processes coding chunks side by side (``None``: 1, in this
            process); capped at the number of chunks. With more than one,
            ``settings.torch_threads`` must be 1.

    Raises:
        ImageKindError: images the model cannot code.
        UsageError: ``workers`` < 1, several workers with ``torch_threads`` ≠ 1, a CUDA
            device on a machine without one, a ``model`` or ``settings`` of another type,
            a ``band_rows`` that is not a multiple of the model's tile height.
        WeightsError: weights that do not load.
    """
    _check_workers(workers)
    if settings is not None:
        if not isinstance(settings, CodingSettings):
            raise UsageError(f"settings must be CodingSettings, got {type(settings).__name__}")
        settings.check_device()
    runs = _as_runs(images)
    model_obj, model_id = _resolve(model, runs)
    _check_images(model_obj, runs, model_id)
    device = "cpu" if settings is None else settings.device
    plan = plan_coding(
        [(run.shape[1:], len(run)) for run in runs], model_obj.config.image_shape,
        None if settings is None else settings.chunk_images, 1 if workers is None else workers,
        device, torch.get_num_threads(), None if settings is None else settings.band_rows,
        None if settings is None else settings.pixel_bins,
        model_obj.config.kind != "binary" and (settings is None or settings.arithmetic == "exact"),
        None if settings is None else settings.tile_latents, registered_tile_latents(model_id),
    )  # fmt: skip
    if settings is None:
        settings = CodingSettings(torch_threads=plan.torch_threads)
    settings = dataclasses.replace(
        settings, chunk_images=plan.chunk_images, band_rows=plan.band_rows,
        pixel_bins=plan.pixel_bins, tile_latents=plan.tile_latents,
    )  # fmt: skip
    if plan.workers > 1 and settings.torch_threads != 1:
        raise UsageError(
            f"{plan.workers} workers code with one torch thread each: pass settings with "
            f"torch_threads=1 (got {settings.torch_threads})"
        )

    def tasks():  # (images, first, band, last) of each chunk: views into the runs, no copies
        spans = iter(plan.spans)  # in run order; a span never crosses runs
        for run in runs:
            start = 0
            while start < len(run):
                span = next(spans)
                if span.rows is None:
                    yield run[start : start + span.count], span.first, 0, True
                    start += span.count
                    continue
                last = span.band == span.bands - 1
                yield run[start : start + 1, slice(*span.rows)], span.first, span.band, last
                start += last

    shapes = tuple(run.shape[1:] for run in runs for _ in range(len(run)))
    header = Header(
        model_id=model_id,
        weights_digest=weights_fingerprint(model_obj)[:WEIGHTS_DIGEST_BYTES],
        settings=settings.file_dict(len(shapes), (shape[0] for shape in shapes)),
        shapes=shapes,
    )
    writer = ContainerWriter(out)
    writer.write_header(header)
    chunks = []
    results = code_chunks(model_obj, settings, plan.workers, encode_band_at, tasks(), progress)
    with contextlib.closing(results):  # an error here stops the workers at once
        for chunk, rate in results:
            writer.write_chunk(chunk)
            chunks.append(rate)
    writer.finalize()
    n_dims = sum(run.size for run in runs)
    return CompressReport(
        len(shapes), n_dims, 8 * writer.bytes_written, tuple(chunks), settings.tile_latents
    )


def compress(
    images, model="auto", settings: CodingSettings | None = None, workers: int | None = None
) -> bytes:
    """Compress images to ``.bbc`` bytes (see `compress_to`)."""
    buffer = io.BytesIO()
    compress_to(buffer, images, model, settings, workers=workers)
    return buffer.getvalue()


def decoding_settings(header: Header, device: str | None = None) -> CodingSettings:
    """The settings to decode a file with: the file's own, on ``device`` if given.

    A file of exact arithmetic decodes on any device and thread count (by default on the
    one it was written on if this machine has it, else on the CPU); a file of float
    arithmetic only on the device it was written on.

    Raises:
        DecodeError: a float-arithmetic file asked to decode on another device, or whose
            device this machine lacks. UsageError: ``device`` is not on this machine.
    """
    settings = CodingSettings.from_header(header)
    if settings.arithmetic == "exact":
        if device is None:
            try:
                settings.check_device()
            except UsageError:
                device = "cpu"
        chosen = dataclasses.replace(settings, device=device or settings.device)
        chosen.check_device()
        return chosen
    if device is not None and device != settings.device:
        raise DecodeError(
            f"this file was encoded on {settings.device} with float arithmetic; it decodes "
            f"only there (not on {device})"
        )
    try:
        settings.check_device()
    except UsageError as exc:  # the file's device, not an option
        raise DecodeError(
            f"this file was encoded on {settings.device} with float arithmetic; decoding "
            f"needs that device ({exc})"
        ) from None
    return settings


def decompress_from(
    f: BinaryIO,
    model=None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: str | None = None,
) -> Iterator[np.ndarray]:
    """Decode a ``.bbc`` stream chunk by chunk, yielding (count, H, W[, 3]) uint8 arrays.

    Args:
        f: binary file object.
        model: the weights to decode with (a registered name, a weights path or a loaded
            model); by default the registered model the file names (`model_for_file`).
        progress: called with the number of images decoded, as they are.
        workers: worker processes decoding chunks side by side (``None``: 1, in this
            process), capped at the file's number of chunks; CPU files only (others decode
            in-process). Every worker runs torch with the thread count the file records.
            Chunks are yielded in file order either way; the bands of an image cut into
            bands are decoded as chunks and yielded stacked, as one (1, H, W[, 3]) array.
        max_pixels: the largest image (H × W) the file may claim (``None``: no limit);
            checked before decoding (`bbcodec.container.ContainerReader`).
        device: where to decode a file of exact arithmetic (`decoding_settings`).

    Raises:
        ContainerError: malformed file. DecodeError: wrong or unregistered model, or a
            stream that does not decode, or a float file on another device. ChecksumError:
            pixels that do not match.
        SizeLimitError: the file claims an image (or chunk) over ``max_pixels``.
    """
    _check_workers(workers)
    reader = ContainerReader(f, max_pixels)
    header = reader.header
    model_obj = model_for_file(header, model)
    settings = decoding_settings(header, device)
    try:
        plan = plan_coding(shape_runs(header.shapes), model_obj.config.image_shape,
                           settings.chunk_images, workers or 1, settings.device,
                           band_rows=header.band_rows)  # fmt: skip
    except UsageError as exc:  # the file's band height does not fit the model
        raise DecodeError(f"invalid coding settings in file: {exc}") from None
    read: collections.deque = collections.deque()  # (first, band, bands) of chunks read

    def tasks():
        for chunk in reader:
            bands = header.bands(chunk.first)
            if len(bands) > 1:
                shapes = frozenset({header.band_shape(chunk.first, chunk.band)})
            else:
                shapes = frozenset(tuple(s) for s in header.shapes[chunk.first : chunk.stop])
            read.append((chunk.first, chunk.band, bands))
            yield chunk, shapes, chunk.band == len(bands) - 1

    results = code_chunks(model_obj, settings, plan.workers, decode_band_checked, tasks(), progress)
    with contextlib.closing(results):
        image = None
        for part in results:  # in chunk order, as ``read``
            first, band, bands = read.popleft()
            if len(bands) == 1:
                yield part
                continue
            if band == 0:
                image = np.empty((1, *header.shapes[first]), np.uint8)
            image[0, slice(*bands[band])] = part[0]
            if band == len(bands) - 1:
                yield image


def decompress(
    data: bytes, model=None, workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray | list[np.ndarray]:  # fmt: skip
    """Decode ``.bbc`` bytes to (N, H, W[, 3]) uint8 images (a list where shapes differ)."""
    stream = decompress_from(io.BytesIO(data), model, workers=workers, max_pixels=max_pixels)
    parts: Sequence[np.ndarray] = list(stream)
    if len({part.shape[1:] for part in parts}) > 1:
        return [image for part in parts for image in part]
    return np.concatenate(parts) if parts else np.empty((0,), np.uint8)
