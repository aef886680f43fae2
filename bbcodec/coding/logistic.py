"""Discretised logistic mixtures (PixelCNN++, Salimans et al. 2017) as 256-way categoricals.

Scaling convention (as in PixelCNN++): an 8-bit value ``v`` sits at ``x = 2v/255 - 1`` in
``[-1, 1]``; means and log-scales are in those units. The bin of ``v`` is
``[x - 1/255, x + 1/255]``, except that the bin of 0 extends to -inf and the bin of 255 to
+inf. Mixture weights are ``softmax(logit_weights)``; ``log_scales`` is the natural log of
the logistic scale ``s`` (the model should clamp it, e.g. at -7, as PixelCNN++ does).

For coding, every sub-pixel becomes a 256-way table computed in float64 by
:func:`logistic_mixture_table`. Each row of the table depends only on that row's
parameters, through the same elementwise operations whatever the number of rows (sums over
components are explicit sequential loops), so the encoder's one-pass table and the
decoder's step-by-step tables agree bit for bit. Tables are built and coded in chunks of
:data:`TABLE_CHUNK_ROWS` rows to bound memory.

Example:
    >>> from bbcodec.coding.message import Message
    >>> zeros = np.zeros((2, 3))
    >>> codec = DiscretizedLogisticMixture(zeros, np.full((2, 3), 0.1), np.full((2, 3), -3.0))
    >>> message = Message.seeded(seed=0, n_words=4)
    >>> codec.push(message, np.array([140, 141]))
    >>> codec.pop(message).tolist()
    [140, 141]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import constriction
import numpy as np

from bbcodec.coding.exact_logistic import (
    TwoStageTables,
    exact_channel_means,
    exact_mixture_table,
    exact_reweight,
    exact_stage_sums,
    exact_symbol_sums,
    exact_weights,
)
from bbcodec.coding.handover import coder_float64
from bbcodec.coding.leaves import coder_symbols, record_pop, record_push
from bbcodec.coding.message import Message
from bbcodec.coding.quantization import (
    PROBABILITY_BITS,
    categorical_fixed_point,
    categorical_ranges,
    range_tables,
)

__all__ = [
    "N_PIXEL_VALUES",
    "PIXEL_BINS",
    "TABLE_CHUNK_ROWS",
    "DiscretizedLogisticMixture",
    "DiscretizedLogisticMixtureRGB",
    "LogisticMixtureParams",
    "LogisticMixtureRGBParams",
    "logistic_mixture_table",
    "pixel_values_to_unit",
]

#: Number of 8-bit pixel values, the alphabet of every sub-pixel.
N_PIXEL_VALUES = 256
#: Rows of 256-way table built and coded per constriction call (about 2 MB per array).
TABLE_CHUNK_ROWS = 1024

# Upper bin edges of values 0..254 in [-1, 1] units: x_v + 1/255 = (2v + 1)/255 - 1.
_UPPER_EDGES = (2.0 * np.arange(N_PIXEL_VALUES - 1) + 1.0) / 255.0 - 1.0
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def pixel_values_to_unit(values: np.ndarray) -> np.ndarray:
    """8-bit values ``0..255`` to their centres ``2v/255 - 1`` in ``[-1, 1]`` (float64)."""
    return 2.0 * np.asarray(values, dtype=np.float64) / 255.0 - 1.0


def logistic_mixture_table(
    logit_weights: np.ndarray, means: np.ndarray, log_scales: np.ndarray
) -> np.ndarray:
    """Probabilities of the 256 pixel values under discretised logistic mixtures.

    Args:
        logit_weights: float64 ``(n, m)`` unnormalised log mixture weights.
        means: float64 ``(n, m)`` component means, ``[-1, 1]`` units.
        log_scales: float64 ``(n, m)`` log component scales, ``[-1, 1]`` units.

    Returns:
        float64 ``(n, 256)`` table; rows sum to 1 up to rounding, entries are >= 0 (masses
        below float64 resolution are 0; the coder still gives them its minimum probability).

    Example:
        >>> table = logistic_mixture_table(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
        >>> table.shape, bool(abs(table.sum() - 1.0) < 1e-12)
        ((1, 256), True)
    """
    # Contiguous inputs, so that exp takes the same code path whatever the caller's layout.
    logit_weights, means, log_scales = map(coder_float64, (logit_weights, means, log_scales))
    n_rows, n_components = logit_weights.shape
    weights = np.exp(logit_weights - logit_weights.max(axis=1, keepdims=True))
    inverse_scales = np.exp(-log_scales)
    total_weight = weights[:, 0].copy()
    cdf = np.zeros((n_rows, N_PIXEL_VALUES - 1))
    term = np.empty_like(cdf)
    for component in range(n_components):
        if component:
            total_weight += weights[:, component]
        # term = weight / (1 + exp(-(edge - mean) / scale)), in place.
        np.subtract(_UPPER_EDGES, means[:, component, None], out=term)
        np.multiply(term, -inverse_scales[:, component, None], out=term)
        with np.errstate(over="ignore"):  # exp -> inf gives the exact limit, term -> 0
            np.exp(term, out=term)
        term += 1.0
        np.divide(weights[:, component, None], term, out=term)
        cdf += term
    cdf /= total_weight[:, None]
    table = np.empty((n_rows, N_PIXEL_VALUES))
    table[:, 0] = cdf[:, 0]
    np.subtract(cdf[:, 1:], cdf[:, :-1], out=table[:, 1:-1])
    table[:, -1] = 1.0 - cdf[:, -1]
    return np.maximum(table, 0.0, out=table)


def _push_rows(
    message: Message,
    symbols: np.ndarray,
    logit_weights: np.ndarray,
    means: np.ndarray,
    log_scales: np.ndarray,
    arithmetic: MixtureArithmetic,
    blocks: np.ndarray | None = None,
) -> np.ndarray | None:
    """Pushes 1-D int32 symbols row by row: what `_pop_rows` pops, called on the same
    ``blocks`` (consecutive block lengths; None: one block of all), each cut into chunks
    (two stages pop a chunk's bins, then its offsets, so the chunks must be the decoder's).

    With exact arithmetic each symbol is pushed with a three-entry table that codes it in
    the range its whole table gives it (`range_tables`): the same bits, without the tables,
    all rows in one push however many blocks they form.

    Returns the symbols' fixed-point probabilities (float64, 1-D) if the message has an
    information meter, else None.
    """
    metered = message.meter is not None
    params = logit_weights, means, log_scales
    if arithmetic.bin_values:
        first, second = _two_stage_ranges(arithmetic, params, symbols)
        # pop order: each chunk's bins, then its offsets
        starts, lengths = _chunk_bounds(symbols.size, blocks)
        chunk_of_row = np.repeat(np.arange(starts.size), lengths)
        at_bin = starts[chunk_of_row] + np.arange(symbols.size)
        order = np.concatenate([at_bin, at_bin + lengths[chunk_of_row]])
        ranges = np.empty((2, 2 * symbols.size), dtype=np.int64)
        ranges[:, order] = np.concatenate([first, second], axis=1)
        message.push(*_reversed_range_push(*ranges))
        return _stages_numerator(first[1], second[1])
    if arithmetic.symbol_sums is not None:
        _, numerators = ranges = _symbol_ranges(arithmetic, params, symbols)
        message.push(*_reversed_range_push(*ranges))
        return numerators.astype(np.float64)
    numerators = np.empty(symbols.size, np.float64) if metered else None
    starts, lengths = _chunk_bounds(symbols.size, blocks)
    for start, length in reversed(list(zip(starts, lengths, strict=True))):
        rows = slice(start, start + length)
        table = arithmetic.table(*(array[rows] for array in params))
        message.push(symbols[rows], _CATEGORICAL, table)
        if numerators is not None:
            numerators[rows] = categorical_fixed_point(table, symbols[rows])
    return numerators


def _reversed_range_push(starts: np.ndarray, numerators: np.ndarray) -> tuple:
    """`Message.push` arguments that code symbols in the given ranges (`range_tables`)."""
    table, entries = range_tables(starts, numerators)
    return entries, _CATEGORICAL, table


def _chunk_bounds(n_rows: int, blocks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths (int64) of the chunks whose tables are built at once: each block
    (None: one block of all rows) cut into chunks of at most `TABLE_CHUNK_ROWS` rows."""
    if blocks is None and 0 < n_rows <= TABLE_CHUNK_ROWS:  # a decoder's step: one chunk
        return np.zeros(1, dtype=np.int64), np.array([n_rows], dtype=np.int64)
    blocks = np.array([n_rows] if blocks is None else blocks, dtype=np.int64)
    blocks = blocks[blocks > 0]
    pieces = -(-blocks // TABLE_CHUNK_ROWS)  # chunks per block
    block_of = np.repeat(np.arange(blocks.size), pieces)
    first_piece = np.cumsum(pieces) - pieces
    piece_in_block = np.arange(block_of.size) - first_piece[block_of]
    starts = (np.cumsum(blocks) - blocks)[block_of] + piece_in_block * TABLE_CHUNK_ROWS
    lengths = np.minimum(TABLE_CHUNK_ROWS, blocks[block_of] - piece_in_block * TABLE_CHUNK_ROWS)
    return starts, lengths


def group_sizes(n: int, group_size: int | Sequence[int] | None) -> np.ndarray:
    """The sizes (int64) of the groups a leaf of ``n`` rows codes one after the other:
    ``group_size`` rows each (an int that divides n), the given sizes (a sequence summing
    to n), or one group of all (None).

    Raises:
        ValueError: sizes that do not tile the n rows.
    """
    if group_size is None:
        return np.array([n], dtype=np.int64)
    if np.ndim(group_size) == 0:
        size = int(group_size)
        if n and (size < 1 or n % size):
            raise ValueError(f"group_size {size} must be >= 1 and divide n = {n}")
        return np.full(n // size if n else 0, size, dtype=np.int64)
    sizes = np.asarray(group_size, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any() or sizes.sum() != n:
        raise ValueError(f"group sizes must be >= 0 and sum to n = {n}")
    return sizes


def _two_stage_ranges(arithmetic: MixtureArithmetic, params: tuple, symbols: np.ndarray):
    """Each symbol's bin and offset ranges ((start, numerator) each) in the two stages'
    tables (`exact_stage_sums`), and the bins and offsets."""
    n_values = arithmetic.bin_values
    sums = exact_stage_sums(*params, symbols, n_values)
    first = categorical_ranges(*sums.bin_sums, sums.bins, N_PIXEL_VALUES // n_values)
    second = categorical_ranges(*sums.offset_sums, sums.offsets, n_values)
    return first, second


def _push_two_stages(
    message: Message, arithmetic: MixtureArithmetic, params: tuple, symbols: np.ndarray
) -> np.ndarray:
    """Pushes symbols as offsets, then bins (a decoder pops bins first), each with
    three-entry tables (`range_tables`); returns their probabilities × 2**24 (floats)."""
    first, second = _two_stage_ranges(arithmetic, params, symbols)
    for starts, numerators in (second, first):
        table, entries = range_tables(starts, numerators)
        message.push(entries, _CATEGORICAL, table)
    return _stages_numerator(first[1], second[1])


def _stages_numerator(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two stages' fixed-point probabilities as one, × 2**24 (float64; may be below 1)."""
    return first * (second / float(1 << PROBABILITY_BITS))


def _symbol_ranges(arithmetic: MixtureArithmetic, params: tuple, symbols: np.ndarray):
    """Each symbol's (start, numerator) in its row's table, from ``arithmetic.symbol_sums``
    without the table (`categorical_ranges`)."""
    return categorical_ranges(*arithmetic.symbol_sums(*params, symbols), symbols, N_PIXEL_VALUES)


def _pop_rows(
    message: Message,
    logit_weights: np.ndarray,
    means: np.ndarray,
    log_scales: np.ndarray,
    arithmetic: MixtureArithmetic,
    blocks: np.ndarray | None = None,
) -> np.ndarray:
    """Pops one symbol per parameter row, in ``blocks`` (None: one block) cut into
    chunks, in order; returns 1-D int32."""
    chunks = []
    n_values = arithmetic.bin_values
    for start, length in zip(*_chunk_bounds(logit_weights.shape[0], blocks), strict=True):
        rows = slice(start, start + length)
        params = logit_weights[rows], means[rows], log_scales[rows]
        if n_values:
            tables = TwoStageTables(*params, n_values)
            bins = message.pop(_CATEGORICAL, tables.bins())
            offsets = message.pop(_CATEGORICAL, tables.offsets(bins))
            chunks.append((bins * n_values + offsets).astype(np.int32))
        else:
            chunks.append(message.pop(_CATEGORICAL, arithmetic.table(*params)))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int32)


def _rows_fixed_point(
    symbols: np.ndarray,
    logit_weights: np.ndarray,
    means: np.ndarray,
    log_scales: np.ndarray,
    arithmetic: MixtureArithmetic,
) -> np.ndarray:
    """Fixed-point probabilities (int64, 1-D) of 1-D symbols, one parameter row each."""
    chunks = []
    for start, length in zip(*_chunk_bounds(symbols.size), strict=True):
        rows = slice(start, start + length)
        params = logit_weights[rows], means[rows], log_scales[rows]
        if arithmetic.bin_values:
            first, second = _two_stage_ranges(arithmetic, params, symbols[rows])
            chunks.append(_stages_numerator(first[1], second[1]))
        elif arithmetic.symbol_sums is not None:
            chunks.append(_symbol_ranges(arithmetic, params, symbols[rows])[1])
        else:
            chunks.append(categorical_fixed_point(arithmetic.table(*params), symbols[rows]))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


class LogisticMixtureParams(NamedTuple):
    """Parameters of :class:`DiscretizedLogisticMixture`, concatenable along axis 0.

    Attributes:
        logit_weights: float ``(n, m)``.
        means: float ``(n, m)``, ``[-1, 1]`` units.
        log_scales: float ``(n, m)``.
    """

    logit_weights: np.ndarray
    means: np.ndarray
    log_scales: np.ndarray


@dataclass(frozen=True, eq=False)
class DiscretizedLogisticMixture:
    """Single-channel 8-bit symbols, one logistic mixture of ``m`` components each.

    Attributes:
        logit_weights: float ``(n, m)`` unnormalised log mixture weights.
        means: float ``(n, m)`` component means, ``[-1, 1]`` units.
        log_scales: float ``(n, m)`` log component scales.
        exact: the three are the integer twin's activation integers, and the tables are
            built exactly (`bbcodec.coding.exact_logistic`).
        pixel_bins: 1: each symbol with its 256-way table; 16 (exact only): its bin of 16
            values, then its offset in the bin (`MixtureArithmetic.bin_values`).
        group_size: symbols per group, popped one group at a time (with two stages a
            group's bins, then its offsets): pass the symbols per autoregressive step, so
            a codec built on all steps' parameters pushes what the steps' codecs pop; a
            sequence: the groups' sizes in order (steps of different sizes); ``None``: one
            group of all.
    """

    logit_weights: np.ndarray
    means: np.ndarray
    log_scales: np.ndarray
    exact: bool = False
    pixel_bins: int = 1
    group_size: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        for name in ("logit_weights", "means", "log_scales"):
            object.__setattr__(self, name, coder_float64(getattr(self, name)))
        if not self.logit_weights.ndim == 2 or not (
            self.logit_weights.shape == self.means.shape == self.log_scales.shape
        ):
            raise ValueError("logit_weights, means and log_scales must all be (n, m)")
        object.__setattr__(
            self, "_groups", group_sizes(self.logit_weights.shape[0], self.group_size)
        )
        arithmetic = _arithmetic(self.exact, self.pixel_bins)
        object.__setattr__(self, "_arithmetic", arithmetic)
        object.__setattr__(self, "_weights", arithmetic.weights(self.logit_weights))

    def _rows(self) -> tuple:
        return self._weights, self.means, self.log_scales, self._arithmetic

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes ``(n,)`` int symbols in ``0..255``."""
        rows = coder_symbols(symbols), *self._rows()
        numerators = _push_rows(message, *rows, self._groups)
        record_push(message, self, symbols, numerators)

    def pop(self, message: Message) -> np.ndarray:
        """Pops ``(n,)`` int32 symbols, group by group."""
        symbols = _pop_rows(message, *self._rows(), self._groups)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 ``(n,)`` probabilities (out of ``2**24``) of ``symbols``."""
        return _rows_fixed_point(coder_symbols(symbols), *self._rows())


def _channel_means(
    means: np.ndarray, coeffs: np.ndarray, channel: int, red: np.ndarray, green: np.ndarray
) -> np.ndarray:
    """Component means of one channel given the pixel's earlier channels.

    Args:
        means: float64 ``(r, 3, m)``.
        coeffs: float64 ``(r, 3, m)``.
        channel: 0 (R), 1 (G) or 2 (B).
        red: int ``(r,)`` values of R (read for channels 1 and 2 only).
        green: int ``(r,)`` values of G (read for channel 2 only).

    Returns:
        float64 ``(r, m)`` means, ``[-1, 1]`` units.
    """
    if channel == 0:
        return means[:, 0]
    x_red = pixel_values_to_unit(red)[:, None]
    if channel == 1:
        return means[:, 1] + coeffs[:, 0] * x_red
    x_green = pixel_values_to_unit(green)[:, None]
    return means[:, 2] + coeffs[:, 1] * x_red + coeffs[:, 2] * x_green


def _component_log_masses(
    values: np.ndarray, means: np.ndarray, log_scales: np.ndarray
) -> np.ndarray:
    """Natural log of each component's probability of each value's bin.

    Stable everywhere: log(σ(b) − σ(a)) = −softplus(−b) − softplus(a) + log(1 − e^(a−b))
    for the bin [a, b] in units of the scale (a = −∞ for 0, b = +∞ for 255).

    Args:
        values: int ``(r,)`` 8-bit values.
        means: float64 ``(r, m)``, ``[-1, 1]`` units.
        log_scales: float64 ``(r, m)``.

    Returns:
        float64 ``(r, m)`` log masses (≤ 0).
    """
    means, log_scales = coder_float64(means), coder_float64(log_scales)
    values = np.asarray(values)[:, None]
    inverse_scales = np.exp(-log_scales)
    centred = pixel_values_to_unit(values) - means
    upper = np.where(values == N_PIXEL_VALUES - 1, np.inf, (centred + 1.0 / 255.0) * inverse_scales)
    lower = np.where(values == 0, -np.inf, (centred - 1.0 / 255.0) * inverse_scales)
    width = np.where((values == 0) | (values == N_PIXEL_VALUES - 1), np.inf, upper - lower)
    return -np.logaddexp(0.0, -upper) - np.logaddexp(0.0, lower) + np.log(-np.expm1(-width))


class MixtureArithmetic(NamedTuple):
    """How a mixture's numbers are computed: in float64 from float head parameters (files
    of container formats up to 3), or exactly from the integer twin's head parameters (the
    portable path, `bbcodec.coding.exact_logistic`).

    Attributes:
        weights: (n, m) head logits → the weights ``table`` and ``reweight`` take.
        table: (weights, means, log_scales) → (n, 256) bin masses.
        channel_means: (means, coeffs, channel, red, green) → (r, m) channel means.
        reweight: (weights, values, means, log_scales) → the weights given the values.
        symbol_sums: (weights, means, log_scales, symbols) → the running sums of each
            table row before and through its symbol, and of the whole row (None: read
            off the table).
        bin_values: 0: a symbol is coded with its 256-way table; else (exact only) in two
            stages, its bin of this many values, then its offset in the bin
            (`TwoStageTables`): tables of a few entries each.
    """

    weights: Callable
    table: Callable
    channel_means: Callable
    reweight: Callable
    symbol_sums: Callable | None = None
    bin_values: int = 0


FLOAT_ARITHMETIC = MixtureArithmetic(
    lambda logits: logits, logistic_mixture_table, _channel_means,
    lambda weights, values, means, log_scales: weights
    + _component_log_masses(values, means, log_scales),
)  # fmt: skip
EXACT_ARITHMETIC = MixtureArithmetic(
    exact_weights, exact_mixture_table, exact_channel_means, exact_reweight, exact_symbol_sums
)


#: Numbers of first-stage bins a mixture may be coded with (1: one 256-way stage).
PIXEL_BINS = (1, 16)


def _arithmetic(exact: bool, pixel_bins: int = 1) -> MixtureArithmetic:
    """The arithmetic of a leaf; ``pixel_bins`` > 1 (exact only) codes in two stages."""
    if pixel_bins not in PIXEL_BINS:
        raise ValueError(f"pixel_bins must be one of {PIXEL_BINS}, got {pixel_bins!r}")
    if pixel_bins == 1:
        return EXACT_ARITHMETIC if exact else FLOAT_ARITHMETIC
    if not exact:
        raise ValueError("two-stage pixel coding (pixel_bins > 1) needs exact arithmetic")
    return EXACT_ARITHMETIC._replace(bin_values=N_PIXEL_VALUES // pixel_bins)


def _channel_mixtures(
    logit_weights: np.ndarray,
    means: np.ndarray,
    log_scales: np.ndarray,
    coeffs: np.ndarray,
    symbols: np.ndarray,
    arithmetic: MixtureArithmetic = FLOAT_ARITHMETIC,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The mixtures R, G and B are coded with, each given the pixel's earlier channels.

    The model is a mixture over whole pixels, p(r, g, b) = Σ_j π_j p_j(r) p_j(g|r) p_j(b|r, g),
    so given R (and G) the components' weights are their posterior responsibilities:
    log π_j + log p_j(r) (+ log p_j(g|r)). Coding R, G, B with these conditionals costs
    exactly −log p(r, g, b); the prior weights π alone would cost more.

    Args:
        logit_weights: float64 ``(r, m)``; means, log_scales, coeffs: float64 ``(r, 3, m)``.
        symbols: int ``(r, 3)``; channel c's values are read only after channel c's
            mixture was yielded, so a decoder may fill them in as it pops.

    Yields:
        For channels 0, 1, 2: ``(r, m)`` weights (as ``arithmetic.table`` takes them) and
        ``(r, m)`` means.
    """
    weights = arithmetic.weights(logit_weights)
    for channel in range(3):
        channel_means = arithmetic.channel_means(
            means, coeffs, channel, symbols[:, 0], symbols[:, 1]
        )
        yield weights, channel_means
        if channel < 2:
            weights = arithmetic.reweight(
                weights, symbols[:, channel], channel_means, log_scales[:, channel]
            )


class LogisticMixtureRGBParams(NamedTuple):
    """Parameters of :class:`DiscretizedLogisticMixtureRGB`, concatenable along axis 0.

    Attributes:
        logit_weights: float ``(n, m)``, shared by the three channels of a pixel.
        means: float ``(n, 3, m)``, ``[-1, 1]`` units, channels R, G, B.
        log_scales: float ``(n, 3, m)``.
        coeffs: float ``(n, 3, m)``: G←R, B←R, B←G (already squashed, e.g. by tanh).
    """

    logit_weights: np.ndarray
    means: np.ndarray
    log_scales: np.ndarray
    coeffs: np.ndarray


@dataclass(frozen=True, eq=False)
class DiscretizedLogisticMixtureRGB:
    """RGB pixels: R, then G given R, then B given R and G (PixelCNN++ convention).

    Component ``j`` of G has mean ``means[:, 1, j] + coeffs[:, 0, j] * x_R`` and of B
    ``means[:, 2, j] + coeffs[:, 1, j] * x_R + coeffs[:, 2, j] * x_G``, where ``x_c`` is the
    channel's value in ``[-1, 1]``. The mixture is over whole pixels (one component for all
    three channels), so G and B are coded with the components re-weighted by how well each
    explained the pixel's earlier channels (`_channel_mixtures`): the three conditionals
    multiply to the model's joint p(r, g, b). Pixels are coded in consecutive groups of
    ``group_size``; popping a group pops R of all its pixels, then G, then B (push does the
    reverse). Pass ``group_size`` = pixels per autoregressive step so that a codec built on
    all steps' parameters at once pushes exactly what the per-step codecs pop.

    Attributes:
        logit_weights: float ``(n, m)``.
        means: float ``(n, 3, m)``.
        log_scales: float ``(n, 3, m)``.
        coeffs: float ``(n, 3, m)``.
        group_size: Pixels per group; a sequence: the groups' sizes in order (steps of
            different sizes); ``None`` means one group of all ``n`` pixels.
        exact: the parameters are the integer twin's activation integers, and the tables
            are built exactly (`bbcodec.coding.exact_logistic`).
        pixel_bins: as `DiscretizedLogisticMixture`'s.
    """

    logit_weights: np.ndarray
    means: np.ndarray
    log_scales: np.ndarray
    coeffs: np.ndarray
    group_size: int | Sequence[int] | None = None
    exact: bool = False
    pixel_bins: int = 1

    def __post_init__(self) -> None:
        for name in ("logit_weights", "means", "log_scales", "coeffs"):
            object.__setattr__(self, name, coder_float64(getattr(self, name)))
        n, m = self.logit_weights.shape
        if not self.means.shape == self.log_scales.shape == self.coeffs.shape == (n, 3, m):
            raise ValueError("means, log_scales and coeffs must be (n, 3, m)")
        groups = group_sizes(n, self.group_size)
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_arithmetic", _arithmetic(self.exact, self.pixel_bins))

    @functools.cached_property
    def _stack_position(self) -> np.ndarray:
        """(n, 3) position of each (pixel, channel) in stack order (group, channel, pixel);
        only pushes and rates need it, not a decoder's pops."""
        groups = self._groups
        first = np.repeat(np.cumsum(groups) - groups, groups)
        size = np.repeat(groups, groups)
        return (2 * first + np.arange(groups.sum()))[:, None] + np.arange(3) * size[:, None]

    def _grouped_rows(self, symbols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Symbols and row parameters of all pixels, in stack order (group, channel, pixel)."""
        arithmetic = self._arithmetic
        mixtures = _channel_mixtures(*self._mixture, symbols, arithmetic)
        weights, means = zip(*mixtures, strict=True)

        def grouped(per_channel: np.ndarray) -> np.ndarray:  # (n, 3, ...) -> stack order
            flat = per_channel.reshape(self._stack_position.size, -1)
            out = np.empty_like(flat)
            out[self._stack_position.ravel()] = flat
            return out

        return (
            grouped(symbols).reshape(-1),
            grouped(np.stack(weights, axis=1)),
            grouped(np.stack(means, axis=1)),
            grouped(self.log_scales),
        )

    def _blocks(self) -> np.ndarray:
        """Rows of each channel of each group, in stack order."""
        return np.repeat(self._groups, 3)

    @property
    def _mixture(self) -> tuple[np.ndarray, ...]:
        return self.logit_weights, self.means, self.log_scales, self.coeffs

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes ``(n, 3)`` int symbols in ``0..255`` (channels R, G, B)."""
        rgb = coder_symbols(symbols).reshape(-1, 3)
        rows = self._grouped_rows(rgb)
        numerators = _push_rows(message, *rows, self._arithmetic, self._blocks())
        if numerators is not None:
            numerators = self._ungrouped(numerators)
        record_push(message, self, symbols, numerators)

    def pop(self, message: Message) -> np.ndarray:
        """Pops ``(n, 3)`` int32 symbols, group by group: R, then G given R, then B."""
        n = self.logit_weights.shape[0]
        symbols = np.empty((n, 3), dtype=np.int32)
        for start, size in zip(np.cumsum(self._groups) - self._groups, self._groups, strict=True):
            group = slice(start, start + size)
            mixture = tuple(array[group] for array in self._mixture)
            arithmetic = self._arithmetic
            channels = _channel_mixtures(*mixture, symbols[group], arithmetic)  # sees the pops
            for channel, (weights, means) in enumerate(channels):
                symbols[group, channel] = _pop_rows(
                    message, weights, means, self.log_scales[group, channel], arithmetic
                )
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 ``(n, 3)`` probabilities (out of ``2**24``) of ``symbols``."""
        rgb = coder_symbols(symbols).reshape(-1, 3)
        arithmetic = self._arithmetic
        return self._ungrouped(_rows_fixed_point(*self._grouped_rows(rgb), arithmetic))

    def _ungrouped(self, stack_order: np.ndarray) -> np.ndarray:
        """(3n,) values in stack order (group, channel, pixel) → (n, 3) (pixel, channel)."""
        return stack_order[self._stack_position]
