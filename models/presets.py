"""Named model configurations and their training recipes (what ``bbcodec train --preset`` uses)."""

from __future__ import annotations

import dataclasses

from bbcodec.models.vae import ModelConfig


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training settings. ``aux_prior_steps`` > 0 fits the δ-VAE's auxiliary prior afterwards."""

    batch_size: int = 64
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-4  # cosine decay over the time/epoch budget
    objective: str = "elbo"
    beta: float = 1.0
    free_bits_nats: float = 0.0
    aux_prior_steps: int = 0
    valid_split: str = "test"


PRESETS: dict[str, tuple[ModelConfig, Recipe]] = {
    "vlae-bmnist": (
        ModelConfig("vlae", "binary", (28, 28), latent_dim=32, channels=64, kernel_size=7, n_blocks=4),
        Recipe(valid_split="valid"),
    ),
    "delta-vae-bmnist": (
        ModelConfig(
            "delta-vae", "binary", (28, 28), n_steps=7, step_dim=8, delta_nats=10.0,
            channels=64, kernel_size=7, n_blocks=4,
        ),
        Recipe(valid_split="valid", aux_prior_steps=3000),
    ),
    "vlae-mnist": (
        ModelConfig("vlae", "grey", (28, 28), latent_dim=32, channels=64, kernel_size=7, n_blocks=4, n_mixtures=5),
        Recipe(),
    ),
    "vlae-cifar10": (
        ModelConfig(
            "vlae", "rgb", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=7, n_blocks=4, n_mixtures=5,
        ),
        Recipe(learning_rate=2e-3),
    ),
    # vlae-cifar10 grown (bbcodec train --init-from): 9×9 neighbourhood, 6 blocks.
    "vlae-cifar10-k9": (
        ModelConfig(
            "vlae", "rgb", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=9, n_blocks=6, n_mixtures=5,
        ),
        Recipe(learning_rate=1e-3),
    ),
    "delta-vae-cifar10": (
        ModelConfig(
            "delta-vae", "rgb", (32, 32), n_steps=8, step_dim=16, delta_nats=20.0,
            channels=96, feature_channels=32, kernel_size=7, n_blocks=4, n_mixtures=10,
        ),
        Recipe(learning_rate=2e-3, aux_prior_steps=3000),
    ),
}  # fmt: skip
