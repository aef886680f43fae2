"""Entry point of the `bbcodec` command.

Each command is a pair: ``_add_<command>(subparsers, common)`` declares its arguments and
``_cmd_<command>(args) -> int`` runs it. Heavy imports (torch) happen inside the commands,
so ``bbcodec --help`` stays fast.

Errors users can cause (bad data, bad or tampered weights, bad options, missing files,
Ctrl-C) print one line, ``bbcodec: error: ...``, and exit non-zero; ``--debug`` re-raises
them with the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bbcodec.cli.bench_command import _add_bench
from bbcodec.cli.codec_commands import _add_compress, _add_decompress

DESCRIPTION = """\
bbcodec: lossless image compression with bits-back ANS coding, driven by VLAE and
δ-VAE latent-variable models with autoregressive (PixelCNN) decoders."""

EPILOG = """\
examples:
  bbcodec compress digits/ -o digits.bbc -v
  bbcodec decompress digits.bbc -o digits-out/
  bbcodec models
  bbcodec eval --model vlae-bmnist --data ../shared/data/binarized_mnist.npz --split test
  bbcodec train --preset vlae-bmnist --data ../shared/data/binarized_mnist.npz --minutes 60
  bbcodec export-model runs/vlae-bmnist --name vlae-bmnist --data ../shared/data/binarized_mnist.npz
  bbcodec bench --model vlae-bmnist --data ../shared/data/binarized_mnist.npz -n 1000 --json b.json

Run `bbcodec COMMAND --help` for a command's options and an example. Errors print one
line (`bbcodec: error: ...`) and exit non-zero; --debug shows the traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2) and descriptions that may be
    functions (called only when the help is shown, so ``--help`` needs no torch import)."""

    def format_help(self) -> str:
        if callable(self.description):
            self.description = self.description()
        return super().format_help()

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _device(text: str) -> str:
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _model_name(text: str) -> str:
    from bbcodec.zoo import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common() -> argparse.ArgumentParser:
    """Options every torch command shares (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("run options")
    group.add_argument(
        "--device", type=_device, default="cpu", help="torch device: cpu (default), cuda, cuda:N"
    )
    group.add_argument(
        "--threads",
        type=_positive_int,
        metavar="T",
        help="torch CPU threads (default: torch's choice)",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="random seed (default 0): results repeat"
    )
    group.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    return common


def _setup_torch(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {args.device}: CUDA is not available on this machine; use --device cpu"
        )


def _sub(subparsers, name: str, help: str, description: str, example: str, parents):
    return subparsers.add_parser(
        name, help=help, description=description, epilog=f"example:\n  {example}",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


# ----- models ---------------------------------------------------------------------------


def _add_models(subparsers, common) -> None:
    p = _sub(
        subparsers, "models", "list the shipped models with their test −ELBO",
        "List the shipped models (models/weights/registry.json) with their dataset, test −ELBO\n"
        "(bits/dim and nats per image) and parameter count. BBCODEC_WEIGHTS_DIR overrides the\n"
        "weights folder.",
        "bbcodec models", [],
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the registry entries as JSON")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from bbcodec.zoo import list_models, load_model, weights_folder

    models = list_models()
    rows = []
    for m in models:
        n_params = m.n_params
        if n_params is None:  # a hand-written entry: count from the (hash-checked) weights
            n_params = sum(p.numel() for p in load_model(m.name).parameters())
        rows.append((m, n_params))
    if args.json:
        entries = [
            {
                **{k: v for k, v in vars(m).items() if k != "path"},
                "path": str(m.path),
                "n_params": n,
            }
            for m, n in rows
        ]
        print(json.dumps(entries, indent=2))
        return 0
    if not rows:
        print(f"no models shipped yet in {weights_folder()}")
        print("train one with: bbcodec train --preset NAME --data PATH --minutes M --export NAME")
        return 0
    header = ("name", "family", "dataset", "−ELBO bpd", "−ELBO nats", "params")
    table = [
        (
            m.name,
            m.family or "?",
            m.dataset,
            f"{m.test_neg_elbo_bpd:.4f}",
            f"{m.test_neg_elbo_nats:.2f}",
            f"{n:,}",
        )
        for m, n in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for r in [header, *table]:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    print(f"\n(test −ELBO: one z-sample per image, coding prior; weights in {weights_folder()})")
    return 0


# ----- eval -----------------------------------------------------------------------------


def _add_eval(subparsers, common) -> None:
    p = _sub(
        subparsers, "eval", "measure a model's −ELBO (bpd, nats), KL/recon split, active units",
        "Evaluate a model on a dataset split: the −ELBO in bits/dim and nats per image (mean over\n"
        "the images, one z-sample per image, under the prior the codec uses), its split into KL\n"
        "(rate) and reconstruction (distortion), active latent units (Burda et al. 2016:\n"
        "Cov_x E_q[z_i] > 0.01) and, with --iw-samples K, the importance-weighted bound on the\n"
        "NLL. For a δ-VAE it also reports the KL under the AR(1) training prior next to δ.",
        "bbcodec eval --model vlae-bmnist --data ../shared/data/binarized_mnist.npz --split test"
        " --json eval.json",
        [common],
    )  # fmt: skip
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME|PATH",
        help="a shipped model name (see `bbcodec models`), a .safetensors file or a run folder",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="dataset file or folder (IDX, npz, CIFAR, PNGs, npy)",
    )
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="split (default test)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("-n", type=_positive_int, metavar="N", help="evaluate the first N images only")
    p.add_argument(
        "--iw-samples",
        type=_non_negative_int,
        default=0,
        metavar="K",
        help="importance samples for the IW bound (default 0: off)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=250,
        metavar="B",
        help="images per batch (default 250)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)  # fmt: skip


def _check_output_folder(path: str | None) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(2, "no such folder for the output file", str(Path(path).parent))


def _write_json(path: str, obj) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _print_result(r) -> None:
    print(
        f"model        {r.model}  ({r.family}, {r.n_params:,} parameters, {r.latent_dim} latent dims)"
    )
    print(f"decoder      receptive field: {r.receptive_field}")
    print(f"data         {r.data} [{r.split}]: {r.n_images} images × {r.dims_per_image} dims")
    print(f"−ELBO        {r.neg_elbo_bpd:.4f} bits/dim   {r.neg_elbo_nats:10.3f} nats/image"
          "   (mean over images, one z-sample each)")  # fmt: skip
    print(f"  KL         {r.kl_bpd:.4f} bits/dim   {r.kl_nats:10.3f} nats/image   (rate)")
    print(
        f"  recon      {r.recon_bpd:.4f} bits/dim   {r.recon_nats:10.3f} nats/image   (distortion)"
    )
    print(
        f"active units {r.active_units} / {r.latent_dim}   (Cov_x E_q[z_i] > {r.active_threshold})"
    )
    if r.iw_samples:
        print(f"IW bound     {r.iw_nll_bpd:.4f} bits/dim   {r.iw_nll_nats:10.3f} nats/image"
              f"   (k = {r.iw_samples}, upper bound on the NLL)")  # fmt: skip
    if r.delta_nats is not None:
        verdict = "yes" if r.kl_ge_delta else "NO"
        print(f"δ-VAE        KL under the AR(1) training prior {r.kl_train_prior_nats:.3f} nats/image"
              f" (min {r.kl_train_prior_min_nats:.3f}); δ = {r.delta_nats:.3f} nats;"
              f" KL ≥ δ for every image: {verdict}")  # fmt: skip
    print(
        f"speed        {r.images_per_s:.1f} images/s ({r.seconds:.1f} s, device {r.device}, seed {r.seed})"
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    _check_output_folder(args.json)
    _setup_torch(args)
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import evaluate

    from bbcodec.zoo import load_model

    model = load_model(args.model, device=args.device)
    images = load_images(args.data, args.split)
    if args.n is not None:
        images = images[: args.n]
    result = evaluate(
        model, images, batch_size=args.batch_size, iw_samples=args.iw_samples, seed=args.seed,
        device=args.device, progress=not args.quiet, model_name=str(args.model),
        data_name=str(args.data), split=args.split,
    )  # fmt: skip
    _print_result(result)
    if args.json:
        _write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    return 0


# ----- train and export -----------------------------------------------------------------


TRAIN_DESCRIPTION = """\
Train a model from a named preset (model config + training recipe) on the train split of
--data, validating on the recipe's validation split (first 2000 images). The run folder
holds checkpoint.pt (rewritten every few minutes), log.jsonl and, at the end,
model.safetensors. Running the same command again resumes from the checkpoint; the budget
counts all sessions together. --export NAME then evaluates the final model on the test
split and adds it to the shipped models (as `bbcodec export-model` does)."""


def _add_train(subparsers, common) -> None:
    def description() -> str:
        from bbcodec.models.presets import PRESETS

        return TRAIN_DESCRIPTION + f"\n\npresets: {', '.join(sorted(PRESETS))}"

    p = _sub(
        subparsers, "train", "train (or resume) a model from a preset", description,
        "bbcodec train --preset vlae-bmnist --data ../shared/data/binarized_mnist.npz"
        " --minutes 60 --threads 2 --export vlae-bmnist",
        [common],
    )  # fmt: skip
    p.add_argument(
        "--preset", required=True, metavar="NAME", help="model config and recipe (listed above)"
    )
    p.add_argument("--data", required=True, metavar="PATH", help="dataset holding the train split")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/<preset>)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=_positive_float, metavar="M", help="training time budget")
    budget.add_argument(
        "--epochs", type=_positive_float, metavar="E", help="training budget in epochs"
    )
    p.add_argument(
        "--export",
        type=_model_name,
        metavar="NAME",
        help="after training, evaluate on the test split and register as NAME",
    )
    p.add_argument(
        "--dataset",
        metavar="LABEL",
        help="dataset label for the registry (default: the data file's name)",
    )
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start a new run from this trained model (name, .safetensors or run folder) "
        "grown into the preset: same design with a larger kernel and/or more blocks, same "
        "function at the start (ignored when resuming)",
    )
    p.set_defaults(func=_cmd_train)  # fmt: skip


def _cmd_train(args: argparse.Namespace) -> int:
    _setup_torch(args)
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import check_images
    from bbcodec.models.presets import PRESETS
    from bbcodec.models.train import train

    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r} (known: {', '.join(sorted(PRESETS))})")
    config, recipe = PRESETS[args.preset]
    train_images = load_images(args.data, "train")
    check_images(config, train_images, f"{args.data} [train]")
    valid_images = load_images(args.data, recipe.valid_split)[:2000]
    check_images(config, valid_images, f"{args.data} [{recipe.valid_split}]")
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / args.preset
    init_from = None
    if args.init_from:
        from bbcodec.models.grow import check_growable

        from bbcodec.zoo import load_model

        init_from = load_model(args.init_from)
        check_growable(init_from.config, config)
    train(
        config, recipe, train_images, valid_images, run_dir, minutes=args.minutes, epochs=args.epochs,
        device=args.device, seed=args.seed, init_from=init_from,
    )  # fmt: skip
    weights = run_dir / "model.safetensors"
    print(f"trained {args.preset}: {weights}")
    if args.export:
        details = {"preset": args.preset, "recipe": _recipe_text(recipe), "seed": args.seed}
        if args.init_from:
            details["grown from"] = args.init_from
        _export(weights, args.export, args.data, "test", args.dataset, args, details)
    return 0


def _recipe_text(recipe) -> str:
    import dataclasses

    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())


def _add_export(subparsers, common) -> None:
    p = _sub(
        subparsers, "export-model", "evaluate a finished run and add it to the shipped models",
        "Evaluate a run's final model.safetensors on the test split of --data and add it to\n"
        "the shipped models (models/weights/: NAME.safetensors, NAME.md model card, and the\n"
        "registry entry with its sha256). An existing entry of the same name is updated.",
        "bbcodec export-model runs/vlae-bmnist --name vlae-bmnist"
        " --data ../shared/data/binarized_mnist.npz",
        [common],
    )  # fmt: skip
    p.add_argument("run", metavar="RUN_DIR", help="training run folder (or a .safetensors file)")
    p.add_argument("--name", required=True, type=_model_name, help="registry name")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset holding the test split")
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="split (default test)"
    )
    p.add_argument(
        "--dataset", metavar="LABEL", help="dataset label (default: the data file's name)"
    )
    p.add_argument("--preset", metavar="NAME", help="preset the run used (recorded in the card)")
    p.add_argument(
        "--interim", action="store_true",
        help="export the run's last checkpoint, before the run has finished (marked interim "
        "on the card; VLAE runs only)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> int:
    from bbcodec.models.weights import WeightsError

    _setup_torch(args)
    weights = Path(args.run)
    if args.interim:
        from bbcodec.models.train import weights_from_checkpoint

        if not (weights / "checkpoint.pt").is_file():
            raise WeightsError(f"{weights}: no checkpoint.pt to export (is it a run folder?)")
        progress = weights_from_checkpoint(weights, weights / "interim.safetensors")
        print(f"interim weights from step {progress['step']} ({progress['seconds'] / 60:.1f} min)")
        weights = weights / "interim.safetensors"
    elif weights.is_dir():
        weights = weights / "model.safetensors"
    if not weights.is_file():
        raise WeightsError(f"{weights}: no such weights file (has the training run finished?)")
    details = {"seed": args.seed}
    if args.preset:
        from bbcodec.models.presets import PRESETS

        if args.preset not in PRESETS:
            raise ValueError(
                f"unknown preset {args.preset!r} (known: {', '.join(sorted(PRESETS))})"
            )
        details = {
            "preset": args.preset,
            "recipe": _recipe_text(PRESETS[args.preset][1]),
            **details,
        }
    _export(weights, args.name, args.data, args.split, args.dataset, args, details)
    return 0


def _export(
    weights: Path, name: str, data: str, split: str, dataset: str | None, args, details
) -> None:
    """Evaluate ``weights`` on ``split`` of ``data`` and register them as ``name``."""
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import evaluate
    from safetensors import safe_open

    from bbcodec.zoo import load_model, register_model

    model = load_model(weights, device=args.device)
    images = load_images(data, split)
    result = evaluate(
        model, images, seed=args.seed, device=args.device, progress=not getattr(args, "quiet", False),
        model_name=name, data_name=str(data), split=split,
    )  # fmt: skip
    _print_result(result)
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {}
    rows = dict(details)
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
    rows.update({
        f"{split} data": f"{data} [{split}], {result.n_images} images",
        f"{split} KL (rate)": f"{result.kl_bpd:.4f} bits/dim, {result.kl_nats:.3f} nats/image",
        f"{split} recon (distortion)": f"{result.recon_bpd:.4f} bits/dim, {result.recon_nats:.3f} nats/image",
        "active units": f"{result.active_units} / {result.latent_dim}",
    })  # fmt: skip
    if result.delta_nats is not None:
        rows["KL under the AR(1) training prior"] = f"{result.kl_train_prior_nats:.3f} nats/image"
        rows["committed rate δ"] = f"{result.delta_nats:.3f} nats"
    info = register_model(
        name, weights, dataset=dataset or Path(data).stem, test_neg_elbo_bpd=result.neg_elbo_bpd,
        test_neg_elbo_nats=result.neg_elbo_nats, details=rows,
    )  # fmt: skip
    print(f"registered {name}: {info.path} (sha256 {info.sha256[:16]}…), card {info.card_path}")


# ----- main -----------------------------------------------------------------------------

COMMANDS = (
    _add_compress, _add_decompress, _add_models, _add_eval, _add_train, _add_export, _add_bench,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bbcodec", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    common = _common()
    for add in COMMANDS:
        add(subparsers, common)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``bbcodec`` command; returns the exit code (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse already printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("bbcodec: error: interrupted", file=sys.stderr)
        return 130
    # ValueError covers DataError, WeightsError, ImageKindError and ContainerError (with
    # its DecodeError and ChecksumError): importing them here would import torch.
    except (ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"bbcodec: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
