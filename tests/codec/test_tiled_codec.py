"""Images of any size, tiled (bbcodec.codec.tiled, bbcodec.models.tiles) on tiny random models.

- the wavefront visits every pixel once, after every position its decoder may read, and a
  tile's first/last steps bound all of its pixels;
- exact round trips for binary, grey and RGB images of sizes that are and are not multiples
  of the tile, down to 1×1, and the stack left is exactly the seed;
- the coded rate is the tiled −ELBO (`tiled_elbo_terms`), within a few standard errors;
- a full-causal-past model refuses other sizes; corrupt streams never give wrong pixels.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from tiny import random_model, tiny_config

from bbcodec.codec import CodingSettings, ImageCodec
from bbcodec.codec.tiled import TilePlan
from bbcodec.container import Chunk
from bbcodec.errors import ChecksumError, DecodeError
from bbcodec.models.tiles import padded_tiles, tile_boxes, tiled_elbo_terms

KINDS = ("binary", "grey", "rgb")
SHAPES = [(8, 8), (13, 21), (5, 3), (1, 1), (30, 9)]


def _image(kind: str, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    shape = hw + ((3,) if kind == "rgb" else ())
    return np.random.default_rng(seed).integers(0, 2 if kind == "binary" else 256, shape, np.uint8)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("hw", [(1, 1), (6, 11), (11, 4), (7, 1), (5, 2)])
def test_wavefront_codes_each_pixel_once_after_its_neighbourhood(kernel_size, hw):
    half = kernel_size // 2
    plan = TilePlan(*hw, 4, 4, skew=half + 1)
    step = np.full(hw, -1)
    for t in range(plan.n_steps):
        rows, cols = plan.positions(t)
        assert len(rows) >= 1 or hw[1] < plan.skew  # empty steps only in narrow images
        assert (step[rows.numpy(), cols.numpy()] == -1).all()
        step[rows.numpy(), cols.numpy()] = t
    assert (step >= 0).all()
    for i, j in np.ndindex(*hw):
        context = [(i, j - d) for d in range(1, half + 1)]
        context += [(i - r, j + c) for r in range(1, half + 1) for c in range(-half, half + 1)]
        for a, b in context:
            if 0 <= a < hw[0] and 0 <= b < hw[1]:
                assert step[a, b] < step[i, j]
    starts, ends = plan.tiles_by_step()
    for index, (r0, r1, c0, c1) in enumerate(tile_boxes(*hw, 4, 4)):
        tile_steps = step[r0:r1, c0:c1]
        assert index in starts[int(tile_steps.min())] and index in ends[int(tile_steps.max())]


def test_padded_tiles_repeat_the_edge():
    image = np.arange(15, dtype=np.uint8).reshape(3, 5)
    boxes = tile_boxes(3, 5, 2, 4)
    assert boxes == [(0, 2, 0, 4), (0, 2, 4, 5), (2, 3, 0, 4), (2, 3, 4, 5)]
    tiles = padded_tiles(image, boxes, 2, 4)
    np.testing.assert_array_equal(tiles[1], [[4, 4, 4, 4], [9, 9, 9, 9]])
    np.testing.assert_array_equal(tiles[3], [[14] * 4] * 2)


@pytest.mark.parametrize("initial_bits", ["direct", "seed"])
@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_exact_any_size(kind, hw, initial_bits):
    config = tiny_config("vlae", kind)
    image = _image(kind, hw, seed=hw[0])
    settings = CodingSettings(initial_bits=initial_bits)
    chunk, rate = ImageCodec(random_model(config), settings).encode_chunk(image[None])
    assert rate.total_bits == 32 * len(chunk.words)
    # (8, 8) is the model's own shape: one image, coded directly, or one bits-back batch
    tiled = hw != (8, 8)
    assert rate.batch_sizes == ((1,) if tiled or initial_bits == "seed" else ())
    # direct: the encoder's first tile group at least, and never a seed
    assert (rate.direct_items >= 1) == (initial_bits == "direct")
    assert (rate.initial_bits == 0) == (initial_bits == "direct")
    decoded = ImageCodec(random_model(config), settings).decode_chunk(chunk, shape=image.shape)
    np.testing.assert_array_equal(decoded[0], image)


def test_the_tiled_elbo_in_strips_is_the_one_pass_elbo(monkeypatch):
    """The pixel network runs over strips of whole tile rows (bounded memory) and gives
    what one pass over the image gives, to float rounding."""
    config = tiny_config("vlae", "rgb")
    model = random_model(config)
    image = _image("rgb", (37, 29), seed=3)
    heights = []
    forward = type(model.decoder).forward

    def recording(decoder, x, features):
        heights.append(x.shape[1])
        return forward(decoder, x, features)

    monkeypatch.setattr(type(model.decoder), "forward", recording)
    terms = []
    for strip_pixels in (10**9, 1):  # one pass; one tile row (8 rows) a strip
        torch.manual_seed(0)
        terms.append(tiled_elbo_terms(model, image, strip_pixels=strip_pixels))
    reach = model.decoder.local.rows_above
    assert heights[0] == 37 and max(heights[1:]) <= 8 + reach and len(heights) == 1 + 5
    np.testing.assert_allclose(terms[1], terms[0], rtol=1e-6)


def test_a_photo_round_trips_with_two_stage_pixels():
    config = tiny_config("vlae", "rgb")
    image = _image("rgb", (13, 21), seed=5)
    settings = CodingSettings(pixel_bins=16)
    chunk, _ = ImageCodec(random_model(config), settings).encode_chunk(image[None])
    decoded = ImageCodec(random_model(config), settings).decode_chunk(chunk, shape=image.shape)
    np.testing.assert_array_equal(decoded[0], image)


@pytest.mark.parametrize("arithmetic", ["exact", "float"])
@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_prior_mean_latents_round_trip_any_size(kind, hw, arithmetic):
    """tile_latents="prior-mean": no latent coded, no tile group coded directly, every
    image back; the model's own size (8, 8) is batched and keeps its bits back."""
    config = tiny_config("vlae", kind)
    image = _image(kind, hw, seed=hw[1])
    settings = CodingSettings(tile_latents="prior-mean", arithmetic=arithmetic)
    chunk, rate = ImageCodec(random_model(config), settings).encode_chunk(image[None])
    assert rate.direct_items == (1 if hw == (8, 8) else 0)
    decoded = ImageCodec(random_model(config), settings).decode_chunk(chunk, shape=image.shape)
    np.testing.assert_array_equal(decoded[0], image)


def test_prior_mean_codes_the_pixels_at_the_prior_mean_latent(monkeypatch):
    """The information coded is −log p(x | z̄*) with z̄* the prior's mean walk on the grid
    (`tiled_elbo_terms` with that latent, to 0.5 %), no posterior is computed, and it is
    below bits back's by about the KL on a model whose decoder ignores z (its feature
    network zeroed): by its KL and the initial bits bits back needs."""
    model = random_model(tiny_config("vlae", "grey"))
    photos = [_smooth_photo((21, 26), seed) for seed in range(3)]
    settings = CodingSettings(tile_latents="prior-mean")
    codec = ImageCodec(model, settings)
    z_star = settings.grid.to_values(codec.adapter.prior_mean_symbols()).astype(np.float32)
    reference = sum(
        tiled_elbo_terms(model, p, latents=torch.from_numpy(z_star))[0] for p in photos
    ) / math.log(2)
    monkeypatch.setattr(type(model), "posterior", lambda *_: pytest.fail("posterior computed"))
    coded = sum(codec.encode_chunk(p[None])[1].information_bits for p in photos)
    assert coded == pytest.approx(reference, rel=5e-3)
    monkeypatch.undo()

    with torch.no_grad():  # a decoder that ignores its latent: bits back only adds the KL
        for parameter in model.to_features.parameters():
            parameter.zero_()
    information = {}
    for tile_latents in ("bits-back", "prior-mean"):
        codec = ImageCodec(model, CodingSettings(tile_latents=tile_latents))
        information[tile_latents] = sum(
            codec.encode_chunk(p[None])[1].information_bits for p in photos
        )
    torch.manual_seed(0)
    kl_bits = sum(tiled_elbo_terms(model, p)[1] for p in photos) / math.log(2)
    saved = information["bits-back"] - information["prior-mean"]
    # the KL, and the first tile groups' direct coding (the stack starts empty) on top
    assert 0.75 * kl_bits < saved < kl_bits + 64 * len(photos), (saved, kl_bits)


def test_a_prior_mean_chunk_does_not_decode_as_bits_back():
    """The setting is part of what decoder and encoder share: decoding a prior-mean chunk
    with bits back is an error, never wrong pixels."""
    config = tiny_config("vlae", "rgb")
    image = _image("rgb", (13, 21), seed=9)
    chunk, _ = ImageCodec(
        random_model(config), CodingSettings(tile_latents="prior-mean")
    ).encode_chunk(image[None])
    with pytest.raises((DecodeError, ChecksumError)):
        ImageCodec(random_model(config), CodingSettings()).decode_chunk(chunk, shape=image.shape)


@pytest.mark.parametrize("kind", KINDS)
def test_every_small_size_round_trips_with_a_wide_neighbourhood(kind):
    """Images narrower than the wavefront's skew (1 to 3 pixels wide for a 7×7
    neighbourhood) have steps without pixels: they code exactly too, as does every size
    from 1×1 up."""
    config = dataclasses.replace(tiny_config("vlae", kind), kernel_size=7)
    codec = ImageCodec(random_model(config), CodingSettings())
    for hw in [*itertools.product(range(1, 6), repeat=2), (32, 1), (1, 32), (17, 3)]:
        image = _image(kind, hw, seed=sum(hw))
        chunk, _ = codec.encode_chunk(image[None])
        np.testing.assert_array_equal(codec.decode_chunk(chunk, shape=image.shape)[0], image)


def test_a_full_causal_past_model_codes_only_its_own_size():
    codec = ImageCodec(random_model(tiny_config("delta-vae", "grey")), CodingSettings())
    with pytest.raises(ValueError, match="local decoder"):
        codec.encode_chunk(_image("grey", (9, 9))[None])


def test_several_images_of_another_size_are_refused_in_one_chunk():
    codec = ImageCodec(random_model(tiny_config("vlae", "grey")), CodingSettings())
    with pytest.raises(ValueError, match="one per chunk"):
        codec.encode_chunk(np.zeros((2, 9, 9), np.uint8))


def _smooth_photo(hw: tuple[int, int], seed: int) -> np.ndarray:
    """Grey gradients with noise: structured, so the rate is far from 8 bits."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: hw[0], : hw[1]]
    base = 128 + 60 * np.sin(rows / 5.0 + seed) + 40 * np.cos(cols / 7.0)
    return np.clip(base + rng.normal(0, 4, hw), 0, 255).astype(np.uint8)


def test_coded_rate_matches_the_tiled_negative_elbo():
    """Information bits ≈ the mean one-sample tiled −ELBO (5 standard errors + 0.3 %)."""
    config = tiny_config("vlae", "grey")
    model = random_model(config)
    codec = ImageCodec(model, CodingSettings())
    photos = [_smooth_photo((21, 26), seed) for seed in range(4)]
    coded = sum(codec.encode_chunk(p[None])[1].information_bits for p in photos)
    torch.manual_seed(0)
    samples = np.array([[sum(tiled_elbo_terms(model, p)) for p in photos] for _ in range(32)])
    samples /= math.log(2)  # (K, photos) bits
    reference = samples.mean(0).sum()
    standard_error = math.sqrt(samples.var(axis=0, ddof=1).sum() * (1 + 1 / 32))
    tolerance = 5 * standard_error + 0.003 * reference
    assert abs(coded - reference) < tolerance, (coded, reference, standard_error)


def test_corrupted_tiled_streams_never_decode_to_wrong_pixels():
    config = tiny_config("vlae", "rgb")
    image = _image("rgb", (11, 13), seed=5)
    codec = ImageCodec(random_model(config), CodingSettings())
    chunk, _ = codec.encode_chunk(image[None])
    rng = np.random.default_rng(0)
    for _ in range(20):
        words = np.array(chunk.words, dtype=np.uint32)
        position = rng.integers(len(words))
        words[position] ^= np.uint32(1 << int(rng.integers(32)))
        bad = Chunk(chunk.first, chunk.count, words, chunk.pixels_digest)
        with pytest.raises((DecodeError, ChecksumError)):
            codec.decode_chunk(bad, shape=image.shape)
