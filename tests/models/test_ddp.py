"""`bbcodec train` under torchrun: two processes on the CPU (gloo, over loopback) train a
tiny model (`bbcodec.models.train.torchrun_processes`).

- One run folder, written by rank 0 alone, that keeps the checkpoint/resume contract: the
  checkpoint loads safely, the model loads, and running again continues from the
  checkpoint — on two processes under a time budget (the processes must agree when to
  stop) or on one.
- A step on two processes is the step one process takes: with the z noise off, two
  processes with unequal shares of each batch end with the weights of one process.
- Bad set-ups are one-line errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_config

from bbcodec import zoo
from bbcodec.cli.main import main
from bbcodec.errors import UsageError
from bbcodec.models import train as train_module
from bbcodec.models.presets import Recipe
from bbcodec.models.train import CHECKPOINT_KEYS, load_checkpoint, torchrun_processes, train

pytestmark = pytest.mark.usefixtures("isolated")

#: A tiny VLAE on 28×28 bits; 7 images a step, so the two processes take 4 and 3.
TINY = ("--preset", "vlae-bmnist", "--channels", "8", "--n-blocks", "1", "--latent-dim", "4",
        "--kernel-size", "3", "--batch-size", "7", "--threads", "1")  # fmt: skip
N_IMAGES = 28
CONFIG = tiny_config("vlae", "binary")
#: Runs the `bbcodec` command with the z noise off (z = the posterior mean): the steps of
#: one and of several processes are then the same up to float rounding.
ZERO_NOISE = """
import sys
import torch
torch.randn_like = torch.zeros_like
from bbcodec.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGV`` (a script or ``-m module``, then its
    arguments) in ``cwd``; fails the test unless it exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", zoo.WEIGHTS_DIR_ENV: str(cwd / "zoo")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", *argv]  # fmt: skip
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(run folder, finished torchrun) of one epoch on two processes, z noise off."""
    work = tmp_path_factory.mktemp("ddp")
    np.save(
        work / "bits.npy", np.random.default_rng(0).integers(0, 2, (N_IMAGES, 28, 28), np.uint8)
    )
    (work / "zero_noise.py").write_text(ZERO_NOISE)
    done = _torchrun(work, "zero_noise.py", "train", "--data", "bits.npy", "--run-dir", "run",
                     "--epochs", "1", *TINY)  # fmt: skip
    return work / "run", done


def test_two_processes_write_one_run_folder(two_process_run):
    run_dir, done = two_process_run
    files = {"checkpoint.pt", "log.jsonl", "run.json", "model.safetensors"}
    assert {p.name for p in run_dir.iterdir()} == files
    assert done.stdout.count("trained vlae-bmnist") == 1, done.stdout  # rank 0 reports
    finals = [entry for entry in _log(run_dir) if "final_valid_neg_elbo_bpd" in entry]
    assert len(finals) == 1 and finals[0]["step"] == 4  # one writer
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")  # the safe reader
    assert set(CHECKPOINT_KEYS) <= set(ckpt)
    assert ckpt["state"]["step"] == 4 and ckpt["state"]["images"] == N_IMAGES
    assert zoo.load_model(run_dir).config == ckpt["config"]


def test_a_step_on_two_processes_is_the_step_of_one(two_process_run, monkeypatch):
    run_dir, _ = two_process_run
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    data = str(run_dir.parent / "bits.npy")
    assert main(["train", "--data", data, "--run-dir", "one", "--epochs", "1", *TINY]) == 0
    two = load_file(run_dir / "model.safetensors")
    one = load_file(Path("one") / "model.safetensors")
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)


def test_a_run_resumes_on_two_processes_under_a_time_budget(two_process_run, tmp_path):
    run_dir = shutil.copytree(two_process_run[0], tmp_path / "run")
    shutil.copy(two_process_run[0].parent / "bits.npy", tmp_path)
    done = _torchrun(tmp_path, "-m", "bbcodec.cli.main", "train", "--data", "bits.npy",
                     "--run-dir", "run", "--minutes", "0.05", *TINY)  # fmt: skip
    assert done.stdout.count("resuming run at step 4") == 1, done.stdout
    state = load_checkpoint(run_dir / "checkpoint.pt")["state"]
    assert state["step"] > 4 and state["images"] == 7 * state["step"]
    assert state["seconds"] >= 3.0  # the budget counts both sessions
    finals = [entry["step"] for entry in _log(run_dir) if "final_valid_neg_elbo_bpd" in entry]
    assert finals == [4, state["step"]]


def test_a_run_of_two_processes_resumes_in_one(two_process_run, tmp_path, capsys):
    run_dir = shutil.copytree(two_process_run[0], tmp_path / "run")
    data = str(two_process_run[0].parent / "bits.npy")
    assert main(["train", "--data", data, "--run-dir", str(run_dir), "--epochs", "2", *TINY]) == 0
    assert "at step 4" in capsys.readouterr().out
    state = load_checkpoint(run_dir / "checkpoint.pt")["state"]
    assert state["step"] == 8 and state["images"] == 2 * N_IMAGES


def test_a_delta_vae_fits_its_aux_prior_on_rank_0(tmp_path):
    np.save(tmp_path / "bits.npy", np.random.default_rng(0).integers(0, 2, (16, 28, 28), np.uint8))
    _torchrun(tmp_path, "-m", "bbcodec.cli.main", "train", "--preset", "delta-vae-bmnist",
              "--data", "bits.npy", "--run-dir", "run", "--epochs", "1", "--channels", "8",
              "--n-blocks", "1", "--n-steps", "2", "--step-dim", "2", "--kernel-size", "3",
              "--batch-size", "8", "--aux-prior-steps", "3", "--threads", "1")  # fmt: skip
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]
    assert state["step"] == 2 and state["aux_step"] == 3
    assert zoo.load_model(tmp_path / "run").aux_prior is not None


# ----- errors ---------------------------------------------------------------------------


@pytest.fixture
def under_torchrun(monkeypatch):
    """The environment torchrun gives its first process of two (no group joined)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_a_world_size_without_torchrun_is_refused(under_torchrun, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK")
    with pytest.raises(UsageError) as exc, torchrun_processes("cpu"):
        pass
    assert _one_line(exc).endswith("LOCAL_RANK is not set: start the processes with torchrun")


def test_a_numbered_gpu_under_torchrun_is_refused(under_torchrun):
    with pytest.raises(UsageError) as exc, torchrun_processes("cuda:1"):
        pass
    assert _one_line(exc).startswith("--device cuda:1: under torchrun each process trains on GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_nccl_without_cuda_is_refused(under_torchrun):
    with pytest.raises(UsageError) as exc, torchrun_processes("cuda"):
        pass
    assert "CUDA is not available on this machine; use --device cpu" in _one_line(exc)


def test_fewer_images_per_step_than_processes_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(train_module, "_rank_and_world_size", lambda: (0, 2))
    images = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(UsageError) as exc:
        train(CONFIG, Recipe(batch_size=1), images, images, tmp_path / "run", epochs=1)
    assert _one_line(exc) == (
        "--batch-size 1 is smaller than the 2 processes: each needs at least one image per step"
    )
    assert not (tmp_path / "run").exists()
