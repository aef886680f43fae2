"""Leaf codecs: one constriction model family each, vectorised over arrays of symbols.

A leaf is built from its parameters and codes exactly one array of symbols shaped like
them: ``leaf.push(message, symbols)`` / ``leaf.pop(message) -> symbols``. Within one push,
element 0 (in C order) ends on top of the stack, so it is popped first. Consequently a
leaf built from parameters concatenated along axis 0 pushes exactly what the leaves of the
pieces would push one after another, last piece first — what
:class:`~bbcodec.coding.combinators.AutoRegressive` relies on.

Every leaf uses constriction's leaky quantisation with ``perfect=False`` (every symbol in
range gets a nonzero probability) and hands its parameters over through
:func:`~bbcodec.coding.handover.coder_float64`. ``fixed_point_probabilities`` returns the
integer probabilities (out of ``2**24``) the coder uses, for rate accounting.

Example:
    >>> from bbcodec.coding.message import Message
    >>> message = Message.seeded(seed=0, n_words=4)
    >>> codec = Categorical(np.array([[0.1, 0.9], [0.7, 0.3]]))
    >>> codec.push(message, np.array([1, 0]))
    >>> codec.pop(message).tolist()
    [1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import constriction
import numpy as np

from bbcodec.coding.handover import coder_float64
from bbcodec.coding.message import Message, MessageUnderflowError
from bbcodec.coding.quantization import (
    PROBABILITY_BITS,
    bernoulli_fixed_point,
    categorical_fixed_point,
    quantized_gaussian_fixed_point,
    uniform_fixed_point,
)

__all__ = [
    "Bernoulli",
    "Categorical",
    "GaussianParams",
    "LatentGrid",
    "QuantizedGaussian",
    "Uniform",
    "coder_symbols",
]

_MODEL = constriction.stream.model
# Model families are immutable; build them once. perfect=False is explicit everywhere.
_BERNOULLI = _MODEL.Bernoulli(perfect=False)
_CATEGORICAL = _MODEL.Categorical(perfect=False)


def coder_symbols(symbols: np.ndarray) -> np.ndarray:
    """Symbols as the 1-D contiguous int32 array constriction codes (C order).

    Args:
        symbols: Integer array-like, any shape.

    Returns:
        int32 array of shape ``(symbols.size,)`` (no copy if already int32 and contiguous).
    """
    return np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)


def record_push(
    message: Message, leaf: object, symbols: np.ndarray, numerators: np.ndarray | None = None
) -> None:
    """Adds pushed symbols to the message's information meter, if it has one
    (``numerators``: their fixed-point probabilities, if the leaf has them already)."""
    if message.meter is not None:
        message.meter.record_push(leaf, symbols, numerators)


def record_pop(message: Message, leaf: object, symbols: np.ndarray) -> None:
    """Adds popped symbols to the message's information meter, if it has one."""
    if message.meter is not None:
        message.meter.record_pop(leaf, symbols)


@dataclass(frozen=True, eq=False)
class Bernoulli:
    """Binary symbols, each one with its own probability of a one.

    Attributes:
        p_one: float array, any shape, values in ``[0, 1]`` (float64 after hand-over).
    """

    p_one: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "p_one", coder_float64(self.p_one))

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes ``symbols`` (ints in {0, 1}, shaped like ``p_one``)."""
        message.push(coder_symbols(symbols), _BERNOULLI, self.p_one.ravel())
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 symbols shaped like ``p_one``."""
        flat = message.pop(_BERNOULLI, self.p_one.ravel())
        symbols = flat.reshape(self.p_one.shape)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 probabilities (out of ``2**24``) of ``symbols``, shaped like them."""
        flat = bernoulli_fixed_point(self.p_one.ravel(), coder_symbols(symbols))
        return flat.reshape(np.shape(symbols))


@dataclass(frozen=True, eq=False)
class Categorical:
    """Symbols with explicit probability tables, one table row per symbol.

    Attributes:
        probabilities: float ``(n, k)`` table; each row is normalised by constriction (rows
            should sum to 1; they must be finite, non-negative and not all zero).
    """

    probabilities: np.ndarray

    def __post_init__(self) -> None:
        table = coder_float64(self.probabilities)
        if table.ndim != 2:
            raise ValueError(f"probabilities must be (n, k), got shape {table.shape}")
        object.__setattr__(self, "probabilities", table)

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes ``(n,)`` int symbols in ``0..k-1``."""
        message.push(coder_symbols(symbols), _CATEGORICAL, self.probabilities)
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops ``(n,)`` int32 symbols."""
        symbols = message.pop(_CATEGORICAL, self.probabilities)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 ``(n,)`` probabilities (out of ``2**24``) of ``symbols``."""
        return categorical_fixed_point(self.probabilities, coder_symbols(symbols))


@dataclass(frozen=True, eq=False)
class Uniform:
    """Symbols uniform over ``0..n_symbols-1`` (the last one takes the rounding rest).

    Attributes:
        n_symbols: Alphabet size, ``2 <= n_symbols < 2**24``.
        shape: Shape of the symbol array one push/pop codes.
    """

    n_symbols: int
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 2 <= self.n_symbols < 1 << PROBABILITY_BITS:
            raise ValueError(f"n_symbols must be in [2, 2**24), got {self.n_symbols}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes int symbols of shape ``shape``."""
        message.push(coder_symbols(symbols), _MODEL.Uniform(self.n_symbols))
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 symbols of shape ``shape``."""
        count = int(np.prod(self.shape, dtype=np.int64))
        flat = message.pop(_MODEL.Uniform(self.n_symbols), count=count)
        symbols = flat.reshape(self.shape)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 probabilities (out of ``2**24``) of ``symbols``, shaped like them."""
        return uniform_fixed_point(self.n_symbols, np.asarray(symbols))


@dataclass(frozen=True)
class LatentGrid:
    """The fixed grid latents are coded on: symbol ``k`` is the value ``z = k * step``.

    Symbols run over ``-n_half..n_half``, so values cover ``[-n_half*step, n_half*step]``.
    The grid is part of the coding settings: encoder and decoder must use the same one.

    Attributes:
        step: Grid spacing Δ in latent units, > 0.
        n_half: Number of grid points on each side of zero, ``>= 1``.

    Example:
        >>> grid = LatentGrid(step=0.5, n_half=4)
        >>> grid.to_symbols(np.array([-1.0, 0.26])).tolist()
        [-2, 1]
        >>> grid.to_values(np.array([-2, 1])).tolist()
        [-1.0, 0.5]
    """

    step: float
    n_half: int

    def __post_init__(self) -> None:
        if not self.step > 0.0:
            raise ValueError(f"grid step must be > 0, got {self.step}")
        if not (1 <= self.n_half and 2 * self.n_half + 1 < 1 << PROBABILITY_BITS):
            raise ValueError(f"n_half must be in [1, 2**23), got {self.n_half}")

    @property
    def n_symbols(self) -> int:
        """Number of grid points, ``2 * n_half + 1``."""
        return 2 * self.n_half + 1

    @property
    def bound(self) -> float:
        """Largest representable value, ``n_half * step`` (latent units)."""
        return self.n_half * self.step

    def to_values(self, symbols: np.ndarray) -> np.ndarray:
        """Grid values (float64, latent units) of integer symbols, same shape."""
        return np.asarray(symbols, dtype=np.float64) * self.step

    def to_symbols(self, values: np.ndarray) -> np.ndarray:
        """Nearest grid symbols (int32, same shape) of latent values.

        Raises:
            ValueError: A value lies outside the grid's range (by more than half a step).
        """
        symbols = np.rint(np.asarray(values, dtype=np.float64) / self.step)
        if symbols.size and np.abs(symbols).max() > self.n_half:
            raise ValueError(f"latent values outside the grid [-{self.bound}, {self.bound}]")
        return symbols.astype(np.int32)


class GaussianParams(NamedTuple):
    """Parameters of :class:`QuantizedGaussian`, concatenable along axis 0.

    Attributes:
        means: float array of means, latent units.
        stds: float array of standard deviations, latent units, same shape, > 0.
    """

    means: np.ndarray
    stds: np.ndarray


@dataclass(frozen=True, eq=False)
class QuantizedGaussian:
    """Gaussian latents on a :class:`LatentGrid`, one mean and std per symbol.

    The probability of symbol ``k`` is the Gaussian mass of ``[(k - 1/2)Δ, (k + 1/2)Δ]``
    (outer bins take the tails): constriction's ``QuantizedGaussian(-n_half, n_half)``
    with mean/Δ and std/Δ.

    Attributes:
        means: float array of means, latent units, any shape.
        stds: float array of standard deviations, latent units, same shape, > 0.
        grid: The latent grid.
    """

    means: np.ndarray
    stds: np.ndarray
    grid: LatentGrid

    def __post_init__(self) -> None:
        means, stds = coder_float64(self.means), coder_float64(self.stds)
        if means.shape != stds.shape:
            raise ValueError(f"means {means.shape} and stds {stds.shape} differ in shape")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)

    def _model(self) -> object:
        return _MODEL.QuantizedGaussian(-self.grid.n_half, self.grid.n_half)

    def _grid_units(self) -> tuple[np.ndarray, np.ndarray]:
        step = self.grid.step
        return self.means.ravel() / step, self.stds.ravel() / step

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes int grid symbols (``-n_half..n_half``) shaped like ``means``."""
        message.push(coder_symbols(symbols), self._model(), *self._grid_units())
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 grid symbols shaped like ``means``."""
        flat = message.pop(self._model(), *self._grid_units())
        symbols = flat.reshape(self.means.shape)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 probabilities (out of ``2**24``) of ``symbols``, shaped like them."""
        means, stds = self._grid_units()
        flat = quantized_gaussian_fixed_point(
            means, stds, coder_symbols(symbols), -self.grid.n_half, self.grid.n_half
        )
        return flat.reshape(np.shape(symbols))


@dataclass(frozen=True, eq=False)
class WindowedQuantizedGaussian(QuantizedGaussian):
    """A :class:`QuantizedGaussian` coded on a window of the grid around each mean.

    constriction gives every symbol of a model's range at least one unit of probability
    (out of ``2**24``): over a wide grid that "leak" is a real share of the mass, and a
    symbol *popped* (sampled) from it lands anywhere on the grid. For a bits-back
    posterior such a far-off latent costs many bits in the prior and the likelihood. Here
    each symbol is coded on ``[c - h, c + h]`` only: ``h`` is the smallest power of two at
    or above ``window_stds · std / Δ`` (so symbols fall into few classes, one constriction
    call each) and ``c`` the mean's nearest symbol, moved inwards so the window stays on the
    grid. The Gaussian mass outside the window goes to its outer bins, as the grid's does.

    Attributes:
        window_stds: half-width of the window in standard deviations (before rounding up).
    """

    window_stds: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        means, stds = self._grid_units()
        exponent = np.frexp(np.maximum(np.ceil(self.window_stds * stds), 1.0))[1]
        half = np.minimum(np.ldexp(1.0, exponent), self.grid.n_half).astype(np.int64)
        centre = np.clip(np.rint(means), half - self.grid.n_half, self.grid.n_half - half)
        classes = [(int(h), np.flatnonzero(half == h)) for h in np.unique(half)]
        object.__setattr__(self, "_half", half)  # flat, in symbols
        object.__setattr__(self, "_centre", centre.astype(np.int64))
        object.__setattr__(self, "_offset_means", means - centre)  # relative to the centres
        object.__setattr__(self, "_stds", stds)
        object.__setattr__(self, "_classes", classes)  # (half width, flat indices), ascending

    def _windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(half widths, centres, means and stds relative to the centres), flat, in symbols."""
        return self._half, self._centre, self._offset_means, self._stds

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes int grid symbols shaped like ``means`` (each within its window)."""
        half, centre, means, stds = self._windows()
        offsets = np.asarray(symbols, dtype=np.int64).ravel() - centre
        if np.any(np.abs(offsets) > half):
            raise ValueError("a latent symbol lies outside its posterior window")
        for h, index in self._classes:
            model = _MODEL.QuantizedGaussian(-h, h)
            message.push(coder_symbols(offsets[index]), model, means[index], stds[index])
        record_push(message, self, symbols)

    def pop(self, message: Message) -> np.ndarray:
        """Pops int32 grid symbols shaped like ``means``."""
        _, centre, means, stds = self._windows()
        flat = np.empty(centre.shape, dtype=np.int64)
        done: list[tuple[int, np.ndarray, np.ndarray]] = []
        for h, index in reversed(self._classes):
            model = _MODEL.QuantizedGaussian(-h, h)
            try:
                offsets = message.pop(model, means[index], stds[index])
            except MessageUnderflowError:  # undo the classes popped so far, then give up
                for h_done, index_done, offsets_done in reversed(done):
                    model = _MODEL.QuantizedGaussian(-h_done, h_done)
                    params = means[index_done], stds[index_done]
                    message.push(offsets_done, model, *params)
                raise
            done.append((h, index, offsets))
            flat[index] = offsets + centre[index]
        symbols = flat.astype(np.int32).reshape(self.means.shape)
        record_pop(message, self, symbols)
        return symbols

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 probabilities (out of ``2**24``) of ``symbols``, shaped like them."""
        _, centre, means, stds = self._windows()
        offsets = np.asarray(symbols, dtype=np.int64).ravel() - centre
        out = np.empty(offsets.shape, dtype=np.int64)
        for h, index in self._classes:
            out[index] = quantized_gaussian_fixed_point(
                means[index], stds[index], coder_symbols(offsets[index]), -h, h
            )
        return out.reshape(np.shape(symbols))
