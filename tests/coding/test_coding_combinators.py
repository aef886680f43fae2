"""Combinators: serial, autoregressive and bits-back round trips, parameter containers."""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbcodec.coding import (
    AutoRegressive,
    Bernoulli,
    BitsBack,
    Categorical,
    DiscretizedLogisticMixtureRGB,
    GaussianParams,
    LatentGrid,
    LogisticMixtureRGBParams,
    Message,
    MessageUnderflowError,
    QuantizedGaussian,
    Serial,
    Uniform,
    all_params_by_steps,
    concat_params,
)
from bbcodec.coding.testing import check_codec

SEEDS = st.integers(0, 2**32 - 1)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS)
def test_serial_round_trip(seed):
    rng = np.random.default_rng(seed)
    grid = LatentGrid(0.05, 200)
    codec = Serial(
        Bernoulli(rng.random(5)),
        QuantizedGaussian(rng.normal(size=(2, 3)), rng.uniform(0.01, 3, size=(2, 3)), grid),
        Uniform(9, (4,)),
    )
    symbols = (
        rng.integers(0, 2, size=5),
        rng.integers(-200, 201, size=(2, 3)),
        rng.integers(0, 9, size=4),
    )
    check_codec(codec, symbols, Message.seeded(seed, 16))
    with pytest.raises(ValueError):
        codec.push(Message.seeded(seed, 4), symbols[:2])


def markov_chain(n_steps, batch):
    """A binary Markov chain per column; step t's table depends on step t - 1."""
    transition = np.array([[0.9, 0.1], [0.25, 0.75]])

    def step_params(prefix, t):
        previous = prefix[-1] if t else np.zeros(batch, dtype=np.int64)
        return transition[previous]

    def all_params(symbols):  # one parallel pass, as a PixelCNN would do it
        previous = np.concatenate([np.zeros((1, batch), dtype=np.int64), symbols[:-1]])
        return transition[previous.reshape(-1)]

    return AutoRegressive(Categorical, all_params, step_params, n_steps, (batch,))


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n_steps=st.integers(1, 12), batch=st.integers(1, 5))
def test_autoregressive_round_trip(seed, n_steps, batch):
    rng = np.random.default_rng(seed)
    codec = markov_chain(n_steps, batch)
    check_codec(codec, rng.integers(0, 2, size=(n_steps, batch)), Message.seeded(seed, 4))


def test_autoregressive_prefix_is_what_was_popped_so_far():
    seen = []
    codec = markov_chain(4, 2)

    def spy(prefix, t):
        seen.append(prefix.copy())
        assert not prefix.flags.writeable
        return codec.step_params(prefix, t)

    spying = AutoRegressive(Categorical, codec.all_params, spy, 4, (2,))
    symbols = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    message = Message.seeded(0, 4)
    spying.push(message, symbols)
    spying.pop(message)

    assert [s.tolist() for s in seen] == [symbols[:t].tolist() for t in range(4)]


def test_autoregressive_rejects_symbols_of_the_wrong_shape():
    with pytest.raises(ValueError):
        markov_chain(3, 2).push(Message.seeded(0, 4), np.zeros((3, 3), dtype=int))


def test_autoregressive_rgb_pixels_with_a_batch():
    """Pixel t of B images per step, R -> G -> B inside each pixel, parameters from the prefix."""
    rng = np.random.default_rng(3)
    n_steps, batch, m = 6, 3, 2
    base = rng.normal(size=(n_steps, batch, 3, m))

    def step_params(prefix, t):
        previous = prefix[-1] / 255.0 if t else np.zeros((batch, 3))
        return LogisticMixtureRGBParams(
            logit_weights=np.tile(previous[:, :1], (1, m)),
            means=np.tanh(base[t] + previous[..., None]),
            log_scales=np.full((batch, 3, m), -3.0),
            coeffs=np.tanh(base[t] * 0.5),
        )

    codec = AutoRegressive(
        lambda params: DiscretizedLogisticMixtureRGB(*params, group_size=batch),
        all_params_by_steps(step_params),
        step_params,
        n_steps,
        (batch, 3),
    )
    check_codec(codec, rng.integers(0, 256, size=(n_steps, batch, 3)), Message.seeded(1, 8))


def test_concat_params_keeps_the_container_structure():
    class Pair(NamedTuple):
        left: np.ndarray
        right: tuple

    steps = [Pair(np.full((2, 3), t), (np.array([t]), np.zeros((1, 2)))) for t in range(3)]

    whole = concat_params(steps)

    assert isinstance(whole, Pair) and isinstance(whole.right, tuple)
    assert whole.left.shape == (6, 3) and whole.right[1].shape == (3, 2)
    np.testing.assert_array_equal(whole.right[0], [0, 1, 2])
    gaussian = concat_params([GaussianParams(np.zeros(2), np.ones(2))] * 2)
    assert isinstance(gaussian, GaussianParams) and gaussian.stds.shape == (4,)


def toy_bits_back(rng, n_latent=4, n_values=6):
    """z ~ Categorical(prior), x | z ~ Categorical(rows[z]); exact posterior by Bayes."""
    prior = rng.dirichlet(np.ones(n_latent))
    likelihood = rng.dirichlet(np.ones(n_values), size=n_latent)
    joint = prior[:, None] * likelihood
    posterior = (joint / joint.sum(axis=0)).T  # [x, z]
    codec = BitsBack(
        prior=Categorical(prior[None]),
        likelihood=lambda z: Categorical(likelihood[z]),
        posterior=lambda x: Categorical(posterior[x]),
    )
    return codec, joint.sum(axis=0)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS)
def test_bits_back_round_trip(seed):
    rng = np.random.default_rng(seed)
    codec, _ = toy_bits_back(rng)
    check_codec(codec, rng.integers(0, 6, size=1), Message.seeded(seed, 2))


def test_bits_back_round_trip_with_gaussian_latents():
    rng = np.random.default_rng(0)
    grid = LatentGrid(0.01, 800)
    weights = rng.normal(size=(3, 10))
    codec = BitsBack(
        prior=QuantizedGaussian(np.zeros(3), np.ones(3), grid),
        likelihood=lambda z: Bernoulli(1 / (1 + np.exp(-grid.to_values(z) @ weights))),
        posterior=lambda x: QuantizedGaussian(np.tanh(weights @ x), np.full(3, 0.3), grid),
    )
    check_codec(codec, rng.integers(0, 2, size=10), Message.seeded(0, 4))


def test_bits_back_needs_initial_bits():
    """Popping a 64-bit latent from a 2-word seed (31 bits to spare) must fail loudly."""
    latent = Uniform(2**16, (4,))
    codec = BitsBack(latent, lambda z: Uniform(2, (1,)), lambda x: latent)
    message = Message.seeded(0, 2)

    with pytest.raises(MessageUnderflowError):
        codec.push(message, np.array([1]))
    assert message.is_seed()
    check_codec(codec, np.array([1]), Message.seeded(0, 4))
