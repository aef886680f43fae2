"""The benchmark behind ``bbcodec bench``: the codec's real rate next to the model's −ELBO
and the classic codecs, on the same images.

One round trip (`round_trip`) serves datasets and photos alike: **encode** the images into
memory with `bbcodec.api.compress_to` (timed, worker start-up included), **decode** the
bytes with `bbcodec.api.decompress_from` (timed) and compare every image.

- **A dataset** (`bench_dataset`: every image of the model's size) is one file whose chunks
  ``workers`` processes code side by side, as `bbcodec.plan.plan_coding` decides. Next to
  it: the model's −ELBO (`bbcodec.models.evaluate.evaluate`, one z-sample per image) and
  the baselines PNG, WebP and JPEG-XL (`bbcodec.baselines.run_baselines`, one lossless
  file per image). The result is a `DatasetBench`.
- **Photos** (`bench_photos`: images of other sizes than the model's) are each their own
  file. With several workers each worker process takes a photo at a time and times it
  itself; the bytes are those coded in-process. Next to each: its tiled −ELBO
  (`bbcodec.models.tiles.tiled_elbo_terms`, one z-sample per tile, seeded by the coding
  seed for every photo) and the baselines. The result is a `PhotoBench` of `PhotoRow`.

`run_bench` loads a model and a data path and runs the one that fits.

Rates are bits per sub-pixel (``_bpd``). ``achieved_bpd`` counts every byte of the ``.bbc``
file (header, seeds, chunk trailers, framing); ``net_bpd`` is the stack growth over the
seeds; ``information_bpd`` the information content of the symbols coded (net of bits back)
under the coder's fixed-point probabilities; ``gap_pct`` = 100 · (achieved / −ELBO − 1).
Over photos, a total is the sum of bits over the sum of sub-pixels.

``to_dict()`` of a result is the JSON record ``bbcodec bench --json`` writes (NaN and
infinities as ``None``).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bbcodec.api import compress_to, decompress_from
from bbcodec.baselines import BASELINES, BaselineResult, run_baselines
from bbcodec.codec import CodingSettings, CompressReport, ImageCodec, code_chunks
from bbcodec.errors import BbcFileError
from bbcodec.models.data import load_image_runs
from bbcodec.models.evaluate import EvalResult, check_images, evaluate
from bbcodec.models.tiles import tiled_elbo_terms
from bbcodec.plan import DEFAULT_MAX_PIXELS, plan_coding
from bbcodec.zoo import list_models, load_model

__all__ = [
    "BenchOptions",
    "DatasetBench",
    "PhotoBench",
    "PhotoRow",
    "RoundTrip",
    "bench_dataset",
    "bench_photos",
    "round_trip",
    "run_bench",
    "stack_curve",
]


# ----- the round trip --------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """One encode, decode and compare of images, in memory.

    Attributes:
        report: what encoding cost (`bbcodec.codec.CompressReport`).
        encode_seconds: wall time of the encoding (worker start-up included).
        decode_seconds: wall time of the decoding; ``None`` if the file does not decode.
        failure: why the images did not come back, or ``None`` when every one did.
    """

    report: CompressReport
    encode_seconds: float
    decode_seconds: float | None
    failure: str | None

    @property
    def ok(self) -> bool:
        """Whether every image decoded to itself."""
        return self.failure is None

    @property
    def file_bytes(self) -> int:
        return self.report.file_bits // 8

    @property
    def achieved_bpd(self) -> float:
        """Every byte of the file, per sub-pixel."""
        return self.report.achieved_bpd

    @property
    def net_bpd(self) -> float:
        """Stack growth over the seeds, per sub-pixel."""
        return self.report.net_bits / self.report.n_dims

    @property
    def information_bpd(self) -> float:
        """Information content of the symbols coded, net of bits back, per sub-pixel."""
        return self.report.information_bits / self.report.n_dims

    @property
    def initial_bpd(self) -> float:
        """The seeds' bits (all chunks), per sub-pixel."""
        return self.report.initial_bits / self.report.n_dims


def round_trip(
    images: np.ndarray,
    model,
    model_name: str | None,
    settings: CodingSettings,
    workers: int = 1,
    progress: bool = False,
) -> RoundTrip:
    """Encode ``images`` into one ``.bbc`` file in memory, decode it and compare.

    Args:
        images: (N, H, W[, 3]) uint8.
        model: the `LatentVariableModel` (encodes unless ``model_name`` is given; decodes).
        model_name: a registered model's name: the encoder loads it and the file's header
            names it, so the bytes are those ``bbcodec compress`` writes. ``None``: the
            file codes ``model`` as "custom" weights.
        settings: the coding settings (``chunk_images=None``: the plan chooses).
        workers: worker processes coding chunks side by side.
        progress: tqdm bars for encoding and decoding.
    """
    n = len(images)
    buffer = io.BytesIO()
    with tqdm(total=n, desc="encode", unit="img", disable=not progress) as bar:
        t0 = time.perf_counter()
        report = compress_to(buffer, images, model_name or model, settings, bar.update, workers)
        encode_seconds = time.perf_counter() - t0
    buffer.seek(0)
    decode_seconds = failure = None
    with tqdm(total=n, desc="decode", unit="img", disable=not progress) as bar:
        t0 = time.perf_counter()
        try:
            # no size limit: the file was made here, from images already in memory
            parts = list(decompress_from(buffer, model, bar.update, workers, max_pixels=None))
            decode_seconds = time.perf_counter() - t0
        except BbcFileError as exc:
            failure = f"the file does not decode: {exc}"
    if failure is None:
        failure = _mismatch(images, parts)
    return RoundTrip(report, encode_seconds, decode_seconds, failure)


def _mismatch(images: np.ndarray, parts: Sequence[np.ndarray]) -> str | None:
    """Why the decoded chunks ``parts`` are not ``images``, or ``None``."""
    decoded = np.concatenate(parts) if parts else np.empty((0,), np.uint8)
    if decoded.shape != images.shape:
        return f"decoded {decoded.shape} images, encoded {images.shape}"
    if not np.array_equal(decoded, images):
        wrong = np.flatnonzero((decoded != images).reshape(len(images), -1).any(1))
        return f"{len(wrong)} of {len(images)} images decode wrongly (first: image {wrong[0]})"
    return None


def stack_curve(report: CompressReport) -> tuple[list[int], list[int]]:
    """(images coded so far, bits on the stacks so far) after each batch of a compression.

    Bits count the seeds of every chunk begun so far (chunk trailers and file framing
    excluded: those are only in ``report.file_bits``).

    Args:
        report: a `bbcodec.codec.CompressReport` (its ``chunk_batch_sizes`` and
            ``chunk_stack_bits``).
    """
    images, bits = [], []
    done = finished_bits = 0
    for sizes, stack in zip(report.chunk_batch_sizes, report.chunk_stack_bits, strict=True):
        for size, stack_bits in zip(sizes, stack, strict=True):
            done += size
            images.append(done)
            bits.append(finished_bits + stack_bits)
        finished_bits += stack[-1] if stack else 0
    return images, bits


# ----- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bench:
    """What every bench records about its run.

    Attributes:
        model: the model as given (a registered name or a weights path).
        data: the data path as given.
        settings: the coding settings (``torch_threads``: each coder's threads).
        workers: worker processes that coded (1: in this process).
    """

    model: str
    data: str
    settings: CodingSettings
    workers: int

    def _run_dict(self) -> dict[str, Any]:
        return {
            "threads": self.settings.torch_threads,
            "workers": self.workers,
            "device": self.settings.device,
            "seed": self.settings.seed,
            "coding_settings": self.settings.to_dict(),
        }


@dataclass(frozen=True)
class DatasetBench(_Bench):
    """A dataset benchmarked: all images in one file, the −ELBO and the baselines.

    Attributes:
        split: the dataset split.
        n_images: images coded; dims_per_image: sub-pixels per image.
        trip: the round trip of the file.
        baselines: each classic codec's result, in `bbcodec.baselines.BASELINES` order.
        elbo: the model's −ELBO on the images (`bbcodec.models.evaluate.EvalResult`).
    """

    split: str
    n_images: int
    dims_per_image: int
    trip: RoundTrip
    baselines: Mapping[str, BaselineResult]
    elbo: EvalResult

    @property
    def gap_pct(self) -> float:
        """100 · (achieved / −ELBO − 1)."""
        return 100.0 * (self.trip.achieved_bpd / self.elbo.neg_elbo_bpd - 1.0)

    @property
    def encode_img_per_s(self) -> float:
        return self.n_images / max(self.trip.encode_seconds, 1e-9)

    @property
    def decode_img_per_s(self) -> float | None:
        seconds = self.trip.decode_seconds
        return None if seconds is None else self.n_images / max(seconds, 1e-9)

    @property
    def failure(self) -> str | None:
        """Why the round trip failed, or ``None``."""
        return self.trip.failure

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of ``bbcodec bench --json``."""
        elbo, trip = self.elbo, self.trip
        curve_images, curve_bits = stack_curve(trip.report)
        return _finite({
            "model": self.model, "data": self.data, "split": self.split,
            "n_images": self.n_images, "dims_per_image": self.dims_per_image,
            "family": elbo.family, "latent_dim": elbo.latent_dim, "n_params": elbo.n_params,
            "neg_elbo_bpd": elbo.neg_elbo_bpd, "neg_elbo_nats": elbo.neg_elbo_nats,
            "kl_bpd": elbo.kl_bpd, "recon_bpd": elbo.recon_bpd,
            "achieved_bpd": trip.achieved_bpd, "net_bpd": trip.net_bpd,
            "information_bpd": trip.information_bpd,
            "initial_bits": trip.report.initial_bits, "initial_bpd": trip.initial_bpd,
            "file_bytes": trip.file_bytes, "gap_pct": self.gap_pct,
            "encode_seconds": trip.encode_seconds, "encode_img_per_s": self.encode_img_per_s,
            "decode_seconds": trip.decode_seconds, "decode_img_per_s": self.decode_img_per_s,
            "elbo_img_per_s": elbo.images_per_s, "roundtrip_ok": trip.ok,
            "baselines": {name: r.bpd for name, r in self.baselines.items()},
            "baselines_detail": {name: r.to_dict() for name, r in self.baselines.items()},
            **self._run_dict(),
            "chunk_batch_sizes": [list(s) for s in trip.report.chunk_batch_sizes],
            "stack_curve": {"images": curve_images, "bits": curve_bits},
        })  # fmt: skip


@dataclass(frozen=True)
class PhotoRow:
    """One photo benchmarked: its own file, its tiled −ELBO and the baselines.

    Attributes:
        image: the photo's label (its file).
        shape: (H, W[, 3]).
        trip: the round trip of its file.
        recon_nats, kl_nats: its one-sample tiled −ELBO terms, nats for the whole photo.
        baselines_bpd: each classic codec's rate on it, in `BASELINES` order.
    """

    image: str
    shape: tuple[int, ...]
    trip: RoundTrip
    recon_nats: float
    kl_nats: float
    baselines_bpd: Mapping[str, float]

    @property
    def dims(self) -> int:
        """Sub-pixels."""
        return math.prod(self.shape)

    @property
    def neg_elbo_bpd(self) -> float:
        return (self.recon_nats + self.kl_nats) / (self.dims * math.log(2))

    @property
    def kl_bpd(self) -> float:
        return self.kl_nats / (self.dims * math.log(2))

    @property
    def failure(self) -> str | None:
        """Why the photo did not come back, naming it, or ``None``."""
        return None if self.trip.ok else f"{self.image}: {self.trip.failure}"

    def to_dict(self) -> dict[str, Any]:
        """The photo's entry in the JSON record's ``images``."""
        trip = self.trip
        return {
            "image": self.image, "shape": list(self.shape), "dims": self.dims,
            "file_bytes": trip.file_bytes, "achieved_bpd": trip.achieved_bpd,
            "information_bpd": trip.information_bpd, "initial_bits": trip.report.initial_bits,
            "neg_elbo_bpd": self.neg_elbo_bpd, "kl_bpd": self.kl_bpd,
            "encode_seconds": trip.encode_seconds, "decode_seconds": trip.decode_seconds,
            "baselines": dict(self.baselines_bpd),
        }  # fmt: skip


@dataclass(frozen=True)
class PhotoBench(_Bench):
    """Photos benchmarked, each its own file; totals are over all photos.

    Attributes:
        rows: each photo's results, in order.
    """

    rows: tuple[PhotoRow, ...]

    @property
    def n_images(self) -> int:
        return len(self.rows)

    @property
    def total_dims(self) -> int:
        return sum(row.dims for row in self.rows)

    def _total_bpd(self, bpd_of: Callable[[PhotoRow], float]) -> float:
        """Bits over all photos per sub-pixel of all photos."""
        return sum(bpd_of(row) * row.dims for row in self.rows) / self.total_dims

    @property
    def achieved_bpd(self) -> float:
        return self._total_bpd(lambda row: row.trip.achieved_bpd)

    @property
    def neg_elbo_bpd(self) -> float:
        return self._total_bpd(lambda row: row.neg_elbo_bpd)

    @property
    def kl_bpd(self) -> float:
        return self._total_bpd(lambda row: row.kl_bpd)

    @property
    def information_bpd(self) -> float:
        return self._total_bpd(lambda row: row.trip.information_bpd)

    @property
    def gap_pct(self) -> float:
        """100 · (achieved / −ELBO − 1), over all photos."""
        return 100.0 * (self.achieved_bpd / self.neg_elbo_bpd - 1.0)

    @property
    def baselines_bpd(self) -> dict[str, float]:
        """Each classic codec's rate over all photos."""
        return {
            name: self._total_bpd(lambda row, n=name: row.baselines_bpd[n]) for name in BASELINES
        }

    @property
    def encode_seconds_per_image(self) -> dict[str, float]:
        """``mean`` and ``max`` seconds to encode one photo."""
        return _mean_max([row.trip.encode_seconds for row in self.rows])

    @property
    def decode_seconds_per_image(self) -> dict[str, float | None]:
        """``mean`` and ``max`` seconds to decode one photo (``None``: none decoded)."""
        seconds = [row.trip.decode_seconds for row in self.rows]
        return _mean_max([s for s in seconds if s is not None])

    @property
    def failure(self) -> str | None:
        """Why photos did not come back, each named, or ``None``."""
        failures = [row.failure for row in self.rows if row.failure]
        return "; ".join(failures) if failures else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of ``bbcodec bench --json`` on photos."""
        return _finite({
            "model": self.model, "data": self.data, "mode": "photos, one file each",
            "n_images": self.n_images, "total_dims": self.total_dims,
            "neg_elbo_bpd": self.neg_elbo_bpd, "kl_bpd": self.kl_bpd,
            "achieved_bpd": self.achieved_bpd, "information_bpd": self.information_bpd,
            "gap_pct": self.gap_pct, "baselines": self.baselines_bpd,
            "encode_seconds_per_image": self.encode_seconds_per_image,
            "decode_seconds_per_image": self.decode_seconds_per_image,
            "roundtrip_ok": self.failure is None,
            **self._run_dict(),
            "images": [row.to_dict() for row in self.rows],
        })  # fmt: skip


def _mean_max(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"mean": None, "max": None}
    return {"mean": float(np.mean(seconds)), "max": float(np.max(seconds))}


def _finite(obj):
    """Replaces NaN and infinities (not JSON) by ``None``, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# ----- the benches -----------------------------------------------------------------------


def _header_name(model: str) -> str | None:
    """``model`` if it is a registered name (the file's header names it), else ``None``."""
    return model if model in {info.name for info in list_models()} else None


@dataclass(frozen=True)
class BenchOptions:
    """How a bench codes and reports.

    Attributes:
        chunk_images: images per chunk of a dataset (``None``: `bbcodec.plan.plan_coding`
            chooses); photos are each one chunk of their own file.
        workers: worker processes wanted (``None``: `bbcodec.plan.default_workers`, one per
            photo and core for photos).
        max_batch: the largest batch of a dataset (``None``: the codec's default); photos
            are coded with the default.
        seed: the coding seed, also the −ELBO's (for photos: each photo's).
        device: torch device.
        progress: tqdm bars.
        max_pixels: the largest image the data may hold (`bbcodec.plan.DEFAULT_MAX_PIXELS`).
    """

    chunk_images: int | None = None
    workers: int | None = None
    max_batch: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


def bench_dataset(
    model,
    images: np.ndarray,
    model_name: str,
    data_name: str,
    split: str = "test",
    options: BenchOptions = BenchOptions(),
) -> DatasetBench:
    """Benchmark images of the model's size, all in one file.

    Args:
        model: the `LatentVariableModel`.
        images: (N, H, W[, 3]) uint8 of the model's shape and kind.
        model_name: the model as given (a registered name is coded by name).
        data_name: the data as given; split: its split (both labels only).
        options: how to code and report.

    Raises:
        DataError: images the model does not code.
    """
    check_images(model.config, images, f"{data_name} [{split}]")
    n, device = len(images), options.device
    plan = plan_coding(
        [(images.shape[1:], n)], model.config.image_shape, options.chunk_images, options.workers,
        device, torch.get_num_threads(),
    )  # fmt: skip
    overrides = {"max_batch": options.max_batch} if options.max_batch is not None else {}
    settings = CodingSettings(
        chunk_images=plan.chunk_images, seed=options.seed, device=device,
        torch_threads=plan.torch_threads, **overrides,
    )  # fmt: skip
    progress = options.progress
    trip = round_trip(images, model, _header_name(model_name), settings, plan.workers, progress)
    elbo = evaluate(
        model, images, seed=options.seed, device=device, progress=progress,
        model_name=model_name, data_name=data_name, split=split,
    )  # fmt: skip
    baselines = run_baselines(images, BASELINES, progress=progress)
    dims = int(np.prod(images.shape[1:]))
    return DatasetBench(
        model_name, data_name, settings, plan.workers, split, n, dims, trip, baselines, elbo
    )


def bench_photos(
    model,
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    model_name: str,
    data_name: str,
    options: BenchOptions = BenchOptions(),
) -> PhotoBench:
    """Benchmark photos, each (H, W[, 3]) uint8 photo in its own file.

    With several workers (as `bbcodec.plan.plan_coding` grants them), each worker process
    takes a photo at a time, with one torch thread, and times it itself.

    Args:
        model: the `LatentVariableModel` (a VLAE codes any size, tiled).
        images: the photos; labels: their names, one each.
        model_name: the model as given (a registered name is coded by name).
        data_name: the data as given (a label).
        options: how to code and report (``chunk_images`` and ``max_batch`` do not apply).
    """
    plan = plan_coding(
        [(image.shape, 1) for image in images], model.config.image_shape, None,
        options.workers, options.device, torch.get_num_threads(),
    )  # fmt: skip
    settings = CodingSettings(
        seed=options.seed, device=options.device, torch_threads=plan.torch_threads
    )
    name = _header_name(model_name)
    tasks = ((label, image, name) for label, image in zip(labels, images, strict=True))
    results = code_chunks(model, settings, plan.workers, _bench_photo, tasks)
    with contextlib.closing(results):
        bar = tqdm(results, desc="photos", total=len(images), disable=not options.progress)
        rows = tuple(bar)
    return PhotoBench(model_name, data_name, settings, plan.workers, rows)


def _bench_photo(
    codec: ImageCodec, label: str, image: np.ndarray, model_name: str | None, progress
) -> PhotoRow:
    """One photo (a `bbcodec.codec.code_chunks` job, in a worker or in-process): its round
    trip, tiled −ELBO and baselines."""
    model, settings = codec.adapter.model, codec.settings
    trip = round_trip(image[None], model, model_name, settings)
    torch.manual_seed(settings.seed)  # the same z-samples however photos are spread
    with torch.inference_mode():
        recon_nats, kl_nats = tiled_elbo_terms(model, image)
    baselines = run_baselines(image[None], BASELINES, progress=False)
    bpd = {codec_name: r.bpd for codec_name, r in baselines.items()}
    return PhotoRow(label, tuple(image.shape), trip, recon_nats, kl_nats, bpd)


def _photo_labels(data: Path, count: int) -> list[str]:
    """Names of the ``count`` photos read from ``data``: the PNG files of a folder, in
    order, else the file (``file[i]`` when it holds several)."""
    if data.is_dir():
        labels = sorted(
            str(f) for f in data.iterdir() if f.suffix.lower() == ".png" and f.is_file()
        )
    else:
        labels = [str(data)] if count == 1 else [f"{data}[{i}]" for i in range(count)]
    return labels[:count]


def run_bench(
    model: str, data: str, split: str = "test", n: int | None = None,
    options: BenchOptions = BenchOptions(),
) -> DatasetBench | PhotoBench:  # fmt: skip
    """Load a model and images and benchmark them: a dataset (`bench_dataset`) when they
    are one run of the model's size, else photos (`bench_photos`).

    Args:
        model: a registered name, a ``.safetensors`` file or a run folder.
        data: a dataset file or folder, or PNG photos (`bbcodec.models.data`).
        split: the dataset split.
        n: the first ``n`` images only (``None``: all).
        options: how to code and report.
    """
    loaded = load_model(model, device=options.device)
    runs = load_image_runs(data, split, max_pixels=options.max_pixels)
    if len(runs) == 1 and runs[0].shape[1:3] == tuple(loaded.config.image_hw):
        return bench_dataset(loaded, runs[0][:n], str(model), str(data), split, options)
    images = [image for run in runs for image in run][:n]
    labels = _photo_labels(Path(data), len(images))
    return bench_photos(loaded, images, labels, str(model), str(data), options)
