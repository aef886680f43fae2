"""Evaluation: test −ELBO, its rate/distortion split, active units, an importance-weighted bound.

What `evaluate` measures on a set of images x (D sub-pixels each):

- **−ELBO** = −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)), in nats per image and in bits/dim
  (nats / (D · ln 2)), averaged over the images with **one z-sample per image**
  (`LatentVariableModel.elbo_terms`, the *coding* prior: the δ-VAE's auxiliary prior). It is
  split into the **KL** (rate) and the **reconstruction** term (distortion); KL + recon =
  −ELBO exactly, per image and on average.
- **Active units** (Burda et al. 2016, "Importance Weighted Autoencoders"): latent dimension
  i is active when Cov_x(E_q(z|x)[z_i]) > 0.01, the variance over the images (over the
  tiles, for images of whole tiles) of its posterior mean.
- Optionally the **importance-weighted bound** with k samples (Burda et al. 2016):
  −log (1/k) Σ_j p(x|z_j) p(z_j) / q(z_j|x), z_j ~ q(z|x). It is an upper bound on the NLL
  −log p(x) that tightens as k grows; for k = 1 its mean is the −ELBO.
- For the **δ-VAE**: the KL under the AR(1) *training* prior (exact, analytic) and the
  committed rate δ, so KL ≥ δ can be checked image by image.

Results repeat for the same seed, batch size, device and thread count (the z-samples come
from torch's generator, seeded here and restored afterwards).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bbcodec.errors import UsageError
from bbcodec.models import heads
from bbcodec.models.data import DataError
from bbcodec.models.priors import gaussian_log_prob
from bbcodec.models.vae import LatentVariableModel, ModelConfig, nats_to_bpd, tiles_of

__all__ = ["ACTIVE_UNIT_THRESHOLD", "EvalResult", "check_images", "evaluate"]

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """What `evaluate` measured. Nats are per image; bits/dim are per sub-pixel.

    Attributes:
        model, data, split: labels of what was evaluated (free text).
        n_images: images evaluated; dims_per_image: D (sub-pixels per image).
        family: ``vlae`` or ``delta-vae``; latent_dim: total latent dimensions;
        receptive_field: the decoder's receptive field; n_params: trainable parameters.
        neg_elbo_nats / neg_elbo_bpd: mean one-sample −ELBO under the coding prior.
        kl_nats / kl_bpd: its KL (rate) part; recon_nats / recon_bpd: its −log p(x|z) part.
        elbo_z_samples: z-samples per image behind the −ELBO (always 1).
        active_units: latent dims with Cov_x(E_q[z_i]) > ``active_threshold``.
        kl_dims_nats: each latent dimension's share of ``kl_nats`` (D,), the one-sample
            terms log q(z_i|x) − log p(z_i|z_<i) averaged over the images.
        posterior_mean_variance: Var_x(E_q[z_i]) per latent dimension (D,), what
            ``active_units`` thresholds.
        iw_samples: k of the importance-weighted bound (0: not computed);
        iw_nll_nats / iw_nll_bpd: the bound, or None.
        kl_train_prior_nats / kl_train_prior_bpd: δ-VAE only, mean KL under the AR(1) prior;
        kl_train_prior_min_nats: its minimum over the images; delta_nats / delta_bpd: δ;
        kl_ge_delta: every image's KL ≥ δ (up to float rounding). None for the VLAE.
        seconds, images_per_s: wall time of the evaluation and its throughput.
        seed, batch_size, device: how it was run.
    """

    model: str
    data: str
    split: str
    n_images: int
    dims_per_image: int
    family: str
    latent_dim: int
    receptive_field: str
    n_params: int
    neg_elbo_nats: float
    neg_elbo_bpd: float
    kl_nats: float
    kl_bpd: float
    recon_nats: float
    recon_bpd: float
    elbo_z_samples: int
    active_units: int
    active_threshold: float
    iw_samples: int
    iw_nll_nats: float | None
    iw_nll_bpd: float | None
    kl_train_prior_nats: float | None
    kl_train_prior_bpd: float | None
    kl_train_prior_min_nats: float | None
    delta_nats: float | None
    delta_bpd: float | None
    kl_ge_delta: bool | None
    seconds: float
    images_per_s: float
    seed: int
    batch_size: int
    device: str
    kl_dims_nats: tuple[float, ...]
    posterior_mean_variance: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (None for fields that do not apply)."""
        return dataclasses.asdict(self)


def check_images(
    config: ModelConfig, images: np.ndarray, where: str = "data", whole_tiles: bool = False
) -> None:
    """Raise `DataError` unless ``images`` have the shape and value range the model codes:
    the model's own size or, with ``whole_tiles`` and a local decoder, whole tiles of it (a
    photo model's validation crops, `LatentVariableModel.elbo_terms`).

    Args:
        config: the model's config.
        images: (N, H, W[, 3]) uint8.
        where: names the images in the message (e.g. the data path).
    """
    h, w = config.image_hw
    expected = (h, w, 3) if config.kind == "rgb" else (h, w)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise DataError(f"{where}: expected a uint8 image array")
    shape = tuple(images.shape[1:])
    tiles_allowed = whole_tiles and not config.row_context
    fits_tiles = tiles_allowed and (
        len(shape) == len(expected) and shape[2:] == expected[2:] and not config.row_context
        and shape[0] % h == 0 and shape[1] % w == 0
    )  # fmt: skip
    if not (shape == expected or fits_tiles) or len(images) == 0:
        tiles = f" (or of whole {h}x{w} tiles)" if tiles_allowed else ""
        raise DataError(
            f"{where}: images of shape {shape} but the model is for "
            f"{config.kind} images of shape {expected}{tiles}"
        )
    if config.kind == "binary" and images.max() > 1:
        raise DataError(
            f"{where}: the model is for binary (0/1) images but pixel values reach {images.max()}"
        )


def _iw_log_weights(
    model: LatentVariableModel, x: torch.Tensor, q_mean, q_std, k: int
) -> torch.Tensor:
    """(N, k) log p(x|z_j) + log p(z_j) − log q(z_j|x) in nats, z_j ~ q(z|x)."""
    c = model.config
    out = []
    for _ in range(k):
        z = q_mean + q_std * torch.randn_like(q_std)
        log_px = heads.log_prob(c.kind, x, model.likelihood_params(x, z), c.n_mixtures)
        log_pz = model.coding_prior.log_prob_dims(z).sum(1)
        log_qz = gaussian_log_prob(z, q_mean, q_std).sum(1)
        out.append((log_px + log_pz - log_qz).double())
    return torch.stack(out, 1)


def evaluate(
    model: LatentVariableModel,
    images: np.ndarray,
    *,
    batch_size: int = 250,
    iw_samples: int = 0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    model_name: str = "",
    data_name: str = "",
    split: str = "",
) -> EvalResult:
    """Evaluate a model on images: −ELBO and its terms, active units, an optional IW bound.

    Args:
        model: the model (moved to ``device``; put in eval mode for the call).
        images: (N, H, W[, 3]) uint8, as `bbcodec.models.data.load_images` returns them.
        batch_size: images per forward pass.
        iw_samples: k for the importance-weighted bound; 0 skips it.
        seed: seeds the z-samples (torch's RNG state is restored afterwards).
        device: ``cpu`` or ``cuda[:i]``.
        progress: show a tqdm bar over batches (on stderr).
        model_name, data_name, split: labels copied into the result.

    Returns:
        An `EvalResult`.

    Raises:
        DataError: images that do not fit the model (`check_images`).
        UsageError: a non-positive batch size or negative ``iw_samples``.

    Example:
        >>> from bbcodec.models.vae import ModelConfig
        >>> config = ModelConfig("vlae", "binary", (8, 8), latent_dim=4, channels=8,
        ...                      n_blocks=1, made_hidden=16, kernel_size=3)
        >>> x = np.random.default_rng(0).integers(0, 2, (10, 8, 8), dtype=np.uint8)
        >>> r = evaluate(LatentVariableModel(config), x, progress=False)
        >>> r.n_images, abs(r.kl_nats + r.recon_nats - r.neg_elbo_nats) < 1e-6
        (10, True)
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    if iw_samples < 0:
        raise UsageError(f"importance samples must be ≥ 0, got {iw_samples}")
    config = model.config
    check_images(config, images, data_name or "data", whole_tiles=True)
    n, dims, d = len(images), images[0].size, config.total_latent_dim
    has_delta = hasattr(model.prior, "kl_dims_nats") and hasattr(model.prior, "delta_nats")
    was_training = model.training
    model.to(device).eval()
    dev = torch.device(device)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []

    sums = {"recon": 0.0, "kl": 0.0, "iw": 0.0, "kl_train": 0.0}
    kl_train_min = math.inf
    kl_dims = torch.zeros(d, dtype=torch.float64)
    mean_sum = torch.zeros(d, dtype=torch.float64)
    n_means = 0  # posterior means summed: one per image, or per tile
    mean_sq_sum = torch.zeros(d, dtype=torch.float64)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
        torch.manual_seed(seed)
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc="eval", unit="batch", disable=not progress):
            x = torch.from_numpy(images[start : start + batch_size]).to(dev)
            terms = model.elbo_terms(x)
            sums["recon"] += float(terms.recon_nats.double().sum())
            sums["kl"] += float(terms.kl_nats.double().sum())
            kl_dims += terms.kl_dims_nats.double().sum(0).cpu()
            q = model.posterior(tiles_of(x, config.image_hw))
            mu = q.mean.double().cpu()
            mean_sum += mu.sum(0)
            n_means += len(mu)
            mean_sq_sum += (mu**2).sum(0)
            if has_delta:
                kl_train = model.prior.kl_dims_nats(q.mean, q.std).double().sum(1)
                sums["kl_train"] += float(kl_train.sum())
                kl_train_min = min(kl_train_min, float(kl_train.min()))
            if iw_samples:
                log_w = _iw_log_weights(model, x, q.mean, q.std, iw_samples)
                nll = -(torch.logsumexp(log_w, 1) - math.log(iw_samples))
                sums["iw"] += float(nll.sum())
    seconds = time.perf_counter() - t0
    model.train(was_training)

    # Population variance over the images of each posterior mean (Burda et al.'s A_u).
    variance = (mean_sq_sum / n_means - (mean_sum / n_means) ** 2).clamp(min=0)
    active = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
    recon, kl = sums["recon"] / n, sums["kl"] / n
    neg_elbo = recon + kl
    delta = float(model.prior.delta_nats) if has_delta else None
    kl_train = sums["kl_train"] / n if has_delta else None
    iw = sums["iw"] / n if iw_samples else None

    def bpd(nats: float | None) -> float | None:
        return None if nats is None else nats_to_bpd(nats, dims)

    return EvalResult(
        model=model_name,
        data=data_name,
        split=split,
        n_images=n,
        dims_per_image=dims,
        family=config.family,
        latent_dim=d,
        receptive_field=model.decoder.receptive_field,
        n_params=sum(p.numel() for p in model.parameters()),
        neg_elbo_nats=neg_elbo,
        neg_elbo_bpd=bpd(neg_elbo),
        kl_nats=kl,
        kl_bpd=bpd(kl),
        recon_nats=recon,
        recon_bpd=bpd(recon),
        elbo_z_samples=1,
        active_units=active,
        active_threshold=ACTIVE_UNIT_THRESHOLD,
        iw_samples=iw_samples,
        iw_nll_nats=iw,
        iw_nll_bpd=bpd(iw),
        kl_train_prior_nats=kl_train,
        kl_train_prior_bpd=bpd(kl_train),
        kl_train_prior_min_nats=kl_train_min if has_delta else None,
        delta_nats=delta,
        delta_bpd=bpd(delta),
        kl_ge_delta=(kl_train_min >= delta * (1 - 1e-5) - 1e-6) if has_delta else None,
        seconds=seconds,
        images_per_s=n / max(seconds, 1e-9),
        seed=seed,
        batch_size=batch_size,
        device=str(device),
        kl_dims_nats=tuple((kl_dims / n).tolist()),
        posterior_mean_variance=tuple(variance.tolist()),
    )
