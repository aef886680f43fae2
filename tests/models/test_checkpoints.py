"""Training checkpoints are read safely (`bbcodec.models.train.load_checkpoint`).

A ``checkpoint.pt`` is a pickle: read with ``weights_only=False`` a crafted one runs code.
Resuming a run (`train`) and ``bbcodec export-model --interim`` (`weights_from_checkpoint`)
read it with ``weights_only=True``: a crafted or damaged file is one `WeightsError` line,
and its payload never runs. The committed checkpoints of the shipped runs load that way.
"""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO
from tiny import random_images, tiny_config

from bbcodec.cli.main import main
from bbcodec.errors import WeightsError
from bbcodec.models.presets import PRESETS, Recipe
from bbcodec.models.train import (
    CHECKPOINT,
    load_checkpoint,
    train,
    weights_from_checkpoint,
)
from bbcodec.models.vae import LatentVariableModel

UNSAFE = "not a bbcodec checkpoint or unsafe to load"
CONFIG = tiny_config("vlae", "binary")

pytestmark = pytest.mark.usefixtures("isolated")


class _TouchOnLoad:
    """Unpickling this creates ``path``: what a crafted checkpoint could do (harmlessly)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint with every key `train` writes, whose state creates ``marker`` when
    unpickled."""
    model = LatentVariableModel(CONFIG)
    torch.save(
        {"config": CONFIG.to_json(), "model": model.state_dict(), "optimizer": {},
         "state": _TouchOnLoad(marker), "numpy_rng": {}, "torch_rng": torch.get_rng_state()},
        path,
    )  # fmt: skip
    return path


def _run_with(tmp_path: Path, payload: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CHECKPOINT).write_bytes(payload.read_bytes())
    return run_dir


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """(run folder holding a crafted checkpoint.pt, the file its payload would create)."""
    # The payload is live: loaded the unsafe way, it does create its file.
    proof = tmp_path / "proof"
    torch.load(_crafted_checkpoint(tmp_path / "proof.pt", proof), weights_only=False)
    assert proof.exists()
    marker = tmp_path / "pwned"
    run_dir = _run_with(tmp_path, _crafted_checkpoint(tmp_path / "crafted.pt", marker))
    return run_dir, marker


def _assert_refused(exc: pytest.ExceptionInfo, path: Path) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}: {UNSAFE} (") and "\n" not in message, message


def test_resuming_from_a_crafted_checkpoint_runs_no_code(crafted):
    run_dir, marker = crafted
    before = sorted(p.name for p in run_dir.iterdir())
    images = random_images(CONFIG, 16)
    with pytest.raises(WeightsError) as exc:
        train(CONFIG, Recipe(batch_size=8), images, images[:8], run_dir, epochs=1)
    _assert_refused(exc, run_dir / CHECKPOINT)
    assert "Unsupported global" in str(exc.value)  # the reason, in one line
    assert not marker.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no log, no weights


def test_exporting_a_crafted_checkpoint_runs_no_code(crafted, tmp_path, capsys):
    run_dir, marker = crafted
    out = tmp_path / "interim.safetensors"
    with pytest.raises(WeightsError) as exc:
        weights_from_checkpoint(run_dir, out)
    _assert_refused(exc, run_dir / CHECKPOINT)
    assert not marker.exists() and not out.exists()

    # The command: one line, nothing written.
    data = tmp_path / "bits.npy"
    np.save(data, random_images(CONFIG, 8))
    code = main(["export-model", str(run_dir), "--name", "x", "--data", str(data), "--interim"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert UNSAFE in err and "Traceback" not in err
    assert not marker.exists() and not (run_dir / "interim.safetensors").exists()


def _tiny_checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint of a tiny one-epoch run."""
    images = random_images(CONFIG, 16)
    train(CONFIG, Recipe(batch_size=8), images, images[:8], tmp_path / "real", epochs=1)
    return tmp_path / "real" / CHECKPOINT


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("empty", "EOFError"),
        ("text", "UnpicklingError"),
        ("truncated", "("),
        ("a list", "holds a list, not a dict"),
        ("no optimizer", "no optimizer"),
        ("bad state", "its state lacks step, images or seconds"),
        ("bad config", "bad model config"),
    ],
)
def test_damaged_checkpoints_are_one_line_errors(tmp_path, damage, reason):
    path = tmp_path / "checkpoint.pt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    elif damage == "truncated":
        data = _tiny_checkpoint(tmp_path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        ckpt = torch.load(_tiny_checkpoint(tmp_path), weights_only=True)
        if damage == "a list":
            ckpt = [ckpt]
        elif damage == "no optimizer":
            del ckpt["optimizer"]
        elif damage == "bad state":
            ckpt["state"] = {"step": "many"}
        else:
            ckpt["config"] = '{"family": "nonsense"}'
        torch.save(ckpt, path)
    with pytest.raises(WeightsError) as exc:
        load_checkpoint(path)
    _assert_refused(exc, path)
    assert reason in str(exc.value)


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path)
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["model"] = {name: t[..., :1] for name, t in ckpt["model"].items()}  # wrong shapes
    torch.save(ckpt, checkpoint)
    images = random_images(CONFIG, 16)
    with pytest.raises(WeightsError, match=r"its model does not fit: RuntimeError") as exc:
        train(CONFIG, Recipe(batch_size=8), images, images[:8], checkpoint.parent, epochs=2)
    _assert_refused(exc, checkpoint)
    with pytest.raises(WeightsError, match="its model does not fit"):
        weights_from_checkpoint(checkpoint.parent, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("name", ["vlae-cifar10", "delta-vae-cifar10"])
def test_the_committed_checkpoints_load_safely_and_resume(name):
    """What `train` restores on resume, from the committed checkpoints (weights_only)."""
    path = REPO / "checkpoints" / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == PRESETS[name][0]
    model = LatentVariableModel(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    torch.optim.Adam(model.parameters()).load_state_dict(ckpt["optimizer"])
    np.random.default_rng(0).bit_generator.state = ckpt["numpy_rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    assert ckpt["state"]["step"] > 0 and ckpt["state"]["seconds"] > 0
