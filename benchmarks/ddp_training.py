"""Training on several processes: images/s of `bbcodec train` under ``torchrun
--nproc_per_node P`` (DDP, gloo, one thread each) against one process with P threads, on
binarized MNIST, the same minutes each; one process with one thread is the reference of
the parallel efficiency (images/s over P × its images/s).

Each run trains a small VLAE (``vlae-bmnist --channels 32 --n-blocks 2``) from scratch in a
temporary run folder. A step on P processes is the step of one process (each takes its
share of the batch: `bbcodec.models.train`), so the runs differ only in how fast they take
their steps. Images/s is the run's own count: images trained over seconds trained
(validation and checkpoints not counted, as the time budget does not count them); the
wall time of each command, start-up included, and the final validation −ELBO stand beside
it. The machine's load when each run starts is recorded: another job on the cores skews
the comparison.

    python benchmarks/ddp_training.py --data ../shared/data/binarized_mnist.npz --minutes 1.5

Writes ``benchmarks/results/ddp-training.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"
SMALL = ("--preset", "vlae-bmnist", "--channels", "32", "--n-blocks", "2")


def measure(name: str, launcher: list[str], threads: int, run_dir: Path, args) -> dict:
    """Train one run (``launcher`` then `bbcodec train`); its entry of the results."""
    from bbcodec.models.train import load_checkpoint

    command = [*launcher, "-m", "bbcodec.cli.main", "train", *SMALL, "--data", str(args.data),
               "--run-dir", str(run_dir), "--minutes", str(args.minutes),
               "--threads", str(threads)]  # fmt: skip
    print("$", shlex.join(command), flush=True)
    load_1min = os.getloadavg()[0]
    start_s = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env)
    wall_s = time.perf_counter() - start_s
    state = load_checkpoint(run_dir / "checkpoint.pt")["state"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {
        "name": name, "command": shlex.join(command), "threads_per_process": threads,
        "steps": state["step"], "images": state["images"],
        "train_seconds": round(state["seconds"], 2),
        "images_per_s": round(state["images"] / state["seconds"], 1),
        "wall_seconds": round(wall_s, 1), "load_average_1min_at_start": load_1min,
        "final_valid_neg_elbo_bpd": log[-1]["final_valid_neg_elbo_bpd"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"default {DEFAULT_DATA}")
    p.add_argument("--minutes", type=float, default=1.5, help="training budget of each run")
    p.add_argument("--processes", type=int, default=2, help="P: torchrun processes (default 2)")
    p.add_argument("--json", type=Path, default=RESULTS / "ddp-training.json",
                   help="results file (default benchmarks/results/ddp-training.json)")  # fmt: skip
    args = p.parse_args(argv)
    n = args.processes
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(n)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        one, ddp, single = (
            measure(f"one process, {n} threads", [sys.executable], n, Path(tmp) / "one", args),
            measure(f"torchrun, {n} processes × 1 thread", torchrun, 1, Path(tmp) / "ddp", args),
            measure("one process, 1 thread", [sys.executable], 1, Path(tmp) / "single", args),
        )
    import torch

    result = {
        "what": "bbcodec train images/s: one process against torchrun (DDP, gloo), same minutes",
        "data": str(args.data), "minutes_each": args.minutes, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "runs": [one, ddp, single],
        "speedup": round(ddp["images_per_s"] / one["images_per_s"], 3),
        "parallel_efficiency": round(ddp["images_per_s"] / (n * single["images_per_s"]), 3),
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for run in result["runs"]:
        print(f"{run['name']:36s} {run['images_per_s']:8.1f} images/s  "
              f"({run['steps']} steps, −ELBO {run['final_valid_neg_elbo_bpd']:.4f} bits/dim)")  # fmt: skip
    print(f"speed-up over one process with {n} threads {result['speedup']:.2f}×, parallel "
          f"efficiency {result['parallel_efficiency']:.2f}; wrote {args.json}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
