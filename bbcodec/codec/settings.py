"""`CodingSettings`: everything besides the model that encoder and decoder must share."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable

from bbcodec.coding import LatentGrid
from bbcodec.coding.exact_gaussian import INNER_BINS_PER_SIDE as EXACT_MIN_HALF_GRID
from bbcodec.coding.fixed_point import FRAC_BITS as EXACT_FRAC_BITS
from bbcodec.coding.logistic import PIXEL_BINS
from bbcodec.errors import DecodeError, UsageError
from bbcodec.plan import DEFAULT_MAX_BATCH, MAX_BAND_ROWS, MAX_BATCH_LIMIT, TILE_LATENTS

#: The most torch threads a settings object (or a file) may ask for.
MAX_TORCH_THREADS = 1024
#: ``grid_step_log2`` range: grid values stay exact float32 numbers.
GRID_STEP_LOG2_RANGE = (-30, 30)
#: Widest posterior window, in standard deviations (wider is the whole grid anyway).
MAX_WINDOW_STDS = 1024.0
#: Where a chunk's first pop gets its bits (see `CodingSettings.initial_bits`).
INITIAL_BITS = ("direct", "seed")
#: How the numbers that set a probability are computed (``arithmetic``).
ARITHMETICS = ("exact", "float")
#: ``direct_latent_stds`` range.
MIN_DIRECT_STDS, MAX_DIRECT_STDS = 0.125, 16.0
#: What files of format version 2 (which do not record these settings) were coded with.
_FORMAT_2_SETTINGS = {
    "posterior_window_stds": None, "initial_bits": "seed", "arithmetic": "float",
}  # fmt: skip
#: What a file that does not record ``band_rows`` was coded with: no image cut in bands.
_UNRECORDED_BAND_ROWS = 0
_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")


@dataclasses.dataclass(frozen=True)
class CodingSettings:
    """Everything besides the model that encoder and decoder must share (stored in the file).

    Attributes:
        grid_step_log2: the latent grid step is Δ = 2**grid_step_log2 (a power of two, so
            grid values are exact in float32).
        grid_bound: latents are coded on [−bound, bound]: wide enough for the widest
            Gaussian a model can output (log-std ≤ 2, std ≤ 7.4) around means of a few units.
        max_batch: the largest number of images coded side by side.
        chunk_images: images per independently decodable chunk; ``None`` (the default)
            lets `bbcodec.plan.plan_coding` choose (up to 4096, split evenly over the
            workers). A file always records the number used.
        seed: generator seed of the initial bits.
        device: torch device the model ran on (decode on the same kind of device).
        torch_threads: intra-op threads the model ran with (decode uses the same), at
            most `MAX_TORCH_THREADS`.
        posterior_window_stds: the posterior Q(z̄|x) is coded on a window of the grid
            around its mean, this many standard deviations wide on each side
            (`bbcodec.coding.WindowedQuantizedGaussian`): a latent popped for the bits
            back then never lands far out on the grid, where it would cost many bits.
            ``None``: the whole grid, as in files written before this setting. On 1,000
            test images the coded information was, against the −ELBO: vlae-bmnist +2.31 %
            (whole grid), +0.02 % (8), −0.07 % (4); delta-vae-bmnist +4.96 %, +0.11 %,
            −0.04 %; vlae-mnist +0.54 %, −0.04 %, +0.01 %; vlae-cifar10 −0.055 % for all
            three (300 images).
        initial_bits: where a chunk's first posterior pop gets its bits. ``"direct"``
            (the default): the chunk starts from an empty stack and its first image (the
            first tile group of a tiled image) is coded without bits back, its latent chosen
            by the encoder and coded with the prior (``direct_latent_stds``); further
            images are coded that way too until the stack can pay for a posterior pop.
            ``"seed"``: the stack starts from seed words (``seed``), as in files of format
            version 2; the seed is part of the stream.
        direct_latent_stds: a directly coded latent is the prior's conditional mean plus
            an integer number of steps of this many prior standard deviations, dimension
            by dimension (the step nearest the posterior mean); the step number is coded
            with the mass of its bin under N(0, 1). Measured on 100 test images (float
            estimate of pixel + latent bits, `benchmarks/direct_start_options.py`), for
            vlae-bmnist, delta-vae-bmnist, vlae-mnist, vlae-cifar10 (−ELBO 135, 138, 823,
            11,432): 3.0 costs 146, 155, 849, 11,424; 2.0: 150, 164, 842, 11,446; 1.0: 170,
            204, 852, 11,499; the posterior mean on a fixed grid, best step per model (4, 2,
            2, 4): 147, 157, 832, 11,550; the prior's means (no latent bits): 176, 196, 916,
            11,411. 3.0 is within 18 bits of the best option for every model.
        arithmetic: ``"exact"`` (the default): every number that sets a probability comes
            from the model's integer twin (`bbcodec.models.exact.IntegerModel`) and exact
            tables, so the file decodes on any machine, device and thread count; the
            posterior window is then the exact coder's own (`bbcodec.coding.ExactGaussian`:
            ±4 to ±8 σ) and ``posterior_window_stds`` is unused. ``"float"``: the float
            model and constriction's Gaussian, as in files of format version 2 — a file
            decodes only where PyTorch and the C library compute the same floats (in
            practice: the machine that wrote it, same device and thread count).
        band_rows: an image of another size than the model's that is taller than this is
            cut into horizontal bands of ``band_rows`` rows (the last one shorter), each
            coded as an image of its own, in a chunk of its own (`bbcodec.plan.image_bands`),
            so workers code one photo side by side and a coder holds one band's state, not
            the image's. A multiple of the model's tile height (checked by
            `bbcodec.plan.band_height` when coding starts); 0: never cut; ``None`` (the
            default): the plan's, an even number of bands of about
            `bbcodec.plan.DEFAULT_BAND_ROWS` (256) rows on the tile grid. A file records
            the height used if it cut an image; a file without it cut none (``band_rows``
            0 when read).
        pixel_bins: how an 8-bit sub-pixel is coded on the exact path: 1 as one symbol of
            256 (its table needs the mixture's CDF at 255 bin edges), 16 in two stages —
            its bin of 16 values, then the value in the bin — whose tables need the CDF at
            15 and 17 edges, so a decoder builds about 7 times fewer numbers (exact
            arithmetic only). ``None`` (the default): `bbcodec.plan.plan_coding` chooses
            when a file is written (16 for a file with photos, 1 else); a codec used alone
            takes 1. A file records it if it is not 1.
        tile_latents: how the latents of an image coded tiled (another size than the
            model's) are coded. ``"bits-back"``: each tile's latent with bits back, as in
            files that do not record this setting. ``"prior-mean"``: none is coded; every
            tile's latent is the prior's conditional mean, dimension by dimension, on the
            grid, and only the pixels are coded (`bbcodec.codec.tiled`): for a model whose
            decoder ignores its latent this saves the KL of every tile (0.3 % of a photo
            for the shipped photo models) and the latents' decoding time. ``None`` (the
            default): `bbcodec.plan.plan_coding` chooses when a file is written (the
            model's registered choice, `bbcodec.zoo.ModelInfo.tile_latents`); a codec used
            alone takes ``"bits-back"``. Images of the model's own size always code their
            latents with bits back. A file records it if it is not ``"bits-back"``.

    Raises:
        UsageError: a value of the wrong type or out of range (one message per field).
            Whether a CUDA device exists is checked where the codec is built
            (`check_device`), not here: a file made on a GPU still reads anywhere.
    """

    grid_step_log2: int = -8
    grid_bound: float = 32.0
    max_batch: int = DEFAULT_MAX_BATCH
    chunk_images: int | None = None
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1
    posterior_window_stds: float | None = 4.0
    initial_bits: str = "direct"
    direct_latent_stds: float = 3.0
    arithmetic: str = "exact"
    band_rows: int | None = None
    pixel_bins: int | None = None
    tile_latents: str | None = None

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None, none_ok: bool = False):
            value = getattr(self, name)
            if value is None and none_ok:
                return
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{name} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise UsageError(f"{name} must be {bounds}, got {value}")

        integer("grid_step_log2", *GRID_STEP_LOG2_RANGE)
        if self.arithmetic == "exact" and self.grid_step_log2 < -EXACT_FRAC_BITS:
            raise UsageError(
                f"grid_step_log2 must be at least −{EXACT_FRAC_BITS} with exact arithmetic "
                f"(latents are {EXACT_FRAC_BITS}-bit fixed point), got {self.grid_step_log2}"
            )
        bound = self.grid_bound
        if (
            not isinstance(bound, (int, float))
            or isinstance(bound, bool)
            or not math.isfinite(bound)
            or bound <= 0
        ):
            raise UsageError(f"grid_bound must be a positive number, got {bound!r}")
        try:
            grid = self.grid  # the grid's own checks (number of grid points)
        except ValueError as exc:
            raise UsageError(f"latent grid: {exc}") from None
        if self.arithmetic == "exact" and grid.n_half < EXACT_MIN_HALF_GRID:
            raise UsageError(
                f"the latent grid needs at least {EXACT_MIN_HALF_GRID} points either side of 0 "
                f"with exact arithmetic (grid_bound / 2**grid_step_log2), got {grid.n_half}"
            )
        integer("max_batch", 1, MAX_BATCH_LIMIT)
        integer("chunk_images", 1, none_ok=True)
        integer("seed", 0, 2**63 - 1)  # a format-3 header stores it as a signed 64-bit int
        integer("torch_threads", 1, MAX_TORCH_THREADS)
        integer("band_rows", 0, MAX_BAND_ROWS, none_ok=True)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise UsageError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        window = self.posterior_window_stds
        if window is not None and (
            not isinstance(window, (int, float))
            or isinstance(window, bool)
            or not 1.0 <= window <= MAX_WINDOW_STDS
        ):
            raise UsageError(
                f"posterior_window_stds must be None or a number from 1 to {MAX_WINDOW_STDS}, "
                f"got {window!r}"
            )

        if self.initial_bits not in INITIAL_BITS:
            raise UsageError(
                f"initial_bits must be one of {', '.join(INITIAL_BITS)}, got {self.initial_bits!r}"
            )
        if self.arithmetic not in ARITHMETICS:
            raise UsageError(
                f"arithmetic must be one of {', '.join(ARITHMETICS)}, got {self.arithmetic!r}"
            )
        if self.pixel_bins is not None and (
            self.pixel_bins not in PIXEL_BINS or isinstance(self.pixel_bins, bool)
        ):
            raise UsageError(
                f"pixel_bins must be one of {', '.join(map(str, PIXEL_BINS))}, "
                f"got {self.pixel_bins!r}"
            )
        if self.pixel_bins not in (None, 1) and self.arithmetic != "exact":
            raise UsageError("pixel_bins other than 1 needs exact arithmetic")
        if self.tile_latents is not None and self.tile_latents not in TILE_LATENTS:
            raise UsageError(
                f"tile_latents must be one of {', '.join(TILE_LATENTS)}, got {self.tile_latents!r}"
            )
        stds = self.direct_latent_stds
        if (
            not isinstance(stds, (int, float))
            or isinstance(stds, bool)
            or not MIN_DIRECT_STDS <= stds <= MAX_DIRECT_STDS
        ):
            raise UsageError(
                f"direct_latent_stds must be a number from {MIN_DIRECT_STDS} to "
                f"{MAX_DIRECT_STDS}, got {stds!r}"
            )

    def check_device(self) -> None:
        """Raise `UsageError` unless this machine has ``device`` (imports torch)."""
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UsageError(f"device {self.device}: CUDA is not available on this machine")
            index, count = int(self.device.partition(":")[2] or 0), torch.cuda.device_count()
            if index >= count:
                raise UsageError(f"device {self.device}: this machine has {count} CUDA devices")

    @property
    def grid(self) -> LatentGrid:
        step = 2.0**self.grid_step_log2
        return LatentGrid(step, round(self.grid_bound / step))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def file_dict(self, n_images: int, heights: Iterable[int] = ()) -> dict:
        """What a file records: the settings that differ from the defaults; ``chunk_images``
        only if the ``n_images`` images take more than one chunk; ``band_rows`` only if it
        cuts one of the images, of these ``heights``, into bands (resolve ``None`` first:
        `bbcodec.plan.band_height`)."""
        defaults = CodingSettings()
        values = {
            name: value
            for name, value in self.to_dict().items()
            if value != getattr(defaults, name)
            and name not in ("band_rows", "pixel_bins", "tile_latents")
        }
        if self.pixel_bins not in (None, 1):
            values["pixel_bins"] = self.pixel_bins
        if self.tile_latents not in (None, "bits-back"):
            values["tile_latents"] = self.tile_latents
        if self.chunk_images is not None and self.chunk_images >= n_images:
            values.pop("chunk_images", None)
        if self.band_rows and any(height > self.band_rows for height in heights):
            values["band_rows"] = self.band_rows
        return values

    @classmethod
    def from_dict(cls, values: dict, format_version: int, n_images: int) -> CodingSettings:
        """The settings a file records, validated (`DecodeError` if they cannot be).

        Args:
            values: the file's settings (format 3: those that differ from the defaults, see
                `file_dict`; format 2: all of them but the ones added since).
            format_version: the file's format version.
            n_images: the file's image count (a file without ``chunk_images`` is one chunk).

        A file without ``band_rows`` cut no image into bands: ``band_rows`` is then 0; one
        without ``pixel_bins`` codes a sub-pixel as one symbol: ``pixel_bins`` is then 1;
        one without ``tile_latents`` coded every latent with bits back.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise DecodeError(
                f"unknown coding settings {sorted(unknown)}: file from a newer bbcodec?"
            )
        if format_version == 2:
            values = {**_FORMAT_2_SETTINGS, **values}
            if "chunk_images" not in values:
                raise DecodeError("invalid coding settings in file: no chunk size")
        values = {
            "chunk_images": max(1, n_images), "band_rows": _UNRECORDED_BAND_ROWS,
            "pixel_bins": 1, "tile_latents": "bits-back", **values,
        }  # fmt: skip
        try:
            settings = cls(**values)  # UsageError (a ValueError) for values out of range
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"invalid coding settings in file: {exc}") from None
        if not isinstance(settings.chunk_images, int) or isinstance(settings.chunk_images, bool):
            raise DecodeError("invalid coding settings in file: no chunk size")
        return settings

    @classmethod
    def from_header(cls, header) -> CodingSettings:
        """The settings a `bbcodec.container.Header` records (see `from_dict`)."""
        return cls.from_dict(dict(header.settings), header.version, header.image_count)
