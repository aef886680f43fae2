"""Gaussian latents on a grid, coded with probability tables every machine computes alike.

constriction's ``QuantizedGaussian`` evaluates the Gaussian CDF with the platform's ``erf``,
which may differ in its last bits between libm builds; the portable path uses
:class:`ExactGaussian` instead. Its CDF is a table of Φ built with Python's `decimal` (the
same integers everywhere), read at ``t = (edge − μ)/σ`` computed with single IEEE
operations (correctly rounded, so also the same everywhere), and handed to constriction as
integer-valued categorical tables.

A symbol is coded in **two stages**, so that no table is wider than a few dozen columns
however fine the grid is against σ (on the default grid a unit-std prior spans ~1,000
symbols per σ):

1. its **bin**: sixteen inner bins of ``b`` symbols centred at the mean (``b`` the power of
   two in (σ/2, σ], grid units, so the inner window spans between ±4σ and ±8σ), and, for
   a prior (``windowed=False``), outer bins on each side that double in size outwards and
   cover the rest of the grid, taking the Gaussian's tail masses;
2. its **offset** in the bin: a table of the b Gaussian masses for an inner bin, uniform
   for an outer bin (reached only by latents far out in the prior's tails).

A posterior (``windowed=True``) has only the inner bins: bits-back pops land in its window.

Symbols are coded in consecutive groups of ``group_size`` (flat C order): popping a group
pops its bins, then its offsets; pushing does the reverse, last group first. A leaf built
on the concatenated parameters of several steps (`bbcodec.coding.AutoRegressive`) then
pushes what the steps' leaves pop, if ``group_size`` is the symbols per step.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass

import constriction
import numpy as np

from bbcodec.coding import fixed_point as fp
from bbcodec.coding.handover import coder_float64
from bbcodec.coding.leaves import LatentGrid, coder_symbols, record_pop, record_push
from bbcodec.coding.message import Message, MessageUnderflowError
from bbcodec.coding.quantization import (
    PROBABILITY_BITS,
    categorical_fixed_point,
    uniform_fixed_point,
)

__all__ = ["ExactGaussian", "normal_cdf_table"]

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
#: Inner bins each side of the mean.
INNER_BINS_PER_SIDE = 8
#: Φ is read on [−CDF_RANGE, CDF_RANGE] (beyond: 0 or 1).
CDF_RANGE = 8
_TOTAL = float(2**fp.FINE_BITS)


@functools.cache
def normal_cdf_table() -> fp.Table:
    """Φ on [−8, 8] every 2**-6, in units of 2**-FINE_BITS."""
    with decimal.localcontext() as context:
        context.prec = 40
        two_pi_sqrt = (2 * decimal.Decimal(_PI_40)).sqrt()

        def phi(x: decimal.Decimal) -> decimal.Decimal:
            term, total, n = x, x, 1
            while abs(term) > decimal.Decimal(10) ** -42:
                n += 2
                term = term * x * x / n
                total += term
            return decimal.Decimal(1) / 2 + (-x * x / 2).exp() / two_pi_sqrt * total

        return fp.decimal_table(phi, -CDF_RANGE, CDF_RANGE, 6, fp.FINE_BITS)


_PI_40 = "3.141592653589793238462643383279502884197"


def _cdf(edges: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Φ((edge − μ)/σ) in units of 2**-FINE_BITS, all in grid units (any broadcastable
    shapes): one IEEE subtraction and division, an exact rounding to 2**-12, the table."""
    t = np.clip((edges - means) / stds, -CDF_RANGE - 1, CDF_RANGE + 1)
    return normal_cdf_table()(np.floor(t * fp.ONE + 0.5))


def _masses(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int, means, stds) -> np.ndarray:
    """Gaussian masses (2**-FINE_BITS units) of symbol ranges [start, end) on the grid
    [lo, hi]; the first and last symbols take the tails; empty ranges get 0."""
    upper = np.where(ends > hi, _TOTAL, _cdf(ends - 0.5, means, stds))
    lower = np.where(starts <= lo, 0.0, _cdf(starts - 0.5, means, stds))
    return np.where(ends > starts, upper - lower, 0.0)


@dataclass(frozen=True, eq=False)
class ExactGaussian:
    """Gaussian latents on a :class:`LatentGrid`, one mean and std per symbol, coded in
    two stages (module docstring) with tables that are the same on every machine.

    Attributes:
        means: float array of means, latent units, any shape.
        stds: float array of standard deviations, latent units, same shape, > 0.
        grid: the latent grid.
        windowed: a posterior: only the sixteen inner bins (symbols outside are refused).
        group_size: symbols per group (module docstring); ``None``: one group of all.
    """

    means: np.ndarray
    stds: np.ndarray
    grid: LatentGrid
    windowed: bool = False
    group_size: int | None = None

    def __post_init__(self) -> None:
        means, stds = coder_float64(self.means), coder_float64(self.stds)
        if means.shape != stds.shape:
            raise ValueError(f"means {means.shape} and stds {stds.shape} differ in shape")
        if self.grid.n_half < INNER_BINS_PER_SIDE:
            raise ValueError(
                f"exact Gaussians need a grid of at least {2 * INNER_BINS_PER_SIDE + 1} "
                f"symbols, got {self.grid.n_symbols}"
            )
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "_layout", self._bins())
        size = means.size if self.group_size is None else self.group_size
        if size < 1 and means.size or (size and means.size % size):
            raise ValueError(f"group_size {size} must be >= 1 and divide {means.size} symbols")
        object.__setattr__(
            self,
            "_groups",
            [np.arange(start, start + size) for start in range(0, means.size, max(size, 1))],
        )

    # ----- layout -------------------------------------------------------------------------
    def _bins(self) -> dict[str, np.ndarray]:
        """Per symbol (flat): grid-unit mean and std, bin size b, and every bin's start
        and end, (n, n_bins) int64, ordered outermost left … inner … outermost right."""
        lo, hi = -self.grid.n_half, self.grid.n_half
        means, stds = self.means.ravel() / self.grid.step, self.stds.ravel() / self.grid.step
        inner = 2 * INNER_BINS_PER_SIDE
        largest = int(np.frexp(float(hi - lo + 1) / inner)[1]) - 1  # 2**largest · 16 ≤ size
        exponent = np.frexp(stds)[1] - 1  # 2**exponent ≤ σ < 2**(exponent + 1)
        size = np.ldexp(1.0, np.clip(exponent, 0, largest)).astype(np.int64)
        half = INNER_BINS_PER_SIDE * size
        centre = np.clip(np.rint(means).astype(np.int64), lo + half, hi + 1 - half)
        steps = np.arange(inner) - INNER_BINS_PER_SIDE
        starts = centre[:, None] + steps * size[:, None]
        ends = starts + size[:, None]
        if not self.windowed:
            n_outer = int(np.frexp(float(hi - lo + 1))[1])  # doubling bins reach any end
            reach = half[:, None] * (2 ** np.arange(n_outer + 1) - 1)  # (n, n_outer + 1)
            left_edges = np.maximum(starts[:, :1] - reach, lo)  # outward from the window
            right_edges = np.minimum(ends[:, -1:] + reach, hi + 1)
            starts = np.concatenate([left_edges[:, :0:-1], starts, right_edges[:, :-1]], 1)
            ends = np.concatenate([left_edges[:, -2::-1], ends, right_edges[:, 1:]], 1)
        masses = _masses(starts, ends, lo, hi, means[:, None], stds[:, None])
        return {"means": means, "stds": stds, "size": size, "starts": starts, "ends": ends,
                "masses": masses}  # fmt: skip

    def _locate(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each symbol's bin (column) and offset in it."""
        layout = self._layout
        flat = coder_symbols(symbols).astype(np.int64)
        inside = (layout["starts"] <= flat[:, None]) & (flat[:, None] < layout["ends"])
        if not np.all(inside.any(axis=1)):
            raise ValueError("a latent symbol lies outside its posterior window or the grid")
        bins = inside.argmax(axis=1)
        rows = np.arange(flat.size)
        return bins, flat - layout["starts"][rows, bins]

    def _offset_groups(
        self, rows: np.ndarray, bins: np.ndarray
    ) -> list[tuple[str, int, np.ndarray]]:
        """The offset stage of some rows (with their bins) in pop order: ("inner", b,
        rows) for each inner bin size b > 1 ascending, then ("outer", size, [row]) for each
        row in an outer bin of ≥ 2 symbols."""
        layout = self._layout
        width = layout["ends"][rows, bins] - layout["starts"][rows, bins]
        outer_first = (
            0 if self.windowed else (layout["starts"].shape[1] - 2 * INNER_BINS_PER_SIDE) // 2
        )
        is_inner = (bins >= outer_first) & (bins < outer_first + 2 * INNER_BINS_PER_SIDE)
        groups = [
            ("inner", int(b), rows[is_inner & (width == b)])
            for b in np.unique(width[is_inner]) if b > 1
        ]  # fmt: skip
        groups += [
            ("outer", int(w), np.array([r]))
            for r, w in zip(rows, width)
            if w > 1 and not is_inner[r - rows[0]]
        ]
        return groups

    def _offset_table(self, rows: np.ndarray, bins: np.ndarray, size: int) -> np.ndarray:
        """(r, size) masses of the symbols of these rows' inner bins (all of this size);
        ``bins``: every row's bin."""
        layout = self._layout
        starts = layout["starts"][rows, bins[rows]][:, None] + np.arange(size)
        lo, hi = -self.grid.n_half, self.grid.n_half
        return _masses(
            starts, starts + 1, lo, hi, layout["means"][rows, None], layout["stds"][rows, None]
        )

    # ----- coding -------------------------------------------------------------------------
    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes int grid symbols shaped like ``means``."""
        bins, offsets = self._locate(symbols)
        for rows in reversed(self._groups):
            for kind, size, at in reversed(self._offset_groups(rows, bins[rows])):
                model = _CATEGORICAL if kind == "inner" else constriction.stream.model.Uniform(size)
                table = (self._offset_table(at, bins, size),) if kind == "inner" else ()
                message.push(coder_symbols(offsets[at]), model, *table)
            message.push(coder_symbols(bins[rows]), _CATEGORICAL, self._layout["masses"][rows])
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 grid symbols shaped like ``means``. If the message runs out of bits
        (`MessageUnderflowError`), what was popped is pushed back before the error rises,
        so the message is as it was."""
        bins = np.zeros(self.means.size, dtype=np.int64)
        offsets = np.zeros(self.means.size, dtype=np.int64)
        done: list[tuple] = []  # (symbols, model, *table) of every pop so far
        try:
            for rows in self._groups:
                table = self._layout["masses"][rows]
                bins[rows] = message.pop(_CATEGORICAL, table)
                done.append((bins[rows], _CATEGORICAL, table))
                for kind, size, at in self._offset_groups(rows, bins[rows]):
                    if kind == "inner":
                        table = self._offset_table(at, bins, size)
                        offsets[at] = message.pop(_CATEGORICAL, table)
                        done.append((offsets[at], _CATEGORICAL, table))
                    else:
                        model = constriction.stream.model.Uniform(size)
                        offsets[at] = message.pop(model, count=1)
                        done.append((offsets[at], model))
        except MessageUnderflowError:
            for symbols, *how in reversed(done):
                message.push(coder_symbols(symbols), *how)
            raise
        flat = self._layout["starts"][np.arange(bins.size), bins] + offsets
        symbols = flat.astype(np.int32).reshape(self.means.shape)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """float64 probabilities × 2**24 of ``symbols`` (the product of both stages'
        fixed-point probabilities; may be below 1), shaped like them."""
        bins, offsets = self._locate(symbols)
        p = categorical_fixed_point(self._layout["masses"], coder_symbols(bins)).astype(np.float64)
        for kind, size, at in self._offset_groups(np.arange(bins.size), bins):
            if kind == "inner":
                stage = categorical_fixed_point(self._offset_table(at, bins, size), offsets[at])
            else:
                stage = uniform_fixed_point(size, offsets[at])
            p[at] *= stage / 2.0**PROBABILITY_BITS
        return p.reshape(np.shape(symbols))
