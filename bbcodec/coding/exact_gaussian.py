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
   for an outer bin (reached only by latents far out in the prior's tails) and for an inner
   bin without mass (below); none for a bin of one symbol.

A posterior (``windowed=True``) has only the inner bins: bits-back pops land in its window.

Symbols are coded in consecutive groups of ``group_size`` (flat C order). Popping a group
pops its bins, then its offsets: those in inner bins with mass by bin size ascending (one
table per size), then the uniform ones (outer bins and inner bins without mass); rows in
order within each. Pushing codes the reverse, last group first. A leaf built on the
concatenated parameters of several steps (`bbcodec.coding.AutoRegressive`) then pushes what
the steps' leaves pop, if ``group_size`` is the symbols per step.

A push needs no table. Every table entry is the difference of the CDF at two bin edges
(integers in units of 2**-FINE_BITS, so every running sum of a table is exact), and
where ``Categorical(perfect=False)`` puts a symbol depends on its table only through the
sums before it, through it and of all entries (`categorical_ranges`): the CDF at four edges
of each stage. A push therefore codes every symbol's two ranges (uniform offsets':
`uniform_ranges`) with small tables that give the symbol exactly that range
(`range_pushes`), all stages of all groups in one call in pop order: the bits of the whole
tables. The same ranges give the fixed-point probabilities the information meter reads. A
pop needs the tables it decodes with: a group's bin tables, then the offset tables of each
size of inner bins with mass.

An inner bin far out in the window may have no mass at all (Φ's table reads the same
integer at both its edges): ``Categorical(perfect=False)`` still gives the bin itself its
minimum probability (a posterior pop lands there with probability about 2**-24 per such
bin), but constriction accepts no offset table of zeros, so the offset in such a bin is
coded uniformly, like an outer bin's. Both sides see the bin's mass as an exact
integer (the CDF at its edges: the bin table's entry), so they agree on which bins these
are. Bins with mass are coded as before; an encode that reached a bin without mass used to
raise, so no file written before codes differently.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from typing import NamedTuple

import constriction
import numpy as np

from bbcodec.coding import fixed_point as fp
from bbcodec.coding.handover import coder_float64
from bbcodec.coding.leaves import LatentGrid, coder_symbols, record_pop, record_push
from bbcodec.coding.message import Message, MessageUnderflowError
from bbcodec.coding.quantization import (
    PROBABILITY_BITS,
    categorical_ranges,
    range_pushes,
    uniform_ranges,
)

__all__ = ["ExactGaussian", "normal_cdf_table"]

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
#: Inner bins each side of the mean.
INNER_BINS_PER_SIDE = 8
_INNER_BINS = 2 * INNER_BINS_PER_SIDE
#: Φ is read on [−CDF_RANGE, CDF_RANGE] (beyond: 0 or 1).
CDF_RANGE = 8
_TOTAL = float(2**fp.FINE_BITS)
_PROBABILITY_TOTAL = float(2**PROBABILITY_BITS)


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


def _edge_cdf(edges: np.ndarray, means: np.ndarray, stds: np.ndarray, n_half: int) -> np.ndarray:
    """The Gaussian mass below grid edges, in units of 2**-FINE_BITS (integers).

    Edge ``e`` is the boundary between symbols ``e − 1`` and ``e``: the mass below it is
    ``Φ((e − ½ − μ)/σ)`` — one IEEE subtraction and division, ``t`` clamped to ±8 and
    rounded half up to 2**-12, the table — except 0 at or below the grid's first symbol
    ``−n_half`` and all of it beyond the last, ``n_half`` (the end symbols take the
    tails). The mass of symbols ``[start, end)`` is ``cdf(end) − cdf(start)``.

    Args:
        edges: int64 edges, grid units, any shape broadcastable against ``means``.
        means: float64 means, grid units.
        stds: float64 standard deviations, grid units, > 0.
        n_half: the grid's symbols run over ``−n_half..n_half``.

    Returns:
        float64 integers in 0..2**FINE_BITS, the broadcast shape.
    """
    table = normal_cdf_table()
    t = np.minimum(np.maximum((edges - 0.5 - means) / stds, -CDF_RANGE), CDF_RANGE)
    cdf = table.from_low()[(np.floor(t * fp.ONE + 0.5) - table.low).astype(np.int64)]
    return np.where(edges <= -n_half, 0.0, np.where(edges > n_half, _TOTAL, cdf))


@functools.cache
def _edge_steps(windowed: bool, n_symbols: int) -> np.ndarray:
    """int64 bin edges in inner bins' sizes from the centre, for a grid of ``n_symbols``:
    the inner ones −8 … 8, and for a prior (not ``windowed``) outer ones that double
    outwards, ±8·2**k for k = 1 … K with 2**K > ``n_symbols`` (past either end of the grid
    from any centre; the layout clamps them to it)."""
    inner = np.arange(-INNER_BINS_PER_SIDE, INNER_BINS_PER_SIDE + 1, dtype=np.int64)
    outer = INNER_BINS_PER_SIDE * 2 ** np.arange(1, np.frexp(float(n_symbols))[1] + 1)
    steps = inner if windowed else np.concatenate([-outer[::-1], inner, outer])
    steps.flags.writeable = False  # shared by every leaf
    return steps


class _Ranges(NamedTuple):
    """Where the coder puts each symbol (flat, n), in both stages.

    Attributes:
        widths: int64 ``(n,)`` symbols in each symbol's bin: an offset stage where ≥ 2.
        uniform: bool ``(n,)`` whether the offset is coded uniformly (`_uniform`).
        bin_ranges: int64 ``(n,)`` starts and ``(n,)`` numerators (out of 2**24) of the
            bins in their bin tables.
        offset_ranges: the same for the offsets in their offset tables (start 0 and
            numerator 2**24 where there is no offset stage).
    """

    widths: np.ndarray
    uniform: np.ndarray
    bin_ranges: tuple[np.ndarray, np.ndarray]
    offset_ranges: tuple[np.ndarray, np.ndarray]

    def probabilities(self) -> np.ndarray:
        """float64 ``(n,)`` probabilities × 2**24: both stages' numerators multiplied (the
        second one divided by 2**24; may be below 1)."""
        return self.bin_ranges[1].astype(np.float64) * (self.offset_ranges[1] / _PROBABILITY_TOTAL)


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
        size = means.size if self.group_size is None else self.group_size
        if size < 1 and means.size or (size and means.size % size):
            raise ValueError(f"group_size {size} must be >= 1 and divide {means.size} symbols")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "_group", max(size, 1))
        self._lay_out()

    # ----- layout -------------------------------------------------------------------------
    def _lay_out(self) -> None:
        """Sets, per symbol (flat, n): ``_mu`` and ``_sigma``, float64 mean and std in grid
        units; ``_edges``, int64 (n, n_bins + 1), bin j holding the symbols
        ``_edges[:, j] .. _edges[:, j + 1] − 1`` (outer bins may be empty), ordered
        outermost left … the sixteen inner bins from column ``_first_inner`` … outermost
        right."""
        lo, hi = -self.grid.n_half, self.grid.n_half
        mu, sigma = self.means.ravel() / self.grid.step, self.stds.ravel() / self.grid.step
        largest = int(np.frexp(float(hi - lo + 1) / _INNER_BINS)[1]) - 1  # 2**largest·16 ≤ size
        exponent = np.frexp(sigma)[1] - 1  # 2**exponent ≤ σ < 2**(exponent + 1)
        size = np.left_shift(1, np.minimum(np.maximum(exponent, 0), largest), dtype=np.int64)
        half = INNER_BINS_PER_SIDE * size  # the inner window's half-width, kept in the grid
        centre = np.minimum(np.maximum(np.rint(mu).astype(np.int64), lo + half), hi + 1 - half)
        steps = _edge_steps(self.windowed, hi - lo + 1)
        edges = np.minimum(np.maximum(centre[:, None] + size[:, None] * steps, lo), hi + 1)
        for name, value in (("_mu", mu), ("_sigma", sigma), ("_edges", edges)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_first_inner", (steps.size - 1 - _INNER_BINS) // 2)

    def _cdf_at(self, edges: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """`_edge_cdf` at int64 edges (r, k) of the symbols ``rows`` (r of them)."""
        return _edge_cdf(edges, self._mu[rows, None], self._sigma[rows, None], self.grid.n_half)

    def _outer(self, bins: np.ndarray) -> np.ndarray:
        """bool: whether each of int ``bins`` (any shape) is an outer bin."""
        return (bins < self._first_inner) | (bins >= self._first_inner + _INNER_BINS)

    def _uniform(self, bins: np.ndarray, masses: np.ndarray) -> np.ndarray:
        """bool: whether the offsets in int ``bins`` are coded uniformly: an outer bin, or an
        inner one whose ``masses`` (the CDF's exact integer difference across the bin, same
        shape) are zero (module docstring)."""
        return self._outer(bins) | (masses <= 0)

    def _offset_runs(
        self, widths: list[int], uniform: list[bool]
    ) -> list[tuple[list[int], int, bool]]:
        """The offset stage of one group as the pops that code it, in order (module
        docstring): rows in inner bins with mass by bin width ascending, then the rows
        coded uniformly (`_uniform`), rows ascending within each; consecutive rows whose
        bins have the same kind and width share a pop. From the group's rows' bin widths
        and uniform flags (lists, the rows in order); returns (rows, as indices in the
        group; width; uniform) per pop."""
        coded = [row for row, width in enumerate(widths) if width > 1]
        coded.sort(key=lambda row: (uniform[row], 0 if uniform[row] else widths[row]))
        runs: list[tuple[list[int], int, bool]] = []
        for row in coded:
            if runs and runs[-1][1:] == (widths[row], uniform[row]):
                runs[-1][0].append(row)
            else:
                runs.append(([row], widths[row], uniform[row]))
        return runs

    # ----- ranges (push and rates) --------------------------------------------------------
    def _ranges(self, symbols: np.ndarray) -> _Ranges:
        """Where the coder puts each of int ``symbols`` (shaped like ``means``): its ranges
        in both stages (`categorical_ranges`, from the CDF at the edges that bound the
        sums).

        Raises:
            ValueError: a symbol outside the window (``windowed``) or the grid.
        """
        edges = self._edges
        flat = coder_symbols(symbols).astype(np.int64)
        if flat.size != edges.shape[0]:
            raise ValueError(f"expected {edges.shape[0]} symbols, got {flat.size}")
        if np.any((flat < edges[:, 0]) | (flat >= edges[:, -1])):
            raise ValueError("a latent symbol lies outside its posterior window or the grid")
        bins = (edges[:, 1:] <= flat[:, None]).sum(axis=1)  # bins ending at or before it
        rows = np.arange(flat.size)
        starts, ends = edges[rows, bins], edges[rows, bins + 1]
        at = np.stack([edges[:, 0], starts, ends, edges[:, -1], flat, flat + 1], axis=1)
        first, start, end, last, below, through = self._cdf_at(at, slice(None)).T
        widths, uniform = ends - starts, self._uniform(bins, end - start)
        bin_ranges = categorical_ranges(
            start - first, end - first, last - first, bins, edges.shape[1] - 1
        )
        offset_starts = np.zeros(flat.size, dtype=np.int64)
        offset_numerators = np.full(flat.size, 2**PROBABILITY_BITS, dtype=np.int64)
        tabled = np.flatnonzero((widths > 1) & ~uniform)
        offset_starts[tabled], offset_numerators[tabled] = categorical_ranges(
            below[tabled] - start[tabled], through[tabled] - start[tabled],
            end[tabled] - start[tabled], flat[tabled] - starts[tabled], widths[tabled],
        )  # fmt: skip
        even = np.flatnonzero((widths > 1) & uniform)
        offset_starts[even], offset_numerators[even] = uniform_ranges(
            widths[even], flat[even] - starts[even]
        )
        return _Ranges(widths, uniform, bin_ranges, (offset_starts, offset_numerators))

    # ----- coding -------------------------------------------------------------------------
    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes int grid symbols shaped like ``means``: every stage of every group in one
        call, each symbol in its range (module docstring)."""
        ranges = self._ranges(symbols)
        n, widths, uniform = ranges.widths.size, ranges.widths.tolist(), ranges.uniform.tolist()
        order: list[int] = []  # in pop order: entry i < n is row i's bin, n + i its offset
        for first in range(0, n, self._group):
            stop = first + self._group
            order.extend(range(first, stop))
            for rows, _, _ in self._offset_runs(widths[first:stop], uniform[first:stop]):
                order.extend(n + first + row for row in rows)
        starts, numerators = (
            np.concatenate(stage)[order] for stage in zip(ranges.bin_ranges, ranges.offset_ranges)
        )
        for entries, tables in range_pushes(starts, numerators):
            message.push(entries, _CATEGORICAL, tables)
        record_push(message, self, symbols, ranges.probabilities().reshape(np.shape(symbols)))

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 grid symbols shaped like ``means``. If the message runs out of bits
        (`MessageUnderflowError`), what was popped is pushed back before the error rises,
        so the message is as it was."""
        n = self.means.size
        flat = np.empty(n, dtype=np.int64)
        done: list[tuple] = []  # (symbols, model, *table) of every pop so far
        try:
            for first in range(0, n, self._group):
                rows = slice(first, first + self._group)
                edges = self._edges[rows]
                cdf = self._cdf_at(edges, rows)
                table = cdf[:, 1:] - cdf[:, :-1]
                bins = message.pop(_CATEGORICAL, table)
                done.append((bins, _CATEGORICAL, table))
                popped = np.arange(bins.size)
                starts = edges[popped, bins]
                widths = edges[popped, bins + 1] - starts
                flat[rows] = starts
                uniform = self._uniform(bins, table[popped, bins])
                for run, width, even in self._offset_runs(widths.tolist(), uniform.tolist()):
                    at = np.add(run, first)
                    if even:
                        how = (constriction.stream.model.Uniform(width),)
                        offsets = message.pop(*how, count=at.size)
                    else:
                        how = (_CATEGORICAL, self._offset_table(at, flat[at], width))
                        offsets = message.pop(*how)
                    done.append((offsets, *how))
                    flat[at] += offsets
        except MessageUnderflowError:
            for symbols, *how in reversed(done):
                message.push(coder_symbols(symbols), *how)
            raise
        symbols = flat.astype(np.int32).reshape(self.means.shape)
        record_pop(message, self, symbols)
        return symbols

    def _offset_table(self, rows: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
        """float64 (r, width) offset tables of inner bins of ``width`` symbols from int64
        ``starts`` (r,) on, of the symbols ``rows`` (int, r): the symbols' masses."""
        cdf = self._cdf_at(starts[:, None] + np.arange(width + 1), rows)
        return cdf[:, 1:] - cdf[:, :-1]

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """float64 probabilities × 2**24 of ``symbols`` (the product of both stages'
        fixed-point probabilities; may be below 1), shaped like them."""
        return self._ranges(symbols).probabilities().reshape(np.shape(symbols))
