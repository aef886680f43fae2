"""The one place where a torch model meets the coding layer.

`ModelAdapter` turns a `LatentVariableModel` (``bbcodec.models.vae``) into the three codecs
bits-back coding needs, for a batch of B images of shape (H, W) or (H, W, 3):

- ``posterior(images)`` — Q(z̄|x) on the latent grid, one quantised Gaussian per latent;
- ``prior(B)``          — P(z̄), autoregressive over the D latent dimensions;
- ``likelihood(z̄)``     — P(x|z̄), autoregressive over the H·W pixels in raster order;
- ``direct_walk`` and ``direct_offsets(B)`` — a latent coded without bits back (a chunk's
  first image): chosen by the encoder near the posterior mean, in steps of the prior's
  conditional standard deviation, and coded as those step numbers.

Latent symbols are (B, D) int32 grid indices; images are (B, H, W[, 3]) uint8.

Determinism (`docs/design.md`, *Determinism*): both autoregressive codecs get their parameters from the model's
*step* functions on both sides — the encoder runs them on the true prefix
(`all_params_by_steps`), the decoder on the prefix it has decoded — with the same batch
shape, so the floats handed to constriction are bit-identical by construction. Grid values
are k·Δ with Δ a power of two, so they convert to float32 exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bbcodec.coding import (
    AutoRegressive,
    Bernoulli,
    Codec,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    GaussianParams,
    LatentGrid,
    LogisticMixtureParams,
    LogisticMixtureRGBParams,
    Message,
    QuantizedGaussian,
    WindowedQuantizedGaussian,
    all_params_by_steps,
    coder_float64,
)


@dataclass(frozen=True, eq=False)
class Relayout:
    """A codec seen through a change of array layout (e.g. (B, D) ↔ (D, B))."""

    inner: Codec
    to_inner: Callable[[np.ndarray], np.ndarray]
    from_inner: Callable[[np.ndarray], np.ndarray]

    def push(self, message: Message, symbols: np.ndarray) -> None:
        self.inner.push(message, self.to_inner(np.asarray(symbols)))

    def pop(self, message: Message) -> np.ndarray:
        return self.from_inner(self.inner.pop(message))


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return coder_float64(t.detach().cpu().numpy())


#: A directly coded latent lies within this many steps of its prior mean, each dimension.
DIRECT_OFFSET_LIMIT = 8


class ModelAdapter:
    """Codecs for one model, one latent grid and one device.

    Args:
        model: a `LatentVariableModel` in eval mode.
        grid: the latent grid (Δ a power of two).
        device: torch device the model runs on.
        window_stds: the posterior's window in standard deviations (``None``: the grid).
        direct_stds: the step of a directly coded latent, in prior standard deviations.
    """

    def __init__(
        self, model, grid: LatentGrid, device: str = "cpu", window_stds: float | None = None,
        direct_stds: float = 3.0,
    ):  # fmt: skip
        self.model = model.to(device).eval()
        self.grid = grid
        self.window_stds = window_stds
        self.direct_stds = direct_stds
        self.device = device
        config = model.config
        self.kind = config.kind
        self.latent_dim = config.total_latent_dim
        self.image_shape = config.image_shape
        self.n_mixtures = config.n_mixtures

    # ----- latents --------------------------------------------------------------------
    @torch.no_grad()
    def posterior(self, images: np.ndarray) -> QuantizedGaussian:
        """Q(z̄|x) for (B, H, W[, 3]) uint8 images; codes (B, D) grid symbols."""
        q = self.model.posterior(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
        mean, std = _to_numpy(q.mean), _to_numpy(q.std)
        if self.window_stds is None:
            return QuantizedGaussian(mean, std, self.grid)
        return WindowedQuantizedGaussian(mean, std, self.grid, self.window_stds)

    def prior(self, batch: int) -> Relayout:
        """P(z̄) for a batch; codes (B, D) grid symbols, dimension by dimension."""

        @torch.no_grad()
        def step_params(prefix: np.ndarray, i: int) -> GaussianParams:
            z = np.zeros((batch, self.latent_dim), dtype=np.float32)
            z[:, :i] = self.grid.to_values(prefix.T)
            g = self.model.prior_step(torch.from_numpy(z).to(self.device), i)
            return GaussianParams(_to_numpy(g.mean), _to_numpy(g.std))

        codec = AutoRegressive(
            lambda p: QuantizedGaussian(p.means, p.stds, self.grid),
            all_params_by_steps(step_params), step_params, self.latent_dim, (batch,),
        )  # fmt: skip
        return Relayout(codec, lambda s: s.T, lambda s: np.ascontiguousarray(s.T))

    def direct_offsets(self, batch: int) -> QuantizedGaussian:
        """The code of (B, D) direct-latent step numbers k in ±`DIRECT_OFFSET_LIMIT`: k has
        the mass of [(k − ½)·s, (k + ½)·s] under N(0, 1), s = ``direct_stds``."""
        shape = (batch, self.latent_dim)
        steps = LatentGrid(self.direct_stds, DIRECT_OFFSET_LIMIT)
        return QuantizedGaussian(np.zeros(shape), np.ones(shape), steps)

    @torch.no_grad()
    def direct_walk(
        self, *, toward: np.ndarray | None = None, offsets: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One directly coded latent, dimension by dimension along the prior.

        Dimension i is the prior's conditional mean μ_i plus k_i·s·σ_i (σ_i its std,
        s = ``direct_stds``), rounded onto the grid; the grid value is what later
        dimensions are conditioned on. The encoder passes ``toward`` (the posterior mean,
        (1, D) latent units) and gets the k nearest it; the decoder passes the ``offsets``
        k (1, D) it popped. Both sides run the prior's step function on a batch of one,
        as the prior codec does, so they compute the same grid symbols.

        Returns:
            (offsets k, grid symbols), each (1, D) int32.
        """
        known = offsets if offsets is not None else toward
        if known is None or known.shape != (1, self.latent_dim):
            raise ValueError(f"direct_walk needs one latent of {self.latent_dim} dimensions")
        z = np.zeros((1, self.latent_dim), dtype=np.float32)
        steps = np.zeros((1, self.latent_dim), dtype=np.int32)
        symbols = np.zeros((1, self.latent_dim), dtype=np.int32)
        for i in range(self.latent_dim):
            g = self.model.prior_step(torch.from_numpy(z).to(self.device), i)
            mean, std = _to_numpy(g.mean), _to_numpy(g.std) * self.direct_stds
            if offsets is None:
                k = np.rint((toward[:, i] - mean) / std)
                steps[:, i] = np.clip(k, -DIRECT_OFFSET_LIMIT, DIRECT_OFFSET_LIMIT)
            else:
                steps[:, i] = offsets[:, i]
            value = np.rint((mean + steps[:, i] * std) / self.grid.step)
            symbols[:, i] = np.clip(value, -self.grid.n_half, self.grid.n_half)
            z[:, i] = self.grid.to_values(symbols[:, i])
        return steps, symbols

    # ----- pixels ---------------------------------------------------------------------
    def _pixel_leaf(self, params: Any, batch: int) -> Codec:
        if self.kind == "binary":
            return Bernoulli(params)
        if self.kind == "grey":
            return DiscretizedLogisticMixture(*params)
        return DiscretizedLogisticMixtureRGB(*params, group_size=batch)

    def _pixel_params(self, raw: torch.Tensor) -> Any:
        """(B, P) head parameters → the leaf's parameter container (float64)."""
        p = _to_numpy(raw)
        k = self.n_mixtures
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-p[:, 0]))
        if self.kind == "grey":
            return LogisticMixtureParams(p[:, :k], p[:, k : 2 * k], p[:, 2 * k :])
        b = p.shape[0]
        means, log_scales, coeffs = (
            p[:, s : s + 3 * k].reshape(b, 3, k) for s in (k, 4 * k, 7 * k)
        )
        return LogisticMixtureRGBParams(p[:, :k], means, log_scales, coeffs)

    def pixel_codec(self, raw: torch.Tensor) -> Codec:
        """The codec of n pixels coded side by side, from their (n, P) head parameters:
        symbols (n,), or (n, 3) for RGB (R of all n, then G, then B)."""
        return self._pixel_leaf(self._pixel_params(raw), raw.shape[0])

    def likelihood(self, latents: np.ndarray) -> Relayout:
        """P(x|z̄) for (B, D) grid symbols; codes (B, H, W[, 3]) uint8 images pixel by pixel."""
        batch = latents.shape[0]
        z = torch.from_numpy(self.grid.to_values(latents).astype(np.float32)).to(self.device)
        state: dict[str, Any] = {}

        @torch.no_grad()
        def step_params(prefix: np.ndarray, t: int) -> Any:
            if t == 0:  # every push or pop starts a fresh canvas
                state["stepper"] = self.model.pixel_stepper(z)
            else:
                last = torch.from_numpy(prefix[t - 1].astype(np.uint8)).to(self.device)
                state["stepper"].write(t - 1, last)
            return self._pixel_params(state["stepper"].params(t))

        height, width = self.image_shape[:2]
        step_shape = (batch,) + self.image_shape[2:]
        codec = AutoRegressive(
            lambda p: self._pixel_leaf(p, batch),
            all_params_by_steps(step_params), step_params, height * width, step_shape,
        )  # fmt: skip

        def to_steps(images: np.ndarray) -> np.ndarray:  # (B, H, W[, 3]) → (H·W, B[, 3])
            flat = images.reshape(batch, height * width, *self.image_shape[2:])
            return np.ascontiguousarray(np.swapaxes(flat, 0, 1))

        def from_steps(steps: np.ndarray) -> np.ndarray:
            images = np.swapaxes(steps, 0, 1).reshape(batch, *self.image_shape)
            return np.ascontiguousarray(images, dtype=np.uint8)

        return Relayout(codec, to_steps, from_steps)
