"""The model zoo: shipped weights, their registry and model cards.

Shipped models live beside the torch code, as package data::

    models/weights/                 (installed as bbcodec/models/weights/)
    ├── registry.json               {name: {"file", "sha256", "dataset",
    │                                       "test_neg_elbo_bpd", "test_neg_elbo_nats",
    │                                       "card", "n_params", "family",
    │                                       "tile_latents"}}
    ├── <name>.safetensors          weights + `ModelConfig` in the metadata
    └── <name>.md                   model card: data, recipe, test −ELBO, sha256

Everything loads offline. A registered name is loaded with its sha256 checked, so a changed
or damaged file is a clear `WeightsError`, never a silently different model.

The weights folder is, in order of precedence: the ``weights_dir`` argument, the
``BBCODEC_WEIGHTS_DIR`` environment variable, the package's own ``weights/`` folder.

Model cards are written here too: `register_model` writes a card from the model and the
rows it is given; `register_evaluated` (what ``bbcodec train --export`` and ``bbcodec
export-model`` call) builds those rows from an evaluation and the weights' training
metadata (`card_rows`).

Example:
    >>> import tempfile, torch
    >>> from bbcodec.models.vae import LatentVariableModel, ModelConfig
    >>> from bbcodec.models.weights import save_weights
    >>> config = ModelConfig("vlae", "binary", (8, 8), latent_dim=4, channels=8,
    ...                      n_blocks=1, made_hidden=16, kernel_size=3)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_weights(LatentVariableModel(config), Path(d) / "run.safetensors")
    ...     info = register_model("tiny", Path(d) / "run.safetensors", dataset="random 8x8",
    ...                           test_neg_elbo_bpd=1.0, test_neg_elbo_nats=44.4, weights_dir=d)
    ...     [m.name for m in list_models(weights_dir=d)], load_model("tiny", weights_dir=d).config.family
    (['tiny'], 'vlae')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bbcodec.errors import UsageError, WeightsError
from bbcodec.plan import TILE_LATENTS

if TYPE_CHECKING:
    from bbcodec.models.evaluate import EvalResult
    from bbcodec.models.vae import LatentVariableModel

__all__ = [
    "REGISTRY_FILE",
    "WEIGHTS_DIR_ENV",
    "ModelInfo",
    "card_rows",
    "check_name",
    "list_models",
    "load_model",
    "register_evaluated",
    "register_model",
    "registered_tile_latents",
    "weights_folder",
]

WEIGHTS_DIR_ENV = "BBCODEC_WEIGHTS_DIR"
REGISTRY_FILE = "registry.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REQUIRED = ("file", "sha256", "dataset", "test_neg_elbo_bpd", "test_neg_elbo_nats", "card")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """One registry entry.

    Attributes:
        name: the name `load_model` accepts.
        file: weights file name inside the weights folder.
        sha256: hex digest the file must match.
        dataset: what it was trained and tested on.
        test_neg_elbo_bpd: test −ELBO in bits/dim (one z-sample per image, coding prior).
        test_neg_elbo_nats: the same in nats per image.
        card: model card file name inside the weights folder.
        n_params: trainable parameters (None if the entry does not say).
        family: ``vlae`` or ``delta-vae`` (None if the entry does not say).
        path: absolute path of the weights file.
        tile_latents: how the model's tiled images code their latents by default
            (`bbcodec.codec.CodingSettings.tile_latents`): ``"prior-mean"`` for a model
            whose decoder was measured to ignore its latent (`benchmarks/tile_latents.py`,
            numbers in the card); ``"bits-back"`` if the entry does not say.
    """

    name: str
    file: str
    sha256: str
    dataset: str
    test_neg_elbo_bpd: float
    test_neg_elbo_nats: float
    card: str
    n_params: int | None
    family: str | None
    path: Path
    tile_latents: str = "bits-back"

    @property
    def card_path(self) -> Path:
        return self.path.parent / self.card


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise `UsageError`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    return name


def weights_folder(override: str | Path | None = None) -> Path:
    """The folder holding the registry, weights and cards (see the module docstring)."""
    if override is not None:
        return Path(override)
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env)
    import bbcodec.models

    return Path(bbcodec.models.__file__).resolve().parent / "weights"


def _read_registry(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable model registry: {exc}") from None
    if not isinstance(registry, dict) or not all(isinstance(v, dict) for v in registry.values()):
        raise WeightsError(f"{path}: the model registry must map names to entries")
    return registry


def _info(folder: Path, name: str, entry: dict[str, Any]) -> ModelInfo:
    where = folder / REGISTRY_FILE
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise WeightsError(f"{where}: entry {name!r} lacks {', '.join(missing)}")
    for key in ("file", "card"):
        value = entry[key]
        if not isinstance(value, str) or Path(value).name != value or value in ("", ".", ".."):
            raise WeightsError(
                f"{where}: entry {name!r} has {key} {value!r}; expected a plain file name"
            )
    tile_latents = entry.get("tile_latents", "bits-back")
    if tile_latents not in TILE_LATENTS:
        raise WeightsError(
            f"{where}: entry {name!r} has tile_latents {tile_latents!r}; expected one of "
            f"{', '.join(TILE_LATENTS)}"
        )
    try:
        return ModelInfo(
            name=name,
            file=entry["file"],
            sha256=str(entry["sha256"]),
            dataset=str(entry["dataset"]),
            test_neg_elbo_bpd=float(entry["test_neg_elbo_bpd"]),
            test_neg_elbo_nats=float(entry["test_neg_elbo_nats"]),
            card=entry["card"],
            n_params=None if entry.get("n_params") is None else int(entry["n_params"]),
            family=entry.get("family"),
            path=(folder / entry["file"]).resolve(),
            tile_latents=tile_latents,
        )
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: entry {name!r} is malformed: {exc}") from None


def list_models(weights_dir: str | Path | None = None) -> list[ModelInfo]:
    """The registered models, sorted by name; empty if nothing is shipped yet.

    Raises:
        WeightsError: the registry exists but is malformed.
    """
    folder = weights_folder(weights_dir)
    return [_info(folder, name, entry) for name, entry in sorted(_read_registry(folder).items())]


def load_model(
    name_or_path: str | Path, device: str = "cpu", weights_dir: str | Path | None = None
) -> LatentVariableModel:
    """Load a model by registered name (sha256 checked) or from a weights path, offline.

    Args:
        name_or_path: a registered name (see `list_models`), a ``.safetensors`` file, or a
            training run folder holding ``model.safetensors``.
        device: torch device to move the model to.
        weights_dir: registry folder override (tests, private zoos).

    Returns:
        A `LatentVariableModel` in eval mode.

    Raises:
        WeightsError: unknown name and no such file (the message lists the known models),
            a hash mismatch, or a file that is not bbcodec weights.
    """
    from bbcodec.models.weights import load_weights

    folder = weights_folder(weights_dir)
    path = Path(name_or_path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    try:
        registry = _read_registry(folder)
    except WeightsError:
        if not path.is_file():
            raise
        registry = {}  # a broken registry must not stop loading a file by path
    key = str(name_or_path)
    if key in registry:
        info = _info(folder, key, registry[key])
        if not info.path.is_file():
            raise WeightsError(
                f"model {key!r} is registered but its weights {info.path} are missing"
            )
        return load_weights(info.path, info.sha256).to(device)
    if path.is_file():
        return load_weights(path).to(device)
    known = ", ".join(sorted(registry)) or f"none shipped yet in {folder}"
    raise WeightsError(
        f"{key!r} is neither a registered model nor a weights file (known models: {known})"
    )


def registered_tile_latents(name: str, weights_dir: str | Path | None = None) -> str:
    """How the registered model ``name`` codes the latents of tiled images by default
    (`ModelInfo.tile_latents`); ``"bits-back"`` for any other name (a weights path)."""
    folder = weights_folder(weights_dir)
    entry = _read_registry(folder).get(name)
    return "bits-back" if entry is None else _info(folder, name, entry).tile_latents


def record_tile_latents(name: str, tile_latents: str, weights_dir: str | Path | None = None):
    """Record in the registry how the registered model ``name`` codes the latents of tiled
    images by default (``"bits-back"`` removes the key: the default).

    Raises:
        UsageError: ``name`` is not registered, or ``tile_latents`` is not one of
            `TILE_LATENTS`.
    """
    if tile_latents not in TILE_LATENTS:
        raise UsageError(f"tile_latents must be one of {', '.join(TILE_LATENTS)}")
    folder = weights_folder(weights_dir)
    with _locked(folder):
        registry = _read_registry(folder)
        if name not in registry:
            raise UsageError(f"{name!r} is not a registered model")
        registry[name].pop("tile_latents", None)
        if tile_latents != "bits-back":
            registry[name]["tile_latents"] = tile_latents
        _write_registry(folder, registry)


def _write_registry(folder: Path, registry: dict[str, dict[str, Any]]) -> None:
    """Rewrite the registry atomically (call under `_locked`)."""
    _write_atomic(folder / REGISTRY_FILE, json.dumps(registry, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked(folder: Path):
    """Serialise registry updates between processes (a no-op where flock is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _card(
    name: str, info: dict[str, Any], model, details: dict[str, Any] | None, notes: str
) -> str:
    c = model.config
    paper = "VLAE (Chen et al. 2017)" if c.family == "vlae" else "δ-VAE (Razavi et al. 2019)"
    shape = f"{c.image_hw[0]}×{c.image_hw[1]}"
    elbo = (
        f"{info['test_neg_elbo_bpd']:.4f} bits/dim, {info['test_neg_elbo_nats']:.2f} nats/image"
        " (one z-sample per image, coding prior)"
    )
    lines = [
        f"# {name}",
        "",
        f"{paper} for {c.kind} {shape} images, trained on {info['dataset']}.",
        "",
        "| | |",
        "|---|---|",
        f"| test −ELBO | {elbo} |",
        f"| parameters | {info['n_params']:,} |",
        f"| latent dims | {c.total_latent_dim} |",
        f"| decoder receptive field | {model.decoder.receptive_field} |",
        f"| weights | `{info['file']}` |",
        f"| sha256 | `{info['sha256']}` |",
        "",
        "## Model config",
        "",
        "```json",
        json.dumps(dataclasses.asdict(c), indent=2, sort_keys=True),
        "```",
    ]
    if details:
        lines += ["", "## Training and evaluation", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in details.items()]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def register_model(
    name: str,
    weights_path: str | Path,
    *,
    dataset: str,
    test_neg_elbo_bpd: float,
    test_neg_elbo_nats: float,
    details: dict[str, Any] | None = None,
    notes: str = "",
    weights_dir: str | Path | None = None,
) -> ModelInfo:
    """Add or update a shipped model: copy its weights in, write its card, update the registry.

    The weights are copied to ``<weights_dir>/<name>.safetensors``, checked to load, hashed,
    and described in ``<name>.md``; the registry is rewritten atomically (and under a lock,
    so two trainings finishing together do not lose each other's entries).

    Args:
        name: lower-case letters, digits, ``.``, ``_``, ``-``.
        weights_path: a ``.safetensors`` file written by `save_weights` (e.g. a run's
            ``model.safetensors``).
        dataset: what the model was trained and tested on, e.g. ``"binarized MNIST"``.
        test_neg_elbo_bpd, test_neg_elbo_nats: the test −ELBO (see `bbcodec.models.evaluate`).
        details: extra rows for the card (recipe, training time, evaluation results).
        notes: free markdown appended to the card.
        weights_dir: registry folder override.

    Returns:
        The new `ModelInfo`.

    Raises:
        UsageError: a bad name. WeightsError: the weights do not load.
    """
    from bbcodec.models.weights import load_weights, sha256_file

    check_name(name)
    folder = weights_folder(weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(weights_path)
    model = load_weights(source)  # refuse to register something that does not load
    target = folder / f"{name}.safetensors"
    if source.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    entry = {
        "file": target.name,
        "sha256": sha256_file(target),
        "dataset": dataset,
        "test_neg_elbo_bpd": float(test_neg_elbo_bpd),
        "test_neg_elbo_nats": float(test_neg_elbo_nats),
        "card": f"{name}.md",
        "n_params": sum(p.numel() for p in model.parameters()),
        "family": model.config.family,
    }
    _write_atomic(folder / entry["card"], _card(name, entry, model, details, notes))
    with _locked(folder):
        registry = _read_registry(folder)
        registry[name] = entry
        _write_registry(folder, registry)
    return _info(folder, name, entry)


def card_rows(
    result: EvalResult,
    data: str | Path,
    split: str,
    details: dict[str, Any] | None = None,
    weights_metadata: dict[str, str] | None = None,
) -> dict[str, str]:
    """The "Training and evaluation" rows of a model card, in order: ``details`` (preset,
    recipe, seed, …), the training time and images the weights' metadata records (and
    whether they are interim weights), then the evaluation on ``split`` of ``data``.

    Args:
        result: the weights evaluated on ``split`` of ``data`` (`bbcodec.models.evaluate`).
        data, split: what ``result`` was measured on.
        details: the first rows, as given.
        weights_metadata: the safetensors metadata of the weights (``train_seconds``,
            ``train_images``, ``interim``, as `bbcodec.models.train` writes them).
    """
    rows = dict(details or {})
    metadata = weights_metadata or {}
    if "train_seconds" in metadata:
        rows["training time"] = f"{float(metadata['train_seconds']) / 60:.1f} min"
        if "train_images" in metadata:
            seconds, images = float(metadata["train_seconds"]), int(metadata["train_images"])
            speed = f" ({images / seconds:.0f} images/s)" if seconds > 0 else ""
            rows["training images"] = f"{images:,}{speed}"
    if metadata.get("interim") == "true":
        rows["status"] = (
            "interim: the training run has not finished; these are its last checkpoint's weights"
        )
    r = result
    rows.update({
        f"{split} data": f"{data} [{split}], {r.n_images} images",
        f"{split} KL (rate)": f"{r.kl_bpd:.4f} bits/dim, {r.kl_nats:.3f} nats/image",
        f"{split} recon (distortion)": f"{r.recon_bpd:.4f} bits/dim, {r.recon_nats:.3f} nats/image",
        "active units": f"{r.active_units} / {r.latent_dim}",
    })  # fmt: skip
    if r.delta_nats is not None:
        rows["KL under the AR(1) training prior"] = f"{r.kl_train_prior_nats:.3f} nats/image"
        rows["committed rate δ"] = f"{r.delta_nats:.3f} nats"
    return rows


def register_evaluated(
    name: str,
    weights_path: str | Path,
    result: EvalResult,
    *,
    data: str | Path,
    split: str,
    dataset: str | None = None,
    details: dict[str, Any] | None = None,
    weights_dir: str | Path | None = None,
    notes: str = "",
) -> ModelInfo:
    """`register_model` with an evaluation: ``result`` (the weights on ``split`` of
    ``data``) gives the registry's −ELBO and, with the weights' training metadata, the
    card's rows (`card_rows`).

    Args:
        name, weights_path, weights_dir: as for `register_model`.
        result: the evaluation (`bbcodec.models.evaluate.evaluate`) of these weights.
        data, split: what ``result`` was measured on.
        dataset: the registry's dataset label (default: the data file's name).
        details: the card's first rows (preset, recipe, seed, …).
        notes: free markdown appended to the card (the run's validation history).

    Raises:
        UsageError: a bad name. WeightsError: the weights do not load.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{weights_path} is not a usable bbcodec weights file: {exc}") from None
    return register_model(
        name, weights_path, dataset=dataset or Path(data).stem,
        test_neg_elbo_bpd=result.neg_elbo_bpd, test_neg_elbo_nats=result.neg_elbo_nats,
        details=card_rows(result, data, split, details, metadata), weights_dir=weights_dir,
        notes=notes,
    )  # fmt: skip
