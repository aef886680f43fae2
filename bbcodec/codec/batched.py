"""Images of the model's shape: many to a chunk, coded in batches that grow with the stack.

For each batch of B images (`BitsBack` over the model's codecs, `bbcodec.codec.adapter`):
encoder — 1. pop z̄ with Q(z̄|x) (bits back), 2. push x with P(x|z̄) (pixels in reverse
raster order), 3. push z̄ with P(z̄); decoder — pop z̄ with P(z̄), pop x pixel by pixel,
push z̄ back with Q(z̄|x) (← bits-back step, restoring the stack exactly).

**Direct images.** A chunk that starts from an empty stack (``initial_bits="direct"``)
codes its first image without bits back (`DirectImage`), and the next ones too while the
stack cannot pay for a posterior pop: their bits are what the first bits-back pop eats.

**Batch schedule.** After the direct images the first batch is one image; each next batch
doubles, up to ``max_batch``, as long as the stack holds the bits its posterior pop needs —
a pop that would underflow is undone (`MessageUnderflowError`) and retried with half the
batch, so the batch grows with the bits already on the stack. The decoder gets the number
of direct images and the schedule from the chunk's trailer (`bbcodec.codec.chunks`) and
decodes the batches in reverse order, then the direct images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bbcodec.codec.adapter import ModelAdapter
from bbcodec.coding import BitsBack, Message, MessageUnderflowError

#: The most images (tile groups of a tiled image) a chunk codes directly.
MAX_DIRECT = 64


@dataclass(frozen=True)
class Coded:
    """How a layout coded a chunk: what its trailer records.

    Attributes:
        n_direct: items coded without bits back, first (images; tile groups if tiled).
        batches: sizes of the bits-back batches, in coding order.
        stack_bits: stack size in bits after each direct item and batch (encoder only).
    """

    n_direct: int
    batches: tuple[int, ...]
    stack_bits: tuple[int, ...] = ()


class DirectImage:
    """One image coded without bits back: the encoder picks its latent
    (`ModelAdapter.direct_walk` toward the posterior mean) and pushes the pixels with
    P(x|z̄), then the latent's step numbers (`ModelAdapter.direct_offsets`)."""

    def __init__(self, adapter: ModelAdapter):
        self.adapter = adapter

    def push(self, message: Message, images: np.ndarray) -> None:
        """Encode (1, H, W[, 3]) images."""
        a = self.adapter
        offsets, latents = a.direct_walk(toward=a.posterior(images).means.reshape(1, -1))
        a.likelihood(latents).push(message, images)
        a.direct_offsets(1).push(message, offsets)

    def pop(self, message: Message) -> np.ndarray:
        """Decode (1, H, W[, 3]) images."""
        a = self.adapter
        _, latents = a.direct_walk(offsets=a.direct_offsets(1).pop(message))
        return a.likelihood(latents).pop(message)


class BatchedLayout:
    """Codes a chunk of images of the model's shape (see the module docstring).

    Args:
        adapter: the model's `ModelAdapter`.
        max_batch: the largest batch.
    """

    codes_batches = True

    def __init__(self, adapter: ModelAdapter, max_batch: int):
        self.adapter = adapter
        self.max_batch = max_batch
        self.direct = DirectImage(adapter)
        self._codecs: dict[int, BitsBack] = {}

    def _bits_back(self, batch: int) -> BitsBack:
        if batch not in self._codecs:
            a = self.adapter
            self._codecs[batch] = BitsBack(a.prior(batch), a.likelihood, a.posterior)
        return self._codecs[batch]

    @staticmethod
    def direct_limit(n_images: int) -> int:
        """The most items a chunk of ``n_images`` images may code directly."""
        return min(n_images, MAX_DIRECT)

    def push(
        self, message: Message, images: np.ndarray, meter, report: Callable[[int], None],
        min_direct: int | None,
    ) -> Coded:  # fmt: skip
        """Encode (N, H, W[, 3]) images onto ``message``. Sets ``meter.first`` /
        ``meter.batch`` before each batch; ``report`` gets the number of images coded so
        far after each batch.

        Args:
            min_direct: code at least this many images directly, and any image after them
                whose posterior pop the stack cannot pay for; ``None``: none (a seeded stack).

        Raises:
            MessageUnderflowError: the stack cannot pay for a posterior pop of one image
                that may not be coded directly (the chunk then restarts with a bigger seed
                or more direct images).
        """
        n = len(images)
        batches: list[int] = []
        stack_bits: list[int] = []
        done, n_direct, batch = 0, 0, 1
        while done < n:
            batch = min(batch, n - done, self.max_batch)
            meter.first, meter.batch = done, batch
            if min_direct is not None and done < min_direct:
                direct = True
            else:
                direct = False
                try:
                    self._bits_back(batch).push(message, images[done : done + batch])
                except MessageUnderflowError:
                    if batch > 1:
                        batch //= 2
                        continue
                    if min_direct is None or done != n_direct or done >= MAX_DIRECT:
                        raise
                    direct = True
            if direct:
                self.direct.push(message, images[done : done + 1])
                n_direct += 1
            else:
                batches.append(batch)
            done += batch
            stack_bits.append(message.num_bits())
            report(done)
            batch = 1 if direct else batch * 2
        return Coded(n_direct, tuple(batches), tuple(stack_bits))

    def pop(
        self, message: Message, coded: Coded, out: np.ndarray, report: Callable[[int], None]
    ) -> None:
        """Decode the images ``coded`` describes into ``out`` (N, H, W[, 3]): the batches
        last first, then the direct images; ``report`` gets the number decoded so far."""
        end = len(out)
        for batch in reversed(coded.batches):
            out[end - batch : end] = self._bits_back(batch).pop(message)
            end -= batch
            report(len(out) - end)
        message.underflow_guard = False  # the encoder pushed these onto an empty stack
        for _ in range(coded.n_direct):
            out[end - 1 : end] = self.direct.pop(message)
            end -= 1
            report(len(out) - end)
