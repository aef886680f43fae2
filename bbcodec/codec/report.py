"""What coding cost: one chain of typed rates, chunk by chunk, then the file.

`bbcodec.coding.RateReport` (information, net, initial and total bits of one ANS message)
→ `ChunkRate` (that, for one chunk, with its batch schedule and per-image split)
→ `CompressReport` (a whole file: its chunks' rates and every byte of the file).
"""

from __future__ import annotations

from dataclasses import dataclass

from bbcodec.coding import RateReport


@dataclass(frozen=True)
class ChunkRate(RateReport):
    """Rate of one encoded chunk: a `RateReport` of its message (seed in ``initial_bits``;
    ``net_bits`` includes the trailer, ``information_bits`` does not) plus its layout.

    Attributes:
        batch_sizes: the bits-back batch schedule used (``(1,)`` for a tiled image).
        stack_bits: bits on the stack (seed included, trailer not) after each direct
            image and batch, in coding order: the cumulative cost as the start amortises.
        image_information_bits: each image's share of ``information_bits``
            (−log₂ P(x|z̄) − log₂ P(z̄) + log₂ Q(z̄|x) for the z̄ popped for it), in image
            order; ``None`` if the codecs' layout did not allow the split.
        direct_items: images coded without bits back, first (tile groups, for a tiled
            image).
        n_images: images in the chunk (1 for a band).
        band: which band of its image the chunk codes (0: whole images, or the first band;
            `bbcodec.plan.image_bands`).
    """

    batch_sizes: tuple[int, ...] = ()
    stack_bits: tuple[int, ...] = ()
    image_information_bits: tuple[float, ...] | None = None
    direct_items: int = 0
    n_images: int = 0
    band: int = 0


@dataclass(frozen=True)
class CompressReport:
    """What compressing a file cost, built from its chunks' rates.

    Attributes:
        n_images: images coded.
        n_dims: sub-pixels of all images together.
        file_bits: every bit of the output, header, seed and trailers included.
        chunks: each chunk's rate, in file order (an image cut into bands: one per band).
        tile_latents: how the images coded tiled coded their latents
            (`bbcodec.codec.CodingSettings.tile_latents`).
    """

    n_images: int
    n_dims: int
    file_bits: int
    chunks: tuple[ChunkRate, ...]
    tile_latents: str = "bits-back"

    @property
    def information_bits(self) -> float:
        """Information content of the coded symbols (net of bits back), all chunks."""
        return sum(chunk.information_bits for chunk in self.chunks)

    @property
    def net_bits(self) -> int:
        """Stack growth over the seeds, summed over chunks."""
        return sum(chunk.net_bits for chunk in self.chunks)

    @property
    def initial_bits(self) -> int:
        """Seed bits, summed over chunks."""
        return sum(chunk.initial_bits for chunk in self.chunks)

    @property
    def chunk_images(self) -> tuple[int, ...]:
        """Images in each chunk (1 for each band of an image cut into bands)."""
        return tuple(chunk.n_images for chunk in self.chunks)

    @property
    def chunk_batch_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Bits-back batch schedule of each chunk (after its direct images)."""
        return tuple(chunk.batch_sizes for chunk in self.chunks)

    @property
    def chunk_stack_bits(self) -> tuple[tuple[int, ...], ...]:
        """Bits on each chunk's stack (seed included) after each batch."""
        return tuple(chunk.stack_bits for chunk in self.chunks)

    @property
    def image_information_bits(self) -> tuple[float, ...] | None:
        """Each image's share of ``information_bits``, in image order (an image cut into
        bands: the sum over its bands); ``None`` if a chunk could not split its bits by
        image."""
        if any(chunk.image_information_bits is None for chunk in self.chunks):
            return None
        per_image: list[float] = []
        for chunk in self.chunks:
            if chunk.band:
                per_image[-1] += sum(chunk.image_information_bits)
            else:
                per_image.extend(chunk.image_information_bits)
        return tuple(per_image)

    @property
    def achieved_bpd(self) -> float:
        """File bits per sub-pixel: the rate a user gets."""
        return self.file_bits / self.n_dims
