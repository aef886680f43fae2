"""`CodingSettings`: everything besides the model that encoder and decoder must share."""

from __future__ import annotations

import dataclasses

from bbcodec.coding import LatentGrid
from bbcodec.errors import DecodeError
from bbcodec.plan import DEFAULT_MAX_BATCH, MAX_BATCH_LIMIT


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
        torch_threads: intra-op threads the model ran with (decode uses the same).
    """

    grid_step_log2: int = -8
    grid_bound: float = 32.0
    max_batch: int = DEFAULT_MAX_BATCH
    chunk_images: int | None = None
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1

    @property
    def grid(self) -> LatentGrid:
        step = 2.0**self.grid_step_log2
        return LatentGrid(step, round(self.grid_bound / step))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CodingSettings:
        """The settings a file records, validated (`DecodeError` if they cannot be)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise DecodeError(
                f"unknown coding settings {sorted(unknown)}: file from a newer bbcodec?"
            )
        try:
            settings = cls(**values)
            settings.grid  # noqa: B018 — validates the grid
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"invalid coding settings in file: {exc}") from None
        if not isinstance(settings.chunk_images, int) or isinstance(settings.chunk_images, bool):
            raise DecodeError("invalid coding settings in file: no chunk size")
        if not 1 <= settings.max_batch <= MAX_BATCH_LIMIT or not 1 <= settings.chunk_images:
            raise DecodeError("invalid coding settings in file: batch or chunk size out of range")
        return settings
