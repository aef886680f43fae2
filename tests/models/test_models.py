"""Tests for bbcodec.models on tiny randomly initialised models (no real training).

- the PixelCNN decoder is causal (by gradients, every channel), the VLAE's receptive field
  is exactly its local k×k neighbourhood and the δ-VAE's is the whole causal past;
- the one-pixel step path the codec uses equals the all-at-once pass to float tolerance, is
  deterministic bit for bit, and never reads pixels it has not been given;
- every prior's one-step conditional equals its all-at-once conditional bit for bit;
- the ELBO terms add up, the likelihood heads are proper distributions, the δ-VAE's KL
  never drops below its committed rate δ (and reaches it at the known optimum);
- a tiny training run lowers the loss and resumes; weights files are checked on load.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bbcodec.models import heads, pixelcnn
from bbcodec.models.presets import Recipe
from bbcodec.models.priors import (
    AR1Prior,
    MadePrior,
    alpha_for_delta,
    committed_rate_nats,
    gaussian_log_prob,
)
from bbcodec.models.train import train, validate
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import WeightsError, load_weights, save_weights, sha256_file

torch.set_num_threads(1)  # two trainings share the machine's two cores

KINDS = ("binary", "grey", "rgb")
FAMILIES = ("vlae", "delta-vae")
HW = (8, 12)  # non-square: catches i/j mix-ups; divisible by 4 and by n_steps
N_MIXTURES = 2


def tiny_config(family: str, kind: str, hw: tuple[int, int] = HW) -> ModelConfig:
    return ModelConfig(
        family, kind, hw, latent_dim=4, n_steps=2, step_dim=2, delta_nats=2.0,
        channels=8, kernel_size=3, n_blocks=1, n_mixtures=N_MIXTURES, made_hidden=16,
    )  # fmt: skip


def tiny_model(family: str, kind: str, seed: int = 0) -> LatentVariableModel:
    """A tiny model with every layer random (the MADE output layers start at zero)."""
    torch.manual_seed(seed)
    model = LatentVariableModel(tiny_config(family, kind))
    for made in (model.prior, model.aux_prior):
        if isinstance(made, MadePrior):
            torch.nn.init.normal_(made.out.weight, std=0.5)
            torch.nn.init.normal_(made.out.bias, std=0.5)
    return model.eval()


def random_images(kind: str, n: int, hw: tuple[int, int] = HW, seed: int = 0) -> torch.Tensor:
    """uint8 images (n, H, W[, 3]): 0/1 for binary, 0..255 otherwise."""
    rng = np.random.default_rng(seed)
    shape = (n, *hw, 3) if kind == "rgb" else (n, *hw)
    return torch.from_numpy(rng.integers(0, 2 if kind == "binary" else 256, shape, dtype=np.uint8))


def random_latents(model: LatentVariableModel, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.config.total_latent_dim, generator=gen)


# --------------------------------------------------------------------------------------
# 1. causality and receptive field, by gradients


def input_dependencies(model: LatentVariableModel, x: torch.Tensor, z: torch.Tensor):
    """Which inputs each output pixel of image 0 depends on, through the real forward pass.

    The decoder's float input is swapped for a copy that requires grad (uint8 pixels cannot
    carry gradients); everything after `pixels_to_input` is the decoder's own code.

    Returns:
        (H·W, H·W, C_in) bool: [t, s, c] is True iff output pixel t (all head parameters)
        has a nonzero gradient with respect to channel c of input pixel s (raster order).
    """
    kind = model.config.kind
    height, width = model.config.image_hw
    inp = pixelcnn.pixels_to_input(kind, x).clone().requires_grad_(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pixelcnn, "pixels_to_input", lambda kind_, x_: inp)
        out = model.decoder(x, model.to_features(z))
    with torch.no_grad():  # the patched pass is the real one at the same operating point
        torch.testing.assert_close(out, model.likelihood_params(x, z), rtol=0, atol=0)
    gen = torch.Generator().manual_seed(1)
    deps = []
    for t in range(height * width):
        i, j = divmod(t, width)
        probe = torch.randn(out.shape[-1], generator=gen)  # random mix: no accidental cancelling
        (grad,) = torch.autograd.grad((out[0, i, j] * probe).sum(), inp, retain_graph=True)
        assert not grad[1:].any(), "an output depends on another image of the batch"
        deps.append(grad[0].permute(1, 2, 0).reshape(height * width, -1) != 0)
    return torch.stack(deps)


def causal_past(height: int, width: int) -> torch.Tensor:
    """(H·W, H·W) bool: [t, s] = s < t in raster order (the full causal past)."""
    t = torch.arange(height * width)
    return t[None, :] < t[:, None]


def local_neighbourhood(height: int, width: int, k: int) -> torch.Tensor:
    """(H·W, H·W) bool: [t, s] = s lies in the k×k causal neighbourhood of t."""
    half = k // 2
    i, j = (
        c.flatten()
        for c in torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    )
    di = i[None, :] - i[:, None]  # source row − target row
    dj = j[None, :] - j[:, None]
    above = (di < 0) & (di >= -half) & (dj.abs() <= half)
    left = (di == 0) & (dj < 0) & (dj >= -half)
    return above | left


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_is_causal_with_the_intended_receptive_field(family, kind):
    model = tiny_model(family, kind)
    height, width = model.config.image_hw
    x = random_images(kind, 2)
    deps = input_dependencies(model, x, random_latents(model, 2))
    n_in = deps.shape[-1]
    # Causality: output t never sees any channel of pixel t or later (RGB: the whole pixel
    # is predicted at once, so even R of pixel t is out of bounds for its own G and B).
    assert not (deps & ~causal_past(height, width)[..., None]).any()
    if family == "vlae":
        assert model.decoder.row is None
        expected = local_neighbourhood(height, width, model.config.kernel_size)
        assert "local 3x3" in model.decoder.receptive_field
    else:
        assert model.decoder.row is not None
        expected = causal_past(height, width)
        assert model.decoder.receptive_field == "full causal past"
        # The last pixel sees the first, every earlier pixel of its row and of all rows above.
        assert deps[-1, 0].all() and deps[-1, :-1].all()
    # Exactly that field, every channel of every pixel in it (random weights: no zeros).
    assert torch.equal(deps, expected[..., None].expand(-1, -1, n_in))


# --------------------------------------------------------------------------------------
# 2. the step path (what the codec uses) against the all-at-once path


def run_stepper(model, x: torch.Tensor, z: torch.Tensor, prefill: bool = False) -> torch.Tensor:
    """Pixel-by-pixel params (N, H, W, P), writing each pixel right after its params.

    With ``prefill`` the whole image is written to the canvas first (as an encoder could):
    the params must not change, since a step may only read the pixels before it.
    """
    height, width = model.config.image_hw
    stepper = model.pixel_stepper(z)
    if prefill:
        for t in range(height * width):
            stepper.write(t, x[:, t // width, t % width])
    rows = []
    for t in range(height * width):
        rows.append(stepper.params(t))
        stepper.write(t, x[:, t // width, t % width])
    return torch.stack(rows, 1).reshape(len(x), height, width, -1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_step_path_matches_all_at_once_and_is_deterministic(family, kind):
    model = tiny_model(family, kind)
    x = random_images(kind, 3, seed=1)
    z = random_latents(model, 3, seed=1)
    with torch.no_grad():
        full = model.likelihood_params(x, z)
    stepped = run_stepper(model, x, z)
    assert stepped.shape == full.shape
    torch.testing.assert_close(stepped, full, rtol=0, atol=1e-5)
    # Same z, same pixels, same batch: bit for bit, run after run (encoder = decoder).
    assert torch.equal(run_stepper(model, x, z), stepped)
    # A step never reads a pixel it has not been given: masked weights are exact zeros.
    assert torch.equal(run_stepper(model, x, z, prefill=True), stepped)


def run_wavefront(model, x: torch.Tensor, z: torch.Tensor, prefill: bool) -> torch.Tensor:
    """Params (N, H, W, P) stepping many positions at a time: pixel (i, j) at step j + 2i."""
    height, width = model.config.image_hw
    stepper = model.pixel_stepper(z)
    everything = torch.arange(height * width)
    if prefill:
        stepper.write_at(everything // width, everything % width, x.flatten(1, 2))
    out = torch.zeros(len(x), height, width, model.decoder.head.out_features)
    for t in range(width + 2 * (height - 1)):
        rows = torch.arange(max(0, -(-(t - width + 1) // 2)), min(height - 1, t // 2) + 1)
        cols = t - 2 * rows
        out[:, rows, cols] = stepper.params_at(rows, cols)
        stepper.write_at(rows, cols, x[:, rows, cols])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_wavefront_steps_match_all_at_once_and_read_only_their_past(kind):
    model = tiny_model("vlae", kind)  # kernel 3: (i, j) sees (i-1, j+1), coded at step t-1
    x = random_images(kind, 2, seed=3)
    z = random_latents(model, 2, seed=3)
    with torch.no_grad():
        full = model.likelihood_params(x, z)
    stepped = run_wavefront(model, x, z, prefill=False)
    torch.testing.assert_close(stepped, full, rtol=0, atol=1e-5)
    assert torch.equal(run_wavefront(model, x, z, prefill=True), stepped)


def test_a_full_causal_past_decoder_refuses_wavefront_steps():
    stepper = tiny_model("delta-vae", "grey").pixel_stepper(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="raster"):
        stepper.params_at(torch.tensor([0]), torch.tensor([0]))


@pytest.mark.parametrize("family", FAMILIES)
def test_prior_step_equals_all_at_once_bitwise(family):
    model = tiny_model(family, "binary")
    d = model.config.total_latent_dim
    z = random_latents(model, 5, seed=2)
    priors = [model.coding_prior] + ([model.prior] if family == "delta-vae" else [])
    assert isinstance(model.coding_prior, MadePrior)  # the VLAE's prior, the δ-VAE's aux prior
    with torch.no_grad():
        for prior in priors:
            mean, std = prior.conditionals(z)
            assert mean.abs().sum() > 0  # not a trivial prior (MADE output layer randomised)
            for i in range(d):
                garbage = z.clone()
                garbage[:, i:] = 100.0 * torch.randn(5, d - i)
                step_mean, step_std = prior.step(garbage, i)
                assert torch.equal(step_mean, mean[:, i]) and torch.equal(step_std, std[:, i])
                # Conditional i depends on z_<i only (the autoregressive property itself).
                g_mean, g_std = prior.conditionals(garbage)
                assert torch.equal(g_mean[:, i], mean[:, i]) and torch.equal(g_std[:, i], std[:, i])
        coding = model.prior_conditionals(z)
        for i in range(d):
            step = model.prior_step(z, i)
            assert torch.equal(step.mean, coding.mean[:, i]) and torch.equal(
                step.std, coding.std[:, i]
            )


# --------------------------------------------------------------------------------------
# 3. ELBO terms and likelihood heads


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_elbo_terms_add_up(family, kind):
    model = tiny_model(family, kind)
    x = random_images(kind, 4, seed=3)
    d = model.config.total_latent_dim
    with torch.no_grad():
        for prior_name in ("coding", "train"):
            torch.manual_seed(11)
            terms = model.elbo_terms(x, prior=prior_name)
            torch.manual_seed(11)  # the same posterior sample z, drawn by hand
            q = model.posterior(x)
            z = q.mean + q.std * torch.randn_like(q.std)
            recon = -heads.log_prob(kind, x, model.likelihood_params(x, z), N_MIXTURES)
            assert terms.recon_nats.shape == terms.kl_nats.shape == (4,)
            assert terms.kl_dims_nats.shape == (4, d)
            torch.testing.assert_close(terms.recon_nats, recon)
            assert (terms.recon_nats > 0).all()
            torch.testing.assert_close(terms.kl_nats, terms.kl_dims_nats.sum(1))
            torch.testing.assert_close(terms.neg_elbo_nats, terms.recon_nats + terms.kl_nats)
            if family == "delta-vae" and prior_name == "train":
                expected = model.prior.kl_dims_nats(q.mean, q.std)  # analytic
                assert (terms.kl_nats >= model.prior.delta_nats * (1 - 1e-5)).all()
            else:  # one-sample estimate against the coding prior
                expected = gaussian_log_prob(z, q.mean, q.std) - model.coding_prior.log_prob_dims(z)
            torch.testing.assert_close(terms.kl_dims_nats, expected)


def test_ar1_kl_matches_monte_carlo():
    prior = AR1Prior(n_steps=4, step_dim=2, delta_nats=1.5)
    gen = torch.Generator().manual_seed(4)
    mean = torch.randn(1, 8, generator=gen)
    std = torch.exp(0.5 * torch.randn(1, 8, generator=gen) - 0.5)
    z = mean + std * torch.randn(40_000, 8, generator=gen)
    samples = (gaussian_log_prob(z, mean, std) - prior.log_prob_dims(z)).sum(1).double()
    analytic = float(prior.kl_dims_nats(mean, std).sum())
    stderr = float(samples.std()) / math.sqrt(len(samples))
    assert abs(float(samples.mean()) - analytic) < 4 * stderr + 1e-4


def test_binary_head_is_a_distribution():
    logits = torch.tensor([-30.0, -3.0, 0.0, 0.7, 12.0])
    for logit in logits:
        params = logit.view(1, 1, 1, 1).expand(2, 1, 1, 1)
        x = torch.tensor([0, 1], dtype=torch.uint8).view(2, 1, 1)
        total = heads.log_prob("binary", x, params, 1).exp().sum()
        torch.testing.assert_close(total, torch.tensor(1.0))


def grey_params(means, log_scales, logits) -> torch.Tensor:
    return heads.clamp_params("grey", torch.tensor([*logits, *means, *log_scales]), len(means))


GREY_CASES = [
    ([0.0, 0.5], [-2.0, -3.0], [0.3, -0.2]),  # ordinary
    ([-1.0, 1.0], [-4.0, -1.0], [0.0, 0.0]),  # mass at both edge bins
    ([0.0 + 1 / 255, -0.3], [-7.0, -8.0], [2.0, -1.0]),  # scale at the floor, on a bin edge
    ([-1.7, 2.5], [1.0, 0.5], [-1.0, 1.0]),  # wide, means outside the range
]


@pytest.mark.parametrize("means, log_scales, logits", GREY_CASES)
def test_grey_head_sums_to_one_over_256_values(means, log_scales, logits):
    params = grey_params(means, log_scales, logits).expand(256, 1, 1, -1)
    x = torch.arange(256, dtype=torch.uint8).view(256, 1, 1)
    total = heads.log_prob("grey", x, params, len(means)).double().exp().sum()
    assert abs(float(total) - 1.0) < 1e-4


def rgb_log_probs(params: torch.Tensor, r: int, g: int | None, k: int) -> torch.Tensor:
    """log p(r, g, b) for every b (g fixed) or every (g, b) (g None), one pixel's params."""
    gs = torch.arange(256) if g is None else torch.tensor([g])
    gg, bb = torch.meshgrid(gs, torch.arange(256), indexing="ij")
    x = torch.stack([torch.full_like(gg, r), gg, bb], -1).to(torch.uint8).reshape(-1, 1, 1, 3)
    return heads.log_prob("rgb", x, params.expand(len(x), 1, 1, -1), k)


def test_rgb_head_conditionals_are_distributions():
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        # Mixture: summing out G and B leaves R's marginal, the grey head on R's parameters
        # (which is a distribution over r by the grey test).
        k = 3
        raw = torch.randn(10 * k, generator=gen)
        raw[k : 4 * k] = raw[k : 4 * k] * 0.5  # means in range
        raw[4 * k : 7 * k] = raw[4 * k : 7 * k] - 3.0  # log-scales
        params = heads.clamp_params("rgb", raw, k)
        logits, means, log_scales = params[:k], params[k : 4 * k], params[4 * k : 7 * k]
        marginal_r = torch.cat([logits, means[:k], log_scales[:k]])  # channel-major: R first
        for r in (0, int(torch.randint(1, 255, (1,), generator=gen)), 255):
            total = rgb_log_probs(params, r, None, k).double().exp().sum()
            p_r = heads.log_prob(
                "grey", torch.tensor([[[r]]], dtype=torch.uint8), marginal_r.view(1, 1, 1, -1), k
            )
            assert abs(float(total) / float(p_r.exp()) - 1.0) < 1e-3
        # One component, per channel: Σ_b p(r, g, b) = p(r) · p(g | r), each a grey head.
        raw = torch.randn(10, generator=gen) * torch.tensor([1, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1, 1])
        raw[4:7] -= 3.0
        params = heads.clamp_params("rgb", raw, 1)
        _, mean_r, mean_g, _, ls_r, ls_g, _, c_gr, _, _ = params.tolist()
        for r, g in ((0, 255), (17, 200), (255, 0), (128, 128)):
            total = rgb_log_probs(params, r, g, 1).double().exp().sum()
            mean_g_given_r = mean_g + c_gr * (r / 127.5 - 1.0)
            p_r = heads.log_prob("grey", torch.tensor([[[r]]], dtype=torch.uint8),
                                 grey_params([mean_r], [ls_r], [0.0]).view(1, 1, 1, -1), 1)  # fmt: skip
            p_g = heads.log_prob("grey", torch.tensor([[[g]]], dtype=torch.uint8),
                                 grey_params([mean_g_given_r], [ls_g], [0.0]).view(1, 1, 1, -1), 1)  # fmt: skip
            expected = float((p_r + p_g).double().exp())
            assert abs(float(total) / expected - 1.0) < 1e-3


# --------------------------------------------------------------------------------------
# 4. the δ-VAE's committed rate


def optimal_posterior(prior: AR1Prior):
    """The q minimising KL(q‖p) for the AR(1) prior: mean 0, variance (1 − α²) at both ends
    of the sequence and (1 − α²)/(1 + α²) in between; its KL is exactly δ."""
    a2 = prior.alpha.double() ** 2
    var = ((1 - a2) / (1 + a2)).expand(prior.n_steps, -1).clone()
    var[0] = var[-1] = 1 - a2
    return torch.zeros(1, prior.dim, dtype=torch.float64), var.sqrt().reshape(1, -1)


@settings(max_examples=60, deadline=None)
@given(
    n_steps=st.integers(2, 8),
    step_dim=st.integers(1, 4),
    delta_per_dim=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**31 - 1),
    mean_scale=st.floats(0.0, 3.0),
    log_std_shift=st.floats(-3.0, 1.5),
)
def test_ar1_kl_is_never_below_delta(
    n_steps, step_dim, delta_per_dim, seed, mean_scale, log_std_shift
):
    # In float64 the bound is exact maths (float32 forms 1 − α² with ~1e-5 relative error
    # when α is near 1); δ itself is computed from the same stored α.
    prior = AR1Prior(n_steps, step_dim, delta_per_dim * step_dim).double()
    gen = torch.Generator().manual_seed(seed)
    shape = (32, prior.dim)
    mean = mean_scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    std = torch.exp(log_std_shift + 0.7 * torch.randn(shape, generator=gen, dtype=torch.float64))
    # Include the optimum, and points right next to it.
    opt_mean, opt_std = optimal_posterior(prior)
    near = 1e-3 * torch.randn(4, prior.dim, generator=gen, dtype=torch.float64)
    mean = torch.cat([mean, opt_mean, opt_mean + near])
    std = torch.cat([std, opt_std, opt_std * torch.exp(near)])
    kl = prior.kl_dims_nats(mean, std).sum(1)
    assert (kl >= prior.delta_nats * (1 - 1e-9)).all()
    assert abs(float(kl[32]) - prior.delta_nats) <= 1e-9 * prior.delta_nats  # tight at the optimum


def test_ar1_kl_optimisation_approaches_delta():
    prior = AR1Prior(n_steps=5, step_dim=2, delta_nats=3.0)
    mean = torch.randn(1, prior.dim, generator=torch.Generator().manual_seed(8)).requires_grad_()
    log_std = torch.zeros(1, prior.dim, requires_grad=True)
    opt = torch.optim.Adam([mean, log_std], lr=0.05)
    for _ in range(400):
        kl = prior.kl_dims_nats(mean, log_std.exp()).sum()
        opt.zero_grad()
        kl.backward()
        opt.step()
        assert kl.item() >= prior.delta_nats * (1 - 1e-5)
    assert kl.item() <= prior.delta_nats * 1.01


@pytest.mark.parametrize(
    "delta_nats, n_steps, n_dims",
    [(0.01, 2, 1), (2.0, 2, 4), (10.0, 7, 8), (20.0, 8, 16), (5.0, 30, 1)],
)
def test_alpha_for_delta_inverts_committed_rate(delta_nats, n_steps, n_dims):
    alpha = alpha_for_delta(delta_nats, n_steps, n_dims)
    assert 0.0 < alpha < 1.0
    assert committed_rate_nats([alpha] * n_dims, n_steps) == pytest.approx(delta_nats, rel=1e-9)
    prior = AR1Prior(n_steps, n_dims, delta_nats)  # α stored in float32
    assert prior.delta_nats == pytest.approx(delta_nats, rel=1e-4)


def test_committed_rate_rejects_bad_settings():
    with pytest.raises(ValueError, match="positive"):
        alpha_for_delta(0.0, 4, 2)
    with pytest.raises(ValueError, match="at least 2 latent steps"):
        AR1Prior(1, 2, 1.0)  # one step: the prior is N(0, I) and KL can be 0 < δ
    with pytest.raises(ValueError, match="float32"):
        AR1Prior(7, 8, 100.0)  # α would round to 1: a degenerate prior with NaN KL


# --------------------------------------------------------------------------------------
# 5. training


def stripes(n: int, hw: tuple[int, int] = (8, 8), seed: int = 0) -> np.ndarray:
    """Binary stripes, horizontal or vertical, period 2–4, random phase: (n, H, W) uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(hw)
    out = np.empty((n, *hw), dtype=np.uint8)
    for m in range(n):
        period, phase = rng.integers(2, 5), rng.integers(0, 4)
        coord = rows if rng.integers(2) else cols
        out[m] = ((coord + phase) % period) < period / 2
    return out


def test_tiny_training_lowers_the_loss_and_resumes(tmp_path, capsys):
    config = ModelConfig(
        "vlae",
        "binary",
        (8, 8),
        latent_dim=4,
        channels=8,
        kernel_size=3,
        n_blocks=1,
        made_hidden=16,
    )
    recipe = Recipe(batch_size=32, learning_rate=1e-2, final_learning_rate=3e-3)
    train_images, valid_images = stripes(256, seed=0), stripes(64, seed=1)
    run = tmp_path / "run"
    torch.manual_seed(0)
    before = validate(LatentVariableModel(config), valid_images, 64, "cpu")  # train's init

    model = train(config, recipe, train_images, valid_images, run, epochs=4, log_every=4)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss_bpd"] for e in log if "loss_bpd" in e]
    steps = [e["step"] for e in log if "loss_bpd" in e]
    assert steps == list(range(4, 33, 4))
    assert losses[-1] < 0.85 * losses[0]
    after = log[-1]["final_valid_neg_elbo_bpd"]
    assert after < 0.85 * before
    assert "resuming" not in capsys.readouterr().out

    # Same folder, a larger budget: continues from step 32, does not restart.
    model = train(config, recipe, train_images, valid_images, run, epochs=5, log_every=4)
    assert f"resuming {run} at step 32" in capsys.readouterr().out
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss_bpd" in e] == list(range(4, 41, 4))
    assert log[-1]["final_valid_neg_elbo_bpd"] < before

    loaded = load_weights(run / "model.safetensors", sha256_file(run / "model.safetensors"))
    assert loaded.config == config and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name

    with pytest.raises(ValueError, match="different model config"):
        other = ModelConfig("vlae", "binary", (8, 8), latent_dim=2, channels=8, kernel_size=3,
                            n_blocks=1, made_hidden=16)  # fmt: skip
        train(other, recipe, train_images, valid_images, run, epochs=1)
    with pytest.raises(ValueError, match="exactly one budget"):
        train(config, recipe, train_images, valid_images, run)


def test_a_non_finite_batch_is_skipped_not_learned(tmp_path, monkeypatch):
    config = ModelConfig("vlae", "binary", (8, 8), latent_dim=4, channels=8, kernel_size=3,
                         n_blocks=1, made_hidden=16)  # fmt: skip
    real_loss = LatentVariableModel.loss
    calls = []

    def loss_nan_on_second_batch(self, *args):
        loss, terms = real_loss(self, *args)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), terms

    monkeypatch.setattr(LatentVariableModel, "loss", loss_nan_on_second_batch)
    run = tmp_path / "run"
    model = train(config, Recipe(batch_size=32), stripes(128, seed=0), stripes(32, seed=1), run,
                  epochs=1, log_every=2)  # fmt: skip
    assert all(torch.isfinite(p).all() for p in model.parameters())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"step": 1, "skipped_non_finite_batch": True} in log
    assert all(math.isfinite(e["loss_bpd"]) for e in log if "loss_bpd" in e)


def test_delta_vae_training_fits_the_aux_prior(tmp_path):
    config = ModelConfig(
        "delta-vae", "binary", (8, 8), n_steps=2, step_dim=2, delta_nats=1.0,
        channels=8, kernel_size=3, n_blocks=1, made_hidden=16,
    )  # fmt: skip
    recipe = Recipe(batch_size=32, aux_prior_steps=3)
    model = train(config, recipe, stripes(64), stripes(32, seed=1), tmp_path, epochs=1, log_every=1)
    assert model.aux_prior.out.weight.abs().sum() > 0  # moved off its N(0, I) start
    assert load_weights(tmp_path / "model.safetensors").config == config

    # A warm restart with a larger budget trains on, so the aux prior is fitted again.
    fitted = model.aux_prior.out.weight.clone()
    model = train(config, recipe, stripes(64), stripes(32, seed=1), tmp_path, epochs=2, log_every=1)
    assert not torch.equal(model.aux_prior.out.weight, fitted)  # (training leaves it alone)


# --------------------------------------------------------------------------------------
# 6. weights files


@pytest.fixture
def weights_file(tmp_path):
    model = tiny_model("delta-vae", "grey")
    path = tmp_path / "model.safetensors"
    save_weights(model, path, {"note": "test"})
    return model, path


def test_weights_round_trip(weights_file):
    model, path = weights_file
    loaded = load_weights(path, expected_sha256=sha256_file(path))
    assert loaded.config == model.config and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert not list(path.parent.glob("*.tmp"))


def test_tampered_weights_fail_the_hash(weights_file):
    _, path = weights_file
    digest = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit in the last tensor's data: still a valid safetensors file
    path.write_bytes(bytes(data))
    load_weights(path)  # unchecked, it loads (silently different weights) …
    with pytest.raises(WeightsError, match="sha256"):  # … which is what the hash is for
        load_weights(path, expected_sha256=digest)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"this is not a safetensors file at all" * 10,
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"\xff" * 8 + data[8:],  # header length out of range
        lambda data: b"",
    ],
    ids=["garbage", "truncated", "bad-header-length", "empty"],
)
def test_damaged_weights_raise_weights_error(weights_file, damage):
    _, path = weights_file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(WeightsError, match="not a usable bbcodec weights file"):
        load_weights(path)


def test_weights_for_another_model_or_without_config(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, path)  # no config metadata
    with pytest.raises(WeightsError, match="not a usable"):
        load_weights(path)
    model = tiny_model("vlae", "binary")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    other = tiny_config("vlae", "grey")  # tensors of a binary model under a grey config
    save_file(tensors, path, metadata={"config": other.to_json()})
    with pytest.raises(WeightsError, match="not a usable"):
        load_weights(path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(tmp_path)  # a directory is not a file


# --------------------------------------------------------------------------------------
# 7. objectives


@pytest.mark.parametrize("family", FAMILIES)
def test_objectives(family):
    model = tiny_model(family, "grey")
    x = random_images("grey", 4, seed=6)
    dims = model.config.dims_per_image
    d = model.config.total_latent_dim

    def loss(*args, **kwargs):
        torch.manual_seed(21)  # the same posterior sample for every objective
        with torch.no_grad():
            return model.loss(x, *args, **kwargs)

    elbo, terms = loss("elbo")
    torch.testing.assert_close(elbo, terms.neg_elbo_nats.mean() / dims)
    beta0, terms0 = loss("beta", beta=0.0)
    torch.testing.assert_close(beta0, terms.recon_nats.mean() / dims)
    torch.testing.assert_close(terms0.recon_nats, terms.recon_nats)
    beta3, _ = loss("beta", beta=3.0)
    torch.testing.assert_close(beta3, (terms.recon_nats + 3.0 * terms.kl_nats).mean() / dims)
    tau = 1e3
    free, _ = loss("free-bits", free_bits_nats=tau)
    assert free >= elbo
    torch.testing.assert_close(free, (terms.recon_nats.mean() + d * tau) / dims)
    with pytest.raises(ValueError, match="unknown objective"):
        model.loss(x, "elbow")


@pytest.mark.parametrize("family", FAMILIES)
def test_posterior_and_prior_stds_are_bounded(family):
    """An unbounded std let the one-sample KL run away on CIFAR-10 (std 10⁶ in 20 steps)."""
    model = tiny_model(family, "grey")
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.fill_(3.0)  # huge pre-activations
        q = model.posterior(random_images("grey", 2, seed=0))
        assert torch.isfinite(q.std).all() and q.std.max() <= math.exp(2.0) + 1e-4
        made = model.coding_prior
        for p in made.parameters():
            p.fill_(3.0)
        _, std = made.conditionals(torch.randn(2, model.config.total_latent_dim))
        assert std.max() <= math.exp(2.0) + 1e-4


def test_narrow_feature_network_projects_to_the_pixel_network_width():
    config = dataclasses.replace(tiny_config("vlae", "rgb"), feature_channels=4)
    torch.manual_seed(0)
    model = LatentVariableModel(config).eval()
    assert model.to_features.project is not None and model.encoder.fc[-1].out_features == 8
    x = random_images("rgb", 2, seed=4)
    z = random_latents(model, 2, seed=4)
    with torch.no_grad():
        full = model.likelihood_params(x, z)
    torch.testing.assert_close(run_stepper(model, x, z), full, rtol=0, atol=1e-5)
    assert ModelConfig.from_json(config.to_json()) == config


# ----- growing a trained model ------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_grown_model_computes_what_the_small_one_did(family):
    from bbcodec.models.grow import grow_into

    torch.manual_seed(0)
    small_config = ModelConfig(family, "rgb", (8, 8), latent_dim=4, n_steps=2, step_dim=2,
                               channels=8, kernel_size=3, n_blocks=1, n_mixtures=2, made_hidden=16)  # fmt: skip
    small = LatentVariableModel(small_config).eval()
    for p in small.parameters():  # every weight non-zero, as after training
        p.data.normal_(0, 0.3)
    large = LatentVariableModel(dataclasses.replace(small_config, kernel_size=7, n_blocks=3))
    grow_into(small, large.eval())
    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)

    torch.manual_seed(1)
    before = small.elbo_terms(x)
    torch.manual_seed(1)
    after = large.elbo_terms(x)

    torch.testing.assert_close(after.neg_elbo_nats, before.neg_elbo_nats, rtol=1e-5, atol=1e-3)
    new_block = large.decoder.blocks[2]
    assert new_block.outer.weight.abs().sum() == 0 and new_block.inner.weight.abs().sum() > 0


def test_growing_refuses_other_changes():
    from bbcodec.models.grow import grow_into

    config = ModelConfig("vlae", "grey", (8, 8), latent_dim=4, channels=8, kernel_size=5,
                         n_blocks=2, made_hidden=16)  # fmt: skip
    small = LatentVariableModel(config)
    for change, match in [({"channels": 16}, "differs in channels"),
                          ({"kernel_size": 3}, "cannot shrink"),
                          ({"n_blocks": 1}, "cannot shrink"),
                          ({"kind": "rgb"}, "differs in kind")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            grow_into(small, LatentVariableModel(dataclasses.replace(config, **change)))
