"""Posterior networks q(z | x) (diagonal Gaussians) and the z → feature-map network.

- `ConvEncoder` — the VLAE encoder: strided convolutions, then a linear map to (μ, log σ).
- `AntiCausalEncoder` — the δ-VAE encoder (Razavi et al. 2019): the latent sequence runs
  over horizontal bands of the image, top to bottom, and z_t only sees the rows of band t
  and below ("from t onward"): the image is flipped upside down and read by convolutions
  that are causal in the vertical direction.
- `LatentToFeatures` — z → (N, H, W, C) conditioning features for the PixelCNN decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_LOG_STD = -9.0
#: Posterior std ≤ e² ≈ 7.4: latents are coded on a bounded grid ([−32, 32],
#: `bbcodec.codec.CodingSettings.grid_bound`), and an unbounded std lets the one-sample KL
#: run away early in training (seen on CIFAR-10: std 10⁶ after 20 steps).
MAX_LOG_STD = 2.0


def _gaussian(out: torch.Tensor):
    mean, log_std = out.chunk(2, dim=-1)
    return mean, torch.exp(log_std.clamp(MIN_LOG_STD, MAX_LOG_STD))


class ConvEncoder(nn.Module):
    """x (N, C_in, H, W) in [-1, 1] → (mean, std), each (N, D).

    H and W must be divisible by 4.
    """

    def __init__(self, in_ch: int, image_hw: tuple[int, int], latent_dim: int, channels: int = 64):
        super().__init__()
        h, w = image_hw
        self.convs = nn.Sequential(
            nn.Conv2d(in_ch, channels // 2, 3, padding=1), nn.ELU(),
            nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ELU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1), nn.ELU(),
        )  # fmt: skip
        self.fc = nn.Sequential(
            nn.Linear(channels * (h // 4) * (w // 4), 512), nn.ELU(), nn.Linear(512, 2 * latent_dim)
        )

    def forward(self, x: torch.Tensor):
        return _gaussian(self.fc(self.convs(x).flatten(1)))


class _UpCausalConv(nn.Module):
    """Convolution whose output row r sees input rows ≤ r only (padding on top)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_h: int, kernel_w: int):
        super().__init__()
        self.kernel_h, self.kernel_w = kernel_h, kernel_w
        self.conv = nn.Conv2d(in_ch, out_ch, (kernel_h, kernel_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pw = self.kernel_w // 2
        return self.conv(F.pad(x, (pw, pw, self.kernel_h - 1, 0)))


class AntiCausalEncoder(nn.Module):
    """x (N, C_in, H, W) → (mean, std), each (N, n·d), z_t depending only on rows ≥ t·H/n.

    Args:
        n_steps: n bands; H must be divisible by n.
        step_dim: d latent dimensions per band.
    """

    def __init__(self, in_ch, image_hw, n_steps: int, step_dim: int, channels: int = 32):
        super().__init__()
        h, w = image_hw
        if h % n_steps:
            raise ValueError(f"image height {h} is not divisible by {n_steps} latent steps")
        self.n_steps, self.step_dim, self.band = n_steps, step_dim, h // n_steps
        self.convs = nn.ModuleList(
            [_UpCausalConv(in_ch, channels, 5, 5)]
            + [_UpCausalConv(channels, channels, 5, 3) for _ in range(3)]
        )
        self.fc = nn.Sequential(
            nn.Linear(channels * w, 256), nn.ELU(), nn.Linear(256, 2 * step_dim)
        )

    def forward(self, x: torch.Tensor):
        h = x.flip(2)  # bottom row first: "causal" here means "rows at or below" in the image
        for conv in self.convs:
            h = F.elu(conv(h))
        height = x.shape[2]
        # Band t starts at image row t·band, i.e. flipped row height − 1 − t·band, which has
        # seen every flipped row before it = every image row from t·band down.
        rows = torch.tensor([height - 1 - t * self.band for t in range(self.n_steps)])
        per_step = h[:, :, rows].permute(0, 2, 1, 3).flatten(2)  # (N, n, C·W)
        mean, std = _gaussian(self.fc(per_step))
        return mean.flatten(1), std.flatten(1)


class LatentToFeatures(nn.Module):
    """z (N, D) → conditioning features (N, H, W, C_out) via a linear map and two ×2
    upsamplings of ``channels`` wide, then a 1×1 projection if ``out_channels`` differs."""

    def __init__(
        self,
        latent_dim: int,
        image_hw: tuple[int, int],
        channels: int = 64,
        out_channels: int | None = None,
    ):
        super().__init__()
        self.h4, self.w4 = image_hw[0] // 4, image_hw[1] // 4
        self.channels = channels
        self.fc = nn.Linear(latent_dim, channels * self.h4 * self.w4)
        self.up = nn.Sequential(
            nn.ELU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ELU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
        )  # fmt: skip
        out = out_channels or channels
        self.project = nn.Conv2d(channels, out, 1) if out != channels else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.fc(z).view(-1, self.channels, self.h4, self.w4))
        if self.project is not None:
            h = self.project(F.elu(h))
        return h.permute(0, 2, 3, 1).contiguous()
