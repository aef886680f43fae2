"""Leaf codecs: exact round trips (symbols and message), concatenation, tables, grids."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbcodec.coding import (
    Bernoulli,
    Categorical,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    LatentGrid,
    Message,
    MessageUnderflowError,
    QuantizedGaussian,
    Uniform,
    WindowedQuantizedGaussian,
    logistic_mixture_table,
)
from bbcodec.coding.testing import check_codec

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=30, deadline=None)


def shape_of(rng, max_dims=3, max_side=6):
    return tuple(int(d) for d in rng.integers(1, max_side + 1, size=rng.integers(1, max_dims + 1)))


def message_for(rng):
    return Message.seeded(int(rng.integers(2**63)), int(rng.integers(2, 6)))


def big_message(rng):
    """Enough bits that any pop in these tests fits (they only pop what they pushed)."""
    return Message.seeded(int(rng.integers(2**63)), 64)


def random_table(rng, n, k):
    table = rng.dirichlet(np.full(k, 0.3), size=n)
    table[rng.random((n, k)) < 0.1] = 0.0  # zero probabilities must still be codable
    table[:, 0] += 1e-3
    return table


def random_mixture(rng, n, m, channels=None):
    extra = () if channels is None else (channels,)
    return (
        rng.normal(size=(n, m)) * 2,
        rng.uniform(-1.2, 1.2, size=(n, *extra, m)),
        rng.uniform(-7.0, 0.5, size=(n, *extra, m)),
    )


@FAST
@given(seed=SEEDS)
def test_bernoulli_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = shape_of(rng)
    p_one = rng.choice([0.0, 1.0, 1e-9, 0.5, rng.random()], size=shape)
    symbols = rng.integers(0, 2, size=shape)  # including "impossible" ones
    check_codec(Bernoulli(p_one.astype(np.float32)), symbols, message_for(rng))


@FAST
@given(seed=SEEDS)
def test_categorical_round_trip(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 30)), int(rng.integers(2, 300))
    check_codec(Categorical(random_table(rng, n, k)), rng.integers(0, k, size=n), big_message(rng))


@FAST
@given(seed=SEEDS)
def test_uniform_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape, n_symbols = shape_of(rng), int(rng.integers(2, 70000))
    symbols = rng.integers(0, n_symbols, size=shape)
    check_codec(Uniform(n_symbols, shape), symbols, big_message(rng))


@FAST
@given(seed=SEEDS)
def test_quantized_gaussian_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = shape_of(rng)
    grid = LatentGrid(step=float(rng.uniform(1e-3, 0.5)), n_half=int(rng.integers(1, 3000)))
    means, stds = _gaussians(rng, shape, grid)
    symbols = rng.integers(-grid.n_half, grid.n_half + 1, size=shape)
    check_codec(QuantizedGaussian(means, stds, grid), symbols, big_message(rng))


def _gaussians(rng, shape, grid):
    """(means, stds) of any size next to the grid, some means far outside its range."""
    means = rng.normal(size=shape) * grid.bound * 1.5
    stds = np.exp(rng.uniform(np.log(grid.step / 10), np.log(grid.bound * 3), size=shape))
    return means, stds


def _windowed(rng, shape, grid):
    return WindowedQuantizedGaussian(*_gaussians(rng, shape, grid), grid, rng.uniform(1, 16))


@FAST
@given(seed=SEEDS)
def test_windowed_quantized_gaussian_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = shape_of(rng)
    grid = LatentGrid(step=float(rng.uniform(1e-3, 0.5)), n_half=int(rng.integers(1, 3000)))
    codec = _windowed(rng, shape, grid)
    symbols = codec.pop(big_message(rng))  # symbols inside their windows
    check_codec(codec, symbols, big_message(rng))
    half, centre, _, _ = codec._windows()
    assert (np.abs(symbols.ravel() - centre) <= half).all()
    assert (np.abs(centre) + half <= grid.n_half).all()  # every window on the grid
    p = codec.fixed_point_probabilities(symbols)
    assert (p > 0).all() and (p <= 2**24).all()


def test_windowed_quantized_gaussian_stays_near_its_mean_and_refuses_far_symbols():
    grid = LatentGrid(2.0**-8, 32 * 2**8)
    means, stds = np.array([0.5, -3.0, 31.9]), np.array([0.01, 1.0, 0.5])
    codec = WindowedQuantizedGaussian(means, stds, grid, 8.0)
    draws = np.stack([codec.pop(Message.seeded(seed, 8)) for seed in range(300)])
    values = grid.to_values(draws)
    assert (np.abs(values - means) <= 16 * stds + grid.step).all()  # ≤ 2 × 8 std (rounded)
    with pytest.raises(ValueError, match="outside its posterior window"):
        codec.push(Message.seeded(0, 8), grid.to_symbols(np.array([0.5, 17.0, 31.9])))


def test_windowed_quantized_gaussian_pop_that_underflows_leaves_the_message_as_it_was():
    grid = LatentGrid(2.0**-8, 32 * 2**8)
    stds = np.array([0.001] * 4 + [5.0] * 200)  # two window classes, the second too big
    codec = WindowedQuantizedGaussian(np.zeros(204), stds, grid, 8.0)
    message = Message.seeded(3, 4)
    before = message.to_words().copy()
    with pytest.raises(MessageUnderflowError):
        codec.pop(message)
    np.testing.assert_array_equal(message.to_words(), before)


@FAST
@given(seed=SEEDS)
def test_discretized_logistic_mixture_round_trip(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    symbols = rng.integers(0, 256, size=n)
    check_codec(DiscretizedLogisticMixture(*random_mixture(rng, n, m)), symbols, big_message(rng))


@FAST
@given(seed=SEEDS)
def test_discretized_logistic_mixture_rgb_round_trip(seed):
    rng = np.random.default_rng(seed)
    group_size, n_groups, m = int(rng.integers(1, 6)), int(rng.integers(1, 4)), 3
    n = group_size * n_groups
    params = (*random_mixture(rng, n, m, channels=3), np.tanh(rng.normal(size=(n, 3, m))))
    symbols = rng.integers(0, 256, size=(n, 3))
    codec = DiscretizedLogisticMixtureRGB(*params, group_size=group_size)
    check_codec(codec, symbols, big_message(rng))


def joint_rgb_mass(params, symbols):
    """p(r, g, b) = Σ_j π_j p_j(r) p_j(g|r) p_j(b|r, g), straight from the definition."""
    logit_weights, means, log_scales, coeffs = params
    weights = np.exp(logit_weights) / np.exp(logit_weights).sum(1, keepdims=True)
    x = 2.0 * symbols / 255.0 - 1.0  # (n, 3)
    mean = means.copy()
    mean[:, 1] += coeffs[:, 0] * x[:, :1]
    mean[:, 2] += coeffs[:, 1] * x[:, :1] + coeffs[:, 2] * x[:, 1:2]
    cdf = lambda edge: 1.0 / (1.0 + np.exp(-(edge - mean) / np.exp(log_scales)))
    upper = np.where(symbols[..., None] == 255, 1.0, cdf(x[..., None] + 1 / 255))
    lower = np.where(symbols[..., None] == 0, 0.0, cdf(x[..., None] - 1 / 255))
    return ((upper - lower).prod(axis=1) * weights).sum(axis=1)


def test_rgb_pixels_cost_minus_log2_of_the_joint_mixture():
    """R, G|R and B|R,G multiply to the whole-pixel mixture (components re-weighted)."""
    rng = np.random.default_rng(3)
    n, m = 2000, 4
    logit_weights = rng.normal(size=(n, m))
    means = rng.uniform(-0.8, 0.8, size=(n, 3, m))  # components far apart, sharp
    log_scales = rng.uniform(-4.0, -2.5, size=(n, 3, m))
    params = (logit_weights, means, log_scales, np.tanh(rng.normal(size=(n, 3, m))))
    symbols = np.zeros((n, 3), dtype=np.int64)  # near component 0's means, channel by channel
    coeffs = params[3]
    for c in range(3):
        x = 2.0 * symbols / 255.0 - 1.0
        mean = means[:, c, 0] + sum(coeffs[:, c + e - 1, 0] * x[:, e] for e in range(c))
        symbols[:, c] = np.clip(np.round((mean + 1) * 127.5) + rng.integers(-3, 4, size=n), 0, 255)
    codec = DiscretizedLogisticMixtureRGB(*params)

    coded_bits = 24 * 3 * n - np.log2(codec.fixed_point_probabilities(symbols)).sum()
    model_bits = -np.log2(joint_rgb_mass(params, symbols)).sum()

    assert abs(coded_bits - model_bits) < 1e-3 * model_bits


def test_logistic_mixture_spans_more_than_one_chunk(monkeypatch):
    from bbcodec.coding import logistic

    rng = np.random.default_rng(0)
    codec = DiscretizedLogisticMixture(*random_mixture(rng, 30, 4))
    symbols = rng.integers(0, 256, size=30)
    one_chunk = Message.seeded(0, 64)
    codec.push(one_chunk, symbols)

    monkeypatch.setattr(logistic, "TABLE_CHUNK_ROWS", 7)
    pushed = check_codec(codec, symbols, Message.seeded(0, 64))

    assert pushed == one_chunk  # chunking does not change the bitstream


def leaf_pieces(rng, kind):
    """A leaf built on 3 pieces' parameters at once, the 3 leaves of the pieces, symbols."""
    sizes = [2, 3, 4]
    if kind == "categorical":
        tables = [random_table(rng, s, 5) for s in sizes]
        return Categorical(np.concatenate(tables)), [Categorical(t) for t in tables], 5
    if kind == "gaussian":
        grid = LatentGrid(0.1, 50)
        params = [(rng.normal(size=s), rng.uniform(0.05, 2, size=s)) for s in sizes]
        whole = QuantizedGaussian(*map(np.concatenate, zip(*params, strict=True)), grid)
        return whole, [QuantizedGaussian(*p, grid) for p in params], grid
    if kind == "rgb":  # 3 steps of 2 pixels each
        params = [
            (*random_mixture(rng, 2, 3, channels=3), np.tanh(rng.normal(size=(2, 3, 3))))
            for _ in sizes
        ]
        whole = DiscretizedLogisticMixtureRGB(
            *map(np.concatenate, zip(*params, strict=True)), group_size=2
        )
        return whole, [DiscretizedLogisticMixtureRGB(*p) for p in params], None
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["categorical", "gaussian", "rgb"])
def test_one_push_of_concatenated_parameters_equals_pushing_the_pieces(kind):
    rng = np.random.default_rng(5)
    whole, pieces, _ = leaf_pieces(rng, kind)
    if kind == "categorical":
        symbols = [rng.integers(0, 5, size=t.probabilities.shape[0]) for t in pieces]
    elif kind == "gaussian":
        symbols = [rng.integers(-50, 51, size=p.means.shape) for p in pieces]
    else:
        symbols = [rng.integers(0, 256, size=(2, 3)) for _ in pieces]

    at_once = Message.seeded(0, 8)
    whole.push(at_once, np.concatenate(symbols))
    one_by_one = Message.seeded(0, 8)
    for piece, piece_symbols in reversed(list(zip(pieces, symbols, strict=True))):
        piece.push(one_by_one, piece_symbols)

    assert at_once == one_by_one
    for piece, piece_symbols in zip(pieces, symbols, strict=True):
        np.testing.assert_array_equal(piece.pop(at_once), piece_symbols)


def test_logistic_table_rows_do_not_depend_on_the_batch():
    """Encoder (all rows at once) and decoder (a few rows at a time) get identical floats."""
    rng = np.random.default_rng(1)
    for m in (1, 5, 10):
        params = random_mixture(rng, 257, m)
        whole = logistic_mixture_table(*params)
        for rows in (slice(0, 1), slice(3, 4), slice(10, 74), slice(200, 257)):
            part = logistic_mixture_table(*(p[rows] for p in params))
            assert np.array_equal(part.view(np.uint64), whole[rows].view(np.uint64))
        strided = logistic_mixture_table(*(np.asfortranarray(p[::2]) for p in params))
        assert np.array_equal(strided.view(np.uint64), whole[::2].view(np.uint64))


def test_logistic_table_matches_the_mixture_of_logistic_bin_masses():
    rng = np.random.default_rng(2)
    logit_weights, means, log_scales = random_mixture(rng, 6, 4)
    table = logistic_mixture_table(logit_weights, means, log_scales)

    edges = np.concatenate([[-np.inf], (2 * np.arange(255) + 1) / 255 - 1, [np.inf]])
    weights = np.exp(logit_weights) / np.exp(logit_weights).sum(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        z = (edges[None, None] - means[..., None]) / np.exp(log_scales)[..., None]
        cdf = 1 / (1 + np.exp(-z))
    expected = np.einsum("nm,nmk->nk", weights, np.diff(cdf, axis=-1))

    np.testing.assert_allclose(table, expected, atol=1e-12)
    assert (table >= 0).all()
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-12)


def test_latent_grid_maps_symbols_and_values():
    grid = LatentGrid(step=0.25, n_half=8)

    assert grid.n_symbols == 17 and grid.bound == 2.0
    np.testing.assert_array_equal(
        grid.to_symbols(grid.to_values(np.arange(-8, 9))), np.arange(-8, 9)
    )
    with pytest.raises(ValueError):
        grid.to_symbols(np.array([2.2]))
    with pytest.raises(ValueError):
        LatentGrid(step=0.0, n_half=3)
    with pytest.raises(ValueError):
        LatentGrid(step=0.1, n_half=0)


def test_invalid_leaf_parameters_are_rejected():
    with pytest.raises(ValueError):
        Categorical(np.ones(3))
    with pytest.raises(ValueError):
        QuantizedGaussian(np.zeros(2), np.ones(3), LatentGrid(0.1, 5))
    with pytest.raises(ValueError):
        Uniform(1, (2,))
    with pytest.raises(ValueError):
        DiscretizedLogisticMixture(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        DiscretizedLogisticMixtureRGB(np.zeros((4, 2)), *(np.zeros((4, 3, 2)),) * 3, group_size=3)
