"""Tiny random models and images shared by the codec tests (never trained)."""

from __future__ import annotations

import numpy as np
import torch

from bbcodec.models.vae import LatentVariableModel, ModelConfig


def tiny_config(family: str, kind: str, hw=(8, 8), latent_dim: int = 4) -> ModelConfig:
    """A VLAE or δ-VAE small enough to code in milliseconds."""
    return ModelConfig(
        family, kind, hw, latent_dim=latent_dim, n_steps=4, step_dim=2, channels=8, n_blocks=1,
        made_hidden=16, kernel_size=3,
    )  # fmt: skip


def random_model(config: ModelConfig, seed: int = 0) -> LatentVariableModel:
    """A randomly initialised model in eval mode (seeded)."""
    torch.manual_seed(seed)
    return LatentVariableModel(config).eval()


def random_images(config: ModelConfig, n: int, seed: int = 0) -> np.ndarray:
    """Uniformly random uint8 images of the config's kind and shape."""
    shape = (n, *config.image_hw) + ((3,) if config.kind == "rgb" else ())
    high = 2 if config.kind == "binary" else 256
    return np.random.default_rng(seed).integers(0, high, shape, dtype=np.uint8)
