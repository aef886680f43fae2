"""constriction's fixed-point probabilities, reproduced in numpy for rate accounting.

constriction's default ANS coder gives every symbol an integer probability ``p`` out of
``2**PROBABILITY_BITS``; the information content the coder actually spends on a symbol is
``PROBABILITY_BITS - log2(p)`` bits. constriction does not expose ``p`` from Python, so
these functions recompute it with the same float64 operations in the same order as
constriction 0.5 (leaky quantisation, ``perfect=False``). ``tests/test_coding_rate.py``
checks them against probabilities read back from the coder itself.

All functions take parameters already converted by
:func:`bbcodec.coding.handover.coder_float64` and return int64 arrays of numerators ``p``
(``1 <= p <= 2**PROBABILITY_BITS``), one per symbol.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PROBABILITY_BITS",
    "bernoulli_fixed_point",
    "categorical_fixed_point",
    "categorical_ranges",
    "quantized_gaussian_fixed_point",
    "range_tables",
    "uniform_fixed_point",
]

#: Fixed-point precision of constriction's default models: probabilities are ``p / 2**24``.
PROBABILITY_BITS = 24
_TOTAL = 1 << PROBABILITY_BITS

# Elementwise math.erf: the platform libm's erf, which is what constriction's Gaussian uses.
_erf = np.frompyfunc(math.erf, 1, 1)


def _floor_to_int(values: np.ndarray) -> np.ndarray:
    """Rust's ``f64 as u32`` for the non-negative values that occur here: truncation."""
    return values.astype(np.int64)


def categorical_fixed_point(probabilities: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Fixed-point probabilities of ``Categorical(perfect=False)`` (lazy leaky model).

    Args:
        probabilities: float64 ``(n, k)`` table, rows unnormalised but finite and >= 0.
        symbols: int ``(n,)`` symbols in ``0..k-1``.

    Returns:
        int64 ``(n,)`` numerators.

    Example:
        >>> categorical_fixed_point(np.array([[0.25, 0.75]]), np.array([1])).tolist()
        [12582912]
    """
    n_rows, n_symbols = probabilities.shape
    rows = np.arange(n_rows)
    cumulative = np.cumsum(probabilities, axis=1)  # sequential, like Rust's iterator sum
    below = np.where(symbols > 0, cumulative[rows, np.maximum(symbols - 1, 0)], 0.0)
    through = cumulative[rows, symbols]
    return categorical_ranges(below, through, cumulative[:, -1], symbols, n_symbols)[1]


def categorical_ranges(
    below: np.ndarray, through: np.ndarray, total: np.ndarray, symbols: np.ndarray, n_symbols: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``Categorical(perfect=False)`` puts each symbol, from its table's running sums.

    A symbol's range depends on its table only through the sum of the entries before it,
    the sum through it and the sum of all of them, so it can be found without the table.

    Args:
        below: float64 ``(n,)`` sums of the entries before each symbol (0 for symbol 0).
        through: float64 ``(n,)`` sums of the entries up to and including it.
        total: float64 ``(n,)`` sums of whole rows.
        symbols: int ``(n,)`` symbols in ``0..n_symbols-1``.
        n_symbols: the table's width.

    Returns:
        int64 ``(n,)`` starts and ``(n,)`` numerators: each symbol owns the quantiles
        ``start .. start + numerator - 1`` of ``2**24``.
    """
    scale = float(_TOTAL - n_symbols) / total
    left = _floor_to_int(below * scale) + symbols
    right = np.where(symbols == n_symbols - 1, _TOTAL, _floor_to_int(through * scale) + symbols + 1)
    return left, right - left


def range_tables(starts: np.ndarray, numerators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three-entry tables that code each symbol in exactly its given range.

    ``Categorical(perfect=False)`` gives entry ``i`` of a three-entry table summing to
    ``2**24 − 3`` the quantiles from ``floor(sum before i) + i`` on (its scale is then
    exactly 1), so entries ``(start − 1, numerator − 1, rest)`` code entry 1 as
    ``start .. start + numerator − 1``; a range at either end of ``2**24`` is entry 0
    or 2 instead. Pushing entry ``index`` with such a table writes the same bits as pushing
    the symbol with its whole table (`categorical_ranges`): an encoder needs only the two
    running sums of each symbol, not its table (a decoder still needs the table).

    Returns:
        float64 ``(n, 3)`` tables and int32 ``(n,)`` entries to push.
    """
    ends = starts + numerators
    index = np.where(starts == 0, 0, np.where(ends == _TOTAL, 2, 1)).astype(np.int32)
    tables = np.empty((starts.shape[0], 3))
    tables[:, 0] = np.where(index == 1, starts - 1, np.where(index == 0, numerators - 1, 0))
    tables[:, 1] = np.where(index == 1, numerators - 1, np.where(index == 2, starts - 2, 0))
    tables[:, 2] = (_TOTAL - 3) - tables[:, 0] - tables[:, 1]
    return tables, index


def bernoulli_fixed_point(p_one: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Fixed-point probabilities of ``Bernoulli(perfect=False)``.

    constriction builds the table ``[1 - p, p]`` and quantises it like a categorical.

    Args:
        p_one: float64 ``(n,)`` probabilities of a one.
        symbols: int ``(n,)`` symbols in ``{0, 1}``.

    Returns:
        int64 ``(n,)`` numerators.
    """
    p_zero = 1.0 - p_one
    scale = float(_TOTAL - 2) / (p_zero + p_one)
    numerator_zero = _floor_to_int(p_zero * scale) + 1
    return np.where(symbols == 0, numerator_zero, _TOTAL - numerator_zero)


def uniform_fixed_point(n_symbols: int, symbols: np.ndarray) -> np.ndarray:
    """Fixed-point probabilities of ``Uniform(n_symbols)``; the last symbol takes the rest.

    Args:
        n_symbols: Alphabet size, ``2 <= n_symbols < 2**24``.
        symbols: int array of symbols in ``0..n_symbols-1``, any shape.

    Returns:
        int64 numerators, shaped like ``symbols``.
    """
    per_symbol = _TOTAL // n_symbols
    last = _TOTAL - (n_symbols - 1) * per_symbol
    return np.where(symbols == n_symbols - 1, last, per_symbol).astype(np.int64)


def quantized_gaussian_fixed_point(
    means: np.ndarray,
    stds: np.ndarray,
    symbols: np.ndarray,
    min_symbol: int,
    max_symbol: int,
) -> np.ndarray:
    """Fixed-point probabilities of ``QuantizedGaussian(min_symbol, max_symbol)``.

    Bins are ``[k - 0.5, k + 0.5]`` on the integer grid; the outer bins take the tails.
    Uses elementwise :func:`math.erf` (a Python call per symbol: accounting only, never on
    the coding path).

    Args:
        means: float64 ``(n,)`` means in grid units.
        stds: float64 ``(n,)`` standard deviations in grid units, > 0.
        symbols: int ``(n,)`` symbols in ``min_symbol..max_symbol``.
        min_symbol: Smallest symbol of the support.
        max_symbol: Largest symbol of the support.

    Returns:
        int64 ``(n,)`` numerators.
    """
    free_weight = float((_TOTAL - 1) - (max_symbol - min_symbol))
    slack = symbols.astype(np.int64) - min_symbol
    denominators = stds * math.sqrt(2.0)

    def non_leaky(edges: np.ndarray) -> np.ndarray:
        cdf = (1.0 + _erf((edges - means) / denominators).astype(np.float64)) / 2.0
        return _floor_to_int(free_weight * cdf)

    symbols_float = symbols.astype(np.float64)
    left = np.where(symbols == min_symbol, 0, non_leaky(symbols_float - 0.5) + slack)
    right = np.where(symbols == max_symbol, _TOTAL, non_leaky(symbols_float + 0.5) + slack + 1)
    return right - left
