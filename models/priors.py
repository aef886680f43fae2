"""Latent priors p(z): every conditional is a Gaussian, so one quantised-Gaussian codec codes all.

All priors order the latent vector z (N, D) as coded: dimension i is conditioned on
dimensions < i. Each prior gives

- ``conditionals(z)``: (mean, std), each (N, D), of p(z_i | z_<i) for all i at once;
- ``step(z_prefix, i)``: (mean, std), each (N,), for one i given the decoded prefix (entries
  ≥ i of ``z_prefix`` are ignored);
- ``log_prob_dims(z)``: (N, D) log p(z_i | z_<i) in nats.

Priors:

- `StandardNormalPrior` — N(0, I).
- `MadePrior` — the VLAE's autoregressive-flow prior (Chen et al. 2017): a MADE network
  (Germain et al. 2015) maps z_<i to (μ_i, log σ_i), p(z_i | z_<i) = N(μ_i, σ_i²). Because
  masked weights are exactly zero, ``step`` runs the same full pass as ``conditionals``
  on the prefix and reads out column i: with the same batch shape the two are bit-identical
  (tested). Also the δ-VAE's auxiliary prior.
- `AR1Prior` — the δ-VAE prior (Razavi et al. 2019): z has n steps of d dimensions,
  z_t = α_k z_{t−1} + ε, ε ~ N(0, 1 − α_k²), every marginal N(0, 1). α comes from the
  committed rate δ (`alpha_for_delta`): a diagonal-Gaussian posterior independent over t
  has KL(q‖p) ≥ δ by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mean, std²) in nats."""
    return -0.5 * (((z - mean) / std) ** 2 + LOG_2PI) - torch.log(std)


class StandardNormalPrior(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def conditionals(self, z: torch.Tensor):
        return torch.zeros_like(z), torch.ones_like(z)

    def step(self, z_prefix: torch.Tensor, i: int):
        n = z_prefix.shape[0]
        return z_prefix.new_zeros(n), z_prefix.new_ones(n)

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(z, *self.conditionals(z))


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MadePrior(nn.Module):
    """Autoregressive Gaussian prior parameterised by a MADE.

    Args:
        dim: D, latent dimensions.
        hidden: width of each hidden layer.
        n_hidden: number of hidden layers.
    """

    MIN_LOG_STD = -7.0
    MAX_LOG_STD = 2.0  # as the posterior's (`bbcodec.models.encoders.MAX_LOG_STD`)

    def __init__(self, dim: int, hidden: int = 256, n_hidden: int = 2):
        super().__init__()
        self.dim = dim
        in_degree = torch.arange(1, dim + 1)
        layers: list[nn.Module] = []
        prev = in_degree
        for _ in range(n_hidden):
            degree = torch.arange(hidden) % max(dim - 1, 1) + 1
            layers.append(MaskedLinear(len(prev), hidden, (degree[:, None] >= prev[None]).float()))
            prev = degree
        out_degree = torch.cat([in_degree, in_degree])
        self.hidden_layers = nn.ModuleList(layers)
        self.out = MaskedLinear(len(prev), 2 * dim, (out_degree[:, None] > prev[None]).float())
        nn.init.zeros_(self.out.weight)  # start as N(0, I)
        nn.init.zeros_(self.out.bias)

    def conditionals(self, z: torch.Tensor):
        h = z
        for layer in self.hidden_layers:
            h = F.elu(layer(h))
        mean, log_std = self.out(h).chunk(2, dim=-1)
        return mean, torch.exp(log_std.clamp(self.MIN_LOG_STD, self.MAX_LOG_STD))

    def step(self, z_prefix: torch.Tensor, i: int):
        masked = z_prefix.clone()
        masked[:, i:] = 0.0
        mean, std = self.conditionals(masked)
        return mean[:, i], std[:, i]

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(z, *self.conditionals(z))


def committed_rate_nats(alpha: torch.Tensor | float, n_steps: int) -> float:
    """δ = ½ Σ_k [(n − 2) ln(1 + α_k²) − ln(1 − α_k²)] in nats, for α per dimension.

    The bound needs n ≥ 2: with one step the prior is N(0, I) and KL(q‖p) can be 0.
    """
    if n_steps < 2:
        raise ValueError(f"a committed rate needs at least 2 latent steps, got {n_steps}")
    a2 = torch.as_tensor(alpha, dtype=torch.float64) ** 2
    return float(0.5 * ((n_steps - 2) * torch.log1p(a2) - torch.log1p(-a2)).sum())


def alpha_for_delta(delta_nats: float, n_steps: int, n_dims: int) -> float:
    """The α (same for all d dimensions) whose committed rate is ``delta_nats`` in total."""
    if delta_nats <= 0:
        raise ValueError(f"δ must be positive, got {delta_nats}")
    lo, hi = 0.0, 1.0 - 1e-12
    for _ in range(200):  # bisection: δ(α) increases monotonically on [0, 1)
        mid = 0.5 * (lo + hi)
        if committed_rate_nats([mid] * n_dims, n_steps) < delta_nats:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class AR1Prior(nn.Module):
    """Per-dimension AR(1) prior over n steps of d dims; z flattened step-major (t·d + k).

    Args:
        n_steps: n.
        step_dim: d.
        delta_nats: committed rate δ in nats (total over the latent).
    """

    def __init__(self, n_steps: int, step_dim: int, delta_nats: float):
        super().__init__()
        self.n_steps, self.step_dim, self.dim = n_steps, step_dim, n_steps * step_dim
        alpha = alpha_for_delta(delta_nats, n_steps, step_dim)
        self.register_buffer("alpha", torch.full((step_dim,), alpha))
        self.delta_nats = committed_rate_nats(self.alpha, n_steps)
        if not abs(self.delta_nats - delta_nats) <= 0.01 * delta_nats:  # also catches inf
            raise ValueError(
                f"δ = {delta_nats} nats over {step_dim} dims × {n_steps} steps needs α so close "
                f"to 1 that float32 cannot hold it (α → {float(self.alpha[0])}); use a smaller δ "
                "or more latent dimensions"
            )

    def conditionals(self, z: torch.Tensor):
        zs = z.view(-1, self.n_steps, self.step_dim)
        prev = F.pad(zs[:, :-1], (0, 0, 1, 0))
        mean = (self.alpha * prev).reshape(z.shape)
        std = torch.sqrt(1.0 - self.alpha**2).expand(self.n_steps, -1).clone()
        std[0] = 1.0
        return mean, std.reshape(1, -1).expand_as(z)

    def step(self, z_prefix: torch.Tensor, i: int):
        t, k = divmod(i, self.step_dim)
        if t == 0:
            n = z_prefix.shape[0]
            return z_prefix.new_zeros(n), z_prefix.new_ones(n)
        a = self.alpha[k]
        return a * z_prefix[:, i - self.step_dim], torch.sqrt(1.0 - a**2).expand(len(z_prefix))

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(z, *self.conditionals(z))

    def kl_dims_nats(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Analytic KL(q ‖ p) terms, q = N(mean, std²) independent over all (t, k).

        Args:
            mean, std: (N, n·d) posterior parameters.
        Returns:
            (N, n·d) KL terms in nats (term t·d + k: E_q KL of z_t,k given z_t−1,k); their
            sum over dimensions is always ≥ ``delta_nats``.
        """
        m = mean.view(-1, self.n_steps, self.step_dim)
        s2 = std.view(-1, self.n_steps, self.step_dim) ** 2
        a = self.alpha
        prior_var = (1.0 - a**2).expand(self.n_steps, -1).clone()
        prior_var[0] = 1.0
        m_prev = F.pad(m[:, :-1], (0, 0, 1, 0))
        s2_prev = F.pad(s2[:, :-1], (0, 0, 1, 0))
        sq = (m - a * m_prev) ** 2 + s2 + a**2 * s2_prev
        kl = 0.5 * (torch.log(prior_var) - torch.log(s2) + sq / prior_var - 1.0)
        return kl.flatten(1)
