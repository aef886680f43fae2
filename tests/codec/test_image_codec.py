"""ImageCodec and ModelAdapter on tiny random models (the rate identities hold for any weights).

- exact round trips for binary, grey and RGB images with the VLAE and the δ-VAE (coded with
  its auxiliary prior), for several batch and chunk sizes, and the stack left after decoding
  is the seed, word for word (a tampered stream or trailer is caught);
- bits-back accounting: a chunk's information bits equal −log2 P(x|z̄) − log2 P(z̄) +
  log2 Q(z̄|x) recomputed here from the model and the leaves' fixed-point probabilities,
  and the stack grows by exactly that plus the trailer, to a few bits, both ways;
- the coded rate on structured images matches the model's mean continuous −ELBO to within
  a few standard errors;
- the growing batch schedule (1, 2, 4, … ≤ max_batch), its halving and restart paths;
- determinism: the same words twice, and encoder and decoder hand bit-identical float64
  parameters to the coder for every pixel and latent;
- corrupted streams (the container CRC bypassed) and wrong models raise `DecodeError` or
  `ChecksumError`, never return pixels and never raise anything else.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

import bbcodec.codec.chunks as chunks_module
from bbcodec.codec import CodingSettings, ImageCodec, initial_seed_words
from bbcodec.codec import adapter as adapter_module
from bbcodec.codec.adapter import ModelAdapter
from bbcodec.codec.chunks import MAX_BATCHES, MAX_SEED_WORDS
from bbcodec.coding import (
    Bernoulli,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    GaussianParams,
    Message,
    QuantizedGaussian,
    Uniform,
    information_bits,
)
from bbcodec.container import Chunk
from bbcodec.errors import ChecksumError, DecodeError
from bbcodec.plan import chunk_spans

FAMILIES = ("vlae", "delta-vae")
KINDS = ("binary", "grey", "rgb")
CORRUPT = (DecodeError, ChecksumError)


@pytest.fixture(autouse=True)
def _light():
    torch.set_num_threads(1)  # two trainings share the machine's two cores
    torch.manual_seed(0)


def _patterns(n: int, seed: int = 0) -> np.ndarray:
    """Structured 8×8 binary images: crosses, rectangles, diagonal stripes, triangles, 3% noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 8, 8), np.uint8)
    for image in out:
        pattern = rng.integers(4)
        if pattern == 0:
            image[rng.integers(8), :] = 1
            image[:, rng.integers(8)] = 1
        elif pattern == 1:
            r, c = rng.integers(0, 5, 2)
            image[r : r + rng.integers(2, 4), c : c + rng.integers(2, 4)] = 1
        elif pattern == 2:
            image[:] = np.add.outer(np.arange(8), np.arange(8)) % rng.integers(2, 5) == 0
        else:
            image[:] = np.triu(np.ones((8, 8), np.uint8), rng.integers(-3, 4))
    return out ^ (rng.random(out.shape) < 0.03).astype(np.uint8)


def _doubling(n: int, max_batch: int) -> list[int]:
    """The schedule when the stack always holds enough bits: 1, 2, 4, … ≤ max_batch."""
    sizes, batch = [], 1
    while sum(sizes) < n:
        sizes.append(min(batch, max_batch, n - sum(sizes)))
        batch *= 2
    return sizes


def _with_words(chunk: Chunk, words: np.ndarray) -> Chunk:
    return Chunk(chunk.first, chunk.count, np.asarray(words, dtype=np.uint32), chunk.pixels_digest)


def _seed_words(seed: int, n_words: int) -> np.ndarray:
    """The documented seed generator, written out independently of `bbcodec.coding.Seed`."""
    raw = np.random.PCG64(seed).random_raw((n_words + 1) // 2).astype("<u8")
    words = raw.view("<u4")[:n_words].astype(np.uint32)  # low half of each u64 first
    words[-1] |= np.uint32(1 << 31)
    return words


# ----- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("initial_bits", ["direct", "seed"])
@pytest.mark.parametrize("max_batch", [1, 3, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_exact(family, kind, max_batch, initial_bits):
    config = tiny_config(family, kind)
    images = random_images(config, 6, seed=max_batch)
    settings = CodingSettings(max_batch=max_batch, initial_bits=initial_bits)
    codec = ImageCodec(random_model(config), settings)
    chunk, rate = codec.encode_chunk(images)
    assert rate.total_bits == 32 * len(chunk.words)
    if initial_bits == "seed":
        assert rate.batch_sizes == tuple(_doubling(6, max_batch)) and rate.direct_items == 0
        assert rate.initial_bits == 32 * initial_seed_words(config.total_latent_dim)
    else:
        assert rate.direct_items >= 1 and rate.initial_bits == 0
        assert rate.direct_items + sum(rate.batch_sizes) == 6
    decoded = ImageCodec(random_model(config), settings).decode_chunk(chunk)
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    np.testing.assert_array_equal(decoded, images)


@pytest.mark.parametrize(
    ("family", "kind"), [("delta-vae", "grey"), ("delta-vae", "rgb"), ("vlae", "grey")]
)
def test_two_stage_pixels_round_trip_at_the_same_rate(family, kind):
    """pixel_bins=16 (a bin of 16 values, then the value): every image back, and the
    information within a fraction of a percent of one 256-way stage's. The δ-VAE's raster
    pixels go through an autoregressive codec whose encoder pushes all steps at once."""
    config = tiny_config(family, kind)
    images = random_images(config, 7)
    information = {}
    for bins in (1, 16):
        settings = CodingSettings(max_batch=3, pixel_bins=bins)
        chunk, rate = ImageCodec(random_model(config), settings).encode_chunk(images)
        decoded = ImageCodec(random_model(config), settings).decode_chunk(chunk)
        np.testing.assert_array_equal(decoded, images)
        information[bins] = rate.information_bits
    assert information[16] == pytest.approx(information[1], rel=3e-3)


def test_the_delta_vae_codes_with_its_auxiliary_prior(monkeypatch):
    """Every prior step the codec takes goes through the auxiliary MADE, not the AR(1) prior."""
    model = random_model(tiny_config("delta-vae", "grey"))
    calls = {"aux": 0, "ar1": 0}
    for name, module in (("aux", model.aux_prior), ("ar1", model.prior)):
        original = module.step

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(module, "step", counted)
    # The float path (the exact path's twin is built from `coding_prior` alone).
    settings = CodingSettings(max_batch=4, initial_bits="seed", arithmetic="float")
    codec = ImageCodec(model, settings)
    images = random_images(model.config, 5)
    chunk, _ = codec.encode_chunk(images)
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)
    assert calls["ar1"] == 0 and calls["aux"] == 2 * 8 * 3  # 8 latents × 3 batches × 2 sides


@pytest.mark.parametrize("chunk_images", [1, 4, 50])
def test_round_trip_over_chunks_each_decodable_alone(chunk_images):
    config = tiny_config("delta-vae", "binary")
    images = random_images(config, 11)
    settings = CodingSettings(max_batch=3, chunk_images=chunk_images)
    codec = ImageCodec(random_model(config), settings)
    chunks = []
    for first, count, *_ in chunk_spans([(images.shape[1:], len(images))], codec.image_shape,
                                          settings.chunk_images):  # fmt: skip
        chunk, rate = codec.encode_chunk(images[first : first + count], first=first)
        assert rate.direct_items + sum(rate.batch_sizes) == count
        assert (chunk.first, chunk.count) == (first, count)
        chunks.append(chunk)
    assert len(chunks) == math.ceil(11 / chunk_images)
    for chunk in reversed(chunks):  # any order: chunks share nothing
        decoded = codec.decode_chunk(chunk)
        np.testing.assert_array_equal(decoded, images[chunk.first : chunk.stop])


def test_stack_left_after_decoding_is_exactly_the_seed(monkeypatch):
    config = tiny_config("vlae", "grey")
    images = random_images(config, 6)
    settings = CodingSettings(max_batch=4, seed=12345, initial_bits="seed")
    codec = ImageCodec(random_model(config), settings)
    chunk, rate = codec.encode_chunk(images)
    left_over = []
    original = Message.check_seed

    def recording(message):
        left_over.append(message.to_words())
        return original(message)

    monkeypatch.setattr(Message, "check_seed", recording)
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)
    (words,) = left_over
    np.testing.assert_array_equal(words, _seed_words(12345, rate.initial_bits // 32))


def _tampered_trailer(words: np.ndarray, max_batch: int, edit) -> np.ndarray:
    """Pops the chunk trailer (seed words, batch count, sizes), edits it, pushes it back.

    The trailer format is written out here from its description in `bbcodec.codec.chunks`.
    """
    message = Message.from_words(words)
    seed_words = int(Uniform(MAX_SEED_WORDS, (1,)).pop(message)[0]) + 2
    n_batches = int(Uniform(MAX_BATCHES, (1,)).pop(message)[0]) + 1
    sizes = Uniform(max_batch, (n_batches,)).pop(message) + 1
    seed_words, sizes = edit(seed_words, [int(s) for s in sizes])
    Uniform(max_batch, (len(sizes),)).push(message, np.asarray(sizes) - 1)
    Uniform(MAX_BATCHES, (1,)).push(message, np.array([len(sizes) - 1]))
    Uniform(MAX_SEED_WORDS, (1,)).push(message, np.array([seed_words - 2]))
    return message.to_words()


def test_tampered_stream_and_trailer_are_caught():
    config = tiny_config("vlae", "binary")
    images = random_images(config, 7)
    settings = CodingSettings(max_batch=4, initial_bits="seed")
    codec = ImageCodec(random_model(config), settings)
    chunk, rate = codec.encode_chunk(images)
    assert rate.batch_sizes == (1, 2, 4)

    untouched = _tampered_trailer(chunk.words, 4, lambda seed, sizes: (seed, sizes))
    np.testing.assert_array_equal(untouched, chunk.words)  # the format is as described

    # An extra word under the stream: every pixel decodes, only the seed check can tell.
    with pytest.raises(DecodeError, match="not the seed"):
        codec.decode_chunk(_with_words(chunk, np.concatenate([[7], chunk.words])))
    # A seed that is not the one the stream was made with.
    other_seed = ImageCodec(codec.model, CodingSettings(max_batch=4, seed=1, initial_bits="seed"))
    with pytest.raises(DecodeError, match="not the seed"):
        other_seed.decode_chunk(chunk)
    # The trailer: seed size, a schedule in another order, a schedule of the wrong total.
    edits = [
        lambda seed, sizes: (seed + 1, sizes),
        lambda seed, sizes: (seed, [1, 4, 2]),
        lambda seed, sizes: (seed, [2, 1, 4]),
        lambda seed, sizes: (seed, sizes + [1]),
    ]
    for edit in edits:
        with pytest.raises(CORRUPT):
            codec.decode_chunk(_with_words(chunk, _tampered_trailer(chunk.words, 4, edit)))
    # The chunk's frame: image count and pixel checksum.
    with pytest.raises(DecodeError, match="holds 6"):
        codec.decode_chunk(Chunk(0, 6, chunk.words, chunk.pixels_digest))
    with pytest.raises(ChecksumError):
        codec.decode_chunk(Chunk(0, 7, chunk.words, bytes(32)))


# ----- direct images: a chunk that starts from an empty stack ------------------------------


def _independent_direct_bits(codec: ImageCodec, images: np.ndarray) -> float:
    """−log2 P(x|z̄) − log2 P(k) of one directly coded image, z̄ walked from its posterior
    mean, the pixels' bits from the model's all-at-once pass."""
    adapter = codec.adapter
    offsets, symbols = adapter.direct_walk(toward=adapter.posterior(images).means)
    z = torch.from_numpy(codec.settings.grid.to_values(symbols).astype(np.float32))
    with torch.no_grad():
        params = codec.model.likelihood_params(torch.from_numpy(images), z).double().numpy()
    p_one = 1.0 / (1.0 + np.exp(-params.reshape(-1)))
    pixel_bits = information_bits(Bernoulli(p_one), images.reshape(-1))
    return pixel_bits + information_bits(adapter.direct_offsets(1), offsets)


def test_a_one_image_chunk_is_coded_directly_without_a_trailer(monkeypatch):
    config = tiny_config("vlae", "binary")
    images = random_images(config, 1)
    codec = ImageCodec(random_model(config), CodingSettings())
    chunk, rate = codec.encode_chunk(images)
    assert rate.direct_items == 1 and rate.batch_sizes == () and rate.initial_bits == 0
    assert rate.information_bits == pytest.approx(_independent_direct_bits(codec, images), abs=0.5)
    # Nothing but the image on the stack: its bits, plus what an ANS coder loses starting
    # from state 0 (the first symbol that is not its alphabet's first moves the state to
    # its cumulative frequency, < 2**24: at most 24 bits), plus the last partial word.
    assert -1 <= rate.net_bits - rate.information_bits <= 24 + 1
    assert 0 <= rate.total_bits - rate.net_bits < 32
    left_over = []
    original = Message.check_empty
    monkeypatch.setattr(
        Message, "check_empty", lambda m: (left_over.append(m.num_words()), original(m))[1]
    )
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)
    assert left_over == [0]


def test_images_are_coded_directly_until_the_stack_pays_for_a_pop():
    # 16 latents: a posterior pop needs ~16·10 bits, several 8×8 images' worth.
    config = tiny_config("vlae", "binary", latent_dim=16)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=8))
    images = random_images(config, 12)
    chunk, rate = codec.encode_chunk(images)
    assert 1 < rate.direct_items < 12
    assert rate.direct_items + sum(rate.batch_sizes) == 12
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)


def test_a_pop_short_of_bits_after_the_direct_items_restarts_with_more(monkeypatch):
    from bbcodec.coding import BitsBack, MessageUnderflowError

    calls = {"n": 0}
    original = BitsBack.push

    def short_once(self, message, symbols):
        if len(symbols) == 1:
            calls["n"] += 1
            if calls["n"] == 2:  # the second one-image pop of the first try runs short
                raise MessageUnderflowError("short")
        return original(self, message, symbols)

    monkeypatch.setattr(BitsBack, "push", short_once)
    config = tiny_config("vlae", "grey")
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=1))
    images = random_images(config, 6)
    chunk, rate = codec.encode_chunk(images)
    assert calls["n"] > 2 and rate.direct_items >= 2  # the restart codes two directly
    monkeypatch.setattr(BitsBack, "push", original)
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)


def _tampered_direct_trailer(words: np.ndarray, n_images: int, max_batch: int, edit):
    """Pops a direct chunk's trailer (direct count, then each batch as halvings of the
    prediction min(2 × previous, left, max_batch), 1 at first, until they cover the images),
    edits the halvings, pushes it back — the format written out from `bbcodec.codec.chunks`."""
    message = Message.from_words(words)
    n_direct = int(Uniform(min(n_images, 64), (1,)).pop(message)[0]) + 1
    halvings, alphabets, sizes = [], [], []
    while n_direct + sum(sizes) < n_images:
        left = n_images - n_direct - sum(sizes)
        predicted = min(2 * sizes[-1], left, max_batch) if sizes else 1
        alphabets.append(predicted.bit_length())
        halvings.append(int(Uniform(alphabets[-1], (1,)).pop(message)[0]) if predicted > 1 else 0)
        sizes.append(predicted >> halvings[-1])
    n_direct, halvings = edit(n_direct, halvings, alphabets)
    for h, alphabet in reversed(list(zip(halvings, alphabets, strict=True))):
        if alphabet > 1:
            Uniform(alphabet, (1,)).push(message, np.array([h]))
    Uniform(min(n_images, 64), (1,)).push(message, np.array([n_direct - 1]))
    return message.to_words()


def test_tampered_direct_stream_and_trailer_are_caught():
    config = tiny_config("vlae", "binary")
    images = random_images(config, 7)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=4))
    chunk, rate = codec.encode_chunk(images)
    untouched = _tampered_direct_trailer(chunk.words, 7, 4, lambda n, h, a: (n, h))
    np.testing.assert_array_equal(untouched, chunk.words)  # the format is as described
    assert rate.direct_items >= 1 and len(rate.batch_sizes) >= 2
    with pytest.raises(DecodeError, match="not empty"):
        codec.decode_chunk(_with_words(chunk, np.concatenate([[7], chunk.words])))

    def other_size(n, halvings, alphabets):  # the first batch that could differ, differs
        i = next(i for i, a in enumerate(alphabets) if a > 1)
        return n, halvings[:i] + [(halvings[i] + 1) % alphabets[i]] + halvings[i + 1 :]

    edits = [lambda n, h, a: (n + 1, h), other_size]
    for edit in edits:
        with pytest.raises(CORRUPT):
            codec.decode_chunk(
                _with_words(chunk, _tampered_direct_trailer(chunk.words, 7, 4, edit))
            )
    seeded = ImageCodec(codec.model, CodingSettings(max_batch=4, initial_bits="seed"))
    with pytest.raises(CORRUPT):  # read as a seeded stream
        seeded.decode_chunk(chunk)


# ----- bits-back accounting ---------------------------------------------------------------


def _independent_information_bits(
    model, grid, images: np.ndarray, latents: np.ndarray, prior=None
) -> float:
    """Σ −log2 P(x|z̄) − log2 P(z̄) + log2 Q(z̄|x) from the model's all-at-once passes.

    Uses the leaves' fixed-point probabilities (what the coder spends), the head layout of
    `bbcodec.models.heads`, and by default the δ-VAE's auxiliary prior, named explicitly.
    """
    config = model.config
    k = config.n_mixtures
    x = torch.from_numpy(images)
    z = torch.from_numpy(grid.to_values(latents).astype(np.float32))
    if prior is None:
        prior = model.aux_prior if config.family == "delta-vae" else model.prior
    with torch.no_grad():
        q_mean, q_std = model.posterior(x)
        p_mean, p_std = prior.conditionals(z)
        params = model.likelihood_params(x, z).double().numpy()
    q_bits = information_bits(QuantizedGaussian(q_mean.numpy(), q_std.numpy(), grid), latents)
    p_bits = information_bits(QuantizedGaussian(p_mean.numpy(), p_std.numpy(), grid), latents)
    rows = params.reshape(-1, params.shape[-1])
    if config.kind == "binary":
        leaf, symbols = Bernoulli(1.0 / (1.0 + np.exp(-rows[:, 0]))), images.reshape(-1)
    elif config.kind == "grey":
        leaf = DiscretizedLogisticMixture(rows[:, :k], rows[:, k : 2 * k], rows[:, 2 * k :])
        symbols = images.reshape(-1)
    else:
        n = rows.shape[0]
        means, log_scales, coeffs = (
            rows[:, s : s + 3 * k].reshape(n, 3, k) for s in (k, 4 * k, 7 * k)
        )
        leaf = DiscretizedLogisticMixtureRGB(rows[:, :k], means, log_scales, coeffs)
        symbols = images.reshape(-1, 3)
    return information_bits(leaf, symbols) + p_bits - q_bits


def _trailer_information_bits(batch_sizes, max_batch: int) -> float:
    sizes = np.asarray(batch_sizes) - 1
    bits = information_bits(Uniform(MAX_BATCHES, (1,)), np.array([len(sizes) - 1]))
    bits += information_bits(Uniform(MAX_SEED_WORDS, (1,)), np.array([0]))
    if max_batch > 1:
        bits += information_bits(Uniform(max_batch, sizes.shape), sizes)
    return bits


@contextmanager
def _recording_latents(monkeypatch):
    """Records the latents the encoder popped (``likelihood`` gets them on the encoder side)."""
    latents = []
    original = ModelAdapter.likelihood

    def recording(self, z):
        latents.append(np.array(z))
        return original(self, z)

    monkeypatch.setattr(ModelAdapter, "likelihood", recording)
    yield latents
    monkeypatch.setattr(ModelAdapter, "likelihood", original)


@pytest.mark.parametrize("max_batch", [1, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_information_bits_are_the_bits_back_identity(monkeypatch, family, kind, max_batch):
    """On the float path (the one these float log-probabilities describe); the exact path's
    information is within a few tenths of a percent of it (`tests/codec/test_portable.py`)."""
    config = tiny_config(family, kind)
    model = random_model(config)
    images = random_images(config, 13, seed=1)
    settings = CodingSettings(max_batch=max_batch, initial_bits="seed", arithmetic="float")
    codec = ImageCodec(model, settings)
    with _recording_latents(monkeypatch) as latents:
        _, rate = codec.encode_chunk(images)
    latents = np.concatenate(latents)
    assert latents.shape == (13, config.total_latent_dim)
    expected = _independent_information_bits(model, codec.settings.grid, images, latents)
    # The all-at-once passes equal the coder's step path to float rounding: a few
    # thousandths of a bit over the chunk (measured ≤ 0.002), well inside half a bit.
    assert rate.information_bits == pytest.approx(expected, abs=0.5)
    # The stack grows by the information plus the trailer: ANS overhead is ±1.3 bits here.
    trailer = _trailer_information_bits(rate.batch_sizes, max_batch)
    assert abs(rate.net_bits - rate.information_bits - trailer) <= 4
    # And the stored stream is the seed plus the net growth, rounded up to whole words
    # (the coder's head is two words).
    assert 0 <= rate.total_bits - (rate.initial_bits + rate.net_bits) < 64
    if family == "delta-vae":  # the identity is sensitive to which prior codes z̄
        grid = codec.settings.grid
        wrong = _independent_information_bits(model, grid, images, latents, prior=model.prior)
        assert abs(wrong - rate.information_bits) > 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_coded_rate_matches_the_mean_negative_elbo(family):
    """Information bits per image ≈ the mean continuous −ELBO, within 5 standard errors.

    Coding image i costs the one-sample −ELBO estimate at the z̄ the popped bits select
    (z̄ ~ Q(z̄|x): q(z|x) on a grid of Δ = 2⁻⁸ ≪ σ). So the coded mean over N images has
    variance Σ_i Var_q[−ELBO_i] / N², estimated from K samples per image; the reference
    mean over those K samples adds 1/K of that (K = 32: +1.6 % on the standard error). We allow 5 standard errors of the
    difference plus 0.2 % of the −ELBO for the systematic terms: the grid (~Δ²/σ² per
    latent) and the coder's 24-bit fixed-point tables (leaky minimum probabilities: ≤ 1e-3
    bits per symbol, ~70 symbols per image). Measured: |difference| ≤ 1.4 SE ≈ 0.05 %, with
    or without `BitsBack`'s head mixing, for three model seeds per family.
    """
    config = tiny_config(family, "binary")
    model = random_model(config)
    images = _patterns(300)
    _, rate = ImageCodec(model, CodingSettings(max_batch=64)).encode_chunk(images)
    coded_bits = rate.information_bits / len(images)

    n_samples = 32  # the coded side has one sample per image: K ≫ 1 adds little
    copies = torch.from_numpy(images).repeat(n_samples, 1, 1)  # K copies, one z-sample each
    torch.manual_seed(1)
    with torch.no_grad():
        nats = model.elbo_terms(copies).neg_elbo_nats.double().numpy()
    samples = nats.reshape(n_samples, len(images)) / math.log(2)  # (K, N) bits
    neg_elbo_bits = samples.mean()
    variance = samples.var(axis=0, ddof=1)  # per image, over z
    standard_error = math.sqrt(variance.sum() * (1 + 1 / n_samples)) / len(images)
    assert standard_error < 0.01 * neg_elbo_bits  # the test has the power it claims
    tolerance = 5 * standard_error + 0.002 * neg_elbo_bits
    assert abs(coded_bits - neg_elbo_bits) < tolerance, (coded_bits, neg_elbo_bits, standard_error)


# ----- batch schedule ---------------------------------------------------------------------


@pytest.mark.parametrize(("n", "max_batch"), [(1, 64), (2, 1), (7, 3), (40, 8), (300, 64)])
def test_batch_schedule_starts_at_one_and_doubles_to_max_batch(n, max_batch):
    config = tiny_config("vlae", "binary")
    settings = CodingSettings(max_batch=max_batch, initial_bits="seed")
    codec = ImageCodec(random_model(config), settings)
    images = _patterns(n) if n > 50 else random_images(config, n)
    chunk, rate = codec.encode_chunk(images)
    assert rate.batch_sizes == tuple(_doubling(n, max_batch))
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)


def _check_schedule(sizes, n: int, max_batch: int) -> None:
    assert sizes[0] == 1 and sum(sizes) == n
    assert all(1 <= s <= max_batch for s in sizes)
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes))


def test_batch_halves_when_the_stack_is_short():
    # 16 latents: a batch's posterior pop needs ~16·10 bits per image, more than a small
    # stack holds, so the doubling is undone and retried with half the batch.
    config = tiny_config("vlae", "binary", latent_dim=16)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=64, initial_bits="seed"))
    images = random_images(config, 40)
    progress = []
    chunk, rate = codec.encode_chunk(images, progress.append)
    sizes = list(rate.batch_sizes)
    _check_schedule(sizes, 40, 64)
    assert sizes != _doubling(40, 64)  # the halving path ran
    assert progress == sizes
    decoded_progress = []
    np.testing.assert_array_equal(codec.decode_chunk(chunk, decoded_progress.append), images)
    assert decoded_progress == sizes[::-1]


def test_tiny_seed_restarts_with_a_bigger_one(monkeypatch):
    monkeypatch.setattr(chunks_module, "initial_seed_words", lambda latent_dim: 2)
    seeds = []
    original = Message.seeded.__func__

    def recording(cls, seed, n_words):
        seeds.append(n_words)
        return original(cls, seed, n_words)

    monkeypatch.setattr(Message, "seeded", classmethod(recording))
    config = tiny_config("vlae", "grey")
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=8, initial_bits="seed"))
    images = random_images(config, 10)
    chunk, rate = codec.encode_chunk(images)
    assert seeds[0] == 2 and seeds == [2 * 2**i for i in range(len(seeds))] and len(seeds) > 1
    assert rate.initial_bits == 32 * seeds[-1]
    _check_schedule(rate.batch_sizes, 10, 8)
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)


# ----- determinism ------------------------------------------------------------------------


def test_encoding_is_deterministic():
    config = tiny_config("delta-vae", "rgb")
    images = random_images(config, 6)
    first, _ = ImageCodec(random_model(config), CodingSettings(max_batch=4)).encode_chunk(images)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=4))
    codec.encode_chunk(random_images(config, 5, seed=9))  # no state carries over between chunks
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the codec runs under the thread count its settings record
    try:
        second, _ = codec.encode_chunk(images)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(first.words, second.words)
    assert first.pixels_digest == second.pixels_digest


def _arrays(params) -> list[np.ndarray]:
    return [np.asarray(p) for p in params] if isinstance(params, tuple) else [np.asarray(params)]


class _ParamRecorder:
    """Every float64 array the adapter hands to the coder, by kind, for the current side."""

    def __init__(self, monkeypatch):
        self.side = "encoder"
        self.log = {
            side: {"pixel": [], "prior": [], "posterior": []} for side in ("encoder", "decoder")
        }
        pixel_params, posterior = ModelAdapter._pixel_params, ModelAdapter.posterior

        def record(kind, arrays):
            for a in arrays:
                assert a.dtype == np.float64
            self.log[self.side][kind].append(arrays)

        def pixel(adapter, raw):
            params = pixel_params(adapter, raw)
            record("pixel", _arrays(params))
            return params

        def prior(means, stds):
            params = GaussianParams(means, stds)
            record("prior", _arrays(params))
            return params

        def post(adapter, images):
            leaf = posterior(adapter, images)
            record("posterior", [leaf.means, leaf.stds])
            return leaf

        monkeypatch.setattr(ModelAdapter, "_pixel_params", pixel)
        monkeypatch.setattr(ModelAdapter, "posterior", post)
        monkeypatch.setattr(adapter_module, "GaussianParams", prior)

    def by_batch(self, side: str, kind: str, per_batch: int, n_batches: int) -> list:
        calls = self.log[side][kind]
        assert len(calls) == per_batch * n_batches
        return [calls[b * per_batch : (b + 1) * per_batch] for b in range(n_batches)]

    def by_rows(self, side: str, kind: str, rows_per_image: int, batch_sizes) -> list:
        """The calls of each batch, told apart by their rows (``rows_per_image`` × B)."""
        calls, out = iter(self.log[side][kind]), []
        for batch in batch_sizes:
            out.append([])
            rows = 0
            while rows < rows_per_image * batch:
                out[-1].append(next(calls))
                rows += len(out[-1][-1][0])
            assert rows == rows_per_image * batch
        assert next(calls, None) is None
        return out


@pytest.mark.parametrize(
    ("family", "kind"),
    [("vlae", "binary"), ("delta-vae", "grey"), ("delta-vae", "rgb"), ("vlae", "rgb")],
)
def test_encoder_and_decoder_hand_the_coder_bit_identical_parameters(monkeypatch, family, kind):
    config = tiny_config(family, kind)
    images = random_images(config, 7)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=3, initial_bits="seed"))
    recorder = _ParamRecorder(monkeypatch)
    chunk, rate = codec.encode_chunk(images)
    assert rate.batch_sizes == (1, 2, 3, 1)  # no undone pops: one call per step and batch
    recorder.side = "decoder"
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)

    n_batches = len(rate.batch_sizes)
    # A local decoder codes a wavefront of pixels per step (exact path), the encoder's steps
    # last first, several steps a call (`StepPushes`); a full-context one raster pixels, the
    # encoder's a row at a time, in order. The encoder computes a prior's conditionals in
    # one pass, the decoder one per dimension.
    height, width = config.image_hw
    wavefront = config.row_context is False
    skew = codec.adapter.model.decoder.local.half_width + 1
    pixel_steps = width + skew * (height - 1) if wavefront else height * width
    calls = {  # kind: (encoder calls, decoder calls) per batch
        "pixel": (None if wavefront else height, pixel_steps),
        "prior": (1, config.total_latent_dim),
        "posterior": (1, 1),
    }
    compared = 0
    for kind_of_params, (per_encoder_batch, per_decoder_batch) in calls.items():
        if per_encoder_batch is None:  # split the encoder's calls by the rows of each batch
            encoder = recorder.by_rows("encoder", kind_of_params, height * width, rate.batch_sizes)
        else:
            encoder = recorder.by_batch("encoder", kind_of_params, per_encoder_batch, n_batches)
        decoder = recorder.by_batch("decoder", kind_of_params, per_decoder_batch, n_batches)
        for batch, enc_calls, dec_calls in zip(
            rate.batch_sizes, encoder, decoder[::-1], strict=True
        ):
            if kind_of_params == "pixel" and wavefront:
                enc_calls = enc_calls[::-1]
            for enc, dec in zip(zip(*enc_calls), zip(*dec_calls), strict=True):
                enc, dec = np.concatenate(enc), np.concatenate(dec)
                assert enc.shape == dec.shape and enc.shape[0] % batch == 0
                assert np.array_equal(enc, dec), kind_of_params  # bit for bit
                compared += 1
    assert compared > 0


# ----- corrupted streams and wrong models -----------------------------------------------


def _flip_bits(words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flipped = words.copy()
    for _ in range(rng.integers(1, 4)):
        flipped[rng.integers(flipped.size)] ^= np.uint32(1 << int(rng.integers(32)))
    return flipped


@pytest.mark.parametrize(
    ("family", "kind", "n_flips"),
    [
        ("vlae", "binary", 200),
        ("delta-vae", "grey", 40),
        ("vlae", "rgb", 40),
        ("delta-vae", "binary", 60),
    ],
)
def test_flipped_bits_never_decode_to_wrong_pixels(family, kind, n_flips):
    # 4×8 images keep each decode to a few milliseconds; non-square catches row/column mix-ups.
    config = tiny_config(family, kind, hw=(4, 8))
    images = random_images(config, 3)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=3))
    chunk, _ = codec.encode_chunk(images)
    np.testing.assert_array_equal(codec.decode_chunk(chunk), images)
    rng = np.random.default_rng(2024)
    for _ in range(n_flips):
        with pytest.raises(CORRUPT):
            codec.decode_chunk(_with_words(chunk, _flip_bits(chunk.words, rng)))


def test_truncated_or_empty_streams_are_decode_errors():
    config = tiny_config("vlae", "binary", hw=(4, 8))
    images = random_images(config, 3)
    codec = ImageCodec(random_model(config), CodingSettings(max_batch=3))
    chunk, _ = codec.encode_chunk(images)
    for cut in range(1, len(chunk.words)):
        with pytest.raises(CORRUPT):
            codec.decode_chunk(_with_words(chunk, chunk.words[cut:]))  # bottom words lost
        with pytest.raises(CORRUPT):
            codec.decode_chunk(_with_words(chunk, chunk.words[:-cut]))  # top words lost
    with pytest.raises(DecodeError):
        codec.decode_chunk(_with_words(chunk, np.zeros(0, np.uint32)))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_different_model_cannot_decode(family):
    config = tiny_config(family, "grey")
    images = random_images(config, 5)
    chunk, _ = ImageCodec(random_model(config, seed=0), CodingSettings(max_batch=4)).encode_chunk(
        images
    )
    for seed in (1, 2, 3):
        other = ImageCodec(random_model(config, seed=seed), CodingSettings(max_batch=4))
        with pytest.raises(CORRUPT):
            other.decode_chunk(chunk)
    other_grid = ImageCodec(random_model(config), CodingSettings(max_batch=4, grid_step_log2=-7))
    with pytest.raises(CORRUPT):  # same weights, other coding settings (latent grid)
        other_grid.decode_chunk(chunk)
