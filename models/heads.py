"""Likelihood heads: what a decoder's last layer means, and the log-likelihood it gives.

Three pixel kinds (see ``bbcodec.models.data.dataset_kind``):

============  ===============  ===========================================================
kind          channels out     meaning per pixel
============  ===============  ===========================================================
``binary``    1                Bernoulli logit of the pixel being 1
``grey``      3·K              PixelCNN++ discretised logistic mixture over 0..255:
                               K weight logits, K means, K log-scales
``rgb``       10·K             the RGB mixture: K weight logits, then per channel R, G, B:
                               K means, K log-scales, and K coefficients (G mean += c₀·R,
                               B mean += c₁·R + c₂·G, R/G in the [-1, 1] scale)
============  ===============  ===========================================================

Means and pixel values live in the [-1, 1] scale (``value / 127.5 − 1``); a bin is
2/255 wide and the outermost bins take the tails. Log-scales are clamped below at
``MIN_LOG_SCALE`` in the network output itself (`clamp_params`), so training and coding
see the same distribution. Salimans et al. 2017, "PixelCNN++".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_LOG_SCALE = -7.0
HALF_BIN = 1.0 / 255.0


def param_channels(kind: str, n_mixtures: int) -> int:
    """Number of head channels per pixel for a pixel ``kind``."""
    if kind == "binary":
        return 1
    if kind == "grey":
        return 3 * n_mixtures
    if kind == "rgb":
        return 10 * n_mixtures
    raise ValueError(f"unknown pixel kind {kind!r} (expected binary, grey or rgb)")


def to_unit_scale(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 → float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def clamp_params(kind: str, params: torch.Tensor, n_mixtures: int) -> torch.Tensor:
    """Apply the fixed output constraints (log-scale floor, tanh on RGB coefficients).

    Args:
        params: (..., P) raw head output, P = ``param_channels(kind, n_mixtures)``.
    Returns:
        (..., P) constrained parameters, the ones both training and coding use.
    """
    if kind == "binary":
        return params
    k = n_mixtures
    if kind == "grey":
        logits, means, log_scales = params.split(k, dim=-1)
        return torch.cat([logits, means, log_scales.clamp(min=MIN_LOG_SCALE)], dim=-1)
    logits, means, log_scales, coeffs = params.split([k, 3 * k, 3 * k, 3 * k], dim=-1)
    return torch.cat([logits, means, log_scales.clamp(min=MIN_LOG_SCALE), torch.tanh(coeffs)], -1)


def _logistic_bin_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor):
    """log P(bin of x) under a discretised logistic, x in [-1, 1] on the 256-level grid."""
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = inv_scale * (centred + HALF_BIN)
    lower = inv_scale * (centred - HALF_BIN)
    cdf_delta = torch.sigmoid(upper) - torch.sigmoid(lower)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the x = 0 bin
    log_one_minus_cdf_lower = -F.softplus(lower)  # log (1 − sigmoid(lower)): the x = 255 bin
    mid = inv_scale * centred
    # Density approximation for bins whose difference of CDFs underflows.
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2 * HALF_BIN)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(
        x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_one_minus_cdf_lower, inner)
    )


def log_prob(kind: str, x: torch.Tensor, params: torch.Tensor, n_mixtures: int) -> torch.Tensor:
    """Per-image log-likelihood in nats.

    Args:
        kind: ``binary``, ``grey`` or ``rgb``.
        x: (N, H, W) or (N, H, W, 3) uint8 pixels (0/1 for binary).
        params: (N, H, W, P) constrained head parameters (`clamp_params`).
    Returns:
        (N,) float log p(x | ·) in nats, summed over all sub-pixels.
    """
    if kind == "binary":
        logits = params[..., 0]
        target = x.float()
        ll = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return ll.flatten(1).sum(1)
    k = n_mixtures
    if kind == "grey":
        logits, means, log_scales = params.split(k, dim=-1)
        xs = to_unit_scale(x).unsqueeze(-1)
        comp = _logistic_bin_log_prob(xs, means, log_scales)
        ll = torch.logsumexp(comp + F.log_softmax(logits, dim=-1), dim=-1)
        return ll.flatten(1).sum(1)
    logits, means, log_scales, coeffs = params.split([k, 3 * k, 3 * k, 3 * k], dim=-1)
    shape = params.shape[:-1] + (3, k)
    means, log_scales, coeffs = (t.reshape(shape) for t in (means, log_scales, coeffs))
    xs = to_unit_scale(x).unsqueeze(-1)  # (N, H, W, 3, 1)
    r, g = xs[..., 0, :], xs[..., 1, :]
    mean_r = means[..., 0, :]
    mean_g = means[..., 1, :] + coeffs[..., 0, :] * r
    mean_b = means[..., 2, :] + coeffs[..., 1, :] * r + coeffs[..., 2, :] * g
    adjusted = torch.stack([mean_r, mean_g, mean_b], dim=-2)
    comp = _logistic_bin_log_prob(xs, adjusted, log_scales).sum(dim=-2)  # (N, H, W, K)
    ll = torch.logsumexp(comp + F.log_softmax(logits, dim=-1), dim=-1)
    return ll.flatten(1).sum(1)


def sample(kind: str, params: torch.Tensor, n_mixtures: int, generator=None) -> torch.Tensor:
    """Draw pixels from head parameters (for samples and reconstructions in the latent tools).

    Args:
        params: (B, P) constrained parameters of one pixel for B images.
    Returns:
        (B,) or (B, 3) uint8 pixel values.
    """
    if kind == "binary":
        p = torch.sigmoid(params[:, 0])
        return (torch.rand(p.shape, generator=generator) < p).to(torch.uint8)
    k = n_mixtures
    if kind == "grey":
        logits, means, log_scales = params.split(k, dim=-1)
        means, log_scales = means.unsqueeze(1), log_scales.unsqueeze(1)
        coeffs = None
    else:
        logits, means, log_scales, coeffs = params.split([k, 3 * k, 3 * k, 3 * k], dim=-1)
        means, log_scales, coeffs = (t.reshape(-1, 3, k) for t in (means, log_scales, coeffs))
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-9, 1)))
    choice = (logits + gumbel).argmax(dim=-1)
    pick = lambda t: t.gather(-1, choice.view(-1, 1, 1).expand(-1, t.shape[1], 1))[..., 0]
    mu, ls = pick(means), pick(log_scales)
    u = torch.rand(mu.shape, generator=generator).clamp(1e-5, 1 - 1e-5)
    noise = torch.exp(ls) * (torch.log(u) - torch.log1p(-u))
    if coeffs is None:
        value = (mu + noise).clamp(-1, 1)[:, 0]
        return torch.round((value + 1) * 127.5).to(torch.uint8)
    c = pick(coeffs)
    r = (mu[:, 0] + noise[:, 0]).clamp(-1, 1)
    g = (mu[:, 1] + c[:, 0] * r + noise[:, 1]).clamp(-1, 1)
    b = (mu[:, 2] + c[:, 1] * r + c[:, 2] * g + noise[:, 2]).clamp(-1, 1)
    return torch.round((torch.stack([r, g, b], -1) + 1) * 127.5).to(torch.uint8)
