"""Integer-exact arithmetic: numbers whose every bit is the same on any machine.

A float network's outputs differ in their last bits between CPUs, PyTorch kernels, thread
counts and devices; an entropy coder fed such numbers cannot decode what another machine
wrote. The portable coding path computes everything that sets a probability with
**fixed-point integers held in float64 arrays** (numpy or torch: the functions here take
either), under three rules that make every result independent of kernel, summation order
and device:

1. **Every value is an integer** of known magnitude. An activation ``a`` stands for
   ``a / 2**FRAC_BITS`` and stays within ``±ACTIVATION_BOUND``; a layer's weights are
   integers below ``2**WEIGHT_BITS`` with a power-of-two scale of their own
   (`bbcodec.models.exact.ExactAffine`).
2. **Sums of products stay below 2**53**: each partial sum of integers is then an integer
   float64 holds exactly, so a matmul or a convolution gives the same result in any order,
   with or without fused multiply-adds, on any BLAS or GPU.
3. **Rescaling is exact** (a multiplication by a power of two, then ``floor(· + ½)``) and
   every **nonlinearity is a lookup table** (`Table`) read with integer linear
   interpolation. Tables are computed with Python's `decimal` module, whose ``exp`` is
   correctly rounded in software: the same integers everywhere, no platform ``libm``.
   Computing them takes seconds, so the ones coding uses ship precomputed
   (``tables.npz``, written by `write_tables`, checked against `SHIPPED_TABLES_SHA256`
   when read and against the decimal definition by the tests); a table not in the file,
   or a file that does not match, is computed.

Elementwise sums and products of such integers are exact; the one division (a mean over a
row, `mean_last`) is an IEEE correctly rounded operation, hence the same on every
conforming CPU and GPU, followed by an exact ``floor``.

Units: names ending in ``_fixed`` hold integers in units of ``2**-FRAC_BITS``; a `Table`'s
outputs are in units of ``2**-out_bits``.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

#: Fraction bits of an activation: the integer a stands for a / 2**FRAC_BITS.
FRAC_BITS = 12
#: One, as an activation integer.
ONE = float(2**FRAC_BITS)
#: Activations are clamped to ±ACTIVATION_BOUND (values ±2048).
ACTIVATION_BOUND = 2**23
#: |weight integer| < 2**WEIGHT_BITS (each layer scaled by its own power of two).
WEIGHT_BITS = 14
#: Integers below this in magnitude are exact in float64, whatever the order of a sum.
EXACT_LIMIT = 2**53
#: Fraction bits of probabilities and standard deviations read from tables.
FINE_BITS = 24
#: Decimal tables shipped precomputed (`decimal_table`), and the file's sha256.
SHIPPED_TABLES = Path(__file__).with_name("tables.npz")
SHIPPED_TABLES_SHA256 = "fe7815b06a8d6a7685df772102573b980a18435a6ef635a2fc7a866e6c1c971c"
#: Every decimal table asked for in this process: `table_key` → `decimal_values`' arguments.
REQUESTED: dict[str, tuple] = {}


def _floor(x: Any) -> Any:
    """Exact floor of float64 values, numpy or torch."""
    return np.floor(x) if isinstance(x, np.ndarray) else x.floor()


def clamp(x: np.ndarray, low: Any, high: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``np.clip(x, low, high, out=out)`` (bounds broadcasting against x) in two ufunc
    calls: the same values without `np.clip`'s per-call checks, which cost more than
    clamping the few dozen values of a decoder's step."""
    below = np.maximum(x, low, out=out)
    return np.minimum(below, high, out=below)


def floor_shift(acc: Any, shift: int) -> Any:
    """``floor(acc / 2**shift)``, clamped to ±`ACTIVATION_BOUND`: integers in, integers out
    (exact for |acc| < 2**53). Overwrites a torch ``acc``."""
    if isinstance(acc, np.ndarray):
        floor = np.floor(acc * 2.0**-shift)
        return clamp(floor, -ACTIVATION_BOUND, ACTIVATION_BOUND, out=floor)
    return acc.mul_(2.0**-shift).floor_().clamp_(-ACTIVATION_BOUND, ACTIVATION_BOUND)


def rescale(acc: Any, shift: int) -> Any:
    """``acc / 2**shift`` rounded half up (shift ≥ 1), clamped to ±`ACTIVATION_BOUND`.
    Overwrites a torch ``acc``."""
    return floor_shift(acc + 2.0 ** (shift - 1), shift)


def mul(a_fixed: Any, b_fixed: Any) -> Any:
    """Product of two activations, rounded half up to an activation."""
    return rescale(a_fixed * b_fixed, FRAC_BITS)


def mean_last(x_fixed: Any) -> Any:
    """Mean over the last axis (kept, size 1), rounded half up: an exact integer sum, one
    IEEE-rounded division (the same on every machine), then ``floor(· + ½)``."""
    return _floor(x_fixed.sum(-1, keepdims=True) / x_fixed.shape[-1] + 0.5)


def from_fixed(fixed: Any, frac_bits: int = FRAC_BITS) -> Any:
    """Integers in units of ``2**-frac_bits`` → their exact float64 values."""
    return fixed * 2.0**-frac_bits


def _round_half_up(value: Fraction) -> int:
    return (value + Fraction(1, 2)).__floor__()


#: The network input of each 8-bit value, ``(2v − 255)/255``, as activation integers.
PIXEL_FIXED = np.array(
    [_round_half_up(Fraction((2 * v - 255) * 2**FRAC_BITS, 255)) for v in range(256)],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Table:
    """A function sampled on a grid of activation integers and read with integer linear
    interpolation between grid points; inputs beyond the grid take its end values.

    It is materialised once as a dense table with one entry per activation integer of
    the grid's range (the interpolation done exactly, in numpy; copied once to each torch
    device it is used on), so a lookup is a clamp and an index.

    Attributes:
        values: float64 integers (n,), f at ``low + i · 2**step_shift`` (activation
            units), in units of ``2**-out_bits``.
        low: the first grid point, an activation integer.
        step_shift: log2 of the grid step in activation units.
        out_bits: fraction bits of the values.
    """

    values: np.ndarray
    low: int
    step_shift: int
    out_bits: int
    _dense: dict = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def high(self) -> int:
        """The last grid point, an activation integer."""
        return self.low + (self.values.shape[0] - 1) * 2**self.step_shift

    def interpolate(self, x_fixed: np.ndarray) -> np.ndarray:
        """The definition: f(x) by integer linear interpolation, numpy float64."""
        n, step = self.values.shape[0], 2**self.step_shift
        u = np.clip(x_fixed - self.low, 0, (n - 1) * step)
        index = np.minimum(np.floor(u / step), n - 2)
        remainder = u - index * step
        left, right = self.values[index.astype(np.int64)], self.values[index.astype(np.int64) + 1]
        return left + np.floor((right - left) * remainder / step + 0.5)

    def __call__(self, x_fixed: Any) -> Any:
        """f(x) for activation integers x (numpy or torch float64, any shape); integers
        in units of ``2**-out_bits``, same type and shape."""
        if isinstance(x_fixed, np.ndarray):  # the entry of int(x) − low, from the start
            index = clamp(x_fixed, self.low, self.high).astype(np.int64)
            index -= self.low
            return self.from_low().take(index)
        dense = self._dense.get(x_fixed.device)
        if dense is None:
            dense = self._dense[x_fixed.device] = x_fixed.new_tensor(self._table())
        return dense.take(x_fixed.clamp(self.low, self.high).long())

    def from_low(self) -> np.ndarray:
        """The dense table indexed from the grid's start: entry i is f(low + i), i in
        0 .. high − low (numpy)."""
        if "from_low" not in self._dense:
            self._dense["from_low"] = np.roll(self._table(), -self.low)
        return self._dense["from_low"]

    def _table(self) -> np.ndarray:
        """The dense table, indexed by the activation integer itself: entry x for x ≥ 0,
        entry N + x for x < 0 (N its length), as negative indices wrap."""
        if "numpy" not in self._dense:
            if not self.low <= 0 <= self.high:
                raise ValueError("a table's grid must contain 0")
            dense = self.interpolate(np.arange(self.low, self.high + 1.0))
            self._dense["numpy"] = np.roll(dense, self.low)
        return self._dense["numpy"]


def decimal_table(
    f: Callable[[decimal.Decimal], decimal.Decimal],
    low: int,
    high: int,
    step_bits: int,
    out_bits: int,
) -> Table:
    """``f`` sampled on [low, high] every ``2**-step_bits`` with 40-digit decimal
    arithmetic, rounded half-even to integers in units of ``2**-out_bits`` — read from the
    shipped tables when they hold it (`table_key`)."""
    key = table_key(f, low, high, step_bits, out_bits)
    REQUESTED[key] = (f, low, high, step_bits, out_bits)
    values = shipped_tables().get(key)
    if values is None:
        values = decimal_values(f, low, high, step_bits, out_bits)
    return Table(values, low * 2**FRAC_BITS, FRAC_BITS - step_bits, out_bits)


def decimal_values(
    f: Callable[[decimal.Decimal], decimal.Decimal],
    low: int,
    high: int,
    step_bits: int,
    out_bits: int,
) -> np.ndarray:
    """The definition of `decimal_table`'s values: (n,) float64 integers."""
    n = (high - low) * 2**step_bits + 1
    with decimal.localcontext() as context:
        context.prec = 40
        scale = decimal.Decimal(2) ** out_bits
        points = (decimal.Decimal(low) + decimal.Decimal(i) / 2**step_bits for i in range(n))
        values = [int((f(x) * scale).to_integral_value(decimal.ROUND_HALF_EVEN)) for x in points]
    return np.array(values, dtype=np.float64)


def table_key(f: Callable, low: int, high: int, step_bits: int, out_bits: int) -> str:
    """A decimal table's name in the shipped file: the function's name and the grid."""
    return f"{f.__name__}:{low}:{high}:{step_bits}:{out_bits}"


@functools.cache
def shipped_tables() -> dict[str, np.ndarray]:
    """The precomputed tables, by `table_key`; empty when the file is missing or is not
    the one `SHIPPED_TABLES_SHA256` names (every table is then computed)."""
    try:
        data = SHIPPED_TABLES.read_bytes()
    except OSError:
        return {}
    if hashlib.sha256(data).hexdigest() != SHIPPED_TABLES_SHA256:
        return {}
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as tables:
        return {key: tables[key] for key in tables.files}


def write_tables(path: Path = SHIPPED_TABLES) -> str:
    """Write every table `REQUESTED` in this process, computed from its definition
    (`decimal_values`), to ``path``; returns the file's sha256 (for
    `SHIPPED_TABLES_SHA256`). ``python tests/coding/test_tables.py --write`` requests them
    all and writes the shipped file."""
    arrays = {key: decimal_values(*args) for key, args in sorted(REQUESTED.items())}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sigmoid(x: decimal.Decimal) -> decimal.Decimal:
    return 1 / (1 + (-x).exp())


def _tanh(x: decimal.Decimal) -> decimal.Decimal:
    return 2 * _sigmoid(2 * x) - 1


def _exp_minus_one(x: decimal.Decimal) -> decimal.Decimal:
    return x.exp() - 1


@functools.cache
def sigmoid_table() -> Table:
    """σ on [−16, 16] every 2**-6, in activation units."""
    return decimal_table(_sigmoid, -16, 16, 6, FRAC_BITS)


@functools.cache
def fine_sigmoid_table() -> Table:
    """σ on [−16, 16] every 2**-8, in units of 2**-FINE_BITS (probabilities)."""
    return decimal_table(_sigmoid, -16, 16, 8, FINE_BITS)


@functools.cache
def tanh_table() -> Table:
    """tanh on [−8, 8] every 2**-6, in activation units."""
    return decimal_table(_tanh, -8, 8, 6, FRAC_BITS)


@functools.cache
def elu_negative_table() -> Table:
    """e^x − 1 on [−16, 0] every 2**-6, in activation units."""
    return decimal_table(_exp_minus_one, -16, 0, 6, FRAC_BITS)


@functools.cache
def exp_table(low: int, high: int) -> Table:
    """e^x on [low, high] every 2**-8, in units of 2**-FINE_BITS."""
    return decimal_table(decimal.Decimal.exp, low, high, 8, FINE_BITS)


def sigmoid(x_fixed: Any) -> Any:
    return sigmoid_table()(x_fixed)


def tanh(x_fixed: Any) -> Any:
    return tanh_table()(x_fixed)


def elu(x_fixed: Any) -> Any:
    negative = elu_negative_table()(x_fixed)
    return x_fixed.clip(min=0) + negative  # the table is e^x − 1 below 0, and 0 from 0 on


def std_from_log(log_std_fixed: Any, low: int, high: int) -> Any:
    """exp(clamp(log σ, low, high)) as its exact float64 value (a multiple of 2**-24)."""
    return from_fixed(exp_table(low, high)(log_std_fixed), FINE_BITS)
