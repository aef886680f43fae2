"""``bbcodec bench``: the codec's real rate next to the model's −ELBO and the classic codecs.

The benchmark itself is `bbcodec.bench` (one round trip for datasets and photos, typed
results); this module builds the command's arguments, prints the table, writes the JSON
record (`bbcodec.bench.DatasetBench.to_dict`, `bbcodec.bench.PhotoBench.to_dict`) and
draws the plot.

On a dataset the plot shows the stack size after each batch, per image coded so far: it
starts high (the initial bits of the seed, spread over few images) and falls towards the
−ELBO as the seed amortises. On photos it shows bits/dim per photo.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bbcodec.cli.args import (
    WORKERS_HELP,
    add_max_pixels,
    add_model_and_data,
    check_output_folder,
    check_png_sizes,
    pillow_unlimited,
    positive_int,
    setup_torch,
    sub,
    write_json,
)
from bbcodec.errors import UsageError
from bbcodec.plan import MAX_AUTO_CHUNK_IMAGES, MAX_BATCH_LIMIT

if TYPE_CHECKING:
    from bbcodec.bench import DatasetBench, PhotoBench

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
    p = sub(
        subparsers, "bench", "achieved bits/dim vs −ELBO vs PNG/WebP/JPEG-XL, with speeds",
        DESCRIPTION,
        "bbcodec bench --model vlae-bmnist --data ../shared/data/binarized_mnist.npz -n 1000"
        " --json bench.json",
        [common],
    )  # fmt: skip
    add_model_and_data(p)
    p.add_argument("-n", type=positive_int, metavar="N", help="the first N images only")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    p.add_argument(
        "--plot", metavar="FILE.png",
        help="plot file (default: the JSON path with .png, else bench-<model>.png)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch", type=positive_int, metavar="B",
        help="largest number of images coded side by side (default: the codec's)",
    )  # fmt: skip
    p.add_argument(
        "--chunk-images", type=positive_int, metavar="C",
        help="images per independently decodable chunk (default: split evenly over the "
        f"workers, at most {MAX_AUTO_CHUNK_IMAGES} per chunk)",
    )  # fmt: skip
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help=WORKERS_HELP + "; photos: one photo per worker at a time (default: one per core)",
    )
    add_max_pixels(p)
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


def _cmd_bench(args: argparse.Namespace) -> int:
    plot = _plot_path(args)
    check_output_folder(args.json)
    check_output_folder(str(plot))
    if plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: the plot is written as PNG; give a .png file name")
    if args.max_batch is not None and args.max_batch > MAX_BATCH_LIMIT:
        raise UsageError(
            f"--max-batch {args.max_batch}: a file records batches up to {MAX_BATCH_LIMIT}"
        )
    setup_torch(args)
    from bbcodec.bench import BenchOptions, PhotoBench, run_bench

    options = BenchOptions(
        chunk_images=args.chunk_images, workers=args.workers, max_batch=args.max_batch,
        seed=args.seed, device=args.device, progress=not args.quiet,
        max_pixels=args.max_pixels,
    )  # fmt: skip
    check_png_sizes(Path(args.data), args.max_pixels)  # before any PNG is decoded
    with pillow_unlimited():  # sizes checked: no raw DecompressionBombWarning
        result = run_bench(args.model, args.data, args.split, args.n, options)
    photos = isinstance(result, PhotoBench)
    (_print_photo_table if photos else _print_table)(result)
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    (_plot_photos if photos else _plot_dataset)(result, plot)
    print(f"wrote {plot}")
    if result.failure is not None:
        print(f"bbcodec: error: roundtrip failed: {result.failure}", file=sys.stderr)
        return ROUNDTRIP_FAILED
    return 0


# ----- tables ----------------------------------------------------------------------------


def _print_table(r: DatasetBench) -> None:
    """The dataset's rates (bits/dim, and % from the −ELBO) and speeds, on stdout."""
    elbo = r.elbo.neg_elbo_bpd

    def row(label: str, bpd: float, note: str = "", with_gap: bool = True) -> None:
        gap = f"{100 * (bpd / elbo - 1):+8.2f} %" if with_gap and elbo > 0 else ""
        print(f"  {label:<24} {bpd:9.4f}  {gap:>10}  {note}".rstrip())

    print(f"model      {r.model}  ({r.elbo.family}, {r.elbo.n_params:,} parameters,"
          f" {r.elbo.latent_dim} latent dims)")  # fmt: skip
    print(f"data       {r.data} [{r.split}]: {r.n_images} images × {r.dims_per_image} dims")
    print(f"  {'':<24} {'bits/dim':>9}  {'vs −ELBO':>10}")
    row("−ELBO", elbo, f"{r.elbo.neg_elbo_nats:.3f} nats/image, one z-sample per image", False)
    trip = r.trip
    row("bbcodec file", trip.achieved_bpd, f"{trip.file_bytes:,} bytes, every byte counted")
    row("  net of the seeds", trip.net_bpd, "stack growth")
    row("  information content", trip.information_bpd, "of the symbols coded, net of bits back")
    print(f"  {'  initial bits':<24} {trip.initial_bpd:9.4f}  {'':>10}  "
          f"{trip.report.initial_bits:,} bits of seed over {r.n_images} images")  # fmt: skip
    for name, baseline in r.baselines.items():
        row(name, baseline.bpd, f"{baseline.settings} ({baseline.seconds:.1f} s)")
    decode = r.decode_img_per_s
    decode_text = "—" if decode is None else f"{decode:.1f} images/s"
    threads = r.settings.torch_threads
    who = f"{r.workers} workers × " if r.workers > 1 else ""
    print(f"speed      encode {r.encode_img_per_s:.1f} images/s, decode {decode_text}"
          f" ({who}{threads} thread{'s' * (threads != 1)}, {r.settings.device});"
          f" −ELBO {r.elbo.images_per_s:.0f} images/s")  # fmt: skip
    verdict = "ok, every image decodes to itself" if trip.ok else "FAILED"
    print(f"roundtrip  {verdict}")


def _print_photo_table(r: PhotoBench) -> None:
    """Per-photo rates and times, then the totals, on stdout."""
    totals = r.baselines_bpd
    names = list(totals)
    print(f"model      {r.model}")
    print(f"data       {r.data}: {r.n_images} photos, each its own file")
    head = f"{'image':>12} {'size':>9} {'bbcodec':>8} {'−ELBO':>7} " + " ".join(
        f"{n:>7}" for n in names
    )
    print(head + f" {'enc s':>6} {'dec s':>6}")
    for row in r.rows:
        size = "×".join(map(str, row.shape[1::-1]))
        seconds = row.trip.decode_seconds
        dec = "-" if seconds is None else f"{seconds:.1f}"
        print(f"{Path(row.image).name[-12:]:>12} {size:>9} {row.trip.achieved_bpd:8.3f} "
              f"{row.neg_elbo_bpd:7.3f} " + " ".join(f"{row.baselines_bpd[n]:7.3f}" for n in names)
              + f" {row.trip.encode_seconds:6.1f} {dec:>6}")  # fmt: skip
    print(f"{'all':>12} {'':>9} {r.achieved_bpd:8.3f} {r.neg_elbo_bpd:7.3f} "
          + " ".join(f"{totals[n]:7.3f}" for n in names))  # fmt: skip
    enc, dec = r.encode_seconds_per_image, r.decode_seconds_per_image
    print(f"bits/dim over all photos; achieved is {r.gap_pct:+.2f} % from the −ELBO; "
          f"seconds per photo: encode mean {enc['mean']:.1f} (max {enc['max']:.1f}), decode "
          f"mean {dec['mean'] or float('nan'):.1f} (max {dec['max'] or float('nan'):.1f})")  # fmt: skip


# ----- plots -----------------------------------------------------------------------------


@contextlib.contextmanager
def _figure(path: Path, figsize: tuple[float, float], dpi: int | None = None):
    """A matplotlib figure's axes (Agg backend), saved to ``path`` as PNG on a clean exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _plot_dataset(r: DatasetBench, path: Path) -> None:
    """Cumulative bits/dim against images coded, with the −ELBO and the baselines."""
    from bbcodec.bench import stack_curve

    images, bits = stack_curve(r.trip.report)
    cumulative = [b / (k * r.dims_per_image) for k, b in zip(images, bits, strict=True)]
    elbo, achieved = r.elbo.neg_elbo_bpd, r.trip.achieved_bpd
    baselines = {name: baseline.bpd for name, baseline in r.baselines.items()}
    with _figure(path, (7, 4.5), 120) as ax:
        ax.plot(images, cumulative, "o-", ms=3,
                label="bbcodec: stack so far ÷ images (seed included)")  # fmt: skip
        ax.plot([r.n_images], [achieved], "k*", ms=10,
                label=f"bbcodec file {achieved:.4f}")  # fmt: skip
        ax.axhline(elbo, color="C3", ls="--", label=f"−ELBO {elbo:.4f}")
        for i, (name, bpd) in enumerate(baselines.items()):
            ax.axhline(bpd, color=f"C{4 + i}", ls=":", label=f"{name} {bpd:.3f}")
        ax.set_xscale("log")
        ax.set_xlabel("images coded")
        ax.set_ylabel("bits/dim")
        lines = max([elbo, achieved, *baselines.values()])
        # the first points (one image paying the whole seed) may be far up: clip them
        ax.set_ylim(0, max(lines, min(max(cumulative, default=0), 2 * lines)) * 1.08)
        ax.set_title(f"{r.model} on {Path(r.data).name} [{r.split}], {r.n_images} images",
                     fontsize=10)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _plot_photos(r: PhotoBench, path: Path) -> None:
    """Bits/dim per photo: bbcodec next to its −ELBO and the classic codecs."""
    import numpy as np

    names = [Path(row.image).stem for row in r.rows]
    series = {"bbcodec (achieved)": [row.trip.achieved_bpd for row in r.rows],
              "−ELBO": [row.neg_elbo_bpd for row in r.rows]}  # fmt: skip
    for codec in r.baselines_bpd:
        series[codec] = [row.baselines_bpd[codec] for row in r.rows]
    width = 0.8 / len(series)
    with _figure(path, (max(6, 0.45 * len(names) + 2), 4)) as ax:
        for k, (label, values) in enumerate(series.items()):
            ax.bar(np.arange(len(names)) + k * width, values, width, label=label)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, fontsize=7)
        ax.set_ylabel("bits per sub-pixel")
        ax.set_title(f"{r.model} on {r.data}: each photo its own file")
        ax.legend(fontsize=7)
