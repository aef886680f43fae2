"""The posterior-collapse study on binarized MNIST: when does a strong autoregressive decoder
leave the latent unused, and what keeps it alive?

Trains small models (32 channels, 2 gated blocks: minutes on one CPU core) with
``bbcodec train`` and measures each with ``bbcodec eval`` on the full test split:

- the VLAE paper's receptive-field question: a local K×K decoder for K = 3, 5, 7, and the
  full causal past (7×7 plus the row context);
- with the full-context decoder: the plain ELBO, β-VAE (β = 0.5, 2), free bits, δ-VAE
  (δ = 5, 10 nats);
- δ-VAE with the anti-causal encoder against an ordinary convolutional one.

Every step is resumable: a run folder with a finished model is not trained again (a cut
run resumes from its checkpoint), an existing ``eval.json`` is not measured again. The
results go to ``benchmarks/results/latent-study.{json,md,png}``: a table with the command
of each row, and the rate–distortion plane (KL against reconstruction, −ELBO isolines).

    python benchmarks/latent_study.py --data ../shared/data/binarized_mnist.npz \\
        --runs runs/study --minutes 8 --threads 1

The δ-VAE rows were re-run on the same images each (``--epochs 1.5 --only delta-5 delta-10
delta-10-conv --runs runs/study-epochs``): under a minutes budget on a loaded machine they
saw 29k to 80k images, which made the encoder comparison unfair.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SMALL = ("--channels", "32", "--n-blocks", "2")
FULL_CONTEXT = ("--kernel-size", "7", "--row-context")


@dataclass(frozen=True)
class Row:
    """One trained model of the study: its run name, group, preset and overrides."""

    name: str
    group: str
    preset: str
    overrides: tuple[str, ...]


ROWS = (
    Row("vlae-k3", "receptive field", "vlae-bmnist", ("--kernel-size", "3")),
    Row("vlae-k5", "receptive field", "vlae-bmnist", ("--kernel-size", "5")),
    Row("vlae-k7", "receptive field", "vlae-bmnist", ("--kernel-size", "7")),
    Row("vlae-full", "receptive field", "vlae-bmnist", FULL_CONTEXT),
    Row("beta-0.5", "objective (full context)", "vlae-bmnist",
        (*FULL_CONTEXT, "--objective", "beta", "--beta", "0.5")),
    Row("beta-2", "objective (full context)", "vlae-bmnist",
        (*FULL_CONTEXT, "--objective", "beta", "--beta", "2")),
    Row("free-bits-0.25", "objective (full context)", "vlae-bmnist",
        (*FULL_CONTEXT, "--objective", "free-bits", "--free-bits-nats", "0.25")),
    Row("delta-5", "objective (full context)", "delta-vae-bmnist", ("--delta-nats", "5")),
    Row("delta-10", "objective (full context)", "delta-vae-bmnist", ("--delta-nats", "10")),
    Row("delta-10-conv", "encoder", "delta-vae-bmnist",
        ("--delta-nats", "10", "--encoder", "conv")),
)  # fmt: skip


def _run(argv: list[str]) -> None:
    print("$", shlex.join(argv), flush=True)
    subprocess.run(argv, check=True)


def budget(args: argparse.Namespace) -> tuple[str, str]:
    """The training budget of every run: minutes, or epochs (the same images for each)."""
    if args.epochs is not None:
        return ("--epochs", str(args.epochs))
    return ("--minutes", str(args.minutes))


def train_command(row: Row, args: argparse.Namespace) -> list[str]:
    return ["bbcodec", "train", "--preset", row.preset, "--data", str(args.data),
            "--run-dir", str(args.runs / row.name), *budget(args),
            "--threads", str(args.threads), *SMALL, *row.overrides]  # fmt: skip


def eval_command(row: Row, args: argparse.Namespace) -> list[str]:
    return ["bbcodec", "eval", "--model", str(args.runs / row.name), "--data", str(args.data),
            "--threads", str(args.threads), "-q", "--json", str(args.runs / row.name / "eval.json")]  # fmt: skip


def measure(row: Row, args: argparse.Namespace) -> dict:
    """Train (unless done) and evaluate (unless done) one row; its table entry."""
    run_dir = args.runs / row.name
    if not (run_dir / "model.safetensors").is_file():
        _run(train_command(row, args))
    if not (run_dir / "eval.json").is_file():
        _run(eval_command(row, args))
    result = json.loads((run_dir / "eval.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {
        "name": row.name, "group": row.group,
        "command": shlex.join(train_command(row, args)),
        "train_seconds": max(entry.get("train_seconds", 0.0) for entry in log),
        "images_seen": max(entry.get("images", 0) for entry in log),
        "neg_elbo_bpd": result["neg_elbo_bpd"], "neg_elbo_nats": result["neg_elbo_nats"],
        "kl_bits": result["kl_nats"] / math.log(2),
        "distortion_bits": result["recon_nats"] / math.log(2),
        "active_units": result["active_units"], "latent_dim": result["latent_dim"],
        "receptive_field": result["receptive_field"],
        "kl_train_prior_nats": result["kl_train_prior_nats"], "delta_nats": result["delta_nats"],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| model | group | −ELBO bits/dim | KL bits/image | distortion bits/image "
            "| active units | δ-VAE: KL under AR(1), nats (δ) | trained |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        committed = "—"
        if r["delta_nats"] is not None:
            committed = f"{r['kl_train_prior_nats']:.1f} ({r['delta_nats']:.0f})"
        lines.append(
            f"| `{r['name']}` | {r['group']} | {r['neg_elbo_bpd']:.4f} | {r['kl_bits']:.2f} | "
            f"{r['distortion_bits']:.1f} | {r['active_units']} / {r['latent_dim']} | {committed} | "
            f"{r['train_seconds'] / 60:.1f} min, {r['images_seen'] / 1000:.0f}k images |"
        )
    lines += [
        "",
        "Commands (then `bbcodec eval --model RUN_DIR --data DATA --json RUN_DIR/eval.json`):",
        "",
    ]
    lines += [f"- `{r['name']}`: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"receptive field": "o", "objective (full context)": "s", "encoder": "^"}
    for r in rows:
        ax.scatter(r["kl_bits"], r["distortion_bits"], marker=markers[r["group"]], s=40)
        ax.annotate(r["name"], (r["kl_bits"], r["distortion_bits"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    kl_max = max(r["kl_bits"] for r in rows) * 1.15 + 1
    distortions = [r["distortion_bits"] for r in rows]
    low, high = min(distortions) - 3, max(distortions) + 3
    for total in sorted({round(r["kl_bits"] + r["distortion_bits"]) for r in rows})[::2]:
        ax.plot([0, kl_max], [total, total - kl_max], color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0, kl_max)
    ax.set_ylim(low, high)
    ax.set_xlabel("rate: KL(q(z|x) ‖ p(z)), bits per image")
    ax.set_ylabel("distortion: −E log p(x|z), bits per image")
    ax.set_title("Binarized MNIST test: rate–distortion of the study's models\n"
                 "(grey lines: equal −ELBO; o receptive field, □ objective, △ encoder)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz")
    parser.add_argument("--runs", type=Path, default=Path("runs/study"), help="run folders")
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument("--minutes", type=float, default=8.0, help="training minutes per model")
    budgets.add_argument(
        "--epochs", type=float, help="training epochs per model instead: the same images for each"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--only", nargs="*", help="row names to run (default all); the results keep the other rows"
    )
    args = parser.parse_args()
    previous = {}
    if args.only and (RESULTS / "latent-study.json").is_file():
        previous = {r["name"]: r for r in json.loads((RESULTS / "latent-study.json").read_text())}
    rows = [
        measure(row, args) if not args.only or row.name in args.only else previous[row.name]
        for row in ROWS
        if not args.only or row.name in args.only or row.name in previous
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latent-study.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "latent-study.md").write_text(table(rows))
    plot(rows, RESULTS / "latent-study.png")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
