"""`bbcodec models`, `bbcodec eval`, `bbcodec train` and `bbcodec export-model`: the model
zoo, evaluation and training.

The commands follow `bbcodec.cli.args`'s conventions (``_add_<cmd>`` / ``_cmd_<cmd>`` pairs,
one-line errors, torch imported only when a command runs). Model cards are built by
`bbcodec.zoo.register_evaluated`: the commands only gather what goes on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bbcodec.cli.args import (
    add_debug,
    add_model_and_data,
    check_output_folder,
    model_name,
    non_negative_int,
    positive_float,
    positive_int,
    setup_torch,
    sub,
    write_json,
)
from bbcodec.errors import UsageError, WeightsError

MODELS_DESCRIPTION = """\
List the shipped models (models/weights/registry.json) with their dataset, test −ELBO
(bits/dim and nats per image) and parameter count. BBCODEC_WEIGHTS_DIR overrides the
weights folder."""

EVAL_DESCRIPTION = """\
Evaluate a model on a dataset split: the −ELBO in bits/dim and nats per image (mean over
the images, one z-sample per image, under the prior the codec uses), its split into KL
(rate) and reconstruction (distortion), active latent units (Burda et al. 2016:
Cov_x E_q[z_i] > 0.01) and, with --iw-samples K, the importance-weighted bound on the
NLL. For a δ-VAE it also reports the KL under the AR(1) training prior next to δ."""
EVAL_EXAMPLE = (
    "bbcodec eval --model vlae-bmnist --data ../shared/data/binarized_mnist.npz --split test"
    " --json eval.json"
)

TRAIN_DESCRIPTION = """\
Train a model from a named preset (model config + training recipe) on the train split of
--data, validating on the recipe's validation split (first 2000 images). The run folder
holds checkpoint.pt (rewritten every few minutes), log.jsonl, run.json (the preset and the
overrides) and, at the end, model.safetensors. Running the same command again resumes from
the checkpoint; the budget counts all sessions together. --export NAME then evaluates the
final model on the test split and adds it to the shipped models (as `bbcodec export-model`
does).

The options under "overrides" change one knob of the preset's model or recipe each; the
model card lists them. A resumed run keeps the overrides it started with (run.json) and
refuses others that would change it: give each set of overrides its own --run-dir.

Started by torchrun (`torchrun --standalone --nproc_per_node N -m bbcodec.cli.main train
...`, see the README for several machines) it trains on N processes with
DistributedDataParallel: gloo on the CPU (--threads T each), nccl with --device cuda (one
GPU each). Each step's --batch-size images are split among the processes, so the recipe
means what it means in one process and a run may be resumed with another number of them;
rank 0 writes the run folder and exports."""
TRAIN_EXAMPLE = (
    "bbcodec train --preset vlae-bmnist --data ../shared/data/binarized_mnist.npz"
    " --minutes 60 --threads 2 --export vlae-bmnist"
)

EXPORT_DESCRIPTION = """\
Evaluate a run's final model.safetensors on the test split of --data and add it to
the shipped models (models/weights/: NAME.safetensors, NAME.md model card, and the
registry entry with its sha256). An existing entry of the same name is updated."""
EXPORT_EXAMPLE = (
    "bbcodec export-model runs/vlae-bmnist --name vlae-bmnist"
    " --data ../shared/data/binarized_mnist.npz"
)


# ----- models ---------------------------------------------------------------------------


def _add_models(subparsers, common) -> None:
    p = sub(subparsers, "models", "list the shipped models with their test −ELBO",
            MODELS_DESCRIPTION, "bbcodec models", [])  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the registry entries as JSON")
    add_debug(p)
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
    header = ("name", "family", "dataset", "−ELBO bpd", "−ELBO nats", "params", "photo latents")
    table = [
        (
            m.name,
            m.family or "?",
            m.dataset,
            f"{m.test_neg_elbo_bpd:.4f}",
            f"{m.test_neg_elbo_nats:.2f}",
            f"{n:,}",
            m.tile_latents,
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
    summary = "measure a model's −ELBO (bpd, nats), KL/recon split, active units"
    p = sub(subparsers, "eval", summary, EVAL_DESCRIPTION, EVAL_EXAMPLE, [common])
    add_model_and_data(p)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("-n", type=positive_int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--iw-samples", type=non_negative_int, default=0, metavar="K",
                   help="importance samples for the IW bound (default 0: off)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=250, metavar="B",
                   help="images per batch (default 250)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)  # fmt: skip


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
    check_output_folder(args.json)
    setup_torch(args)
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
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    return 0


# ----- train and export -----------------------------------------------------------------


def _add_train(subparsers, common) -> None:
    def description() -> str:
        from bbcodec.models.presets import PRESETS, describe

        presets = "\n".join(describe(name) for name in sorted(PRESETS))
        return TRAIN_DESCRIPTION + f"\n\npresets, with the values the overrides change:\n{presets}"

    summary = "train (or resume) a model from a preset"
    p = sub(subparsers, "train", summary, description, TRAIN_EXAMPLE, [common])
    p.add_argument("--preset", required=True, metavar="NAME",
                   help="model config and recipe (listed above)")  # fmt: skip
    p.add_argument("--data", required=True, metavar="PATH", help="dataset holding the train split")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/<preset>; one "
                   "per set of overrides)")  # fmt: skip
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=positive_float, metavar="M", help="training time budget")
    budget.add_argument("--epochs", type=positive_float, metavar="E",
                        help="training budget in epochs")  # fmt: skip
    p.add_argument("--export", type=model_name, metavar="NAME", help="after training, evaluate "
                   "on the test split and register as NAME")  # fmt: skip
    p.add_argument("--dataset", metavar="LABEL", help="dataset label for the registry (default: "
                   "the data file's name)")  # fmt: skip
    p.add_argument(
        "--init-from", metavar="MODEL",
        help="start a new run from this trained model (name, .safetensors or run folder) "
        "grown into the preset: same design with a larger kernel and/or more blocks, same "
        "function at the start; an RGB model may start a grey preset (its weights summed "
        "over colours, the red channel's head) (ignored when resuming)",
    )  # fmt: skip
    _add_overrides(p)
    p.set_defaults(func=_cmd_train)  # fmt: skip


#: The override options, one per `bbcodec.models.presets.KNOBS` entry and named after it
#: (its ``dest`` is the knob); each is None unless given. Choices as in `ModelConfig`/`Recipe`.
_OVERRIDES: tuple[tuple[str, dict[str, object]], ...] = (
    ("--objective", {"choices": ("elbo", "beta", "free-bits"), "help": "training loss: elbo; "
     "beta (recon + β·KL, needs --beta); free-bits (each latent dimension's KL counted as at "
     "least τ, needs --free-bits-nats)"}),
    ("--beta", {"type": positive_float, "metavar": "B",
                "help": "β, the KL's weight under --objective beta (the ELBO's is 1)"}),
    ("--free-bits-nats", {"type": positive_float, "metavar": "TAU",
                          "help": "τ, free nats per latent dimension under --objective free-bits"}),
    ("--delta-nats", {"type": positive_float, "metavar": "D",
                      "help": "δ-VAE: committed rate δ of the AR(1) prior, nats over the latent"}),
    ("--kernel-size", {"type": positive_int, "metavar": "K",
                       "help": "decoder's local causal neighbourhood, K×K (K odd, ≥ 3)"}),
    ("--row-context", {"action": argparse.BooleanOptionalAction, "help": "decoder also sees the "
     "full causal past (δ-VAE's default; a VLAE with it codes its own image size only, "
     "untiled) or not (VLAE's default)"}),
    ("--latent-dim", {"type": positive_int, "metavar": "D",
                      "help": "VLAE: latent dimensions (a δ-VAE has --n-steps × --step-dim)"}),
    ("--n-steps", {"type": positive_int, "metavar": "N", "help": "δ-VAE: latent steps, bands of "
     "rows (≥ 2; the anti-causal encoder needs them to divide the height)"}),
    ("--step-dim", {"type": positive_int, "metavar": "D",
                    "help": "δ-VAE: latent dimensions per step"}),
    ("--encoder", {"choices": ("anti-causal", "conv"),
                   "help": "q(z|x): anti-causal (δ-VAE's default; δ-VAE only) or conv (VLAE's)"}),
    ("--channels", {"type": positive_int, "metavar": "C",
                    "help": "width of the pixel network and the feature map"}),
    ("--n-blocks", {"type": positive_int, "metavar": "N",
                    "help": "gated 1×1 blocks in the pixel network"}),
    ("--learning-rate", {"type": positive_float, "metavar": "LR",
                         "help": "first learning rate of the cosine schedule"}),
    ("--final-learning-rate", {"type": positive_float, "metavar": "LR",
                               "help": "last learning rate of the cosine schedule (≤ the first)"}),
    ("--batch-size", {"type": positive_int, "metavar": "B", "help": "images per step"}),
    ("--aux-prior-steps", {"type": positive_int, "metavar": "N",
                           "help": "δ-VAE: steps fitting the auxiliary prior after training"}),
)  # fmt: skip


def _add_overrides(p) -> None:
    g = p.add_argument_group("overrides (default: the preset's value, listed above)")
    for flag, kwargs in _OVERRIDES:
        g.add_argument(flag, **kwargs)


def _run_details(record, seed: int) -> dict[str, object]:
    """The model card's first rows: the preset, its overrides, the recipe and the seed."""
    import dataclasses

    from bbcodec.models.presets import flags

    recipe = record.settings()[1]
    text = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())
    overrides = f"`{flags(record.overrides)}`" if record.overrides else "none"
    return {"preset": record.preset, "overrides": overrides, "recipe": text, "seed": seed}


def _photo_crops(data: str, config, recipe, seed: int):
    """A photo model's training crops (`PhotoCrops`) and its validation crops (an array)."""
    import numpy as np

    from bbcodec.models.photos import CROPS_PER_EPOCH, VALID_CROPS, PhotoCrops, load_photos

    crop_hw = tuple(side * recipe.crop_tiles for side in config.image_hw)
    train = PhotoCrops(load_photos(data, config.kind, "train"), crop_hw, CROPS_PER_EPOCH, seed)
    valid = PhotoCrops(load_photos(data, config.kind, "valid"), crop_hw, VALID_CROPS, seed + 1)
    return train, valid[np.arange(VALID_CROPS)]


def _cmd_train(args: argparse.Namespace) -> int:
    setup_torch(args)
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import check_images
    from bbcodec.models.presets import KNOBS, flags
    from bbcodec.models.train import settle_run, torchrun_processes, train

    overrides = {k: v for k, v in vars(args).items() if k in KNOBS and v is not None}
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / args.preset
    record, config, recipe = settle_run(run_dir, args.preset, overrides)
    if recipe.crop_tiles:
        train_images, valid_images = _photo_crops(args.data, config, recipe, args.seed)
    else:
        train_images = load_images(args.data, "train")
        check_images(config, train_images, f"{args.data} [train]")
        valid_images = load_images(args.data, recipe.valid_split)[:2000]
        check_images(config, valid_images, f"{args.data} [{recipe.valid_split}]")
    init_from = None
    if args.init_from:
        from bbcodec.models.grow import starting_model
        from bbcodec.zoo import load_model

        init_from = starting_model(load_model(args.init_from), config)
    with torchrun_processes(args.device) as process:
        train(
            config, recipe, train_images, valid_images, run_dir, minutes=args.minutes,
            epochs=args.epochs, device=process.device, seed=args.seed, init_from=init_from,
            record=record,
        )  # fmt: skip
    if process.rank > 0:  # rank 0 reports and exports
        return 0
    weights = run_dir / "model.safetensors"
    changes = f" {flags(record.overrides)}" if record.overrides else ""
    print(f"trained {args.preset}{changes}: {weights}")
    if args.export:
        details = _run_details(record, args.seed)
        if args.init_from:
            details["grown from"] = args.init_from
        _export(weights, args.export, args.data, "test", args.dataset, args, details)
    return 0


def _add_export(subparsers, common) -> None:
    summary = "evaluate a finished run and add it to the shipped models"
    p = sub(subparsers, "export-model", summary, EXPORT_DESCRIPTION, EXPORT_EXAMPLE, [common])
    p.add_argument("run", metavar="RUN_DIR", help="training run folder (or a .safetensors file)")
    p.add_argument("--name", required=True, type=model_name, help="registry name")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset holding the test split")
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="split (default test)"
    )
    p.add_argument(
        "--dataset", metavar="LABEL", help="dataset label (default: the data file's name)"
    )
    p.add_argument("--preset", metavar="NAME", help="preset the run used, for a run without "
                   "run.json (recorded in the card with the recipe)")  # fmt: skip
    p.add_argument(
        "--interim", action="store_true",
        help="export the run's last checkpoint, before the run has finished (marked interim "
        "on the card; VLAE runs only)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> int:
    setup_torch(args)
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
    record = _export_record(Path(args.run), args.preset)
    details = _run_details(record, args.seed) if record is not None else {"seed": args.seed}
    _export(weights, args.name, args.data, args.split, args.dataset, args, details)
    return 0


def _export_record(run: Path, preset: str | None):
    """What the run trained with: its run.json (a run folder's, or that of the folder holding
    the weights file), else ``preset`` without overrides, else None.

    Raises:
        UsageError: ``preset`` is not the one the run's record names.
    """
    from bbcodec.models.train import RunRecord, read_run_record

    record = read_run_record(run if run.is_dir() else run.parent)
    if record is not None and preset is not None and preset != record.preset:
        raise UsageError(f"{run} is a run of preset {record.preset}, not {preset}")
    if record is None and preset is not None:
        record = RunRecord(preset, {})
    return record


def _export(
    weights: Path, name: str, data: str, split: str, dataset: str | None, args, details
) -> None:
    """Evaluate ``weights`` on ``split`` of ``data`` and register them as ``name``."""
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import evaluate
    from bbcodec.zoo import load_model, register_evaluated

    model = load_model(weights, device=args.device)
    record = _export_record(weights, None)
    if record is not None and record.settings()[1].crop_tiles:
        from bbcodec.models.photos import EVAL_SIDE, central_crops, load_photos

        split = f"valid (central {EVAL_SIDE}x{EVAL_SIDE} of each held-out photo)"
        images = central_crops(load_photos(data, model.config.kind, "valid"), EVAL_SIDE)
    else:
        images = load_images(data, split)
    result = evaluate(
        model, images, seed=args.seed, device=args.device, progress=not getattr(args, "quiet", False),
        model_name=name, data_name=str(data), split=split,
    )  # fmt: skip
    _print_result(result)
    from bbcodec.models.train import validation_history

    run_dir = weights.parent
    info = register_evaluated(name, weights, result, data=data, split=split, dataset=dataset,
                              details=details, notes=validation_history(run_dir))  # fmt: skip
    print(f"registered {name}: {info.path} (sha256 {info.sha256[:16]}…), card {info.card_path}")
