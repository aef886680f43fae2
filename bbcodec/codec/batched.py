"""Images of the model's shape: many to a chunk, coded in batches that grow with the stack.

For each batch of B images (`BitsBack` over the model's codecs, `bbcodec.codec.adapter`):
encoder — 1. pop z̄ with Q(z̄|x) (bits back), 2. push x with P(x|z̄) (pixels in reverse
raster order), 3. push z̄ with P(z̄); decoder — pop z̄ with P(z̄), pop x pixel by pixel,
push z̄ back with Q(z̄|x) (← bits-back step, restoring the stack exactly).

**Batch schedule.** The first batch is one image; each next batch doubles, up to
``max_batch``, as long as the stack holds the bits its posterior pop needs — a pop that
would underflow is undone (`MessageUnderflowError`) and retried with half the batch, so the
batch grows with the bits already on the stack and the seed is paid once, not B times. If
even one image does not fit, the underflow goes up to the chunk codec, which restarts the
chunk with twice the seed. The decoder gets the schedule from the chunk's trailer and
decodes the batches in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bbcodec.codec.adapter import ModelAdapter
from bbcodec.coding import BitsBack, Message, MessageUnderflowError


class BatchedLayout:
    """Codes a chunk of images of the model's shape (see the module docstring).

    Args:
        adapter: the model's `ModelAdapter`.
        max_batch: the largest batch.
    """

    def __init__(self, adapter: ModelAdapter, max_batch: int):
        self.adapter = adapter
        self.max_batch = max_batch
        self._codecs: dict[int, BitsBack] = {}

    def _bits_back(self, batch: int) -> BitsBack:
        if batch not in self._codecs:
            a = self.adapter
            self._codecs[batch] = BitsBack(a.prior(batch), a.likelihood, a.posterior)
        return self._codecs[batch]

    def push(
        self, message: Message, images: np.ndarray, meter, report: Callable[[int], None]
    ) -> tuple[list[int], list[int]]:
        """Encode (N, H, W[, 3]) images onto ``message``; returns (batch schedule, stack
        bits after each batch). Sets ``meter.first`` / ``meter.batch`` before each batch;
        ``report`` gets the number of images coded so far after each batch.

        Raises:
            MessageUnderflowError: the stack cannot pay for one image's posterior pop.
        """
        n = len(images)
        schedule: list[int] = []
        stack_bits: list[int] = []
        done, batch = 0, 1
        while done < n:
            batch = min(batch, n - done, self.max_batch)
            meter.first, meter.batch = done, batch
            try:
                self._bits_back(batch).push(message, images[done : done + batch])
            except MessageUnderflowError:
                if batch == 1:
                    raise  # the seed cannot pay for one image: the chunk restarts with more
                batch //= 2
                continue
            schedule.append(batch)
            stack_bits.append(message.num_bits())
            done += batch
            report(done)
            batch *= 2
        return schedule, stack_bits

    def pop(
        self, message: Message, schedule: list[int], out: np.ndarray,
        report: Callable[[int], None],
    ) -> None:  # fmt: skip
        """Decode the images of ``schedule`` into ``out`` (N, H, W[, 3]), last batch first;
        ``report`` gets the number of images decoded so far after each batch."""
        end = len(out)
        for batch in reversed(schedule):
            out[end - batch : end] = self._bits_back(batch).pop(message)
            end -= batch
            report(len(out) - end)
