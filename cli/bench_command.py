"""``bbcodec bench``: the codec's real rate next to the model's −ELBO and the classic codecs.

One run, on the same images:

1. **encode** them for real (`bbcodec.api.compress_to` into memory; timed: images/s, worker
   start-up included, with ``--workers`` processes coding chunks side by side);
2. **decode** the bytes (`bbcodec.api.decompress_from`; timed) and compare every image;
3. the model's **−ELBO** (`bbcodec.models.evaluate.evaluate`, one z-sample per image; not
   part of the codec timings);
4. the **baselines** PNG, WebP and JPEG-XL, one lossless file per image
   (`bbcodec.baselines`).

Rates are bits per sub-pixel. ``achieved_bpd`` counts every byte of the ``.bbc`` file
(header, seeds, chunk trailers, framing); ``net_bpd`` is the stack growth over the seeds;
``information_bpd`` the information content of the symbols coded (net of bits back) under
the coder's fixed-point probabilities; ``gap_pct`` = 100 · (achieved / −ELBO − 1).

The plot shows the stack size after each batch, per image coded so far: it starts high (the
initial bits of the seed, spread over few images) and falls towards the −ELBO as the seed
amortises.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

#: Exit code when the decoded images differ from the input (the JSON is still written).
ROUNDTRIP_FAILED = 3

DESCRIPTION = """\
Benchmark the codec on a dataset split: encode the images for real into memory (timed),
decode them (timed) and compare every image, then report the achieved bits/dim (every byte
of the file) next to the model's −ELBO (one z-sample per image) and next to PNG, WebP and
JPEG-XL (lossless, one file per image, each decoded back). Writes a plot of the cumulative
bits/dim against the number of images coded (the seed's initial bits amortising) and, with
--json, every figure as JSON. Exit code 3 if any image does not decode to itself.

Images of other sizes than the model's (a folder of photos, say ../shared/data/kodak with
a VLAE) are benchmarked one file per photo: per-photo rates, −ELBO (tiled) and encode /
decode seconds (each timed in the worker process that coded it), and the totals over all
photos; the plot shows bits/dim per photo."""


def _add_bench(subparsers, common) -> None:
    from bbcodec.cli.codec_commands import MAX_AUTO_CHUNK_IMAGES, WORKERS_HELP
    from bbcodec.cli.main import _positive_int, _sub

    p = _sub(
        subparsers, "bench", "achieved bits/dim vs −ELBO vs PNG/WebP/JPEG-XL, with speeds",
        DESCRIPTION,
        "bbcodec bench --model vlae-bmnist --data ../shared/data/binarized_mnist.npz -n 1000"
        " --json bench.json",
        [common],
    )  # fmt: skip
    p.add_argument(
        "--model", required=True, metavar="NAME|PATH",
        help="a shipped model name (see `bbcodec models`), a .safetensors file or a run folder",
    )  # fmt: skip
    p.add_argument(
        "--data", required=True, metavar="PATH",
        help="dataset file or folder (IDX, npz, CIFAR, PNGs, npy)",
    )  # fmt: skip
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="split (default test)"
    )
    p.add_argument("-n", type=_positive_int, metavar="N", help="the first N images only")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    p.add_argument(
        "--plot", metavar="FILE.png",
        help="plot file (default: the JSON path with .png, else bench-<model>.png)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch", type=_positive_int, metavar="B",
        help="largest number of images coded side by side (default: the codec's)",
    )  # fmt: skip
    p.add_argument(
        "--chunk-images", type=_positive_int, metavar="C",
        help="images per independently decodable chunk (default: split evenly over the "
        f"workers, at most {MAX_AUTO_CHUNK_IMAGES} per chunk)",
    )  # fmt: skip
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help=WORKERS_HELP + "; photos: one photo per worker at a time (default: one per core)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bench)


def _model_label(model: str) -> str:
    """A file-name-safe label: the registered name, or the weights file's stem."""
    path = Path(model)
    if path.name == "model.safetensors":
        path = path.parent
    label = path.stem if path.suffix == ".safetensors" else path.name
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label) or "model"


def _plot_path(args: argparse.Namespace) -> Path:
    if args.plot:
        return Path(args.plot)
    if args.json:
        return Path(args.json).with_suffix(".png")
    return Path(f"bench-{_model_label(args.model)}.png")


def stack_curve(report) -> tuple[list[int], list[int]]:
    """(images coded so far, bits on the stacks so far) after each batch of a compression.

    Bits count the seeds of every chunk begun so far (chunk trailers and file framing
    excluded: those are only in ``report.file_bits``).

    Args:
        report: a `bbcodec.api.CompressReport` (its ``chunk_batch_sizes`` and
            ``chunk_stack_bits``).
    """
    images, bits = [], []
    done = finished_bits = 0
    for sizes, stack in zip(report.chunk_batch_sizes, report.chunk_stack_bits, strict=True):
        for size, stack_bits in zip(sizes, stack, strict=True):
            done += size
            images.append(done)
            bits.append(finished_bits + stack_bits)
        finished_bits += stack[-1] if stack else 0
    return images, bits


def _load(args: argparse.Namespace):
    """(model, images, labels, photos): photos if any image is not of the model's size,
    then ``images`` is a list of (H, W[, 3]) arrays, else one (N, H, W[, 3]) array."""
    from bbcodec.models.data import load_image_runs

    from bbcodec.zoo import load_model

    model = load_model(args.model, device=args.device)
    runs = load_image_runs(args.data, args.split)
    model_hw = tuple(model.config.image_hw)
    if len(runs) == 1 and runs[0].shape[1:3] == model_hw:
        images = runs[0][: args.n]
        return model, images, [f"{args.data}[{i}]" for i in range(len(images))], False
    images = [image for run in runs for image in run][: args.n]
    data = Path(args.data)
    if data.is_dir():
        labels = sorted(
            str(f) for f in data.iterdir() if f.suffix.lower() == ".png" and f.is_file()
        )
    else:
        labels = [str(data)] if len(images) == 1 else [f"{data}[{i}]" for i in range(len(images))]
    return model, images, labels[: len(images)], True


def _bench(args: argparse.Namespace, model, images) -> tuple[dict[str, Any], str | None]:
    """Run the benchmark; returns (JSON-ready results, roundtrip failure message or None)."""
    import numpy as np
    import torch
    from bbcodec.models.evaluate import check_images, evaluate
    from tqdm import tqdm

    from bbcodec.api import compress_to, decompress_from, default_workers, plan_chunks
    from bbcodec.baselines import BASELINES, run_baselines
    from bbcodec.container import ContainerError
    from bbcodec.image_codec import CodingSettings
    from bbcodec.zoo import list_models

    check_images(model.config, images, f"{args.data} [{args.split}]")
    n, dims = len(images), int(np.prod(images.shape[1:]))
    chunk_images, workers = plan_chunks(
        n, args.chunk_images, args.workers or default_workers(n), args.device
    )
    threads = 1 if workers > 1 else torch.get_num_threads()
    overrides = {"max_batch": args.max_batch} if args.max_batch is not None else {}
    settings = CodingSettings(
        chunk_images=chunk_images, seed=args.seed, device=args.device, torch_threads=threads,
        **overrides,
    )  # fmt: skip
    # A registered name goes into the header as such, so the bytes are those `bbcodec
    # compress` would write; weights given by path are coded as "custom".
    registered = args.model in {info.name for info in list_models()}
    quiet = args.quiet

    buffer = io.BytesIO()
    with tqdm(total=n, desc="encode", unit="img", disable=quiet) as bar:
        t0 = time.perf_counter()
        report = compress_to(
            buffer, images, args.model if registered else model, settings, bar.update, workers
        )
        encode_s = time.perf_counter() - t0

    failure = None
    decode_s = None
    buffer.seek(0)
    with tqdm(total=n, desc="decode", unit="img", disable=quiet) as bar:
        t0 = time.perf_counter()
        try:
            parts = list(decompress_from(buffer, model, bar.update, workers))
            decode_s = time.perf_counter() - t0
        except ContainerError as exc:
            failure = f"the file does not decode: {exc}"
    if failure is None:
        decoded = np.concatenate(parts) if parts else np.empty((0,), np.uint8)
        if decoded.shape != images.shape:
            failure = f"decoded {decoded.shape} images, encoded {images.shape}"
        elif not np.array_equal(decoded, images):
            wrong = np.flatnonzero((decoded != images).reshape(n, -1).any(1))
            failure = f"{len(wrong)} of {n} images decode wrongly (first: image {wrong[0]})"

    elbo = evaluate(
        model, images, seed=args.seed, device=args.device, progress=not quiet,
        model_name=str(args.model), data_name=str(args.data), split=args.split,
    )  # fmt: skip
    baselines = run_baselines(images, BASELINES, progress=not quiet)

    curve_images, curve_bits = stack_curve(report)
    total_dims = n * dims
    achieved = report.achieved_bpd
    result = {
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        "n_images": n,
        "dims_per_image": dims,
        "family": elbo.family,
        "latent_dim": elbo.latent_dim,
        "n_params": elbo.n_params,
        "neg_elbo_bpd": elbo.neg_elbo_bpd,
        "neg_elbo_nats": elbo.neg_elbo_nats,
        "kl_bpd": elbo.kl_bpd,
        "recon_bpd": elbo.recon_bpd,
        "achieved_bpd": achieved,
        "net_bpd": report.net_bits / total_dims,
        "information_bpd": report.information_bits / total_dims,
        "initial_bits": report.initial_bits,
        "initial_bpd": report.initial_bits / total_dims,
        "file_bytes": report.file_bits // 8,
        "gap_pct": 100.0 * (achieved / elbo.neg_elbo_bpd - 1.0),
        "encode_seconds": encode_s,
        "encode_img_per_s": n / max(encode_s, 1e-9),
        "decode_seconds": decode_s,
        "decode_img_per_s": None if decode_s is None else n / max(decode_s, 1e-9),
        "elbo_img_per_s": elbo.images_per_s,
        "roundtrip_ok": failure is None,
        "baselines": {name: r.bpd for name, r in baselines.items()},
        "baselines_detail": {name: r.to_dict() for name, r in baselines.items()},
        "threads": threads,
        "workers": workers,
        "device": args.device,
        "seed": args.seed,
        "coding_settings": settings.to_dict(),
        "chunk_batch_sizes": [list(s) for s in report.chunk_batch_sizes],
        "stack_curve": {"images": curve_images, "bits": curve_bits},
    }
    return result, failure


def _print_table(r: dict[str, Any]) -> None:
    elbo = r["neg_elbo_bpd"]

    def row(label: str, bpd: float, note: str = "", with_gap: bool = True) -> None:
        gap = f"{100 * (bpd / elbo - 1):+8.2f} %" if with_gap and elbo > 0 else ""
        print(f"  {label:<24} {bpd:9.4f}  {gap:>10}  {note}".rstrip())

    print(f"model      {r['model']}  ({r['family']}, {r['n_params']:,} parameters,"
          f" {r['latent_dim']} latent dims)")  # fmt: skip
    print(f"data       {r['data']} [{r['split']}]: {r['n_images']} images × {r['dims_per_image']}"
          " dims")  # fmt: skip
    print(f"  {'':<24} {'bits/dim':>9}  {'vs −ELBO':>10}")
    row("−ELBO", elbo, f"{r['neg_elbo_nats']:.3f} nats/image, one z-sample per image", False)
    row("bbcodec file", r["achieved_bpd"], f"{r['file_bytes']:,} bytes, every byte counted")
    row("  net of the seeds", r["net_bpd"], "stack growth")
    row("  information content", r["information_bpd"], "of the symbols coded, net of bits back")
    print(f"  {'  initial bits':<24} {r['initial_bpd']:9.4f}  {'':>10}  "
          f"{r['initial_bits']:,} bits of seed over {r['n_images']} images")  # fmt: skip
    for name, bpd in r["baselines"].items():
        detail = r["baselines_detail"][name]
        row(name, bpd, f"{detail['settings']} ({detail['seconds']:.1f} s)")
    decode = r["decode_img_per_s"]
    decode_text = "—" if decode is None else f"{decode:.1f} images/s"
    workers = r.get("workers", 1)
    who = f"{workers} workers × " if workers > 1 else ""
    print(f"speed      encode {r['encode_img_per_s']:.1f} images/s, decode {decode_text}"
          f" ({who}{r['threads']} thread{'s' * (r['threads'] != 1)}, {r['device']});"
          f" −ELBO {r['elbo_img_per_s']:.0f} images/s")  # fmt: skip
    verdict = "ok, every image decodes to itself" if r["roundtrip_ok"] else "FAILED"
    print(f"roundtrip  {verdict}")


def write_plot(r: dict[str, Any], path: Path) -> None:
    """Cumulative bits/dim against images coded, with the −ELBO and the baselines.

    Args:
        r: the results `_bench` returns.
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = r["dims_per_image"]
    images = r["stack_curve"]["images"]
    bits = r["stack_curve"]["bits"]
    cumulative = [b / (k * dims) for k, b in zip(images, bits, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(images, cumulative, "o-", ms=3, label="bbcodec: stack so far ÷ images (seed included)")
    ax.plot([r["n_images"]], [r["achieved_bpd"]], "k*", ms=10,
            label=f"bbcodec file {r['achieved_bpd']:.4f}")  # fmt: skip
    ax.axhline(r["neg_elbo_bpd"], color="C3", ls="--", label=f"−ELBO {r['neg_elbo_bpd']:.4f}")
    for i, (name, bpd) in enumerate(r["baselines"].items()):
        ax.axhline(bpd, color=f"C{4 + i}", ls=":", label=f"{name} {bpd:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("images coded")
    ax.set_ylabel("bits/dim")
    lines = max([r["neg_elbo_bpd"], r["achieved_bpd"], *r["baselines"].values()])
    # the first points (one image paying the whole seed) may be far up: clip them
    ax.set_ylim(0, max(lines, min(max(cumulative, default=0), 2 * lines)) * 1.08)
    ax.set_title(f"{r['model']} on {Path(r['data']).name} [{r['split']}], {r['n_images']} images",
                 fontsize=10)  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cmd_bench(args: argparse.Namespace) -> int:
    from bbcodec.cli.main import _check_output_folder, _setup_torch, _write_json

    plot = _plot_path(args)
    _check_output_folder(args.json)
    _check_output_folder(str(plot))
    if plot.suffix.lower() != ".png":
        raise ValueError(f"--plot {plot}: the plot is written as PNG; give a .png file name")
    if args.max_batch is not None and args.max_batch > 1 << 16:
        raise ValueError(f"--max-batch {args.max_batch}: a file records batches up to {1 << 16}")
    _setup_torch(args)
    model, images, labels, photos = _load(args)
    if photos:
        from bbcodec.cli.photo_bench import bench_photos, print_photo_table, write_photo_plot

        result, failure = bench_photos(args, model, images, labels)
        print_photo_table(result)
    else:
        result, failure = _bench(args, model, images)
        _print_table(result)
    if args.json:
        _write_json(args.json, _finite(result))
        print(f"wrote {args.json}")
    (write_photo_plot if photos else write_plot)(result, plot)
    print(f"wrote {plot}")
    if failure is not None:
        print(f"bbcodec: error: roundtrip failed: {failure}", file=sys.stderr)
        return ROUNDTRIP_FAILED
    return 0


def _finite(obj):
    """Replaces NaN/inf (not JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
