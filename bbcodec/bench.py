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
- **A dataset, one file per image** (`bench_per_file`, ``bbcodec bench --per-file``): every
  image coded alone, with the settings ``bbcodec compress IMAGE.png`` uses for one image
  (in this process by default, or spread over worker processes like photos); next to them
  the same −ELBO and baselines as for the one-file dataset (the baselines' files are one
  per image either way). The result is a `PerFileBench`, its sizes in bytes per file.

`run_bench` loads a model and a data path and runs the one that fits.

Rates are bits per sub-pixel (``_bpd``). ``achieved_bpd`` counts every byte of the ``.bbc``
file (header, chunk trailers, framing, and seeds where chunks are seeded); ``net_bpd`` is
the stack growth (over the seeds, if any); ``information_bpd`` the information content of
the symbols coded (net of bits back) under the coder's fixed-point probabilities; ``gap_pct`` = 100 · (achieved / −ELBO − 1).
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
from bbcodec.models.data import image_files, load_image_runs
from bbcodec.models.evaluate import EvalResult, check_images, evaluate
from bbcodec.models.tiles import tiled_elbo_terms
from bbcodec.plan import DEFAULT_MAX_PIXELS, default_workers, plan_coding
from bbcodec.zoo import list_models, load_model, registered_tile_latents

__all__ = [
    "BenchOptions",
    "DatasetBench",
    "PerFileBench",
    "PhotoBench",
    "PhotoRow",
    "RoundTrip",
    "bench_dataset",
    "bench_per_file",
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
    """(images coded so far, bits on the stacks so far) after each image coded directly
    and each batch of a compression of images of the model's size (a dataset).

    Bits count the seeds of every chunk begun so far (chunk trailers and file framing
    excluded: those are only in ``report.file_bits``).

    Args:
        report: a `bbcodec.codec.CompressReport` (each chunk's ``direct_items``, coded
            first, one image each, then its ``batch_sizes``, and its ``stack_bits`` after
            each of those).
    """
    images, bits = [], []
    done = finished_bits = 0
    for chunk in report.chunks:
        steps = (1,) * chunk.direct_items + tuple(chunk.batch_sizes)
        for size, stack_bits in zip(steps, chunk.stack_bits, strict=True):
            done += size
            images.append(done)
            bits.append(finished_bits + stack_bits)
        finished_bits += chunk.stack_bits[-1] if chunk.stack_bits else 0
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


@dataclass(frozen=True)
class PerFileBench(_Bench):
    """A dataset benchmarked one file per image, as ``bbcodec compress IMAGE.png`` codes
    one image: each file's size next to the −ELBO and the baselines' files of the images.

    Sizes are bytes per file (every byte: header, seed, framing), averaged over the images.

    Attributes:
        split: the dataset split.
        dims_per_image: sub-pixels per image.
        trips: each image's round trip, in order.
        baselines: each classic codec's result, in `BASELINES` order (its ``image_bits``:
            one file per image, in the same order).
        elbo: the model's −ELBO on the images (one z-sample per image).
    """

    split: str
    dims_per_image: int
    trips: tuple[RoundTrip, ...]
    baselines: Mapping[str, BaselineResult]
    elbo: EvalResult

    @property
    def n_images(self) -> int:
        return len(self.trips)

    @property
    def file_bytes(self) -> dict[str, list[int]]:
        """Each image's file size in bytes: ``bbcodec``, then each baseline."""
        sizes = {"bbcodec": [trip.file_bytes for trip in self.trips]}
        for name, result in self.baselines.items():
            sizes[name] = [int(bits) // 8 for bits in result.image_bits]
        return sizes

    @property
    def mean_file_bytes(self) -> dict[str, float]:
        """Mean bytes per file: ``bbcodec``, then each baseline."""
        return {name: float(np.mean(sizes)) for name, sizes in self.file_bytes.items()}

    @property
    def neg_elbo_bytes(self) -> float:
        """The mean −ELBO per image, in bytes."""
        return self.elbo.neg_elbo_nats / (8 * math.log(2))

    @property
    def bbcodec_ratio(self) -> dict[str, float]:
        """bbcodec's mean bytes per file over the −ELBO's (``neg_elbo``) and each baseline's."""
        means = self.mean_file_bytes
        others = {"neg_elbo": self.neg_elbo_bytes, **{n: means[n] for n in self.baselines}}
        return {name: means["bbcodec"] / size for name, size in others.items()}

    @property
    def bbcodec_smaller(self) -> dict[str, int]:
        """Images whose bbcodec file is smaller than each baseline's file."""
        sizes = self.file_bytes
        ours = np.array(sizes["bbcodec"])
        return {name: int((ours < np.array(sizes[name])).sum()) for name in self.baselines}

    @property
    def achieved_bpd(self) -> float:
        """Every byte of every file, per sub-pixel."""
        return 8 * self.mean_file_bytes["bbcodec"] / self.dims_per_image

    @property
    def gap_pct(self) -> float:
        """100 · (achieved / −ELBO − 1)."""
        return 100.0 * (self.achieved_bpd / self.elbo.neg_elbo_bpd - 1.0)

    @property
    def encode_seconds_per_file(self) -> dict[str, float | None]:
        """``mean`` and ``max`` seconds to encode one file (model loading included, as in
        ``bbcodec compress``; process start-up not)."""
        return _mean_max([trip.encode_seconds for trip in self.trips])

    @property
    def decode_seconds_per_file(self) -> dict[str, float | None]:
        """``mean`` and ``max`` seconds to decode one file (``None``: none decoded)."""
        seconds = [trip.decode_seconds for trip in self.trips]
        return _mean_max([s for s in seconds if s is not None])

    @property
    def failure(self) -> str | None:
        """Why images did not come back, each numbered, or ``None``."""
        failures = [f"image {i}: {t.failure}" for i, t in enumerate(self.trips) if not t.ok]
        return "; ".join(failures) if failures else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of ``bbcodec bench --per-file --json``."""
        elbo = self.elbo
        return _finite({
            "model": self.model, "data": self.data, "split": self.split,
            "mode": "one file per image", "n_images": self.n_images,
            "dims_per_image": self.dims_per_image, "family": elbo.family,
            "n_params": elbo.n_params, "neg_elbo_bpd": elbo.neg_elbo_bpd,
            "achieved_bpd": self.achieved_bpd, "gap_pct": self.gap_pct,
            "neg_elbo_bytes": self.neg_elbo_bytes, "mean_file_bytes": self.mean_file_bytes,
            "bbcodec_ratio": self.bbcodec_ratio, "bbcodec_smaller": self.bbcodec_smaller,
            "baselines": {name: r.bpd for name, r in self.baselines.items()},
            "baselines_detail": {name: r.to_dict() for name, r in self.baselines.items()},
            "encode_seconds_per_file": self.encode_seconds_per_file,
            "decode_seconds_per_file": self.decode_seconds_per_file,
            "roundtrip_ok": self.failure is None,
            **self._run_dict(),
            "file_bytes": self.file_bytes,
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
        workers: worker processes wanted (``None``: `bbcodec.plan.default_workers` for a
            dataset in one file, one per photo and core for photos, 1 for ``per_file``).
        max_batch: the largest batch of a dataset (``None``: the codec's default); photos
            are coded with the default.
        seed: the coding seed, also the −ELBO's (for photos: each photo's).
        device: torch device.
        progress: tqdm bars.
        max_pixels: the largest image the data may hold (`bbcodec.plan.DEFAULT_MAX_PIXELS`).
        per_file: a dataset is coded one file per image (`bench_per_file`), not in one
            file; photos are one file each either way.
        pixel_bins: `CodingSettings.pixel_bins`.
        tile_latents: `CodingSettings.tile_latents` of photos (``None``: the model's
            registered choice, as ``bbcodec compress`` codes them).
    """

    chunk_images: int | None = None
    workers: int | None = None
    max_batch: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    per_file: bool = False
    pixel_bins: int | None = None
    tile_latents: str | None = None


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
        device, torch.get_num_threads(), pixel_bins=options.pixel_bins,
        eight_bit_exact=model.config.kind != "binary",
    )  # fmt: skip
    overrides = {"max_batch": options.max_batch} if options.max_batch is not None else {}
    settings = CodingSettings(
        chunk_images=plan.chunk_images, seed=options.seed, device=device,
        torch_threads=plan.torch_threads, pixel_bins=plan.pixel_bins, **overrides,
    )  # fmt: skip
    trip = round_trip(
        images, model, _header_name(model_name), settings, plan.workers, options.progress
    )
    elbo, baselines = _references(model, images, model_name, data_name, split, options)
    dims = int(np.prod(images.shape[1:]))
    return DatasetBench(
        model_name, data_name, settings, plan.workers, split, n, dims, trip, baselines, elbo
    )


def bench_per_file(
    model,
    images: np.ndarray,
    model_name: str,
    data_name: str,
    split: str = "test",
    options: BenchOptions = BenchOptions(),
) -> PerFileBench:
    """Benchmark images of the model's size, each alone in its own file.

    Each image is coded as ``bbcodec compress IMAGE.png`` codes it (`round_trip` of a
    (1, H, W[, 3]) array with the default settings, the options' seed and device): by
    default in this process, with its torch threads, as ``compress`` does. With
    ``options.workers`` > 1 the files are spread over worker processes as photos are
    (`_each_its_own_file`), each coded with one torch thread: the files of ``bbcodec
    compress --threads 1`` (a file records a thread count other than 1, in a few bytes).

    Args:
        model: the `LatentVariableModel`.
        images: (N, H, W[, 3]) uint8 of the model's shape and kind.
        model_name: the model as given (a registered name is coded by name).
        data_name: the data as given; split: its split (both labels only).
        options: how to code and report (``chunk_images`` and ``max_batch`` do not apply).

    Raises:
        DataError: images the model does not code.
    """
    check_images(model.config, images, f"{data_name} [{split}]")
    name = _header_name(model_name)
    tasks = ((image, name) for image in images)
    workers = options.workers or 1  # as `bbcodec compress` codes one image: in-process
    settings, workers, trips = _each_its_own_file(
        model, model_name, images, _round_trip_alone, tasks, workers, options
    )
    elbo, baselines = _references(model, images, model_name, data_name, split, options)
    dims = int(np.prod(images.shape[1:]))
    return PerFileBench(
        model_name, data_name, settings, workers, split, dims, trips, baselines, elbo
    )


def _references(
    model, images: np.ndarray, model_name: str, data_name: str, split: str,
    options: BenchOptions,
) -> tuple[EvalResult, dict[str, BaselineResult]]:  # fmt: skip
    """What a dataset's files are measured against: the model's −ELBO (one z-sample per
    image, seeded by the coding seed) and the baselines (one file per image)."""
    elbo = evaluate(
        model, images, seed=options.seed, device=options.device, progress=options.progress,
        model_name=model_name, data_name=data_name, split=split,
    )  # fmt: skip
    return elbo, run_baselines(images, BASELINES, progress=options.progress)


def _each_its_own_file(
    model, model_name: str, images: Sequence[np.ndarray], job: Callable, tasks, workers: int,
    options: BenchOptions,
) -> tuple[CodingSettings, int, tuple]:  # fmt: skip
    """``job(codec, *task, progress)`` for each image's task, every image its own file.

    With several ``workers`` (capped by `bbcodec.plan.plan_coding`) each worker process
    takes an image at a time, with one torch thread, and times it itself; with one, this
    process codes with its torch threads. Returns the settings, the workers and the jobs'
    results in order.
    """
    plan = plan_coding(
        [(image.shape, 1) for image in images], model.config.image_shape, 1, workers,
        options.device, torch.get_num_threads(), pixel_bins=options.pixel_bins,
        eight_bit_exact=model.config.kind != "binary", tile_latents=options.tile_latents,
        model_tile_latents=registered_tile_latents(model_name),
    )  # fmt: skip
    settings = CodingSettings(
        seed=options.seed, device=options.device, torch_threads=plan.torch_threads,
        pixel_bins=plan.pixel_bins, tile_latents=plan.tile_latents,
    )  # fmt: skip
    results = code_chunks(model, settings, plan.workers, job, tasks)
    with contextlib.closing(results):
        bar = tqdm(results, desc="files", total=len(images), disable=not options.progress)
        return settings, plan.workers, tuple(bar)


def _round_trip_alone(
    codec: ImageCodec, image: np.ndarray, model_name: str | None, progress
) -> RoundTrip:
    """One image's own file (a `bbcodec.codec.code_chunks` job): its `round_trip`."""
    return round_trip(image[None], codec.model, model_name, codec.settings)


def bench_photos(
    model,
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    model_name: str,
    data_name: str,
    options: BenchOptions = BenchOptions(),
) -> PhotoBench:
    """Benchmark photos, each (H, W[, 3]) uint8 photo in its own file.

    With several workers, each worker process takes a photo at a time, with one torch
    thread, and times it itself (`_each_its_own_file`).

    Args:
        model: the `LatentVariableModel` (a VLAE codes any size, tiled).
        images: the photos; labels: their names, one each.
        model_name: the model as given (a registered name is coded by name).
        data_name: the data as given (a label).
        options: how to code and report (``chunk_images`` and ``max_batch`` do not apply).
    """
    name = _header_name(model_name)
    tasks = ((label, image, name) for label, image in zip(labels, images, strict=True))
    workers = options.workers or default_workers(len(images), len(images))  # one per core
    settings, workers, rows = _each_its_own_file(
        model, model_name, images, _bench_photo, tasks, workers, options
    )
    return PhotoBench(model_name, data_name, settings, workers, rows)


def _bench_photo(
    codec: ImageCodec, label: str, image: np.ndarray, model_name: str | None, progress
) -> PhotoRow:
    """One photo (a `bbcodec.codec.code_chunks` job, in a worker or in-process): its round
    trip, tiled −ELBO and baselines."""
    model, settings = codec.model, codec.settings
    trip = _round_trip_alone(codec, image, model_name, progress)
    torch.manual_seed(settings.seed)  # the same z-samples however photos are spread
    with torch.inference_mode():
        recon_nats, kl_nats = tiled_elbo_terms(model, image)
    baselines = run_baselines(image[None], BASELINES, progress=False)
    bpd = {codec_name: r.bpd for codec_name, r in baselines.items()}
    return PhotoRow(label, tuple(image.shape), trip, recon_nats, kl_nats, bpd)


def _photo_labels(data: Path, count: int) -> list[str]:
    """Names of the ``count`` photos read from ``data``: the image files of a folder
    (PNG, TIFF, PPM/PGM, JPEG-XL, JPEG), in the order they are read, else the file
    (``file[i]`` when it holds several)."""
    if data.is_dir():
        labels = [str(f) for f in image_files(data)]
    else:
        labels = [str(data)] if count == 1 else [f"{data}[{i}]" for i in range(count)]
    return labels[:count]


def run_bench(
    model: str, data: str, split: str = "test", n: int | None = None,
    options: BenchOptions = BenchOptions(),
) -> DatasetBench | PerFileBench | PhotoBench:  # fmt: skip
    """Load a model and images and benchmark them: a dataset when they are one run of the
    model's size (`bench_dataset`, or `bench_per_file` with ``options.per_file``), else
    photos (`bench_photos`, one file each whether ``per_file`` or not).

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
        bench = bench_per_file if options.per_file else bench_dataset
        return bench(loaded, runs[0][:n], str(model), str(data), split, options)
    images = [image for run in runs for image in run][:n]
    labels = _photo_labels(Path(data), len(images))
    return bench_photos(loaded, images, labels, str(model), str(data), options)
