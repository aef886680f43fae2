"""constriction's fixed-point probabilities, reproduced in numpy for rate accounting.

constriction's default ANS coder gives every symbol an integer probability ``p`` out of
``2**PROBABILITY_BITS``; the information content the coder actually spends on a symbol is
``PROBABILITY_BITS - log2(p)`` bits. constriction does not expose ``p`` from Python, so
these functions recompute it with the same float64 operations in the same order as
constriction 0.5 (leaky quantisation, ``perfect=False``). ``tests/coding/test_coding_rate.py``
checks them against probabilities read back from the coder itself.

All functions take parameters already converted by
:func:`bbcodec.coding.handover.coder_float64` and return int64 arrays of numerators ``p``
(``1 <= p <= 2**PROBABILITY_BITS``), one per symbol; the ``*_ranges`` functions also say
where each symbol's quantiles start, and `range_pushes` codes symbols in given ranges with
small tables (an encoder then needs no whole table: the same bits).
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
    "range_pushes",
    "range_tables",
    "uniform_fixed_point",
    "uniform_ranges",
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
    below: np.ndarray,
    through: np.ndarray,
    total: np.ndarray,
    symbols: np.ndarray,
    n_symbols: int | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``Categorical(perfect=False)`` puts each symbol, from its table's running sums.

    A symbol's range depends on its table only through the sum of the entries before it,
    the sum through it and the sum of all of them, so it can be found without the table.

    Args:
        below: float64 ``(n,)`` sums of the entries before each symbol (0 for symbol 0).
        through: float64 ``(n,)`` sums of the entries up to and including it.
        total: float64 ``(n,)`` sums of whole rows (> 0).
        symbols: int ``(n,)`` symbols in ``0..n_symbols-1``.
        n_symbols: the table's width, one for all rows or int ``(n,)`` one per row.

    Returns:
        int64 ``(n,)`` starts and ``(n,)`` numerators: each symbol owns the quantiles
        ``start .. start + numerator - 1`` of ``2**24``.
    """
    scale = (_TOTAL - n_symbols) / total  # 2**24 − n is exact in float64: one division
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

    Every range fits but one of ``2**24 − 1`` quantiles (a symbol of a two-entry table
    whose other symbol has a single quantile): `range_pushes` codes that one too.

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


def range_pushes(starts: np.ndarray, numerators: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``Categorical(perfect=False)`` pushes that code symbols in exactly their ranges.

    Like `range_tables`, whose three-entry tables code every range of at most
    ``2**24 − 2`` quantiles. A range of ``2**24 − 1`` (``[0, 2**24 − 1)`` or ``[1, 2**24)``)
    is entry 0 or 1 of a two-entry table ``(start − 1 or numerator − 1, rest)`` summing to
    ``2**24 − 2`` (scale 1 again): such symbols, in consecutive runs, take pushes of their
    own.

    Args:
        starts: int64 ``(n,)`` first quantile of each symbol's range, in pop order.
        numerators: int64 ``(n,)`` quantiles in each range (1 .. 2**24 − 1).

    Returns:
        ``(entries, tables)`` of each push, int32 ``(r,)`` and float64 ``(r, 2 or 3)``, in
        the order to push them: the last run first (the first symbol ends on top).
    """
    if not starts.shape[0]:
        return []
    wide = numerators == _TOTAL - 1
    cuts = (np.flatnonzero(wide[1:] != wide[:-1]) + 1).tolist()
    pushes = []
    for first, stop in reversed(list(zip([0, *cuts], [*cuts, starts.shape[0]], strict=True))):
        run_starts, run_numerators = starts[first:stop], numerators[first:stop]
        if not wide[first]:
            tables, entries = range_tables(run_starts, run_numerators)
        else:
            entries = (run_starts > 0).astype(np.int32)
            tables = np.empty((stop - first, 2))
            tables[:, 0] = np.where(entries == 1, run_starts - 1, run_numerators - 1)
            tables[:, 1] = (_TOTAL - 2) - tables[:, 0]
        pushes.append((entries, tables))
    return pushes


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
    return uniform_ranges(n_symbols, np.asarray(symbols))[1]


def uniform_ranges(
    n_symbols: int | np.ndarray, symbols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``Uniform(n_symbols)`` puts each symbol: symbol k owns ``2**24 // n_symbols``
    quantiles from ``k · (2**24 // n_symbols)`` on, the last symbol the rest up to
    ``2**24`` (`range_pushes` then codes it as the model does).

    Args:
        n_symbols: Alphabet size, ``2 <= n_symbols < 2**24``: an int, or an int array
            broadcastable against ``symbols`` (one alphabet per symbol).
        symbols: int array of symbols in ``0..n_symbols-1``, any shape.

    Returns:
        int64 starts and numerators, shaped like ``symbols``.
    """
    per_symbol = _TOTAL // np.asarray(n_symbols, dtype=np.int64)
    starts = symbols.astype(np.int64) * per_symbol
    last = symbols == n_symbols - 1
    return starts, np.where(last, _TOTAL - starts, per_symbol).astype(np.int64)


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
