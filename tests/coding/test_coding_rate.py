"""Rates: fixed-point probabilities vs the coder, two-sided size bounds, bits-back rates."""

import math

import constriction
import numpy as np
import pytest

from bbcodec.coding import (
    Bernoulli,
    BitsBack,
    Categorical,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    InformationMeter,
    LatentGrid,
    Message,
    QuantizedGaussian,
    RateReport,
    Uniform,
    information_bits,
)
from bbcodec.coding.quantization import categorical_ranges, range_pushes, uniform_ranges

WORD = 32
TOTAL = 1 << 24


def head_of(message):
    """The coder's 64-bit head (the top two words), for a message whose bulk is empty."""
    words = message.to_words().astype(np.uint64).tolist()
    assert len(words) <= 2
    return sum(word << (WORD * i) for i, word in enumerate(words))


def message_with_head(head):
    return Message.from_words(np.array([head & 0xFFFFFFFF, head >> WORD], dtype=np.uint32))


def probed_probability(leaf, symbol):
    """The probability numerator the coder really uses for a one-symbol ``leaf``.

    Push the symbol onto a head of 2**40 - 1 (no renormalisation): the low 24 bits of the new
    head are a quantile q inside the symbol's interval [left, left + p). Decoding from the head
    2**63 + q gives back the symbol and the head p * 2**39 + (q - left), which reveals p.
    """
    pushed = message_with_head((1 << 40) - 1)
    leaf.push(pushed, symbol)
    quantile = head_of(pushed) & (TOTAL - 1)
    decoder = message_with_head((1 << 63) | quantile)
    np.testing.assert_array_equal(leaf.pop(decoder), symbol)
    return head_of(decoder) >> 39


def random_leaf_and_symbols(kind, rng, n):
    """A leaf over ``n`` symbols, its one-symbol slices, and symbols (some improbable)."""
    if kind == "bernoulli":
        p_one = rng.random(n)
        p_one[:5] = [0.0, 1.0, 1e-12, 0.5, 1 - 1e-9]  # extremes, still leaky
        return Bernoulli(p_one), lambda i: Bernoulli(p_one[i : i + 1]), rng.integers(0, 2, n)
    if kind == "categorical":
        table = rng.dirichlet(np.full(37, 0.2), size=n)
        table[:, 3] = 0.0
        return (
            Categorical(table),
            lambda i: Categorical(table[i : i + 1]),
            rng.integers(0, 37, n),
        )
    if kind == "uniform":
        return Uniform(1000, (n,)), lambda i: Uniform(1000, (1,)), rng.integers(0, 1000, n)
    if kind == "gaussian":
        grid = LatentGrid(step=0.03, n_half=300)
        means = rng.normal(size=n) * 4
        stds = np.exp(rng.uniform(np.log(0.005), np.log(20), size=n))
        return (
            QuantizedGaussian(means, stds, grid),
            lambda i: QuantizedGaussian(means[i : i + 1], stds[i : i + 1], grid),
            np.clip(np.rint(rng.normal(means, stds) / grid.step), -300, 300).astype(int),
        )
    if kind == "logistic":
        params = (
            rng.normal(size=(n, 5)),
            rng.uniform(-1, 1, (n, 5)),
            rng.uniform(-6, 0, (n, 5)),
        )
        return (
            DiscretizedLogisticMixture(*params),
            lambda i: DiscretizedLogisticMixture(*(p[i : i + 1] for p in params)),
            rng.integers(0, 256, n),
        )
    raise AssertionError(kind)


KINDS = ["bernoulli", "categorical", "uniform", "gaussian", "logistic"]


@pytest.mark.parametrize("kind", KINDS)
def test_fixed_point_probabilities_are_the_coders(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    leaf, one_symbol_leaf, symbols = random_leaf_and_symbols(kind, rng, 300)

    computed = leaf.fixed_point_probabilities(symbols)
    probed = [probed_probability(one_symbol_leaf(i), symbols[i : i + 1]) for i in range(300)]

    np.testing.assert_array_equal(computed, probed)


def model_samples(kind, leaf, rng):
    """Symbols drawn from the leaf's own distribution (so the rate is typical)."""
    if kind == "bernoulli":
        return (rng.random(leaf.p_one.shape) < leaf.p_one).astype(int)
    if kind == "categorical":
        cumulative = np.cumsum(leaf.probabilities, axis=1)
        return (rng.random((len(cumulative), 1)) > cumulative).sum(axis=1).clip(0, 36)
    if kind == "uniform":
        return rng.integers(0, leaf.n_symbols, leaf.shape)
    if kind == "gaussian":
        values = np.clip(rng.normal(leaf.means, leaf.stds), -leaf.grid.bound, leaf.grid.bound)
        return leaf.grid.to_symbols(values)
    return rng.integers(100, 156, leaf.means.shape[0])


@pytest.mark.parametrize("kind", KINDS)
def test_coded_size_is_within_half_a_percent_of_the_information_content(kind):
    rng = np.random.default_rng(10 + KINDS.index(kind))
    leaf, _, _ = random_leaf_and_symbols(kind, rng, 20000)
    symbols = model_samples(kind, leaf, rng)
    message = Message.seeded(0, 2)
    start_bits = message.num_bits()

    leaf.push(message, symbols)

    coded_bits = message.num_bits() - start_bits
    information = information_bits(leaf, symbols)
    print(f"{kind}: coded {coded_bits} bits, information {information:.1f} bits")
    assert information > 1000
    assert information - 2 * WORD <= coded_bits <= 1.005 * information + 2 * WORD


def test_rgb_mixture_coded_size_matches_its_information_content():
    rng = np.random.default_rng(4)
    n, m = 3000, 4
    codec = DiscretizedLogisticMixtureRGB(
        rng.normal(size=(n, m)),
        rng.uniform(-0.5, 0.5, (n, 3, m)),
        rng.uniform(-4, -1, (n, 3, m)),
        np.tanh(rng.normal(size=(n, 3, m))),
        group_size=100,
    )
    symbols = rng.integers(60, 200, size=(n, 3))
    message = Message.seeded(0, 2)

    codec.push(message, symbols)

    information = information_bits(codec, symbols)
    coded_bits = message.num_bits() - (2 * WORD - 1)
    assert information - 2 * WORD <= coded_bits <= 1.005 * information + 2 * WORD


CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def test_uniform_ranges_are_the_coders():
    """A symbol pushed in its `uniform_ranges` range writes what ``Uniform(n)`` writes,
    for alphabets of every size class (powers of two and their neighbours included)."""
    rng = np.random.default_rng(8)
    powers = [2**k + d for k in range(2, 24) for d in (-1, 0, 1)]
    sizes = [2, 3, 5, 7, 1000, TOTAL - 2, TOTAL - 1, *powers, *rng.integers(2, TOTAL, 40).tolist()]
    for n in sizes:
        symbols = np.unique(np.r_[0, 1, n // 2, n - 2, n - 1, rng.integers(0, n, 3)])
        for symbol in symbols:
            uniform, ranged = Message.seeded(n % 5, 4), Message.seeded(n % 5, 4)
            uniform.push(np.array([symbol], np.int32), constriction.stream.model.Uniform(n))
            ((entries, tables),) = range_pushes(*uniform_ranges(n, np.array([symbol])))
            ranged.push(entries, CATEGORICAL, tables)
            assert uniform == ranged, (n, symbol)


def test_range_pushes_write_what_the_whole_tables_write():
    """Symbols pushed in their `categorical_ranges` ranges (`range_pushes`) write what their
    whole tables write, one table per symbol, also for the ranges of all quantiles but one
    that a two-entry table gives a symbol whose neighbour has no mass (no three-entry
    table holds them), in runs of either kind."""
    rng = np.random.default_rng(9)
    tables = [rng.dirichlet(np.full(int(k), 0.3)) for k in rng.integers(2, 6, 300)]
    for i in range(0, 300, 7):  # a two-entry table with a symbol without mass, either way
        tables[i] = np.array([0.0, 1.0]) if i % 2 else np.array([3.0, 0.0])
    symbols = [int(rng.integers(0, table.size)) for table in tables]
    symbols[::7] = [int(np.argmax(table)) for table in tables[::7]]  # the massive one
    ranges = np.array(
        [
            categorical_ranges(*np.cumsum(t)[[s - 1, s, -1]] * [s > 0, 1, 1], s, t.size)
            for t, s in zip(tables, symbols, strict=True)
        ]
    )
    assert (ranges[:, 1] == TOTAL - 1).sum() > 40
    ranged, tabled = Message.seeded(10, 4), Message.seeded(10, 4)
    for entries, table in range_pushes(ranges[:, 0], ranges[:, 1]):
        ranged.push(entries, CATEGORICAL, table)
    for table, symbol in reversed(list(zip(tables, symbols, strict=True))):
        tabled.push(np.array([symbol], np.int32), CATEGORICAL, table[None])
    assert ranged == tabled
    for table, symbol in zip(tables, symbols, strict=True):
        assert ranged.pop(CATEGORICAL, table[None]).tolist() == [symbol]


def test_rate_report_and_meter_follow_the_stack():
    rng = np.random.default_rng(5)
    leaf = Categorical(rng.dirichlet(np.ones(10), size=5000))
    message = Message.seeded(3, 4)
    message.meter = InformationMeter()
    start_bits = message.num_bits()

    leaf.push(message, rng.integers(0, 10, 5000))
    popped = Categorical(leaf.probabilities[:100]).pop(message)

    meter = message.meter
    assert meter.popped_bits == pytest.approx(
        information_bits(Categorical(leaf.probabilities[:100]), popped)
    )
    report = RateReport.measure(message, start_bits, meter.net_bits)
    assert report.initial_bits == 128
    assert report.total_bits == 32 * message.num_words()
    assert abs(report.net_bits - report.information_bits) <= 0.005 * report.information_bits + 64
    per_dim = report.bits_per_dim(4900)
    assert per_dim.net_bpd == report.net_bits / 4900
    assert per_dim.information_bpd == report.information_bits / 4900
    assert per_dim.total_bpd == report.total_bits / 4900
    with pytest.raises(ValueError):
        report.bits_per_dim(0)


def chain_and_unchain(codec, items, message):
    """Encodes items one after another on ``message``, then decodes them all (in reverse)."""
    start_bits = message.num_bits()
    for item in items:
        codec.push(message, item)
    net_bits = message.num_bits() - start_bits
    for item in reversed(items):
        np.testing.assert_array_equal(codec.pop(message), item)
    message.check_seed()
    return net_bits


def test_bits_back_with_an_exact_posterior_codes_at_minus_log_p_x():
    rng = np.random.default_rng(6)
    n_latent, n_values, n_items = 8, 16, 2000
    prior = rng.dirichlet(np.ones(n_latent))
    likelihood = rng.dirichlet(np.full(n_values, 0.5), size=n_latent)
    joint = prior[:, None] * likelihood
    evidence = joint.sum(axis=0)
    posterior = (joint / evidence).T
    codec = BitsBack(
        prior=Categorical(prior[None]),
        likelihood=lambda z: Categorical(likelihood[z]),
        posterior=lambda x: Categorical(posterior[x]),
    )
    latents = rng.choice(n_latent, size=n_items, p=prior)
    items = [np.array([rng.choice(n_values, p=likelihood[z])]) for z in latents]

    net_bits = chain_and_unchain(codec, items, Message.seeded(11, 2))

    minus_log_p_x = -np.log2(evidence[np.concatenate(items)]).sum()
    print(f"exact posterior: coded {net_bits} bits, -log2 p(x) {minus_log_p_x:.1f} bits")
    assert net_bits == pytest.approx(minus_log_p_x, rel=0.01)


class RandomVAE:
    """A tiny VAE with random linear maps: Gaussian q(z|x), Bernoulli p(x|z), N(0, 1) prior."""

    def __init__(self, rng, n_pixels, n_latent, grid):
        self.grid = grid
        self.encoder = rng.normal(size=(n_latent, n_pixels)) * 0.3
        self.encoder_log_std = rng.normal(size=(n_latent, n_pixels)) * 0.05
        self.decoder = rng.normal(size=(n_pixels, n_latent)) * 0.5
        self.decoder_bias = rng.normal(size=n_pixels)

    def posterior_params(self, x):
        centred = x - 0.5
        return self.encoder @ centred, 0.1 * np.exp(self.encoder_log_std @ centred)

    def p_one(self, z_values):
        return 1 / (1 + np.exp(-(z_values @ self.decoder.T + self.decoder_bias)))

    def codec(self):
        grid = self.grid
        n_latent = self.encoder.shape[0]
        return BitsBack(
            prior=QuantizedGaussian(np.zeros(n_latent), np.ones(n_latent), grid),
            likelihood=lambda z: Bernoulli(self.p_one(grid.to_values(z))),
            posterior=lambda x: QuantizedGaussian(*self.posterior_params(x), grid),
        )

    def sample(self, rng, n_items):
        z = rng.normal(size=(n_items, self.encoder.shape[0]))
        return (rng.random((n_items, self.decoder.shape[0])) < self.p_one(z)).astype(np.int64)


_erf = np.frompyfunc(math.erf, 1, 1)


def grid_bin_masses(means, stds, symbols, grid):
    """Masses of grid bins under N(means, stds), outer bins taking the tails (float64)."""

    def cdf(edges):
        return 0.5 * (1 + _erf((edges - means) / (stds * math.sqrt(2))).astype(np.float64))

    lower = np.where(symbols == -grid.n_half, 0.0, cdf((symbols - 0.5) * grid.step))
    upper = np.where(symbols == grid.n_half, 1.0, cdf((symbols + 0.5) * grid.step))
    return upper - lower


def discretised_negative_elbo_bits(vae, x, rng, n_samples=64):
    """E_q[-log2 P(x|z̄)] (Monte Carlo) + KL(Q(z̄|x) || P(z̄)) (exact sum over grid bins)."""
    grid = vae.grid
    means, stds = vae.posterior_params(x)
    half_width = int(12 * stds.max() / grid.step) + 1  # q has no mass to speak of beyond
    window = np.rint(means / grid.step)[:, None] + np.arange(-half_width, half_width + 1)
    on_grid = np.abs(window) <= grid.n_half
    symbols = np.clip(window, -grid.n_half, grid.n_half)
    q = np.where(on_grid, grid_bin_masses(means[:, None], stds[:, None], symbols, grid), 0.0)
    p = grid_bin_masses(0.0, 1.0, symbols, grid)
    positive = q > 0
    kl_bits = float(np.sum(q[positive] * np.log2(q[positive] / p[positive])))

    samples = grid.to_symbols(
        np.clip(rng.normal(means, stds, size=(n_samples, len(means))), -grid.bound, grid.bound)
    )
    p_one = vae.p_one(grid.to_values(samples))
    log_likelihood = np.where(x == 1, np.log2(p_one), np.log2(1 - p_one)).sum(axis=1)
    return kl_bits - log_likelihood.mean()


def test_bits_back_with_a_random_vae_codes_at_its_discretised_negative_elbo():
    rng = np.random.default_rng(7)
    grid = LatentGrid(step=0.01, n_half=600)
    vae = RandomVAE(rng, n_pixels=24, n_latent=3, grid=grid)
    items = list(vae.sample(rng, 2000))
    codec = vae.codec()
    unmixed = BitsBack(codec.prior, codec.likelihood, codec.posterior, mix_head=False)

    net_bits = chain_and_unchain(codec, items, Message.seeded(12, 4))
    unmixed_net_bits = chain_and_unchain(unmixed, items, Message.seeded(12, 4))

    negative_elbo_bits = sum(discretised_negative_elbo_bits(vae, x, rng) for x in items)
    print(
        f"random VAE: -ELBO {negative_elbo_bits:.1f} bits, coded {net_bits} bits "
        f"({unmixed_net_bits} without mix_head)"
    )
    assert net_bits == pytest.approx(negative_elbo_bits, rel=0.01)
    # Without scrambling the head, the first latent popped reads the quantile of the last
    # latent pushed: a systematic excess well above the sampling noise (about 0.1 %).
    assert unmixed_net_bits > net_bits + 0.005 * negative_elbo_bits
