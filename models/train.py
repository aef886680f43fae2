"""Training: a resumable loop with a time or epoch budget, checkpoints and a progress log.

A run lives in one folder:

- ``checkpoint.pt`` — model, optimiser, progress and RNG state, rewritten atomically every
  few minutes; a run started again on the same folder resumes from it. It holds tensors and
  plain Python values only and is read with ``torch.load(weights_only=True)``
  (`load_checkpoint`), so a crafted file cannot run code: it is a `WeightsError`;
- ``log.jsonl`` — one JSON line per log interval: step, epoch, images seen, wall seconds,
  training loss (bits/dim) and, every validation interval, validation −ELBO (bits/dim);
- ``model.safetensors`` — the final weights with the config in the metadata (`export`);
- ``run.json`` — the preset and the overrides of it the run trains with (`RunRecord`). Once
  the run has a checkpoint they are binding: a resumed run keeps them, and a command whose
  overrides conflict with them is refused (`settle_run`). A run with a checkpoint but no
  record (from before records) trained with its plain preset.

The learning rate follows a cosine from ``learning_rate`` to ``final_learning_rate`` over the
budget. The δ-VAE's auxiliary prior is fitted afterwards (``aux_prior_steps``) with the rest
of the model frozen, maximising E_{x, z~q(z|x)} log p_aux(z).

Under torchrun a run trains on several processes (`torchrun_processes`; DDP, gloo on the CPU,
nccl on CUDA). Every step takes the batch one process would take — ``batch_size`` images,
in the same order — and splits it among the processes; DistributedDataParallel averages
their gradients, each weighted by its share, into the gradient of the batch's mean loss.
So the recipe's batch size and learning-rate schedule mean what they mean in one process,
and a run may be resumed with another number of processes. (The free-bits objective clamps
each share's batch-mean KL.) Each process draws its own z noise. Rank 0's clock counts the
time budget and every process adds its step times, so all see the same progress and stop
at the same step. Rank 0 alone reads the checkpoint (and sends it to the others), writes
the run folder, validates, shows the progress bar and fits the δ-VAE's auxiliary prior; the
others end after the training loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bbcodec.errors import UsageError, WeightsError
from bbcodec.models.grow import grow_into
from bbcodec.models.presets import (
    UNUSED_KNOBS,
    Recipe,
    changed_knobs,
    flags,
    knob_values,
    with_overrides,
)
from bbcodec.models.vae import LatentVariableModel, ModelConfig, nats_to_bpd
from bbcodec.models.weights import save_weights

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
RUN_RECORD = "run.json"
#: What `train` writes into a checkpoint (and `load_checkpoint` requires).
CHECKPOINT_KEYS = ("config", "model", "optimizer", "state", "numpy_rng", "torch_rng")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _append_log(run_dir: Path, entry: dict) -> None:
    with open(run_dir / LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_reason(exc: BaseException) -> str:
    """One line out of torch.load's error (its weights-only refusal is a page of advice)."""
    text = _ANSI.sub("", str(exc))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = line.split(". Please", 1)[0].rstrip(".")
    line = line if len(line) <= 160 else line[:157] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _bad_checkpoint(path: Path, reason: str) -> WeightsError:
    return WeightsError(f"{path}: not a bbcodec checkpoint or unsafe to load ({reason})")


def load_checkpoint(path: Path) -> dict:
    """Read a run's checkpoint safely, on the CPU: ``torch.load(weights_only=True)`` builds
    tensors and plain Python values only, never arbitrary objects, so a crafted file cannot
    run code. The result has `CHECKPOINT_KEYS` and a config that parses.

    Raises:
        WeightsError: "…: not a bbcodec checkpoint or unsafe to load (…)" for anything
            else: a file that is not a torch checkpoint, holds other objects (a pickle
            that would call functions), or lacks what `train` writes.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — whatever a hostile or damaged file raises
        raise _bad_checkpoint(path, _load_reason(exc)) from None
    if not isinstance(ckpt, dict):
        raise _bad_checkpoint(path, f"holds a {type(ckpt).__name__}, not a dict")
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise _bad_checkpoint(path, f"no {', '.join(missing)}")
    state = ckpt["state"]
    numbers = ("step", "images", "seconds")
    if not isinstance(state, dict) or not all(
        isinstance(state.get(key), (int, float)) and not isinstance(state.get(key), bool)
        for key in numbers
    ):
        raise _bad_checkpoint(path, "its state lacks step, images or seconds")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["torch_rng"], torch.Tensor):
        raise _bad_checkpoint(path, "no model weights or torch RNG state")
    try:
        ckpt["config"] = ModelConfig.from_json(ckpt["config"])
    except Exception as exc:  # noqa: BLE001 — json, key, type or value errors of a bad config
        raise _bad_checkpoint(path, f"bad model config: {type(exc).__name__}: {exc}") from None
    return ckpt


def _restore(path: Path, what: str, restore) -> None:
    """``restore()``, with a mismatching or malformed part of a checkpoint a `WeightsError`."""
    try:
        restore()
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        reason = f"its {what} does not fit: {type(exc).__name__}: {exc}".splitlines()[0]
        raise _bad_checkpoint(path, reason[:200]) from None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run trains with: a preset (`bbcodec.models.presets`) and the overrides of it
    that change something (knob → value), as ``run.json`` holds them."""

    preset: str
    overrides: dict[str, object]

    def settings(self) -> tuple[ModelConfig, Recipe]:
        """The model config and recipe (`bbcodec.models.presets.with_overrides`)."""
        return with_overrides(self.preset, self.overrides)


def read_run_record(run_dir: Path) -> RunRecord | None:
    """A run folder's ``run.json``, or None if it has none.

    Raises:
        UsageError: a file that is not a run record.
    """
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable run record ({exc})") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("preset"), str)
        and isinstance(data.get("overrides"), dict)
    ):
        raise UsageError(f"{path}: not a run record (expected a preset and its overrides)")
    return RunRecord(data["preset"], data["overrides"])


def settle_run(
    run_dir: Path, preset: str, overrides: dict[str, object]
) -> tuple[RunRecord, ModelConfig, Recipe]:
    """The record, model config and recipe of a run of ``preset`` with ``overrides`` in
    ``run_dir``: a new run takes them as given; a run that has a checkpoint keeps the
    overrides its record holds, and takes new ones only where they change nothing.

    Raises:
        UsageError: an unknown preset or a bad override (`with_overrides`); a run of
            another preset; overrides that conflict with the run's.
    """
    resuming = (Path(run_dir) / CHECKPOINT).exists()
    record = read_run_record(run_dir) if resuming else None
    if record is not None and record.preset != preset:
        raise UsageError(
            f"{run_dir} is a run of preset {record.preset}: resume it with "
            f"--preset {record.preset}, or use another --run-dir"
        )
    recorded = record.overrides if record is not None else {}
    config, recipe = with_overrides(preset, recorded)
    if resuming:
        run_values = knob_values(config, recipe)
        changed = {
            knob: value
            for knob, value in overrides.items()
            if knob in run_values
            and knob not in UNUSED_KNOBS[config.family]  # with_overrides says why
            and value != run_values[knob]
        }
        if changed:
            raise UsageError(
                f"{run_dir} trains with {flags({k: run_values[k] for k in changed})}, not "
                f"{flags(changed)}: resume it without these overrides, or use another --run-dir"
            )
    config, recipe = with_overrides(preset, {**recorded, **overrides})
    return RunRecord(preset, changed_knobs(preset, config, recipe)), config, recipe


class Process(NamedTuple):
    """This process's place in a training run: the device it trains on, its rank and the
    number of processes (``world_size`` 1: alone, without torchrun)."""

    device: str
    rank: int
    world_size: int


@contextlib.contextmanager
def torchrun_processes(device: str) -> Iterator[Process]:
    """Join the run's process group for the context's duration when started by torchrun
    (``WORLD_SIZE`` > 1 in the environment): gloo on the CPU; nccl with ``device`` cuda,
    each process on GPU ``LOCAL_RANK`` of its machine. Alone it changes nothing.

    Example:
        >>> with torchrun_processes("cpu") as process:  # not under torchrun
        ...     process
        Process(device='cpu', rank=0, world_size=1)

    Raises:
        UsageError: ``WORLD_SIZE`` without torchrun's ``LOCAL_RANK``; ``cuda:N`` under
            torchrun (each process takes its own GPU: give ``cuda``); cuda without CUDA;
            more processes on a machine than it has GPUs; a torch without the backend.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Process(device, 0, 1)
        return
    if "LOCAL_RANK" not in os.environ:
        raise UsageError(
            f"WORLD_SIZE is {world_size} but LOCAL_RANK is not set: start the processes with torchrun"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda:"):
        raise UsageError(
            f"--device {device}: under torchrun each process trains on GPU LOCAL_RANK of "
            "its machine; give --device cuda"
        )
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda: CUDA is not available on this machine; use --device cpu"
            )
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"process {local_rank} of this machine has no GPU of its own "
                f"({torch.cuda.device_count()} GPUs): --nproc_per_node at most that"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise UsageError(f"this torch has no {backend} backend: training on several processes "
                         f"with --device {device.split(':')[0]} needs it")  # fmt: skip
    dist.init_process_group(backend, device_id=torch.device(device) if backend == "nccl" else None)
    yield Process(device, dist.get_rank(), dist.get_world_size())
    # Torn down only after every process is done: a process that tears the group down while
    # another still talks to it (rank 0 writing the run's files) could abort (gloo, on a
    # loaded machine). After an error the group goes with the process, and torchrun stops
    # the others.
    dist.barrier()
    dist.destroy_process_group()


def _rank_and_world_size() -> tuple[int, int]:
    """(rank, number of processes) of the process group `torchrun_processes` joined;
    (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _from_rank_0(obj):
    """Rank 0's ``obj`` (any picklable value), on every process."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Loss(torch.nn.Module):
    """`LatentVariableModel.loss` as a module's forward: the call through which
    DistributedDataParallel averages the gradients of the processes."""

    def __init__(self, model: LatentVariableModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, objective: str, beta: float, free_bits_nats: float):
        return self.model.loss(x, objective, beta, free_bits_nats)


@torch.no_grad()
def validate(model: LatentVariableModel, images: np.ndarray, batch_size: int, device: str) -> float:
    """Mean one-sample −ELBO of ``images`` (of the model's size, or of whole tiles) in
    bits/dim (the coding prior)."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device)
        total += float(model.elbo_terms(x).neg_elbo_nats.sum())
    model.train()
    return nats_to_bpd(total / len(images), images[0].size)


def train(
    config: ModelConfig,
    recipe: Recipe,
    train_images: np.ndarray,
    valid_images: np.ndarray,
    run_dir: Path,
    minutes: float | None = None,
    epochs: float | None = None,
    device: str = "cpu",
    seed: int = 0,
    checkpoint_minutes: float = 5.0,
    valid_minutes: float = 10.0,
    log_every: int = 50,
    init_from: LatentVariableModel | None = None,
    record: RunRecord | None = None,
) -> LatentVariableModel:
    """Train (or resume) a model; returns it after the budget, with the aux prior fitted.

    In a process group (`torchrun_processes`) every process calls it with the same
    arguments and trains its share of each step (see the module docstring); rank 0 returns
    the run's model, the others theirs as it was at the end of the training loop (without
    the δ-VAE's auxiliary prior fitted).

    Args:
        train_images: (N, H, W[, 3]) uint8.
        valid_images: a small held-out set for the logged validation −ELBO.
        minutes / epochs: the budget (exactly one must be given); it counts the time of
            all sessions of this run together, so a resumed run finishes the same schedule.
        init_from: a new run starts from this trained smaller model, grown into ``config``
            (`bbcodec.models.grow`); a resumed run ignores it.
        record: what the run trains with (`settle_run`, which checks it against the run's
            own), written to ``run.json``.

    Raises:
        UsageError: no budget or two; a checkpoint of another config; fewer images per
            step (``batch_size``) than processes.
    """
    if (minutes is None) == (epochs is None):
        raise UsageError("give exactly one budget: minutes or epochs")
    rank, world_size = _rank_and_world_size()
    if recipe.batch_size < world_size:
        raise UsageError(
            f"--batch-size {recipe.batch_size} is smaller than the {world_size} processes: "
            "each needs at least one image per step"
        )
    lead = rank == 0
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = LatentVariableModel(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    state = {"step": 0, "images": 0, "seconds": 0.0, "aux_step": 0}
    ckpt_path = run_dir / CHECKPOINT
    rng = np.random.default_rng(seed)
    ckpt = load_checkpoint(ckpt_path) if lead and ckpt_path.exists() else None
    if world_size > 1:
        ckpt = _from_rank_0(ckpt)
    if ckpt is not None:
        if ckpt["config"] != config:
            raise UsageError(
                f"{ckpt_path} belongs to a different model config; use another run folder"
            )
        _restore(ckpt_path, "model", lambda: model.load_state_dict(ckpt["model"]))
        _restore(ckpt_path, "optimizer", lambda: opt.load_state_dict(ckpt["optimizer"]))
        _restore(
            ckpt_path, "numpy RNG", lambda: setattr(rng.bit_generator, "state", ckpt["numpy_rng"])
        )
        _restore(ckpt_path, "torch RNG", lambda: torch.set_rng_state(ckpt["torch_rng"]))
        state = ckpt["state"]
        if lead:
            print(
                f"resuming {run_dir} at step {state['step']} "
                f"({state['seconds'] / 60:.1f} min trained)"
            )
    elif init_from is not None:
        grow_into(init_from.to(device), model)
        if lead:
            _append_log(run_dir, {"step": 0, "grown_from_config": init_from.config.to_json()})
    if record is not None and lead:  # after the checkpoint has been found to fit
        tmp = run_dir / (RUN_RECORD + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(record), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, run_dir / RUN_RECORD)
    loss_of = model.loss
    if world_size > 1:
        # Its own z noise: rank 0 continues the run's stream.
        if not lead:
            torch.manual_seed(
                int(np.random.SeedSequence([seed, rank, state["step"]]).generate_state(1)[0])
            )
        # DDP wants every parameter it syncs used by each step: the aux prior is fitted after.
        if model.aux_prior is not None:
            model.aux_prior.requires_grad_(False)
        loss_of = DistributedDataParallel(
            _Loss(model), device_ids=None if device == "cpu" else [torch.device(device).index],
            forward_sync_buffers=False,  # the buffers (masks, the AR(1) α) never change
        )  # fmt: skip

    n = len(train_images)
    total_images = epochs * n if epochs is not None else None
    budget_s = minutes * 60 if minutes is not None else None

    def progress() -> float:
        return state["images"] / total_images if total_images else state["seconds"] / budget_s

    def checkpoint():
        _save_atomic(
            {"config": config.to_json(), "model": model.state_dict(), "optimizer": opt.state_dict(),
             "state": state, "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()},
            ckpt_path,
        )  # fmt: skip

    last_ckpt = last_valid = time.time()
    order = rng.permutation(n)
    cursor = (state["images"]) % n
    bar = tqdm(
        total=1000, desc=f"train {run_dir.name}", unit="‰", initial=int(1000 * min(progress(), 1)),
        disable=not lead,
    )  # fmt: skip
    running = []
    model.train()
    if progress() < 1.0:  # the weights will move: an aux prior fitted to the old ones is stale
        state["aux_step"] = 0
    while progress() < 1.0:
        t0 = time.time()
        if cursor + recipe.batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor : cursor + recipe.batch_size]
        cursor += recipe.batch_size
        share = np.array_split(idx, world_size)[rank]  # this process's images of the step
        frac = min(progress(), 1.0)
        lr = recipe.final_learning_rate + 0.5 * (
            recipe.learning_rate - recipe.final_learning_rate
        ) * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(train_images[np.sort(share)]).to(device)
        loss, terms = loss_of(x, recipe.objective, recipe.beta, recipe.free_bits_nats)
        opt.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients: weighted by its share of the batch, each
        # adds its part of the gradient of the batch's mean loss (the weight is 1 alone).
        (loss * (len(share) * world_size / len(idx))).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        loss_nats, kl_nats = loss.detach(), terms.kl_nats.detach().mean()
        if world_size > 1:  # the batch's means, so that every process decides alike
            means = torch.stack([loss_nats, kl_nats]) * (len(share) / len(idx))
            dist.all_reduce(means)
            loss_nats, kl_nats = means
        finite = bool(torch.isfinite(loss_nats) and torch.isfinite(grad_norm))
        if finite:
            opt.step()
        else:  # one bad batch must not poison the weights of an unattended run: skip it
            state["skipped_steps"] = state.get("skipped_steps", 0) + 1
            if lead:
                _append_log(run_dir, {"step": state["step"], "skipped_non_finite_batch": True})
        step_s = time.time() - t0
        if world_size > 1:  # rank 0's clock: every process's progress (and lr) must agree
            clock_s = torch.tensor([step_s], dtype=torch.float64, device=device)
            dist.broadcast(clock_s, src=0)
            step_s = clock_s.item()
        state["step"] += 1
        state["images"] += len(idx)
        state["seconds"] += step_s
        if finite:
            running.append((loss_nats.item() / math.log(2), kl_nats.item()))
        if not lead:
            continue
        bar.n = int(1000 * min(progress(), 1.0))
        if running:
            bar.set_postfix(loss_bpd=f"{running[-1][0]:.4f}")
        if state["step"] % log_every == 0:
            entry = {"step": state["step"], "epoch": state["images"] / n, "images": state["images"],
                     "train_seconds": round(state["seconds"], 1), "lr": lr,
                     "loss_bpd": float(np.mean([r[0] for r in running] or [np.nan])),
                     "kl_nats": float(np.mean([r[1] for r in running] or [np.nan]))}  # fmt: skip
            running = []
            if time.time() - last_valid > valid_minutes * 60:
                entry["valid_neg_elbo_bpd"] = validate(model, valid_images, 250, device)
                last_valid = time.time()
            _append_log(run_dir, entry)
        if time.time() - last_ckpt > checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    bar.close()
    if model.aux_prior is not None:  # frozen above for DDP
        model.aux_prior.requires_grad_(True)
    if not lead:
        return model
    if model.aux_prior is not None and state["aux_step"] < recipe.aux_prior_steps:
        fit_aux_prior(model, train_images, recipe, state, rng, device, checkpoint, run_dir)
    checkpoint()
    valid_bpd = validate(model, valid_images, 250, device)
    _append_log(run_dir, {"step": state["step"], "final_valid_neg_elbo_bpd": valid_bpd,
                          "train_seconds": round(state["seconds"], 1)})  # fmt: skip
    save_weights(
        model,
        run_dir / "model.safetensors",
        {"train_seconds": f"{state['seconds']:.1f}", "train_images": str(state["images"])},
    )
    return model


def validation_history(run_dir: Path, rows: int = 12) -> str:
    """The run's validation −ELBO over its training (``log.jsonl``) as a markdown section
    for the model card: at most ``rows`` rows, evenly spread, the last one always; "" for
    a folder without a log or without validations."""
    log = run_dir / LOG
    if not log.is_file():
        return ""
    points = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
        bpd = entry.get("valid_neg_elbo_bpd", entry.get("final_valid_neg_elbo_bpd"))
        if bpd is not None and "train_seconds" in entry:
            points.append((entry["train_seconds"], entry.get("images"), bpd))
    if not points:
        return ""
    keep = sorted({round(i * (len(points) - 1) / max(rows - 1, 1)) for i in range(rows)})
    lines = [
        "## Validation during training", "",
        "One-sample −ELBO of the run's validation images (`log.jsonl`), logged as it trained.",
        "", "| training time | images seen | validation −ELBO (bits/dim) |", "|---|---|---|",
    ]  # fmt: skip
    for i in keep:
        seconds, images, bpd = points[i]
        seen = f"{images:,}" if images is not None else "—"
        lines.append(f"| {seconds / 60:.1f} min | {seen} | {bpd:.4f} |")
    return "\n".join(lines)


def weights_from_checkpoint(run_dir: Path, out: Path) -> dict:
    """Write the weights of an unfinished run's last checkpoint to ``out`` (.safetensors)
    and return its progress (``step``, ``images``, ``seconds``).

    The weights' metadata marks them ``interim``. A δ-VAE codes with its auxiliary prior,
    which is fitted only after training: its interim weights cannot be exported.

    Raises:
        WeightsError: a checkpoint that is not one or is unsafe to load (`load_checkpoint`).
        UsageError: a δ-VAE run whose auxiliary prior is not fitted yet.
    """
    path = Path(run_dir) / CHECKPOINT
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if config.family == "delta-vae" and ckpt["state"].get("aux_step", 0) == 0:
        raise UsageError(
            f"{run_dir}: a δ-VAE's auxiliary prior is fitted after training; "
            "export it when the run has finished"
        )
    model = LatentVariableModel(config)
    _restore(path, "model", lambda: model.load_state_dict(ckpt["model"]))
    state = ckpt["state"]
    save_weights(
        model.eval(), Path(out),
        {"train_seconds": f"{state['seconds']:.1f}", "train_images": str(state["images"]),
         "interim": "true"},
    )  # fmt: skip
    return {key: state[key] for key in ("step", "images", "seconds")}


def fit_aux_prior(model, train_images, recipe, state, rng, device, checkpoint, run_dir) -> None:
    """Fit the δ-VAE's auxiliary MADE prior to the aggregate posterior (rest frozen)."""
    opt = torch.optim.Adam(model.aux_prior.parameters(), lr=1e-3)
    n = len(train_images)
    last_ckpt = time.time()
    for _ in tqdm(range(state["aux_step"], recipe.aux_prior_steps), desc="aux prior"):
        t0 = time.time()
        x = torch.from_numpy(train_images[np.sort(rng.choice(n, recipe.batch_size, replace=False))])
        with torch.no_grad():
            q = model.posterior(x.to(device))
            z = q.mean + q.std * torch.randn_like(q.std)
        nll = -model.aux_prior.log_prob_dims(z).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        opt.step()
        state["aux_step"] += 1
        state["seconds"] += time.time() - t0
        if state["aux_step"] % 200 == 0:
            _append_log(run_dir, {"aux_step": state["aux_step"], "aux_nll_nats": float(nll)})
        if time.time() - last_ckpt > 300:
            checkpoint()
            last_ckpt = time.time()
