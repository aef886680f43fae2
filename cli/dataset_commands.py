"""Dataset mode of `bbcodec compress` and `bbcodec decompress`: a dataset ⇄ a folder of
``.bbc`` shards and a ``manifest.json``, coded in this process, in worker processes or on
a Dask cluster. `bbcodec.dataset` does the work (and documents the design); this module
reads the options and prints.

- ``compress`` is in dataset mode when ``--shard-images`` or ``--scheduler`` is given, or
  OUT is an existing folder or ends with ``/`` (`dataset_mode`). It takes one DATASET.
  Running the same command again resumes an interrupted run.
- ``decompress`` is in dataset mode when its input is a folder. The output is written as
  ``decompress`` writes any output (`bbcodec.cli.codec_commands`: a temporary folder or
  file, published when complete, never over an existing one without ``--force``): a tree
  comes back as PNGs under their original relative names, an array as numbered PNGs
  (``000000.png`` …), either as one array when OUT ends in ``.npy``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path

from bbcodec.cli.args import positive_int, setup_torch
from bbcodec.errors import DecodeError, UsageError

#: ``--scheduler``: ``local``, or a Dask scheduler's address.
_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/:]+(:\d{1,5})$|^(tcp|tls)://\[[0-9a-fA-F:.]+\]:\d{1,5}$")

DATASET_DESCRIPTION = """\
A DATASET (a folder tree of PNGs, or one .npy / .npz / MNIST IDX / CIFAR set, one --split)
becomes the folder OUT of .bbc shards, each --shard-images images and an ordinary .bbc file,
plus manifest.json (model and weights sha256, settings, per shard its images, source names,
size and sha256). Entered with --shard-images or --scheduler, or when OUT is an existing
folder or ends with /. Each shard is one task: --workers N codes N shards side by side in
worker processes, --scheduler on a Dask cluster; a shard's bytes do not depend on where it
was coded. Rerun the same command after an interruption: shards whose file matches the
manifest are kept, the others coded. `bbcodec decompress OUT -o DEST` restores the tree.
  e.g. bbcodec compress cifar10.npz -o cifar10-shards/ --scheduler local --workers 2"""


def scheduler(text: str) -> str:
    """``local``, or a scheduler address ``tcp://HOST:PORT`` (or ``tls://``)."""
    if text == "local" or _ADDRESS.match(text):
        return text
    raise argparse.ArgumentTypeError(f"expected local or tcp://HOST:PORT, got {text!r}")


def add_dataset_options(parser) -> None:
    """``compress``'s dataset-mode options, in a group of their own."""
    group = parser.add_argument_group("dataset mode", DATASET_DESCRIPTION)
    group.add_argument("--shard-images", type=positive_int, metavar="N",
                       help="images per shard (default 1000)")  # fmt: skip
    group.add_argument(
        "--scheduler", type=scheduler, metavar="local|tcp://HOST:PORT",
        help="code the shards on a Dask cluster: local starts one of --workers processes; "
        "an address submits them to a running scheduler, whose workers read DATASET and "
        "write OUT at the same paths (shared storage)",
    )  # fmt: skip


def dataset_mode(args: argparse.Namespace) -> bool:
    """Whether ``compress`` codes a dataset into a folder of shards."""
    output = args.output
    return (
        args.shard_images is not None
        or args.scheduler is not None
        or output.endswith("/")
        or Path(output).is_dir()
    )


def compress_dataset(args: argparse.Namespace) -> int:
    """``bbcodec compress DATASET -o OUT_DIR``: plan, code the shards not done, summarise."""
    if len(args.inputs) != 1:
        raise UsageError(
            f"dataset mode codes one DATASET (a folder tree of PNGs or one array file), got "
            f"{len(args.inputs)} inputs"
        )
    if args.verbose:
        raise UsageError("-v (per-image rates) is not available in dataset mode")
    if args.device != "cpu":
        raise UsageError(f"dataset mode codes on the CPU; drop --device {args.device}")
    from bbcodec.dataset import DEFAULT_SHARD_IMAGES, check_scheduler, plan_dataset, run_dataset

    check_scheduler(args.scheduler, args.workers)
    setup_torch(args)
    from bbcodec.cli.codec_commands import _progress
    from bbcodec.codec import CodingSettings

    settings = CodingSettings(
        max_batch=args.max_batch, chunk_images=args.chunk_images, seed=args.seed,
        pixel_bins=args.pixel_bins, tile_latents=args.tile_latents,
    )  # fmt: skip
    plan = plan_dataset(
        args.inputs[0], args.output, args.model, shard_images=args.shard_images or
        DEFAULT_SHARD_IMAGES, settings=settings, split=args.split, max_pixels=args.max_pixels,
        force=args.force,
    )  # fmt: skip
    manifest = plan.manifest
    shards = [len(manifest.shards)]
    with _progress(manifest.n_images, "compress", args.quiet) as bar:

        def progress(images: int, finished: int) -> None:
            bar.update(images)
            shards[0] += finished
            if finished:
                bar.set_postfix_str(f"{shards[0]}/{manifest.shard_count} shards")

        progress(plan.done_images, 0)
        report = run_dataset(
            plan, workers=args.workers, scheduler=args.scheduler, progress=progress
        )
    coded = "nothing left to code"
    if report.coded_shards:
        rate = report.coded_images / max(report.seconds, 1e-9)
        coded = (f"coded {report.coded_shards} shards ({report.coded_images} images) in "
                 f"{report.seconds:.1f} s ({rate:.1f} images/s) {report.runner}")  # fmt: skip
    done = report.n_shards - report.coded_shards
    kept = f"; {_count(done, 'shard')} already done (verified, kept)" if done else ""
    print(f"{plan.folder}: {report.n_images} images in {report.n_shards} shards, "
          f"{report.shard_bytes:,} bytes, {report.bits_per_dim:.4f} bits/dim (shard files; "
          f"manifest {report.manifest_bytes:,} bytes); {coded}{kept}")  # fmt: skip
    skipped = plan.source.skipped
    if skipped:
        print(f"note: {_count(len(skipped), 'file')} under {plan.source.root} not coded: not "
              f"PNG (e.g. {skipped[0]})")  # fmt: skip
    return 0


def decompress_dataset(args: argparse.Namespace) -> int:
    """``bbcodec decompress OUT_DIR -o DEST``: verify every shard, decode, publish DEST."""
    from bbcodec.cli.codec_commands import (
        _atomic_folder,
        _check_new_output,
        _progress,
        _save_png,
        _write_npy,
        _write_png_folder,
    )
    from bbcodec.plan import default_workers

    out = Path(args.output)
    _check_new_output(out, args.force, folder_ok=True)
    if out.suffix.lower() == ".png":
        raise UsageError("a dataset decompresses to a folder or a .npy, not to one PNG")
    if args.device not in (None, "cpu"):
        raise UsageError(f"a dataset is decoded on the CPU; drop --device {args.device}")
    args.device = "cpu"
    setup_torch(args)
    from bbcodec.dataset import decode_dataset, read_dataset

    dataset = read_dataset(args.input, args.model, args.max_pixels)
    manifest = dataset.manifest
    n, kind = manifest.n_images, dataset.model_obj.config.kind
    shapes = sorted(set(dataset.shapes))
    as_npy = out.suffix.lower() == ".npy"
    if as_npy and len(shapes) > 1:
        raise DecodeError(
            f"the dataset holds images of several shapes {shapes}: one .npy array cannot "
            "hold them; give a folder name (one PNG per image)"
        )
    names = [name for record in manifest.shards for name in record.names]
    workers = args.workers or default_workers(n)
    with (
        _progress(n, "decompress", args.quiet) as bar,
        contextlib.closing(decode_dataset(dataset, workers, bar.update, args.max_pixels)) as images,
    ):  # fmt: skip
        if as_npy:
            shape = shapes[0] if shapes else dataset.model_obj.config.image_shape
            _write_npy(out, images, (n, *shape), args.force)
        elif manifest.source_kind == "tree":
            with _atomic_folder(out, args.force) as folder:
                for image, name in zip(_each(images), names, strict=True):
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    _save_png(folder / name, image, kind)
        else:
            _write_png_folder(out, images, n, kind, args.force)
    what = "one array" if as_npy else "the tree" if manifest.source_kind == "tree" else "PNGs"
    print(f"decompressed {n} images from {manifest.shard_count} shards → {out} ({what}); "
          "every shard's sha256 matched the manifest and every chunk verified (CRC, stack "
          "restored, pixel digest matched)")  # fmt: skip
    return 0


def _count(n: int, what: str) -> str:
    """``1 shard`` / ``2 shards``."""
    return f"{n} {what}{'s' if n != 1 else ''}"


def _each(arrays):
    """The images of (n, H, W[, 3]) arrays, one by one."""
    for array in arrays:
        yield from array
