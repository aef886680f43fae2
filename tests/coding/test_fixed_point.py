"""The portable path's integer arithmetic against plain Python integers, exactly.

Every integer operation of `bbcodec.coding.fixed_point` and `bbcodec.models.exact` is
checked, on random inputs, against a reference written with Python's unbounded integers and
`fractions.Fraction` (numpy and torch alike); the decimal-built tables against the true
functions; `ExactGaussian` and the exact logistic mixtures as codecs (round trips with the
whole message restored, underflow, groups, rates, pushes against their whole tables).
"""

from __future__ import annotations

import math
from fractions import Fraction

import constriction
import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

from bbcodec.coding import (
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    ExactGaussian,
    InformationMeter,
    LatentGrid,
    Message,
    MessageUnderflowError,
    QuantizedGaussian,
    exact_logistic,
    information_bits,
    logistic_mixture_table,
)
from bbcodec.coding import fixed_point as fp
from bbcodec.coding.exact_gaussian import normal_cdf_table
from bbcodec.coding.exact_logistic import exact_mixture_table, exact_weights
from bbcodec.coding.quantization import categorical_fixed_point
from bbcodec.coding.testing import check_codec
from bbcodec.models.exact import ExactAffine, IntegerModel

BOUND = fp.ACTIVATION_BOUND


# ----- references in Python integers ------------------------------------------------------


def py_rescale(acc: int, shift: int) -> int:
    """acc / 2**shift rounded half up, clamped: Python integers only."""
    return max(-BOUND, min(BOUND, (acc + (1 << (shift - 1))) >> shift))


def py_round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def py_interpolate(table: fp.Table, values: list[int], x: int) -> int:
    """`Table`'s definition in Python integers (``values``: the table's, as ints): clamp,
    grid interval, interpolation rounded half up."""
    step, n = 2**table.step_shift, len(values)
    u = min(max(x - table.low, 0), (n - 1) * step)
    index = min(u // step, n - 2)
    left, right = values[index], values[index + 1]
    return left + py_round_half_up(Fraction((right - left) * (u - index * step), step))


def ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel()]


def random_integers(rng, n: int, max_bits: int) -> list[int]:
    """Signed integers with magnitudes spread log-uniformly below 2**max_bits."""
    bits = rng.integers(0, max_bits + 1, n)
    return [int(s) * int(rng.integers(0, 2**b)) for s, b in zip(rng.choice([-1, 1], n), bits)]


BACKENDS = {
    "numpy": lambda values: np.array(values, dtype=np.float64),
    "torch": lambda values: torch.tensor(values, dtype=torch.float64),
}


@pytest.fixture(params=list(BACKENDS))
def array(request):
    """Python numbers → a float64 array of the backend under test."""
    return BACKENDS[request.param]


# ----- rescale, mul, mean_last ------------------------------------------------------------


def test_rescale_is_python_integer_rounding_half_up(array):
    rng = np.random.default_rng(0)
    accs = random_integers(rng, 4000, 53)
    accs += [2**53 - 1, -(2**53) + 1, 5, -5, 3, -3, 0, 1, -1, 2**35 + 2**11, -(2**35) - 2**11]
    for shift in (1, 2, 3, 12, 13, 20, 30, 31, 40, 52):
        x = array(accs)
        result = fp.rescale(x.clone() if isinstance(x, torch.Tensor) else x, shift)
        assert ints(result) == [py_rescale(a, shift) for a in accs], shift


def test_clamp_is_numpy_clip():
    """`fp.clamp` gives `np.clip`'s values: scalar and broadcast bounds, into ``out`` or a
    new array (its input left alone)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-100, 100, size=(7, 5)).astype(np.float64)
    low, high = rng.integers(-60, 0, size=5).astype(np.float64), 40.0
    kept = x.copy()
    assert np.array_equal(fp.clamp(x, low, high), np.clip(x, low, high))
    assert np.array_equal(x, kept)
    out = np.empty_like(x)
    assert fp.clamp(x, -3.0, 3.0, out=out) is out
    assert np.array_equal(out, np.clip(x, -3, 3))
    assert np.array_equal(fp.clamp(x, -3.0, 3.0, out=x), np.clip(kept, -3, 3))


def test_rescale_rounds_ties_up_and_clamps():
    assert ints(fp.rescale(np.array([5.0, -5.0, 7.0, -7.0]), 1)) == [3, -2, 4, -3]
    assert ints(fp.rescale(np.array([2.0**40, -(2.0**40)]), 2)) == [BOUND, -BOUND]


def test_mul_is_the_rounded_product(array):
    rng = np.random.default_rng(1)
    a, b = random_integers(rng, 3000, 23), random_integers(rng, 3000, 23)
    expected = [py_rescale(x * y, fp.FRAC_BITS) for x, y in zip(a, b)]
    assert ints(fp.mul(array(a), array(b))) == expected


@pytest.mark.parametrize("width", [1, 2, 3, 7, 10, 64, 255])
def test_mean_last_is_the_rounded_mean(array, width):
    rng = np.random.default_rng(width)
    rows = [random_integers(rng, width, 31) for _ in range(200)]
    rows += [
        [1, 2] * (width // 2) + [1] * (width % 2),
        [-1, -2] * (width // 2) + [-3] * (width % 2),
    ]
    result = fp.mean_last(array(rows))
    assert tuple(result.shape) == (len(rows), 1)
    assert ints(result) == [py_round_half_up(Fraction(sum(row), width)) for row in rows]


def test_mean_last_rounds_ties_up():
    assert ints(fp.mean_last(np.array([[1.0, 2.0], [-1.0, -2.0], [0.0, -1.0]]))) == [2, -1, 0]


# ----- tables -----------------------------------------------------------------------------


def table_inputs(table: fp.Table, rng, n: int = 3000) -> list[int]:
    """Activation integers inside the grid, on and around its points and ends, and beyond."""
    span = table.high - table.low
    inside = rng.integers(table.low, table.high + 1, n).tolist()
    ends = [table.low + d for d in range(-3, 4)] + [table.high + d for d in range(-3, 4)]
    beyond = [table.low - span, table.high + span, -(2**23), 2**23, table.low - 1, table.high + 1]
    points = [table.low + 2**table.step_shift * k for k in range(40)]
    return inside + ends + beyond + points + [p + 1 for p in points] + [p - 1 for p in points]


def random_table(rng) -> fp.Table:
    """Integers that go up and down (negative slopes too), on a coarse grid around 0."""
    values = rng.integers(-(2**20), 2**20, int(rng.integers(2, 40))).astype(np.float64)
    step_shift = int(rng.integers(0, 7))
    low = -int(rng.integers(0, (values.size - 1) * 2**step_shift + 1))
    return fp.Table(values, low, step_shift, 12)


TABLES = {
    "sigmoid": fp.sigmoid_table,
    "fine_sigmoid": fp.fine_sigmoid_table,
    "tanh": fp.tanh_table,
    "elu_negative": fp.elu_negative_table,
    "exp": lambda: fp.exp_table(-16, 0),
    "normal_cdf": normal_cdf_table,
}


@pytest.mark.parametrize("name", ["random", *TABLES])
def test_table_lookup_is_its_integer_interpolation(name):
    rng = np.random.default_rng(len(name))
    for _ in range(5 if name == "random" else 1):
        table = random_table(rng) if name == "random" else TABLES[name]()
        x = table_inputs(table, rng)
        values = ints(table.values)
        expected = [py_interpolate(table, values, v) for v in x]
        as_numpy = table(np.array(x, dtype=np.float64))
        assert ints(as_numpy) == expected
        assert ints(table.interpolate(np.array(x, dtype=np.float64))) == expected
        x += x[: -len(x) % 3]  # a multiple of 3, to try a 2-d shape
        as_torch = table(torch.tensor(x, dtype=torch.float64).view(-1, 3))
        assert as_torch.dtype == torch.float64 and as_torch.shape == (len(x) // 3, 3)
        assert ints(as_torch) == expected + expected[: -len(expected) % 3]
    with pytest.raises(ValueError, match="contain 0"):  # the dense table is indexed by x
        fp.Table(np.zeros(3), 1, 0, 12)(np.zeros(1))


def true_values(f, x: np.ndarray) -> np.ndarray:
    return np.array([f(v) for v in x / fp.ONE])


SIGMOID = ("sigmoid", lambda v: 1 / (1 + math.exp(-v)), 0.0963)  # name, f, max |f''|
TRUE_FUNCTIONS = {
    "sigmoid": (fp.sigmoid_table, SIGMOID[1], 0.0963),
    "fine_sigmoid": (fp.fine_sigmoid_table, SIGMOID[1], 0.0963),
    "tanh": (fp.tanh_table, math.tanh, 0.7699),
    "elu_negative": (fp.elu_negative_table, math.expm1, 1.0),
    "exp": (lambda: fp.exp_table(-16, 0), math.exp, None),  # f'' = f: bounded locally
    "exp_wide": (lambda: fp.exp_table(-7, 7), math.exp, None),
    "normal_cdf": (normal_cdf_table, lambda v: math.erfc(-v / math.sqrt(2)) / 2, 0.242),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TRUE_FUNCTIONS))
def test_decimal_tables_are_the_true_functions(name):
    """On its grid a table is f rounded to its unit (≤ ½ unit off: the decimal values are
    correctly rounded); between grid points it is off by at most 1 unit plus linear
    interpolation's error h²/8 · max|f''|; it never decreases."""
    make, f, max_curvature = TRUE_FUNCTIONS[name]
    table = make()
    unit = 2.0**table.out_bits
    grid = table.low + 2**table.step_shift * np.arange(table.values.size, dtype=np.float64)
    on_grid = true_values(f, grid) * unit
    np.testing.assert_array_less(
        np.abs(table.values - on_grid), 0.5 + 1e-12 * np.abs(on_grid) + 1e-9
    )

    x = np.arange(table.low - 50, table.high + 51, 7, dtype=np.float64)
    truth = true_values(f, x.clip(table.low, table.high)) * unit
    h = 2.0**table.step_shift / fp.ONE
    if max_curvature is None:  # e^x: the largest f'' on the interval is f at its right end
        curvature = true_values(math.exp, (x + 2**table.step_shift).clip(table.low, table.high))
    else:
        curvature = max_curvature
    np.testing.assert_array_less(np.abs(table(x) - truth), 1 + h**2 / 8 * curvature * unit)

    dense = table(np.arange(table.low - 10, table.high + 11, dtype=np.float64))
    assert np.all(np.diff(dense) >= 0)


def test_sigmoid_and_tanh_tables_are_symmetric():
    """σ(−x) = 1 − σ(x) and tanh(−x) = −tanh(x), exactly, on and between grid points
    (decimal values rounded half-even, read with a half-up interpolation: checked on the
    grid, where no interpolation rounding is involved)."""
    for table, total in ((fp.sigmoid_table(), fp.ONE), (fp.fine_sigmoid_table(), 2.0**24)):
        np.testing.assert_array_equal(table.values + table.values[::-1], total)
    np.testing.assert_array_equal(fp.tanh_table().values, -fp.tanh_table().values[::-1])


def test_elu_and_std_from_log():
    x = np.arange(-20 * 4096, 8 * 4096, 13, dtype=np.float64)
    out = fp.elu(x)
    np.testing.assert_array_equal(out[x >= 0], x[x >= 0])
    truth = np.expm1(np.minimum(x, 0) / fp.ONE) * fp.ONE
    np.testing.assert_array_less(np.abs(out - np.where(x >= 0, x, truth)), 1.125)
    np.testing.assert_array_equal(fp.elu(torch.from_numpy(x)).numpy(), out)

    log_std = np.arange(-9 * 4096, 4 * 4096, 101, dtype=np.float64)
    std = fp.std_from_log(log_std, -7, 2)
    np.testing.assert_array_equal(std * 2.0**24, np.round(std * 2.0**24))  # multiples of 2**-24
    np.testing.assert_allclose(
        std, np.exp(np.clip(log_std / fp.ONE, -7, 2)), rtol=3e-6, atol=2**-24
    )


def test_pixel_fixed_is_the_rounded_network_input():
    expected = [
        py_round_half_up(Fraction((2 * v - 255) * 2**fp.FRAC_BITS, 255)) for v in range(256)
    ]
    assert fp.PIXEL_FIXED.dtype == np.float64
    assert ints(fp.PIXEL_FIXED) == expected
    assert (expected[0], expected[128], expected[255]) == (-4096, 16, 4096)  # 4096/255: 16.06


# ----- ExactAffine --------------------------------------------------------------------------


def py_rescale_array(acc: np.ndarray, shift: int) -> np.ndarray:
    """int64 accumulators rounded half up and clamped (an arithmetic shift: a floor)."""
    return np.clip((acc + (1 << (shift - 1))) >> shift, -BOUND, BOUND)


def as_int64(t: torch.Tensor) -> np.ndarray:
    out = t.numpy().astype(np.int64)
    assert np.array_equal(out, t.numpy())  # the exact twin holds integers only
    return out


def weights_and_bias(affine: ExactAffine, layer: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The layer's integers, checked against its float32 weights: weights × 2**shift, using
    13 to 14 bits; the bias × 2**(shift + FRAC_BITS) (0 without one), each rounded."""
    w = layer.weight.detach().double()
    np.testing.assert_array_equal(affine.weight, torch.round(w * 2.0**affine.shift))
    assert affine.shift >= 1 and 2**12 <= affine.weight.abs().max() <= 2**13
    out = layer.weight.shape[1 if isinstance(layer, torch.nn.ConvTranspose2d) else 0]
    bias = torch.zeros(out, dtype=torch.float64)
    if layer.bias is not None:
        bias = torch.round(layer.bias.detach().double() * 2.0 ** (affine.shift + fp.FRAC_BITS))
    return as_int64(affine.weight), as_int64(bias)


def ref_conv(x, w, b, stride, padding):
    """N-d convolution (1-d or 2-d, PyTorch's cross-correlation) in int64: exact here,
    every |term| < 2**37 and fan-ins small."""
    spatial = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * spatial)
    out_size = [(x.shape[2 + d] - w.shape[2 + d]) // stride + 1 for d in range(spatial)]
    acc = np.zeros((x.shape[0], w.shape[0], *out_size), dtype=np.int64)
    for offset in np.ndindex(*w.shape[2:]):
        window = tuple(slice(o, o + stride * (n - 1) + 1, stride) for o, n in zip(offset, out_size))
        acc += np.einsum(
            "nc...,oc->no...", x[(slice(None), slice(None), *window)], w[(..., *offset)]
        )
    return acc + b.reshape(1, -1, *[1] * spatial)


def ref_conv_transpose2d(x, w, b, stride, padding):
    """Transposed 2-d convolution in int64: every input scatters w · x, then the border
    of ``padding`` is cut."""
    n, _, height, width = x.shape
    kh, kw = w.shape[2:]
    full = np.zeros(
        (n, w.shape[1], (height - 1) * stride + kh, (width - 1) * stride + kw), np.int64
    )
    for i, j in np.ndindex(kh, kw):
        rows = slice(i, i + stride * (height - 1) + 1, stride)
        cols = slice(j, j + stride * (width - 1) + 1, stride)
        full[:, :, rows, cols] += np.einsum("nchw,co->nohw", x, w[:, :, i, j])
    out = full[:, :, padding : full.shape[2] - padding, padding : full.shape[3] - padding]
    return out + b.reshape(1, -1, 1, 1)


def random_activations(rng, shape) -> torch.Tensor:
    magnitude = 2.0 ** rng.integers(0, 24, shape)
    x = np.floor(rng.uniform(-1, 1, shape) * magnitude).clip(-BOUND, BOUND)
    return torch.from_numpy(x)


def scaled(layer: torch.nn.Module, rng) -> torch.nn.Module:
    """The layer with its weights and bias scaled by a random power of two (another shift)."""
    with torch.no_grad():
        factor = 2.0 ** int(rng.integers(-6, 8))
        layer.weight.mul_(factor)
        if layer.bias is not None:
            layer.bias.mul_(factor * float(rng.uniform(0.1, 30)))
    return layer


@pytest.mark.parametrize("seed", range(4))
def test_exact_affine_linear_is_integer_arithmetic(seed):
    """``linear`` is ``rescale(x · W + b, shift)`` in Python-exact integers."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    layer = scaled(
        torch.nn.Linear(int(rng.integers(1, 40)), int(rng.integers(1, 9)), bias=seed != 1), rng
    )
    affine = ExactAffine.of_layer(layer)
    w, b = weights_and_bias(affine, layer)
    x = random_activations(rng, (5, 3, layer.in_features))
    expected = py_rescale_array(as_int64(x) @ w.T + b, affine.shift)
    np.testing.assert_array_equal(affine.linear(x).numpy(), expected)
    np.testing.assert_array_equal(affine.linear(x.numpy()), expected)  # numpy in, numpy out


@pytest.mark.parametrize("seed", range(4))
def test_exact_affine_convolutions_are_integer_arithmetic(seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    conv = scaled(torch.nn.Conv2d(3, 4, int(rng.integers(1, 4)), stride, padding), rng)
    affine = ExactAffine.of_layer(conv)
    x = random_activations(rng, (2, 3, 7, 6))
    acc = ref_conv(as_int64(x), *weights_and_bias(affine, conv), stride, padding)
    result = affine.conv2d(x, stride, padding)
    np.testing.assert_array_equal(result.numpy(), py_rescale_array(acc, affine.shift))

    conv1 = scaled(torch.nn.Conv1d(5, 3, 3, padding=1, bias=seed != 2), rng)
    affine = ExactAffine.of_layer(conv1)
    x = random_activations(rng, (2, 5, 9))
    acc = ref_conv(as_int64(x), *weights_and_bias(affine, conv1), 1, 1)
    result = affine.conv1d(x, padding=1)
    np.testing.assert_array_equal(result.numpy(), py_rescale_array(acc, affine.shift))

    up = scaled(torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), rng)
    affine = ExactAffine.of_layer(up, out_dim=1)
    x = random_activations(rng, (2, 4, 3, 5))
    acc = ref_conv_transpose2d(as_int64(x), *weights_and_bias(affine, up), 2, 1)
    result = affine.conv_transpose2d(x, 2, 1)
    assert result.shape == (2, 3, 6, 10)
    np.testing.assert_array_equal(result.numpy(), py_rescale_array(acc, affine.shift))


def test_exact_affine_is_the_same_in_float32_activations_order_and_threads():
    """Integers below 2**53: a sum in any order gives the same float64, so a matmul on a
    transposed copy, split in two, or with another thread count agrees bit for bit."""
    rng = np.random.default_rng(7)
    layer = torch.nn.Linear(300, 16)
    affine = ExactAffine.of_layer(layer)
    x = random_activations(rng, (64, 300))
    reference = affine.linear(x)
    np.testing.assert_array_equal(affine.linear(x.T.contiguous().T), reference)
    np.testing.assert_array_equal(
        torch.cat([affine.linear(x[:7]), affine.linear(x[7:])]), reference
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        np.testing.assert_array_equal(affine.linear(x), reference)
    finally:
        torch.set_num_threads(threads)


def test_exact_affine_refuses_what_could_reach_2_to_the_53():
    assert ExactAffine.of(torch.full((2, 3), 4095.0), None).shift == 1
    with pytest.raises(ValueError, match="too large"):
        ExactAffine.of(torch.full((2, 3), 4096.0), None)
    wide = torch.ones(1, 2**18)  # 2**18 weights of 2**12 times activations of 2**23
    with pytest.raises(ValueError, match="2\\*\\*53"):
        ExactAffine.of(wide, None)
    ExactAffine.of(torch.ones(1, 2**17), None)  # 2**52: still exact
    with pytest.raises(ValueError, match="2\\*\\*53"):  # the bias counts too
        ExactAffine.of(torch.ones(1, 2**17), torch.full((1,), 2.0**28))
    # A transposed convolution's fan-in runs over its *first* axis (out_dim=1).
    transposed = torch.ones(2**18, 1, 1, 1)
    ExactAffine.of(transposed, None, out_dim=0)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        ExactAffine.of(transposed, None, out_dim=1)


# ----- IntegerModel -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "kind"), [("vlae", "binary"), ("vlae", "rgb"), ("delta-vae", "grey")]
)
def test_integer_model_is_the_float_models_twin(family, kind):
    """The twin computes what the float model does, to within its fixed-point steps (so
    the portable path codes at the model's rate): posterior, prior steps, pixel heads."""
    model = random_model(tiny_config(family, kind), seed=3)
    with torch.no_grad():
        for p in model.coding_prior.parameters():  # its output layer starts at zero
            p.add_(torch.randn_like(p) * 0.1)
    twin = IntegerModel(model)
    x = torch.from_numpy(random_images(model.config, 3, seed=3))
    q, q_exact = model.posterior(x), twin.posterior(x)
    np.testing.assert_allclose(q_exact.mean, q.mean.detach().double(), atol=2e-3)
    np.testing.assert_allclose(q_exact.std, q.std.detach().double(), rtol=2e-3)
    z = torch.round(q_exact.mean * 256) / 256  # on a grid of step 2**-8
    for i in (0, z.shape[1] - 1):
        p, p_exact = model.prior_step(z.float(), i), twin.prior_step(z, i)
        np.testing.assert_allclose(p_exact.mean, p.mean.detach().double(), atol=2e-3)
        np.testing.assert_allclose(p_exact.std, p.std.detach().double(), rtol=2e-3)
    stepper, exact_stepper = model.pixel_stepper(z.float()), twin.pixel_stepper(z)
    for t in range(3):
        params = exact_stepper.params(t)
        assert torch.equal(params, params.round())
        np.testing.assert_allclose(params / fp.ONE, stepper.params(t).double(), atol=3e-3)
        pixel = torch.from_numpy(x.numpy().reshape(3, -1, *x.shape[3:])[:, t])
        stepper.write(t, pixel)
        exact_stepper.write(t, pixel)
    with pytest.raises(ValueError, match="multiples"):
        twin.prior_step(z + 2.0**-14, 1)


@pytest.mark.parametrize(("family", "kind"), [("vlae", "rgb"), ("delta-vae", "grey")])
def test_one_pass_shortcuts_give_the_step_integers(family, kind):
    """What an encoder computes in one pass — the prior's conditionals, a row-context
    decoder's rows, a local decoder's many positions — is what a decoder gets step by
    step, integer for integer."""
    model = random_model(tiny_config(family, kind), seed=4)
    with torch.no_grad():
        for p in model.coding_prior.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    twin = IntegerModel(model)
    x = torch.from_numpy(random_images(model.config, 3, seed=4))
    z = torch.round(twin.posterior(x).mean * 256) / 256
    every = twin.prior_conditionals(z)
    steps = twin.prior_steps()  # a decoder's: the first layer carried between calls
    for i in [*range(z.shape[1]), 2, 0, z.shape[1] - 1]:  # in turn, then out of turn
        step = twin.prior_step(z, i)
        assert torch.equal(every.mean[:, i], step.mean) and torch.equal(every.std[:, i], step.std)
        carried = steps.step(z.numpy(), i)
        assert np.array_equal(carried.mean, step.mean.numpy())
        assert np.array_equal(carried.std, step.std.numpy())
    assert np.array_equal(steps.step(z[:1].numpy(), 3).mean, twin.prior_step(z[:1], 3).mean)
    height, width = model.config.image_hw
    whole = twin.pixel_stepper(z)
    whole.write_all(x)
    if model.decoder.row is not None:
        at_once = torch.stack(list(whole.raster_rows()), 1).flatten(1, 2)  # (B, H·W, P)
    else:
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        at_once = whole.params_at(rows.flatten(), cols.flatten())
    stepper = twin.pixel_stepper(z)
    flat = x.reshape(3, height * width, *x.shape[3:])
    for t in range(height * width):
        assert torch.equal(stepper.params(t), at_once[:, t])
        stepper.write(t, flat[:, t])


# ----- ExactGaussian -----------------------------------------------------------------------

GRIDS = {"fine": LatentGrid(2.0**-8, 8192), "coarse": LatentGrid(0.25, 40)}


def check_on_empty_message(codec, symbols) -> None:
    """Pushed onto an empty stack, popped back (the guard off, as a decoder does for a
    chunk's first symbols): the symbols, and an empty stack again."""
    message = Message.empty()
    codec.push(message, symbols)
    message.underflow_guard = False
    np.testing.assert_array_equal(codec.pop(message), symbols)
    message.check_empty()


def random_gaussian(rng, n, grid: LatentGrid):
    means = rng.normal(size=n) * grid.bound / 8
    stds = np.exp(rng.uniform(np.log(grid.step / 4), np.log(grid.bound / 3), n))
    return means, stds


def prior_samples(rng, means, stds, grid: LatentGrid) -> np.ndarray:
    values = np.clip(rng.normal(means, stds), -grid.bound, grid.bound)
    return np.rint(values / grid.step).astype(np.int64)


@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("seed", range(3))
def test_exact_gaussian_round_trip(grid_name, seed):
    grid = GRIDS[grid_name]
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)), int(rng.integers(1, 30)))
    means, stds = random_gaussian(rng, shape, grid)
    symbols = prior_samples(rng, means, stds, grid)
    check_codec(ExactGaussian(means, stds, grid), symbols, Message.seeded(seed, 8))
    check_on_empty_message(ExactGaussian(means, stds, grid), symbols)


@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("seed", range(3))
def test_windowed_pops_stay_in_the_window_and_push_back(grid_name, seed):
    """A posterior's pops (bits back, from any message) land on the grid within ±8 σ (one
    grid step more for rounding, ±8 steps for σ under a step) of the mean, unless the
    window meets an end of the grid, and push back exactly."""
    grid = GRIDS[grid_name]
    rng = np.random.default_rng(10 + seed)
    means, stds = random_gaussian(rng, 200, grid)
    posterior = ExactGaussian(means, stds, grid, windowed=True)
    message = Message.seeded(seed, 400)
    before = message.copy()
    symbols = posterior.pop(message)
    assert symbols.dtype == np.int32 and symbols.shape == means.shape
    reach = 8 * np.maximum(stds, grid.step) + grid.step
    against_an_end = np.abs(means) + reach > grid.bound  # the window is moved inside the grid
    assert np.all((np.abs(symbols * grid.step - means) <= reach) | against_an_end)
    assert np.all(np.abs(symbols) <= grid.n_half)
    posterior.push(message, symbols)
    assert message == before
    far = symbols.copy()
    far[0] = np.clip(np.rint((means[0] + 9 * reach[0]) / grid.step), -grid.n_half, grid.n_half)
    if np.abs(far[0] * grid.step - means[0]) > reach[0]:
        with pytest.raises(ValueError, match="outside"):
            posterior.push(message, far)


def test_popping_from_a_too_short_message_leaves_it_unchanged():
    """Underflow in a later group (earlier groups popped fine) or in an offset stage: the
    words are as before, and the message still codes."""
    rng = np.random.default_rng(3)
    grid = GRIDS["fine"]
    means, stds = rng.normal(size=64), np.full(64, 0.5)  # about 10 bits a symbol
    for group_size, n_words in ((8, 6), (8, 3), (None, 10), (1, 4)):
        posterior = ExactGaussian(means, stds, grid, windowed=True, group_size=group_size)
        message = Message.seeded(5, n_words)
        before = message.to_words().copy()
        with pytest.raises(MessageUnderflowError):
            posterior.pop(message)
        np.testing.assert_array_equal(message.to_words(), before)
        check_codec(posterior, posterior.pop(Message.seeded(6, 40)), message)


@pytest.mark.parametrize("seed", range(3))
def test_group_size_concatenates_steps(seed):
    """A leaf on k steps' concatenated parameters with ``group_size`` = symbols per step
    pushes what the k step leaves push, last step first, and pops step by step."""
    rng = np.random.default_rng(20 + seed)
    grid = GRIDS["fine"] if seed else GRIDS["coarse"]
    k, per_step = int(rng.integers(2, 6)), int(rng.integers(1, 5))
    means, stds = random_gaussian(rng, (k, per_step), grid)
    symbols = prior_samples(rng, means, stds, grid)
    for windowed in (False, True):
        if windowed:
            symbols = ExactGaussian(means, stds, grid, windowed=True).pop(Message.seeded(seed, 400))
        whole = ExactGaussian(means, stds, grid, windowed=windowed, group_size=per_step)
        steps = [ExactGaussian(means[t], stds[t], grid, windowed=windowed) for t in range(k)]
        start = Message.seeded(seed, 4)
        together, one_by_one = start.copy(), start.copy()
        whole.push(together, symbols)
        for t in reversed(range(k)):
            steps[t].push(one_by_one, symbols[t])
        assert together == one_by_one
        for t in range(k):
            np.testing.assert_array_equal(steps[t].pop(together), symbols[t])
        assert together == start
        np.testing.assert_array_equal(whole.pop(one_by_one), symbols)
    with pytest.raises(ValueError, match="group_size"):
        ExactGaussian(means, stds, grid, group_size=k * per_step + 1)


@pytest.mark.parametrize("windowed", [False, True])
def test_exact_gaussian_information_is_what_the_coder_spends(windowed):
    rng = np.random.default_rng(30 + windowed)
    grid = GRIDS["fine"]
    means, stds = random_gaussian(rng, 400, grid)
    leaf = ExactGaussian(means, stds, grid, windowed=windowed)
    symbols = (
        leaf.pop(Message.seeded(1, 800)) if windowed else prior_samples(rng, means, stds, grid)
    )
    message = Message.seeded(0, 2)
    start_bits = message.num_bits()
    leaf.push(message, symbols)
    coded_bits = message.num_bits() - start_bits
    information = information_bits(leaf, symbols)
    assert information > 2000
    assert information - 2 <= coded_bits <= information + 8, (coded_bits, information)
    # and it is the Gaussian's: constriction's float Gaussian spends within 0.5 % of it
    float_bits = information_bits(QuantizedGaussian(means, stds, grid), symbols)
    assert information == pytest.approx(float_bits, rel=5e-3)


def test_symbols_far_out_in_the_tails_round_trip():
    """Outer (escape) bins: the grid's ends and points hundreds of σ from a narrow prior."""
    grid = GRIDS["fine"]
    n_half = grid.n_half
    far = np.array([-n_half, n_half, -n_half + 1, n_half - 1, 5000, -3000, 300, -129, 128, 127, 0])
    means = np.zeros(far.size)
    for std in (0.01, 0.3, 2.0, 20.0):
        leaf = ExactGaussian(means, np.full(far.size, std), grid)
        check_codec(leaf, far, Message.seeded(1, 8))
        assert np.all(leaf.fixed_point_probabilities(far) > 0)
    narrow = ExactGaussian(np.full(3, 31.9), np.full(3, 1e-3), grid)  # a window against the edge
    check_codec(narrow, np.array([n_half, n_half - 1, -n_half]), Message.seeded(2, 8))
    coarse = GRIDS["coarse"]
    leaf = ExactGaussian(np.array([9.0, -9.0]), np.array([0.01, 0.01]), coarse)
    check_codec(leaf, np.array([-coarse.n_half, coarse.n_half]), Message.seeded(3, 8))


class RecordingMessage(Message):
    """A message that records every pop: (symbols, model, *params)."""

    def __init__(self, coder, seed) -> None:
        super().__init__(coder, seed)
        self.pops: list[tuple] = []

    def pop(self, model, *params, count=None):
        symbols = super().pop(model, *params, count=count)
        self.pops.append((symbols, model, *params))
        return symbols


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_exact_gaussian_push_writes_what_its_whole_tables_write(windowed, seed):
    """A push codes each symbol in the ranges its pop's tables give it, without building
    them (module docstring): the bits must be those of pushing with the tables a pop
    decodes with, for symbols near and far from the mean, at the grid's ends, in outer
    bins, and in a bin of two symbols one of which has no mass (a range of all quantiles
    but one); its information is the tables'."""
    rng = np.random.default_rng(40 + seed)
    grid = GRIDS["fine"]
    k, per_step = 6, 5
    means, stds = random_gaussian(rng, (k, per_step), grid)
    means[0, 0], stds[0, 0] = 0.0, 2 * grid.step  # symbol −11: offset 1 of [−12, −10)
    if windowed:
        symbols = ExactGaussian(means, stds, grid, windowed=True).pop(Message.seeded(seed, 400))
    else:
        symbols = prior_samples(rng, means, 2 * stds, grid)
        symbols[1, :3] = [-grid.n_half, grid.n_half, 4000]
    symbols[0, 0] = -11
    leaf = ExactGaussian(means, stds, grid, windowed=windowed, group_size=per_step)
    pushed = Message.seeded(seed, 4)
    pushed.meter = InformationMeter()
    leaf.push(pushed, symbols)
    recorded = RecordingMessage.from_words(pushed.to_words())
    np.testing.assert_array_equal(leaf.pop(recorded), symbols)
    tabled = Message.seeded(seed, 4)
    for popped, model, *params in reversed(recorded.pops):
        tabled.push(popped, model, *params)
    assert tabled == pushed
    assert pushed.meter.pushed_bits == information_bits(leaf, symbols)
    tables = [(popped, params) for popped, _, *params in recorded.pops if params]
    if len(tables) == len(recorded.pops):  # no uniform offsets: the tables' information
        bits = sum(np.sum(24 - np.log2(categorical_fixed_point(*p, s))) for s, p in tables)
        assert pushed.meter.pushed_bits == pytest.approx(bits, rel=1e-12)


#: Symbols in inner bins without mass of a Gaussian at 0 with σ = 2 grid steps (bins of two
#: symbols, the window [−16, 16)): Φ's table reads the same integer at both edges of the
#: bins [−16, −14), [−14, −12), [12, 14) and [14, 16).
MASSLESS = [-16, -15, -14, -13, 12, 13, 14, 15]


@pytest.mark.parametrize("windowed", [False, True])
def test_a_symbol_in_a_bin_without_mass_is_coded_uniformly(windowed):
    """An inner bin whose symbols all have no mass (far out in a narrow Gaussian's window)
    is popped with the bin table's least probability, and its offset coded uniformly (no
    offset table constriction accepts exists): such symbols, in groups with symbols in bins
    with mass and (prior) in outer bins, push and pop back, the bits are those of pushing
    with the tables and models a pop decodes with, and the meter reads the fixed-point
    probabilities (each such symbol: 1/2**24 for its bin, 1/2 for its offset)."""
    grid = GRIDS["fine"]
    massless = np.array(MASSLESS)
    others = [-11, 0, 3, 11, -12, 10] + ([-10] if windowed else [20, 40, -100, grid.n_half])
    for seed, group_size in ((0, None), (1, 1), (2, 3)):
        rng = np.random.default_rng(seed)
        symbols = rng.permutation(np.concatenate([massless, others])).reshape(-1, 3)
        shape = symbols.shape
        leaf = ExactGaussian(
            np.zeros(shape), np.full(shape, 2 * grid.step), grid, windowed=windowed,
            group_size=group_size,
        )  # fmt: skip
        probabilities = leaf.fixed_point_probabilities(symbols)
        np.testing.assert_array_equal(probabilities[np.isin(symbols, massless)], 0.5)
        check_codec(leaf, symbols, Message.seeded(seed, 8))
        check_on_empty_message(leaf, symbols)
        pushed = Message.seeded(seed, 4)
        start_bits = pushed.num_bits()
        pushed.meter = InformationMeter()
        leaf.push(pushed, symbols)
        information = information_bits(leaf, symbols)
        assert pushed.meter.pushed_bits == information
        assert information == pytest.approx(np.sum(24 - np.log2(probabilities)), rel=1e-12)
        assert information - 2 <= pushed.num_bits() - start_bits <= information + 8
        recorded = RecordingMessage.from_words(pushed.to_words())
        np.testing.assert_array_equal(leaf.pop(recorded), symbols)
        uniform = [model for _, model, *params in recorded.pops if not params]
        assert uniform and all(isinstance(m, constriction.stream.model.Uniform) for m in uniform)
        tabled = Message.seeded(seed, 4)
        for popped, model, *params in reversed(recorded.pops):
            tabled.push(popped, model, *params)
        assert tabled == pushed


@pytest.mark.parametrize("windowed", [False, True])
def test_pops_into_bins_without_mass_push_back(windowed):
    """Bits back over leaves with bins without mass: pops from random messages, and pops
    from a message whose top decodes into such bins, land where they decode and push back
    to the message they came from."""
    grid = GRIDS["fine"]
    shape = (len(MASSLESS), 2)
    leaf = ExactGaussian(
        np.zeros(shape), np.full(shape, 2 * grid.step), grid, windowed=windowed, group_size=2
    )
    forced = np.stack([MASSLESS, MASSLESS[::-1]], axis=1)
    for seed in range(6):
        message = Message.seeded(seed, 40)
        if seed % 2:
            leaf.push(message, forced)  # its top now pops into bins without mass
        before = message.copy()
        symbols = leaf.pop(message)
        if seed % 2:
            np.testing.assert_array_equal(symbols, forced)
        leaf.push(message, symbols)
        assert message == before


# ----- exact logistic mixtures ------------------------------------------------------------


def random_head(rng, n, m, channels=None):
    """Head outputs as activation integers: logits, means, log-scales (floored at −7)."""
    extra = () if channels is None else (channels,)
    logits = np.rint(rng.normal(size=(n, m)) * 3 * fp.ONE)
    means = np.rint(rng.uniform(-1.2, 1.2, (n, *extra, m)) * fp.ONE)
    log_scales = np.rint(rng.uniform(-7.0, 1.0, (n, *extra, m)) * fp.ONE)
    return logits, means, log_scales


@pytest.mark.parametrize("m", [1, 3, 10, 32])
def test_exact_mixture_tables_are_integer_and_match_the_float_tables(m):
    rng = np.random.default_rng(m)
    logits, means, log_scales = random_head(rng, 400, m)
    weights = exact_weights(logits)
    assert np.all(weights == np.round(weights)) and np.all(weights.max(axis=1) == 2**24)
    table = exact_mixture_table(weights, means, log_scales)
    assert table.shape == (400, 256) and table.dtype == np.float64
    assert np.all(table >= 0) and np.all(table == np.round(table))
    np.testing.assert_array_equal(table.sum(axis=1), weights.sum(axis=1) * 2.0**24)
    exact = table / table.sum(axis=1, keepdims=True)
    floats = logistic_mixture_table(logits / fp.ONE, means / fp.ONE, log_scales / fp.ONE)
    assert np.abs(exact - floats).max() < 1e-4
    rows = rng.integers(0, 400, 50)
    np.testing.assert_array_equal(
        exact_mixture_table(weights[rows], means[rows], log_scales[rows]), table[rows]
    )
    with pytest.raises(ValueError, match="32"):
        exact_weights(np.zeros((2, 33)))


@pytest.mark.parametrize("pixel_bins", [1, 16])
@pytest.mark.parametrize("seed", range(3))
def test_exact_mixture_codecs_round_trip(seed, pixel_bins):
    """Grey and RGB leaves, one stage or two (a bin of 16 values, then the value): round
    trips that restore the message, the bits near the information content, and a leaf on
    several groups' parameters pushes what the groups' own leaves pop (as an
    autoregressive codec needs)."""
    rng = np.random.default_rng(40 + seed)
    m, group_size = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    n = group_size * int(rng.integers(1, 8))
    how = {"exact": True, "pixel_bins": pixel_bins}
    grey_head = random_head(rng, n, m)
    values = rng.integers(0, 256, n)
    values[:2] = [0, 255][: min(n, 2)]
    logits, means, log_scales = random_head(rng, n, m, channels=3)
    rgb_head = (logits, means, log_scales, np.rint(rng.uniform(-1, 1, (n, 3, m)) * fp.ONE))
    pixels = rng.integers(0, 256, (n, 3))
    for leaf_type, head, symbols in (
        (DiscretizedLogisticMixture, grey_head, values),
        (DiscretizedLogisticMixtureRGB, rgb_head, pixels),
    ):
        leaf = leaf_type(*head, group_size=group_size, **how)
        check_codec(leaf, symbols, Message.seeded(seed, 4))
        check_codec(leaf, leaf.pop(Message.seeded(seed, 400)), Message.seeded(seed, 4))
        message = Message.seeded(seed, 2)
        start_bits = message.num_bits()
        leaf.push(message, symbols)
        information = information_bits(leaf, symbols)
        assert information - 2 <= message.num_bits() - start_bits <= information + 8

        # one group at a time, popped in order, is the whole codec's push
        together = Message.seeded(seed, 4)
        leaf.push(together, symbols)
        for start in range(0, n, group_size):
            rows = slice(start, start + group_size)
            group = leaf_type(*(array[rows] for array in head), **how)
            np.testing.assert_array_equal(group.pop(together), symbols[rows])
        assert together == Message.seeded(seed, 4)


@pytest.mark.parametrize("seed", range(4))
def test_exact_push_writes_what_the_whole_tables_write(seed):
    """The encoder codes each sub-pixel in its range of the whole table without building
    the table (`range_tables`): the bits must be those of pushing with the table itself,
    for symbols anywhere, the two ends included, and a meter must read the same."""
    rng = np.random.default_rng(70 + seed)
    n, m = 300, int(rng.integers(1, 11))
    logits, means, log_scales = random_head(rng, n, m)
    values = rng.integers(0, 256, n).astype(np.int32)
    values[:4] = [0, 255, 1, 254]
    grey = DiscretizedLogisticMixture(logits, means, log_scales, exact=True)
    pushed = Message.seeded(seed, 4)
    grey.push(pushed, values)
    tabled = Message.seeded(seed, 4)
    table = exact_mixture_table(exact_weights(logits), means, log_scales)
    tabled.push(values, constriction.stream.model.Categorical(perfect=False), table)
    assert pushed == tabled
    np.testing.assert_array_equal(
        grey.fixed_point_probabilities(values), categorical_fixed_point(table, values)
    )


@pytest.mark.parametrize(("n", "m"), [(1, 1), (130, 5), (300, 32)])
def test_exact_mixture_table_is_the_sum_of_its_sigmoids(n, m):
    """The blocked table equals its definition, the mixture CDF read through `_sigmoid_at`
    at every upper bin edge, for parameters far beyond the clamps as well."""
    rng = np.random.default_rng(n + m)
    logits, means, log_scales = random_head(rng, n, m)
    means *= 3
    log_scales = np.rint(rng.uniform(-9, 9, (n, m)) * fp.ONE)
    weights = exact_weights(logits)
    inverse = exact_logistic._inverse_scales(log_scales)
    cdf = sum(
        weights[:, k, None]
        * exact_logistic._sigmoid_at(
            exact_logistic._UPPER_EDGES, means[:, k, None], inverse[:, k, None]
        )
        for k in range(m)
    )
    expected = np.diff(cdf, prepend=0.0, append=(weights.sum(axis=1) * 2.0**24)[:, None])
    np.testing.assert_array_equal(exact_mixture_table(weights, means, log_scales), expected)


# ----- two-stage pixels (pixel_bins=16) -----------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_two_stage_tables_are_the_whole_table_in_bins(seed):
    """A bin's mass is the sum of its values' entries of the one-stage table, and its
    offset table those entries themselves (ones for a bin of mass 0); the encoder's running
    sums are the tables' (`exact_stage_sums`), for parameters far beyond the clamps too."""
    rng = np.random.default_rng(90 + seed)
    n, m = 400, int(rng.integers(1, 11))
    logits, means, log_scales = random_head(rng, n, m)
    means *= 3
    log_scales = np.rint(rng.uniform(-9, 3, (n, m)) * fp.ONE)
    weights = exact_weights(logits)
    whole = exact_mixture_table(weights, means, log_scales)
    tables = exact_logistic.TwoStageTables(weights, means, log_scales, 16)
    with pytest.raises(RuntimeError, match="offsets come after bins"):
        tables.offsets(np.zeros(n, np.int64))
    bins = tables.bins()
    np.testing.assert_array_equal(bins, whole.reshape(n, 16, 16).sum(axis=2))
    values = rng.integers(0, 256, n)
    values[:4] = [0, 255, 15, 16]
    chosen = values // 16
    offsets = tables.offsets(chosen)
    in_bin = whole.reshape(n, 16, 16)[np.arange(n), chosen]
    empty = in_bin.sum(axis=1) == 0
    assert empty.any() and not empty.all()  # both cases are checked
    np.testing.assert_array_equal(offsets, np.where(empty[:, None], 1.0, in_bin))
    sums = exact_logistic.exact_stage_sums(weights, means, log_scales, values, 16)
    np.testing.assert_array_equal(sums.bins, chosen)
    np.testing.assert_array_equal(sums.offsets, values % 16)
    for table, symbols, (below, through, total) in (
        (bins, sums.bins, sums.bin_sums),
        (offsets, sums.offsets, sums.offset_sums),
    ):
        running = np.cumsum(table, axis=1)
        rows = np.arange(n)
        np.testing.assert_array_equal(through, running[rows, symbols])
        np.testing.assert_array_equal(below, through - table[rows, symbols])
        np.testing.assert_array_equal(total, running[:, -1])


def test_two_stage_needs_exact_arithmetic_and_known_bins():
    head = random_head(np.random.default_rng(0), 4, 2)
    with pytest.raises(ValueError, match="exact"):
        DiscretizedLogisticMixture(*head, pixel_bins=16)
    with pytest.raises(ValueError, match="pixel_bins"):
        DiscretizedLogisticMixture(*head, exact=True, pixel_bins=8)
