"""``bbcodec bench``: the codec's real rate next to the model's −ELBO and the classic codecs.

The benchmark itself is `bbcodec.bench` (one round trip for datasets and photos, typed
results); this module builds the command's arguments, prints the table, writes the JSON
record (`bbcodec.bench.DatasetBench.to_dict`, `bbcodec.bench.PerFileBench.to_dict`,
`bbcodec.bench.PhotoBench.to_dict`) and draws the plot.

On a dataset the plot shows the stack size after each batch, per image coded so far: it
starts a little above the −ELBO (the first images of a chunk are coded without bits back)
and settles on it as the bits-back batches take over. With ``--per-file`` it shows each image's bbcodec file against
its WebP and JPEG-XL files, in bytes. On photos it shows bits/dim per photo.
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
from bbcodec.coding.logistic import PIXEL_BINS
from bbcodec.errors import UsageError
from bbcodec.plan import MAX_AUTO_CHUNK_IMAGES, MAX_BATCH_LIMIT, TILE_LATENTS

if TYPE_CHECKING:
    from bbcodec.bench import DatasetBench, PerFileBench, PhotoBench

#: Exit code when the decoded images differ from the input (the JSON is still written).
ROUNDTRIP_FAILED = 3

DESCRIPTION = """\
Benchmark the codec on a dataset split: encode the images for real into memory (timed),
decode them (timed) and compare every image, then report the achieved bits/dim (every byte
of the file) next to the model's −ELBO (one z-sample per image) and next to PNG, WebP and
JPEG-XL (lossless, one file per image, each decoded back). Writes a plot of the cumulative
bits/dim against the number of images coded (the directly coded first images amortising)
and, with --json, every figure as JSON. Exit code 3 if any image does not decode to itself.

Images of other sizes than the model's (a folder of photos, say ../shared/data/kodak with
a VLAE) are benchmarked one file per photo: per-photo rates, −ELBO (tiled) and encode /
decode seconds (each timed in the worker process that coded it), and the totals over all
photos; the plot shows bits/dim per photo.

With --per-file, every image of a dataset is coded alone into its own file, as `bbcodec
compress IMAGE.png` codes it (in this process, with --threads; with --workers N > 1 the
files are spread over N processes, one thread each, as `bbcodec compress --threads 1`
codes them), and the report is in bytes per file: bbcodec's mean next to the −ELBO's and
the PNG / WebP / JPEG-XL files of the same images, bbcodec's mean as a ratio of each, on
how many images bbcodec's file is the smaller one, and seconds per file; --json adds every
file's size. Photos are one file each anyway: --per-file changes nothing for them."""


def _add_bench(subparsers, common) -> None:
    p = sub(
        subparsers, "bench", "achieved bits/dim vs −ELBO vs PNG/WebP/JPEG-XL, with speeds",
        DESCRIPTION,
        "bbcodec bench --model vlae-bmnist --data ../shared/data/binarized_mnist.npz -n 1000"
        " --json bench.json\n"
        "  bbcodec bench --model vlae-bmnist --data ../shared/data/binarized_mnist.npz"
        " --per-file -n 100",
        [common],
    )  # fmt: skip
    add_model_and_data(p)
    p.add_argument("-n", type=positive_int, metavar="N", help="the first N images only")
    p.add_argument(
        "--per-file", action="store_true",
        help="code every image of a dataset alone, into its own file, as `bbcodec compress "
        "IMAGE.png` does, and report bytes per file next to the −ELBO, PNG, WebP and JPEG-XL "
        "(photos are one file each anyway: the same bench)",
    )  # fmt: skip
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
        help=WORKERS_HELP + "; photos: one photo per worker at a time (default: one per "
        "core); --per-file: one file per worker at a time (default: 1)",
    )
    p.add_argument("--pixel-bins", type=int, choices=PIXEL_BINS, metavar="B",
                   help="code 8-bit values as one symbol of 256 (1) or in two stages, a bin of "
                   "256/B values and the value in it (16), as compress --pixel-bins (default: "
                   "16 for photos, 1 for a dataset)")  # fmt: skip
    p.add_argument("--tile-latents", choices=TILE_LATENTS,
                   help="how photos' latents are coded, as compress --tile-latents (default: "
                   "the model's registered choice)")  # fmt: skip
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
    if args.per_file and (args.chunk_images or args.max_batch):
        flag = "--chunk-images" if args.chunk_images else "--max-batch"
        raise UsageError(
            f"--per-file codes each image alone with the default settings: {flag} does not apply"
        )
    if args.max_batch is not None and args.max_batch > MAX_BATCH_LIMIT:
        raise UsageError(
            f"--max-batch {args.max_batch}: a file records batches up to {MAX_BATCH_LIMIT}"
        )
    setup_torch(args)
    from bbcodec.bench import BenchOptions, DatasetBench, PerFileBench, PhotoBench, run_bench

    options = BenchOptions(
        chunk_images=args.chunk_images, workers=args.workers, max_batch=args.max_batch,
        seed=args.seed, device=args.device, progress=not args.quiet,
        max_pixels=args.max_pixels, per_file=args.per_file, pixel_bins=args.pixel_bins,
        tile_latents=args.tile_latents,
    )  # fmt: skip
    check_png_sizes(Path(args.data), args.max_pixels)  # before any PNG is decoded
    with pillow_unlimited():  # sizes checked: no raw DecompressionBombWarning
        result = run_bench(args.model, args.data, args.split, args.n, options)
    print_table, draw = {
        DatasetBench: (_print_table, _plot_dataset),
        PerFileBench: (_print_per_file_table, _plot_per_file),
        PhotoBench: (_print_photo_table, _plot_photos),
    }[type(result)]
    print_table(result)
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    draw(result, plot)
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
    row("  stack growth", trip.net_bpd, "the streams, without framing (and seeds)")
    row("  information content", trip.information_bpd, "of the symbols coded, net of bits back")
    if trip.report.initial_bits:  # seeded chunks (format 2's way, still a setting)
        print(f"  {'  initial bits':<24} {trip.initial_bpd:9.4f}  {'':>10}  "
              f"{trip.report.initial_bits:,} bits of seed over {r.n_images} images")  # fmt: skip
    direct = sum(chunk.direct_items for chunk in trip.report.chunks)
    print(f"  {'':<24} {'':>9}  {'':>10}  {len(trip.report.chunks)} chunks, each starting "
          f"empty: {direct} images coded without bits back")  # fmt: skip
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


def _print_per_file_table(r: PerFileBench) -> None:
    """Mean bytes per file (and bits/dim) of bbcodec, the −ELBO and the baselines, bbcodec's
    mean as a ratio of each, and seconds per file, on stdout."""
    means, ratio, smaller = r.mean_file_bytes, r.bbcodec_ratio, r.bbcodec_smaller
    n, dims = r.n_images, r.dims_per_image

    def row(label: str, size: float, vs: str = "", note: str = "") -> None:
        print(f"  {label:<14} {size:10.1f} {8 * size / dims:9.4f}  {vs:>9}  {note}".rstrip())

    print(f"model      {r.model}  ({r.elbo.family}, {r.elbo.n_params:,} parameters)")
    print(f"data       {r.data} [{r.split}]: {n} images × {dims} dims, each its own file")
    print(f"  {'':<14} {'bytes/file':>10} {'bits/dim':>9}  {'bbcodec ÷':>9}")
    row("bbcodec", means["bbcodec"], "", "every byte of the file `bbcodec compress` writes")
    row("−ELBO", r.neg_elbo_bytes, f"{ratio['neg_elbo']:.3f}x", "one z-sample per image")
    for name, baseline in r.baselines.items():
        note = f"bbcodec smaller on {smaller[name]} of {n}; {baseline.settings}"
        row(name, means[name], f"{ratio[name]:.3f}x", note)
    enc, dec = r.encode_seconds_per_file, r.decode_seconds_per_file
    threads = r.settings.torch_threads
    who = f"{r.workers} workers × " if r.workers > 1 else ""
    print(f"speed      seconds per file: encode {enc['mean']:.3f} (max {enc['max']:.3f}), decode "
          f"{dec['mean'] or float('nan'):.3f} (max {dec['max'] or float('nan'):.3f})"
          f" ({who}{threads} thread{'s' * (threads != 1)}, {r.settings.device})")  # fmt: skip
    failures = sum(not trip.ok for trip in r.trips)
    verdict = "ok, every image decodes to itself" if not failures else f"FAILED ({failures})"
    print(f"roundtrip  {verdict}")


def _print_photo_table(r: PhotoBench) -> None:
    """Per-photo rates and times, then the totals, on stdout."""
    totals = r.baselines_bpd
    names = list(totals)
    print(f"model      {r.model}")
    print(f"data       {r.data}: {r.n_images} photos, each its own file")
    if r.settings.tile_latents == "prior-mean":
        print("latents    none coded: every tile's is the prior's mean (--tile-latents prior-mean),"
              " so achieved is below the −ELBO by about its KL")  # fmt: skip
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
                label="bbcodec: stack so far ÷ images")  # fmt: skip
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


def _plot_per_file(r: PerFileBench, path: Path) -> None:
    """Each image's bbcodec file against its WebP and JPEG-XL files, in bytes."""
    sizes = r.file_bytes
    ours = sizes["bbcodec"]
    others = [name for name in ("webp", "jpegxl") if name in sizes]
    with _figure(path, (5.5, 5), 120) as ax:
        for name in others:
            smaller = f"bbcodec smaller on {r.bbcodec_smaller[name]}/{r.n_images}"
            ax.plot(sizes[name], ours, "o", ms=3, alpha=0.6, label=f"vs {name}: {smaller}")
        top = max(max(values) for values in sizes.values() if values) * 1.05
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="equal size")
        ax.axhline(r.neg_elbo_bytes, color="C3", ls="--",
                   label=f"mean −ELBO {r.neg_elbo_bytes:.1f} bytes")  # fmt: skip
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("baseline file, bytes")
        ax.set_ylabel("bbcodec file, bytes")
        ax.set_title(f"{r.model} on {Path(r.data).name} [{r.split}]: {r.n_images} images, "
                     "each its own file", fontsize=9)  # fmt: skip
        ax.grid(True, alpha=0.3)
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
