"""Discretised logistic mixtures from integer head parameters: the portable path's tables.

The same mixtures as `bbcodec.coding.logistic` (PixelCNN++, values ``v`` at
``2v/255 − 1``), computed from the integer twin's head outputs (activation integers,
`bbcodec.coding.fixed_point`) so that every machine builds the same table:

- mixture weights ``w_k = e^(logit_k − max)`` and inverse scales ``e^(−log s_k)`` from
  decimal-built exp tables (integers in units of 2**-24);
- a component's CDF at a bin edge: ``t = (edge − μ)·(1/s)`` with single IEEE operations
  (correctly rounded, the same everywhere), rounded exactly to 2**-12, then a decimal-built
  σ table (2**-24 units);
- the mixture CDF ``Σ w_k σ_k`` and the bin masses as exact integers (below 2**53 for up to
  32 components), handed to constriction as an integer-valued table.

For RGB, G and B are coded given R (and G) with the components re-weighted by the mass
they gave the earlier channels (``w_k · P_k(r)``, renormalised to 2**24 by an exact
floor of a correctly rounded quotient); channel means add ``c·x`` as integers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bbcodec.coding import fixed_point as fp

__all__ = [
    "StageSums",
    "TwoStageTables",
    "exact_channel_means",
    "exact_mixture_table",
    "exact_reweight",
    "exact_stage_sums",
    "exact_symbol_sums",
    "exact_weights",
]

#: Most mixture components the integer sums allow (each term < 2**48).
MAX_COMPONENTS = 32
#: Clamp of log-scales (activation units) on the exact path: the model floors them at −7.
_LOG_SCALE_RANGE = (-7, 7)
#: Upper bin edges of values 0..254 in [-1, 1] units (one IEEE division each).
_UPPER_EDGES = (2.0 * np.arange(255) + 1.0) / 255.0 - 1.0
_LOWER_EDGES = (2.0 * np.arange(256) - 1.0) / 255.0 - 1.0  # [v] for v ≥ 1
_ONE_FINE = float(2**fp.FINE_BITS)
#: Rows of `exact_mixture_table` computed together (a few hundred KB of float64 at a time).
_TABLE_BLOCK_ROWS = 128


def exact_weights(logits_fixed: np.ndarray) -> np.ndarray:
    """(n, m) head logits (activation integers) → mixture weights e^(logit − max) as
    integers in units of 2**-24 (at least e^-16)."""
    if logits_fixed.shape[-1] > MAX_COMPONENTS:
        raise ValueError(f"at most {MAX_COMPONENTS} mixture components on the exact path")
    return fp.exp_table(-16, 0)(logits_fixed - logits_fixed.max(axis=-1, keepdims=True))


def _inverse_scales(log_scales_fixed: np.ndarray) -> np.ndarray:
    """e^(−log s) as exact float64 values (multiples of 2**-24)."""
    return fp.from_fixed(fp.exp_table(*_LOG_SCALE_RANGE)(-log_scales_fixed), fp.FINE_BITS)


def _sigmoid_at(edges: np.ndarray, means_fixed: np.ndarray, inverse_scales: np.ndarray):
    """σ((edge − μ)/s) in units of 2**-24 (broadcasting)."""
    t = np.clip((edges - fp.from_fixed(means_fixed)) * inverse_scales, -17.0, 17.0)
    return fp.fine_sigmoid_table()(np.floor(t * fp.ONE + 0.5))


def _sigmoid_from_difference(
    x: np.ndarray, inverse_one: np.ndarray, index: np.ndarray, out: np.ndarray
) -> None:
    """`_sigmoid_at` from ``x = edge − μ`` (float64, overwritten) and the inverse scales
    × 2**12 (broadcast to x), into ``out`` (index: int scratch of x's shape): the same
    integers, as the clamps of `_sigmoid_at` become one clamp of the table index (σ's
    argument only reaches the table's ends beyond ±16) and ``t · 2**12`` is folded into
    the inverse scale (a power-of-two factor changes no rounding)."""
    sigmoid = fp.fine_sigmoid_table()
    x *= inverse_one
    x += 0.5
    np.floor(x, out=x)
    x -= sigmoid.low
    np.copyto(index, x, casting="unsafe")  # |x| < 2**35: exact
    sigmoid.from_low().take(index, mode="clip", out=out)


def exact_mixture_table(
    weights: np.ndarray, means_fixed: np.ndarray, log_scales_fixed: np.ndarray
) -> np.ndarray:
    """(n, 256) integer-valued float64 table of bin masses (unnormalised, each row sums to
    Σ w · 2**24) for (n, m) weights (2**-24 units), means and log-scales (activation
    integers).

    The same numbers as `_sigmoid_at` at every upper bin edge, summed over the components,
    computed in blocks of `_TABLE_BLOCK_ROWS` rows that stay in the CPU's cache
    (`_sigmoid_from_difference`).
    """
    n, m = weights.shape
    inverse_one = _inverse_scales(log_scales_fixed) * fp.ONE
    means = fp.from_fixed(means_fixed)
    table = np.empty((n, 256))
    for start in range(0, n, _TABLE_BLOCK_ROWS):
        rows = slice(start, start + _TABLE_BLOCK_ROWS)
        size = means[rows].shape[0]
        cdf, x = np.zeros((size, 255)), np.empty((size, 255))
        index, values = np.empty((size, 255), np.intp), np.empty((size, 255))
        for k in range(m):
            np.subtract(_UPPER_EDGES, means[rows, k, None], out=x)
            _sigmoid_from_difference(x, inverse_one[rows, k, None], index, values)
            values *= weights[rows, k, None]
            cdf += values
        block = table[rows]
        block[:, 0] = cdf[:, 0]
        np.subtract(cdf[:, 1:], cdf[:, :-1], out=block[:, 1:-1])
        block[:, -1] = weights[rows].sum(axis=1) * _ONE_FINE - cdf[:, -1]
    return table


def exact_symbol_sums(
    weights: np.ndarray, means_fixed: np.ndarray, log_scales_fixed: np.ndarray, symbols
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What an encoder needs of `exact_mixture_table`'s rows: for (n,) symbols, the sums of
    each row's entries before the symbol, through it, and of the whole row — the mixture
    CDF at the symbol's two bin edges (2 edges a component instead of 255), equal to the
    table's running sums exactly (integers below 2**53)."""
    v = np.asarray(symbols, dtype=np.int64)
    inverse = _inverse_scales(log_scales_fixed)
    below, through = _mixture_cdf(weights, means_fixed, inverse, np.stack([v - 1, v], 1)).T
    return below, through, weights.sum(axis=1) * _ONE_FINE


def _cdf_at(edges: np.ndarray, weights, means: np.ndarray, inverse_one: np.ndarray) -> np.ndarray:
    """(n, e) Σ_k w_k σ_k at (n or 1, e) upper bin edges ([-1, 1] units), for (n, m)
    weights, means ([-1, 1] units) and inverse scales × 2**12 (`_sigmoid_from_difference`)."""
    x = edges[:, None, :] - means[:, :, None]
    sigmoids, index = np.empty_like(x), np.empty(x.shape, np.intp)
    _sigmoid_from_difference(x, inverse_one[:, :, None], index, sigmoids)
    sigmoids *= weights[:, :, None]
    return sigmoids.sum(axis=1)


def _mixture_cdf(weights, means_fixed, inverse_scales, values: np.ndarray) -> np.ndarray:
    """(n, e) mixture CDF Σ_k w_k σ_k at the upper bin edges of (n, e) ``values`` in
    −1 … 255 (2**-24 units, integers): 0 for −1, Σ_k w_k · 2**24 for 255 — the running
    sums of `exact_mixture_table`'s rows, through each value."""
    edges = _UPPER_EDGES[np.clip(values, 0, 254)]
    cdf = _cdf_at(edges, weights, fp.from_fixed(means_fixed), inverse_scales * fp.ONE)
    total = weights.sum(axis=1, keepdims=True) * _ONE_FINE
    return np.where(values < 0, 0.0, np.where(values > 254, total, cdf))


class TwoStageTables:
    """The two stages' tables of n rows, built as a decoder pops them: `bins`, then
    `offsets` given the bins popped, which reuses the mixture CDF at the bin edges that
    `bins` computed (each stage needs Σ_k w_k σ_k at 15 edges a component, not 33).

    Entries are integers in units of 2**-24: the masses of `exact_mixture_table`'s values
    summed by bin, then those of the chosen bin's values.

    Args:
        weights: (n, m) mixture weights (`exact_weights`).
        means_fixed, log_scales_fixed: (n, m) activation integers.
        bin_values: values a bin holds (16: 16 bins of 16).
    """

    def __init__(self, weights, means_fixed, log_scales_fixed, bin_values: int) -> None:
        self.weights = weights
        self.means = fp.from_fixed(means_fixed)
        self.inverse_one = _inverse_scales(log_scales_fixed) * fp.ONE
        self.bin_values = bin_values
        self.total = weights.sum(axis=1) * _ONE_FINE
        self._edges_cdf: np.ndarray | None = None  # (n, bins + 1), from `bins`

    def bins(self) -> np.ndarray:
        """(n, 256 / bin_values) masses of the bins (the first stage)."""
        n_bins = (_UPPER_EDGES.size + 1) // self.bin_values  # 256 values
        cdf = np.empty((len(self.weights), n_bins + 1))
        cdf[:, 0] = 0.0
        ends = _UPPER_EDGES[self.bin_values - 1 :: self.bin_values]  # all bins' but the last
        cdf[:, 1:-1] = _cdf_at(ends[None, :], self.weights, self.means, self.inverse_one)
        cdf[:, -1] = self.total
        self._edges_cdf = cdf
        return np.diff(cdf, axis=1)

    def offsets(self, bins: np.ndarray) -> np.ndarray:
        """(n, bin_values) masses of the values of each row's bin (the second stage; after
        `bins`). A bin of mass 0 (possible where every component is saturated across it;
        the first stage still gives it the coder's least probability) takes masses of 1."""
        if self._edges_cdf is None:
            raise RuntimeError("offsets come after bins")
        bins = np.asarray(bins, dtype=np.int64)
        rows = np.arange(len(bins))
        before, end = self._edges_cdf[rows, bins], self._edges_cdf[rows, bins + 1]
        inner = bins[:, None] * self.bin_values + np.arange(self.bin_values - 1)  # ≤ 254
        cdf = _cdf_at(_UPPER_EDGES[inner], self.weights, self.means, self.inverse_one)
        masses = np.empty((len(bins), self.bin_values))
        masses[:, 0] = cdf[:, 0] - before
        np.subtract(cdf[:, 1:], cdf[:, :-1], out=masses[:, 1:-1])
        masses[:, -1] = end - cdf[:, -1]
        masses[end == before] = 1.0
        return masses


class StageSums(NamedTuple):
    """What an encoder needs of the two stages' table rows for its symbols: each
    stage's symbol and the running sums of its row before and through it, and of the
    whole row (as `exact_symbol_sums` gives them for a one-stage table)."""

    bins: np.ndarray
    bin_sums: tuple[np.ndarray, np.ndarray, np.ndarray]
    offsets: np.ndarray
    offset_sums: tuple[np.ndarray, np.ndarray, np.ndarray]


def exact_stage_sums(
    weights: np.ndarray,
    means_fixed: np.ndarray,
    log_scales_fixed: np.ndarray,
    symbols: np.ndarray,
    bin_values: int,
) -> StageSums:
    """`TwoStageTables`' running sums at (n,) symbols, from the
    mixture CDF at four values a row instead of the tables (the same integers)."""
    v = np.asarray(symbols, dtype=np.int64)
    bins, offsets = np.divmod(v, bin_values)
    start = bins * bin_values - 1
    values = np.stack([start, v - 1, v, start + bin_values], axis=1)
    cdf = _mixture_cdf(weights, means_fixed, _inverse_scales(log_scales_fixed), values)
    before, below, through, end = cdf.T
    total = weights.sum(axis=1) * _ONE_FINE
    in_bin = end - before
    empty = in_bin == 0
    offset_sums = (
        np.where(empty, offsets, below - before),
        np.where(empty, offsets + 1, through - before),
        np.where(empty, bin_values, in_bin),
    )
    return StageSums(bins, (before, end, total), offsets, offset_sums)


def _component_masses(values: np.ndarray, means_fixed: np.ndarray, log_scales_fixed: np.ndarray):
    """(r, m) each component's mass (2**-24 units, at least 1) of each value's bin: its
    CDF at the bin's upper edge (2**24 above value 255) less at the lower (0 below 0)."""
    inverse = _inverse_scales(log_scales_fixed)
    v = np.asarray(values, dtype=np.int64)[:, None]
    upper = np.where(
        v == 255, _ONE_FINE, _sigmoid_at(_UPPER_EDGES[np.minimum(v, 254)], means_fixed, inverse)
    )
    lower = np.where(v == 0, 0.0, _sigmoid_at(_LOWER_EDGES[v], means_fixed, inverse))
    return np.maximum(upper - lower, 1.0)


def exact_reweight(weights, values, means_fixed, log_scales_fixed) -> np.ndarray:
    """Weights given a channel's value: w_k · P_k(value), renormalised so the largest is
    2**24 (an exact floor of a correctly rounded quotient)."""
    joint = weights * _component_masses(values, means_fixed, log_scales_fixed)
    return np.floor(joint * _ONE_FINE / joint.max(axis=1, keepdims=True))


def exact_channel_means(means_fixed, coeffs_fixed, channel: int, red, green) -> np.ndarray:
    """Component means (activation integers) of one channel given the earlier ones:
    μ_G + c₀·x_R, μ_B + c₁·x_R + c₂·x_G, each product rounded exactly."""
    if channel == 0:
        return means_fixed[:, 0]
    x_red = fp.PIXEL_FIXED[np.asarray(red, dtype=np.int64)][:, None]
    if channel == 1:
        return means_fixed[:, 1] + fp.mul(coeffs_fixed[:, 0], x_red)
    x_green = fp.PIXEL_FIXED[np.asarray(green, dtype=np.int64)][:, None]
    return (
        means_fixed[:, 2] + fp.mul(coeffs_fixed[:, 1], x_red) + fp.mul(coeffs_fixed[:, 2], x_green)
    )
