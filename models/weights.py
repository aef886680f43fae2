"""Model weights on disk: safetensors with the `ModelConfig` in the metadata."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bbcodec.errors import WeightsError
from bbcodec.models.vae import LatentVariableModel, ModelConfig


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    model: LatentVariableModel, path: Path, extra: dict[str, str] | None = None
) -> None:
    """Write the model's parameters and config atomically to ``path`` (.safetensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": model.config.to_json(), **(extra or {})}
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def load_weights(path: Path, expected_sha256: str | None = None) -> LatentVariableModel:
    """Rebuild a model from a safetensors file, optionally checking its sha256 first.

    Raises:
        WeightsError: missing file, hash mismatch, or a file that is not bbcodec weights.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise WeightsError(
            f"{path} does not match its recorded sha256: the file was changed or damaged"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        config = ModelConfig.from_json(metadata["config"])
        model = LatentVariableModel(config)
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, KeyError, ValueError, TypeError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{path} is not a usable bbcodec weights file: {exc}") from None
    model.eval()
    return model
