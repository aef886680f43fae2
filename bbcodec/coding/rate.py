"""Rate accounting: theory (information content) next to practice (bits on the stack).

* :func:`information_bits` — the information content of symbols under a leaf codec,
  ``sum(24 - log2 p)`` over the fixed-point probabilities ``p`` the coder really uses.
* :class:`InformationMeter` — attach to a message (``message.meter = InformationMeter()``)
  and every leaf push adds, every leaf pop subtracts, its information content: for
  bits-back coding that is exactly ``-log2 P(x|z̄) - log2 P(z̄) + log2 Q(z̄|x)``.
* :class:`RateReport` — information bits, net bits on the stack, initial (seed) bits and
  total bits, side by side.

Example:
    >>> from bbcodec.coding.leaves import Bernoulli
    >>> from bbcodec.coding.message import Message
    >>> message = Message.seeded(seed=0, n_words=4)
    >>> message.meter = InformationMeter()
    >>> start_bits = message.num_bits()
    >>> Bernoulli(np.full(1000, 0.1)).push(message, np.zeros(1000, dtype=int))
    >>> report = RateReport.measure(message, start_bits, message.meter.net_bits)
    >>> round(report.information_bits, 1), report.net_bits, report.initial_bits
    (152.0, 152, 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bbcodec.coding.message import WORD_BITS, Message
from bbcodec.coding.protocols import LeafCodec
from bbcodec.coding.quantization import PROBABILITY_BITS

__all__ = ["BitsPerDim", "InformationMeter", "RateReport", "information_bits", "symbol_bits"]


def symbol_bits(
    leaf: LeafCodec, symbols: np.ndarray, numerators: np.ndarray | None = None
) -> np.ndarray:
    """Information content of each symbol under ``leaf``, in bits.

    Args:
        leaf: A leaf codec (it knows its fixed-point probabilities).
        symbols: The symbols, shaped as the leaf codes them.
        numerators: ``leaf.fixed_point_probabilities(symbols)`` if the caller has them
            already (a leaf that built its tables to push them), else computed here.

    Returns:
        float64 array shaped like the leaf's probabilities: ``PROBABILITY_BITS - log2(p)``,
        ``p`` the integer probabilities out of ``2**PROBABILITY_BITS`` the coder uses.
    """
    if numerators is None:
        numerators = leaf.fixed_point_probabilities(symbols)
    return PROBABILITY_BITS - np.log2(numerators.astype(np.float64))


def information_bits(leaf: LeafCodec, symbols: np.ndarray) -> float:
    """Information content of ``symbols`` under ``leaf``, in bits (`symbol_bits` summed)."""
    return float(np.sum(symbol_bits(leaf, symbols)))


@dataclass
class InformationMeter:
    """Running information content of everything leaf codecs pushed and popped.

    Attributes:
        pushed_bits: Information content of all pushed symbols.
        popped_bits: Information content of all popped symbols (bits back).
    """

    pushed_bits: float = 0.0
    popped_bits: float = 0.0

    @property
    def net_bits(self) -> float:
        """``pushed_bits - popped_bits``: what the stack should have grown by."""
        return self.pushed_bits - self.popped_bits

    def record_push(
        self, leaf: LeafCodec, symbols: np.ndarray, numerators: np.ndarray | None = None
    ) -> None:
        """Adds the information content of pushed ``symbols`` (see `symbol_bits`)."""
        self.pushed_bits += float(np.sum(symbol_bits(leaf, symbols, numerators)))

    def record_pop(self, leaf: LeafCodec, symbols: np.ndarray) -> None:
        """Adds the information content of popped ``symbols``."""
        self.popped_bits += information_bits(leaf, symbols)


class BitsPerDim(NamedTuple):
    """A :class:`RateReport` divided by the number of coded dimensions.

    Attributes:
        information_bpd: Information content per dimension.
        net_bpd: Net stack growth per dimension (the achieved rate, seed excluded).
        total_bpd: Whole message (seed included, rounded up to words) per dimension.
    """

    information_bpd: float
    net_bpd: float
    total_bpd: float


@dataclass(frozen=True)
class RateReport:
    """What coding cost, in theory and in practice.

    Attributes:
        information_bits: Information content of the symbols actually coded, from the
            coder's own fixed-point probabilities (pushes minus pops).
        net_bits: Growth of the stack while coding, ``num_bits()`` after minus before.
        initial_bits: Bits of the seed the message started from.
        total_bits: Size of the whole message, ``32 * num_words()`` (what a file stores).
    """

    information_bits: float
    net_bits: int
    initial_bits: int
    total_bits: int

    @classmethod
    def measure(cls, message: Message, start_bits: int, information_bits: float) -> RateReport:
        """The report for ``message`` after coding.

        Args:
            message: The message after coding.
            start_bits: ``message.num_bits()`` before coding.
            information_bits: Information content of what was coded, e.g. the
                ``net_bits`` of an :class:`InformationMeter` attached to ``message``.
        """
        return cls(
            information_bits=float(information_bits),
            net_bits=message.num_bits() - start_bits,
            initial_bits=message.initial_bits,
            total_bits=WORD_BITS * message.num_words(),
        )

    def bits_per_dim(self, n_dims: int) -> BitsPerDim:
        """The report per dimension (e.g. ``D`` sub-pixels times the number of images)."""
        if n_dims <= 0:
            raise ValueError(f"n_dims must be positive, got {n_dims}")
        return BitsPerDim(
            information_bpd=self.information_bits / n_dims,
            net_bpd=self.net_bits / n_dims,
            total_bpd=self.total_bits / n_dims,
        )
