"""`bbcodec compress` and `bbcodec decompress`: image files ⇄ ``.bbc`` files.

The commands follow `bbcodec.cli.args`' conventions (``_add_<cmd>`` / ``_cmd_<cmd>`` pairs,
one-line errors, torch imported only when a command runs) and add the file discipline a
codec owes its user:

- **Nothing is overwritten** without ``--force``; that is checked before any work, and
  again when the output is published: an output that appeared meanwhile (another run
  writing the same name) is refused, not replaced (`_publish`).
- **Nothing partial is left behind.** Output goes to a hidden temporary file or folder
  beside the output (``.NAME.*.part``) and is renamed into place only when everything was
  written (and, for ``decompress``, every chunk verified and the file's end checked, for
  every kind of output); any error, Ctrl-C or SIGTERM removes it. A ``.npy`` is written
  sequentially, not through a memory map, so a full disk is an error, not a crash.
- **Nothing larger than ``--max-pixels``** is read or decoded: PNG sizes are checked from
  their headers before a pixel is decoded, a ``.bbc`` file's claimed shapes before decoding.
- **PNG metadata** (colour profile, gamma, text, ...: `bbcodec.cli.args.PNG_METADATA`) is
  not stored; compress says so in one note line. Only the pixels are coded.
- ``--force`` replaces a folder only if it holds nothing but decompressed images
  (``NNNNNN.png``), so a typo cannot wipe out a folder of other files.

Decompressed images are written so that compressing them again gives the same pixels:
binary models' images as 1-bit PNGs (which `bbcodec.models.data.load_images` reads back as
0/1), grey ones as 8-bit grey PNGs, RGB ones as 8-bit RGB PNGs; or all of them as one
``.npy`` array.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bbcodec.cli import dataset_commands
from bbcodec.cli.args import (
    WORKERS_HELP,
    add_debug,
    add_max_pixels,
    batch_limit,
    check_png_sizes,
    device,
    non_negative_int,
    pillow_unlimited,
    positive_int,
    setup_torch,
    sub,
)
from bbcodec.coding.logistic import PIXEL_BINS
from bbcodec.errors import BbcFileError, DecodeError, ImageKindError, SizeLimitError, UsageError
from bbcodec.plan import (
    DEFAULT_MAX_BATCH,
    MAX_AUTO_CHUNK_IMAGES,
    TILE_LATENTS,
    describe_default_models,
    is_tiled,
)

#: File names of decompressed images inside an output folder.
_IMAGE_NAME = re.compile(r"^\d{6,}\.png$")
#: .npz keys `load_images` understands (one array of them is picked by --split).
_SPLIT_KEYS = ("train", "valid", "test", "x_train", "x_valid", "x_test")

COMPRESS_DESCRIPTION = """\
Compress images into one .bbc file with bits-back ANS coding.

INPUT: image files (PNG, TIFF, binary PPM/PGM, JPEG-XL, JPEG; told apart by content) or
folders of them, .npy uint8 arrays ((N, H, W) or (N, H, W, 3)), or .npz files (also MNIST
IDX files/folders and CIFAR-10 batches, as `bbcodec eval --data` reads).
An .npz holding train/valid/test or x_train/x_valid/x_test arrays gives the --split array
(default test); any other .npz must hold exactly one array, which is used. All images are
concatenated in argument order. Images of the model's size are coded in batches; images of
any other size (photos) one at a time, tiled into model-sized tiles with one latent each
while the pixel context runs across the tiles (VLAE models; nothing is coded for padding).
Images are read exactly: palette images become grey or RGB, 16-bit images holding 8-bit
values are narrowed; transparency, animation, several pages, CMYK and true 16-bit or
floating-point values are refused. A JPEG (or a lossy JPEG-XL) is coded as its decoded
pixels, exactly, with a note that it was already lossy: the .bbc is likely larger. Only the
pixels are stored: PNG metadata that changes how they are shown (ICC profile, gamma, sRGB,
chromaticities, colour space) or carries words (text, EXIF) is dropped, and the summary
says so in a note; dpi, time stamps and other hints are dropped without one. Images over
--max-pixels are refused before they are decoded.

The model defaults by image kind and size ({defaults}) and is named in the file, with a
fingerprint of its weights. A model given as a weights path is recorded as "custom":
decompress needs the same --model PATH.

The images are coded in independently decodable chunks, several at a time in --workers
processes (one torch thread each); for a given --chunk-images the file's bytes do not
depend on the number of workers.

The summary puts the rates side by side, in bits/dim and bits: the file size (every byte:
header, chunk framing, ANS overhead), the information content of what was coded
(−log2 P(x|z̄) − log2 P(z̄) + log2 Q(z̄|x) summed over images, net of the bits got back;
each chunk's first images, coded before there are bits to get back, count what they
cost), and the model's −ELBO on the same images (an estimate: one z-sample per image,
drawn with --seed). The −ELBO is a separate pass of the float model: one batched pass for
images of the model's size, but for a photo a tiled pass that costs a third of its
encoding, so for photos it is computed only with --elbo (the information line is the coding
model's own one-sample −ELBO, as coded).

-v adds one line per image: the model's bits (its −ELBO estimate for the image), the bits
written for it, and the difference. Images of a batch share one ANS stack, so "written"
is the image's information content as coded (the formula above, for the z̄ the coder
popped for it); these sum to the information line. The file additionally holds the
header, the chunk framing and the ANS overhead."""

DECOMPRESS_DESCRIPTION = """\
Decompress a .bbc file. OUT ending in .npy gets one uint8 array ((N, H, W) or
(N, H, W, 3); images of one shape); OUT ending in .png gets the image of a one-image file
(a file of several images is refused: give a folder or a .npy); any other OUT becomes a
folder of PNGs, 000000.png, 000001.png, … in file order: binary images as 1-bit PNGs
(pixel values 0/1), grey as 8-bit grey, RGB as 8-bit RGB — `bbcodec compress` reads them
back to the same pixels.

Every chunk is verified (its CRC, the ANS stack must return exactly to where the encoder
started, and the pixels must match their digest), and so is the end of the file (no bytes
after the last chunk), whatever the output; a damaged file, one made with other weights, or one that claims an
image over --max-pixels is an error and nothing is written. Decoding runs on the device
and with the torch thread count the file records (see `--device`); with --workers, each
worker process decodes whole chunks with that thread count, and the images come out in
file order.

A dataset folder (made by compress in dataset mode) is checked first — the manifest, every
shard's size and sha256 against it, and the weights — then decoded shard by shard (--workers
shards side by side) into DEST: a tree of PNGs under their original names, numbered PNGs
for an array dataset, or one array if DEST ends in .npy."""


def _compress_description() -> str:
    """The description with the default models (called only for --help)."""
    return COMPRESS_DESCRIPTION.format(defaults=describe_default_models())


# ----- compress -------------------------------------------------------------------------


def _add_compress(subparsers, common) -> None:
    p = sub(
        subparsers, "compress", "compress images (PNG, TIFF, JPEG-XL, .npy, ...) into a .bbc file",
        _compress_description, "bbcodec compress digits/ more.npy -o digits.bbc -v", [common],
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="images (PNG, TIFF, PPM/PGM, JPEG-XL, JPEG), folders, .npy, .npz")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT.bbc",
                   help="the file to write (a folder in dataset mode, below)")  # fmt: skip
    p.add_argument(
        "--model", metavar="NAME|PATH",
        help="a shipped model name (see `bbcodec models`) or a weights file/run folder "
        "(default: the shipped model for the images' kind and size)",
    )  # fmt: skip
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="test",
        help="split of inputs that hold several (.npz, MNIST, CIFAR; default test)",
    )  # fmt: skip
    p.add_argument("--max-batch", type=batch_limit, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"most images coded side by side (default {DEFAULT_MAX_BATCH}; "
                   "batches grow from 1 with the bits already on the stack)")  # fmt: skip
    p.add_argument("--chunk-images", type=positive_int, metavar="N",
                   help="images per independently decodable chunk (default: the images split "
                   "evenly over the workers, at most "
                   f"{MAX_AUTO_CHUNK_IMAGES} per chunk)")  # fmt: skip
    p.add_argument("--workers", type=positive_int, metavar="N", help=WORKERS_HELP)
    p.add_argument("--band-rows", type=non_negative_int, metavar="N",
                   help="cut a photo into bands of N rows, each decodable alone and coded by "
                   "its own worker (a multiple of the model's tile height; default: an even "
                   "number of bands of about 256 rows; 0: one band)")  # fmt: skip
    p.add_argument("--pixel-bins", type=int, choices=PIXEL_BINS, metavar="B",
                   help="code each 8-bit value as one symbol of 256 (1) or in two stages, its "
                   "bin of 256/B values and then the value in it (16): the same rate, "
                   "decoding up to 1.6 times faster (default: 16 if there are photos, "
                   "images of another size than the model's, else 1); a bbcodec older than "
                   "this option refuses files with 16")  # fmt: skip
    p.add_argument("--tile-latents", choices=TILE_LATENTS,
                   help="how a photo's latents (one per tile) are coded: bits-back, or "
                   "prior-mean: none coded, each tile's latent the prior's mean, for a model "
                   "whose decoder ignores its latent (default: the model's registered "
                   "choice, see `bbcodec models`); a bbcodec older than this option refuses "
                   "files with prior-mean")  # fmt: skip
    p.add_argument(
        "--elbo", action="store_true",
        help="also give the float model's −ELBO of photos (images of another size than "
        "the model's: a tiled pass, about 3 s a 768×512 photo); it is always given for "
        "images of the model's size",
    )  # fmt: skip
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="per image: model bits (−ELBO estimate), bits written, difference",
    )  # fmt: skip
    add_max_pixels(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    dataset_commands.add_dataset_options(p)
    p.set_defaults(func=_cmd_compress)


def _start_worker_server(workers: int | None) -> None:
    """Start the workers' server (`bbcodec.worker_server`) before this process imports
    torch, so both import it side by side, if the command may start workers: ``--workers``
    above 1, or left to the plan on a machine of several cores."""
    if (workers or os.cpu_count() or 1) > 1:
        from bbcodec import worker_server

        worker_server.start()


def _cmd_compress(args: argparse.Namespace) -> int:
    if dataset_commands.dataset_mode(args):
        return dataset_commands.compress_dataset(args)
    out = Path(args.output)
    _check_new_output(out, args.force, folder_ok=False)
    _start_worker_server(args.workers)
    setup_torch(args)
    import torch

    from bbcodec.api import compress_to, default_model_for
    from bbcodec.codec import CodingSettings
    from bbcodec.plan import plan_coding
    from bbcodec.zoo import list_models, load_model

    runs, labels, metadata = _load_inputs(args.inputs, args.split, args.max_pixels)
    n_images = len(labels)
    images = runs[0] if len(runs) == 1 else [image for run in runs for image in run]
    model_name = args.model
    if model_name is None:
        try:
            model_name = default_model_for(images)
        except ImageKindError as exc:
            raise ImageKindError(f"{exc}; or pass --model NAME|PATH") from exc
    model = load_model(model_name, device=args.device)
    plan = plan_coding(
        [(run.shape[1:], len(run)) for run in runs], model.config.image_shape, args.chunk_images,
        args.workers, args.device, torch.get_num_threads(), args.band_rows,
    )  # fmt: skip
    settings = CodingSettings(
        max_batch=args.max_batch, chunk_images=plan.chunk_images, seed=args.seed,
        device=args.device, torch_threads=plan.torch_threads, band_rows=plan.band_rows,
        pixel_bins=args.pixel_bins, tile_latents=args.tile_latents,
    )  # fmt: skip
    with (
        _atomic_file(out, args.force) as f,
        _progress(n_images, "compress", args.quiet) as bar,
    ):
        report = compress_to(f, images, model_name, settings, bar.update, workers=plan.workers)
        elbo_bits = None
        if args.elbo or not any(is_tiled(r.shape[1:], model.config.image_shape) for r in runs):
            elbo_bits = _neg_elbo_bits(model, runs, args.device, args.seed)
    if args.verbose:
        _print_per_image(labels, elbo_bits, report.image_information_bits)
    registered = model_name in {info.name for info in list_models()}
    _print_compress_summary(out, report, runs, model.config, model_name, registered, elbo_bits)
    if metadata:
        print(_metadata_note(metadata))
    return 0


def _load_inputs(paths: list[str], split: str, max_pixels: int):
    """All inputs' images as runs of equal shape ((n, H, W[, 3]) arrays, in argument order),
    one label per image (``path`` or ``path[i]``), and the metadata the PNG files carried
    that is not stored (one set of `bbcodec.cli.args.PNG_METADATA` kinds per such file).
    Inputs whose pixels were already lossily compressed (JPEGs) are coded all the same,
    and named in one note line on stderr.

    PNG sizes are checked against ``max_pixels`` from their headers before any is decoded
    (the other formats' readers check theirs); Pillow's own guard is off meanwhile (no raw
    ``DecompressionBombWarning``)."""
    import numpy as np

    from bbcodec.models.data import lossy_files

    runs, labels, metadata, lossy = [], [], [], []
    for path in paths:
        facts = check_png_sizes(Path(path), max_pixels)
        metadata += [fact.metadata for fact in facts if fact.metadata]
        with pillow_unlimited():
            parts = _load_input(Path(path), split, max_pixels)
        lossy += lossy_files(path)
        n = sum(len(part) for part in parts)
        single = n == 1 and Path(path).is_file()
        labels += [path] if single else [f"{path}[{i}]" for i in range(n)]
        for part in parts:
            if runs and runs[-1].shape[1:] == part.shape[1:]:
                runs[-1] = np.concatenate([runs[-1], part])
            else:
                runs.append(part)
    if lossy:
        print(_lossy_note(lossy), file=sys.stderr)
    return runs, labels, metadata


def _lossy_note(lossy: list[tuple[Path, str]]) -> str:
    """One line: the inputs that were already lossily compressed, and what that costs."""
    (first, what), more = lossy[0], len(lossy) - 1
    also = f" (and {more} more such file{'s' if more != 1 else ''})" if more else ""
    return (f"note: {first} is {what}{also}: its pixels were already lossily compressed; "
            "bbcodec codes the decoded pixels exactly, so the .bbc file will likely be larger "
            "than the original")  # fmt: skip


def _metadata_note(metadata: list[frozenset[str]]) -> str:
    """One line: how many PNG files carried metadata that is not stored, and which."""
    kinds = sorted(set().union(*metadata), key=str.lower)
    n = len(metadata)
    files = f"{n} PNG file{'s' if n != 1 else ''} carried"
    return (f"note: {files} metadata ({', '.join(kinds)}) that is not stored; the pixels are "
            "coded exactly")  # fmt: skip


def _load_input(path: Path, split: str, max_pixels: int):
    """One INPUT as runs of (n, H, W[, 3]) uint8: an .npz with one array of any name, else
    `load_image_runs` (image files — PNG, TIFF, PPM/PGM, JPEG-XL, JPEG — and folders of
    them, of any sizes; .npy, split-keyed .npz, IDX, CIFAR batches)."""
    from bbcodec.models.data import load_image_runs

    single = _single_npz_array(path, max_pixels)
    return [single] if single is not None else load_image_runs(path, split, max_pixels)


def _single_npz_array(path: Path, max_pixels: int):
    """The array of an .npz that holds exactly one, not split-keyed; else None. Read with
    `bbcodec.models.data.read_npz_images`, which checks its .npy header (images, at most
    ``max_pixels`` pixels each, a bounded total) before reading any data."""
    import zipfile

    from bbcodec.errors import DataError
    from bbcodec.models.data import npz_keys, read_npz_images

    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    keys = npz_keys(path)
    if len(keys) != 1 or keys[0] in _SPLIT_KEYS:
        if not any(k in _SPLIT_KEYS for k in keys):
            found = ", ".join(keys) or "none"
            raise DataError(
                f"{path}: .npz with {len(keys)} arrays ({found}); expected one array, or "
                "train/valid/test or x_train/x_valid/x_test (chosen with --split)"
            )
        return None
    return read_npz_images(path, keys[0], max_pixels)


def _neg_elbo_bits(model, runs, device: str, seed: int, batch_size: int = 256):
    """The model's −ELBO of each image in bits, (N,) float64: one z-sample per image (one
    parallel pass of the networks per batch, cheap next to coding; images of other sizes
    than the model's tiled, as the codec codes them), seeded."""
    import numpy as np
    import torch

    from bbcodec.models.tiles import tiled_elbo_terms

    dev = torch.device(device)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    model_hw = tuple(model.config.image_hw)
    out = []
    model.eval()
    with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
        torch.manual_seed(seed)
        for images in runs:
            if images.shape[1:3] != model_hw:
                out += [sum(tiled_elbo_terms(model, image)) / math.log(2) for image in images]
                continue
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).to(dev)
                nats = model.elbo_terms(x).neg_elbo_nats.double().cpu().numpy()
                out += list(nats / math.log(2))
    return np.asarray(out, dtype=np.float64)


def _describe_sizes(runs) -> str:
    sizes = {"×".join(str(d) for d in run.shape[1:3]) for run in runs}
    return next(iter(sizes)) if len(sizes) == 1 else "mixed-size"


def _print_compress_summary(out, report, runs, config, model_name, registered, elbo_bits):
    dims = report.n_dims
    size = _describe_sizes(runs)
    name = model_name if registered else f"custom weights {model_name} (decompress with --model)"
    plural = "s" if report.n_images != 1 else ""
    print(
        f"compressed {report.n_images} {config.kind} {size} image{plural} with model {name} → {out}"
    )
    n_chunks = len(report.chunk_batch_sizes)
    rows = [
        ("file (achieved)", report.file_bits,
         f"{report.file_bits // 8:,} bytes: every byte of the file"),
        ("information", report.information_bits,
         "coded content, net of bits back: −log2 P(x|z̄) − log2 P(z̄) + log2 Q(z̄|x)"),
    ]  # fmt: skip
    if elbo_bits is not None:
        rows.append(
            ("−ELBO (estimate)", float(elbo_bits.sum()), "the model's, one z-sample per image")
        )
    if report.initial_bits:  # seeded chunks (format 2's way, still a setting)
        rows.insert(
            2,
            (
                "initial bits",
                report.initial_bits,
                f"seeds of {n_chunks} chunk{'s' if n_chunks > 1 else ''}, in the file",
            ),
        )
    print(f"{'':18}{'bits/dim':>10}{'bits':>14}")
    for label, bits, note in rows:
        print(f"{label:18}{bits / dims:10.4f}{bits:14,.0f}   {note}")
    if elbo_bits is None:
        print("(the float model's −ELBO of photos takes a pass of its own: --elbo adds it)")
    tiled = any(is_tiled(run.shape[1:], config.image_shape) for run in runs)
    if tiled and report.tile_latents == "prior-mean":
        print("(photos: no latent coded, every tile's is the prior's mean; their information "
              "is −log2 P(x|z̄) alone, below the −ELBO by about its KL)")  # fmt: skip
    if any(chunk.direct_items for chunk in report.chunks):
        print("(information includes each chunk's first images, or a photo's first tiles, "
              "coded without bits back: an empty stack has no bits to give back)")  # fmt: skip


def _bits(value: float | None, form: str) -> str:
    """``value`` in ``form`` (a format spec with a width), or "n/a" as wide."""
    width = int(form.lstrip("+").split(".")[0])
    return f"{'n/a':>{width}}" if value is None else format(value, form)


def _print_per_image(labels, elbo_bits, written_bits) -> None:
    width = max(len("source"), *(len(s) for s in labels))
    print(f"{'image':>7}  {'source':{width}}  {'model bits':>11}  {'written bits':>12}  "
          f"{'difference':>10}")  # fmt: skip
    for i, label in enumerate(labels):
        model_bits = None if elbo_bits is None else elbo_bits[i]
        written = None if written_bits is None else written_bits[i]
        diff = None if model_bits is None or written is None else written - model_bits
        print(f"{i:7d}  {label:{width}}  {_bits(model_bits, '11.1f')}  {_bits(written, '12.1f')}  "
              f"{_bits(diff, '+10.1f')}")  # fmt: skip
    print("(model bits: −ELBO estimate, one z-sample; written: the image's information "
          "content as coded)\n")  # fmt: skip


# ----- decompress -----------------------------------------------------------------------


def _add_decompress(subparsers, common) -> None:
    p = sub(
        subparsers, "decompress", "decompress a .bbc file to a folder of PNGs or a .npy",
        DECOMPRESS_DESCRIPTION, "bbcodec decompress digits.bbc -o digits/", [],
    )  # fmt: skip
    p.add_argument("input", metavar="IN.bbc", help="the file to decompress, or a dataset "
                   "folder (compress's dataset mode)")  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="OUT.npy for one array, OUT.png for a one-image file, anything else for a "
        "folder of PNGs",
    )  # fmt: skip
    p.add_argument(
        "--model", metavar="NAME|PATH",
        help="weights to decode with (default: the shipped model the file names; required "
        "for files made with custom weights)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_max_pixels(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("run options")  # the file decides device and threads
    device_help = "must be the device the file was encoded on (default: that device)"
    group.add_argument("--device", type=device, metavar="DEVICE", help=device_help)
    threads_help = "torch CPU threads outside the codec (decoding uses the count the file records)"
    group.add_argument("--threads", type=positive_int, metavar="T", help=threads_help)
    group.add_argument("--workers", type=positive_int, metavar="N", help=WORKERS_HELP)
    add_debug(group)
    p.set_defaults(func=_cmd_decompress)


def _cmd_decompress(args: argparse.Namespace) -> int:
    if Path(args.input).is_dir():
        return dataset_commands.decompress_dataset(args)
    out = Path(args.output)
    _check_new_output(out, args.force, folder_ok=True)
    source = Path(args.input)
    try:
        return _decompress(args, source, out)
    except (BbcFileError, SizeLimitError) as exc:  # damaged, other weights, too big: name it
        raise type(exc)(f"{source}: {exc}") from exc


def _decompress(args: argparse.Namespace, source: Path, out: Path) -> int:
    from bbcodec.container import ContainerReader

    with open(source, "rb") as f:
        header = ContainerReader(f, max_pixels=args.max_pixels).header  # sizes checked
    _start_worker_server(args.workers)  # before anything imports torch here
    n = header.image_count
    if out.suffix.lower() == ".png" and n != 1:
        raise UsageError(
            f"the file holds {n} image{'s' if n != 1 else ''}; -o NAME.png takes a one-image "
            "file: give a folder or a .npy"
        )
    from bbcodec.api import decoding_settings

    settings = decoding_settings(header, args.device)
    if settings.arithmetic == "float":
        print(
            f"note: {source} was written with float arithmetic (an older bbcodec): it decodes "
            "only on a machine computing the same floats as the one that wrote it; compress "
            "the result again for a portable file",
            file=sys.stderr,
        )
    args.device = settings.device
    setup_torch(args)
    if args.model is None and header.model_id == "custom":
        raise DecodeError(
            "the file was made with custom (unregistered) weights: pass --model PATH with them"
        )
    from bbcodec.api import decompress_from, model_for_file
    from bbcodec.plan import plan_coding, shape_runs

    model = model_for_file(header, args.model, pass_as="--model PATH")
    kind = model.config.kind
    shapes = sorted(set(header.shapes))
    as_npy = out.suffix.lower() == ".npy"
    as_png = out.suffix.lower() == ".png"
    if as_npy and len(shapes) > 1:
        raise DecodeError(
            f"the file holds images of several shapes {shapes}: one .npy array cannot hold "
            "them; give a folder name (one PNG per image)"
        )
    shape = shapes[0] if shapes else model.config.image_shape
    plan = plan_coding(shape_runs(header.shapes), model.config.image_shape,
                       settings.chunk_images, args.workers, settings.device,
                       band_rows=header.band_rows)  # fmt: skip
    with (
        open(source, "rb") as f,
        _progress(n, "decompress", args.quiet) as bar,
        contextlib.closing(
            decompress_from(
                f, model, bar.update, plan.workers, max_pixels=args.max_pixels, device=args.device
            )
        ) as chunks,
    ):
        # each writer reads the chunks to the end (the container's end record and trailing
        # bytes are checked then) before it publishes anything
        if as_npy:
            _write_npy(out, chunks, (n, *shape), args.force)
        elif as_png:
            _write_png(out, chunks, kind, args.force)
        else:
            _write_png_folder(out, chunks, n, kind, args.force)
    what = "one array" if as_npy else "one PNG" if as_png else "PNGs"
    size = "×".join(map(str, shape[:2])) if len(shapes) <= 1 else "mixed-size"
    print(f"decompressed {n} {kind} {size} image{'s' if n != 1 else ''} → {out} ({what}); "
          "every chunk verified (CRC, stack restored, pixel digest matched)")  # fmt: skip
    return 0


def _write_npy(out: Path, chunks: Iterator, shape: tuple[int, ...], force: bool) -> None:
    """Write decoded chunks to a .npy beside ``out`` (the header, then each chunk's bytes in
    turn: no memory map, so a full disk is an `OSError`, not a SIGBUS), then publish it."""
    import numpy as np

    with _atomic_file(out, force) as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                  "fortran_order": False, "shape": tuple(shape)}  # fmt: skip
        np.lib.format.write_array_header_1_0(f, header)
        filled = 0
        for images in chunks:
            images = np.ascontiguousarray(images, dtype=np.uint8)
            if images.shape[1:] != tuple(shape[1:]):
                raise RuntimeError(f"decoded images of shape {images.shape[1:]}, expected "
                                   f"{tuple(shape[1:])}")  # fmt: skip
            f.write(memoryview(images).cast("B"))
            filled += len(images)
        if filled != shape[0]:
            raise RuntimeError(f"decoded {filled} images, the header promised {shape[0]}")


def _save_png(path, image, kind: str) -> None:
    """One image as a PNG: binary as 1-bit (values 0/1), grey 8-bit, RGB 8-bit."""
    from PIL import Image

    pixels = image.astype(bool) if kind == "binary" else image
    Image.fromarray(pixels).save(path, format="PNG", optimize=False)


def _write_png(out: Path, chunks: Iterator, kind: str, force: bool) -> None:
    """The one image of a one-image file as the PNG file ``out`` (written beside it, then
    published), once the chunks were read to the end of the file."""
    images = [image for chunk in chunks for image in chunk]
    if len(images) != 1:
        raise RuntimeError(f"decoded {len(images)} images, the header promised 1")
    with _atomic_file(out, force) as f:
        _save_png(f, images[0], kind)


def _write_png_folder(out: Path, chunks: Iterator, n: int, kind: str, force: bool) -> None:
    """Write decoded chunks as NNNNNN.png into a temporary folder, then publish it as ``out``."""
    digits = max(6, len(str(max(n - 1, 0))))
    with _atomic_folder(out, force) as folder:
        index = 0
        for images in chunks:
            for image in images:
                _save_png(folder / f"{index:0{digits}d}.png", image, kind)
                index += 1
        if index != n:
            raise RuntimeError(f"decoded {index} images, the header promised {n}")


# ----- files ----------------------------------------------------------------------------


def _check_new_output(out: Path, force: bool, folder_ok: bool) -> None:
    """Refuse, before any work, an output that exists (without ``force``), that ``force``
    must not replace, or whose folder does not exist."""
    if not out.parent.resolve().is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder for the output", str(out.parent))
    if not os.path.lexists(out):
        return
    if not force:
        raise FileExistsError(errno.EEXIST, "exists; pass --force to replace it", str(out))
    if out.is_dir() and not out.is_symlink():
        if not folder_ok:
            raise IsADirectoryError(errno.EISDIR, "is a folder; not replacing it", str(out))
        others = [e.name for e in out.iterdir() if not (_IMAGE_NAME.match(e.name) and e.is_file())]
        if others:
            raise FileExistsError(
                errno.EEXIST,
                f"folder holds other files than decompressed images (e.g. {others[0]}); "
                "not replacing it, even with --force",
                str(out),
            )


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing whatever is there (a folder too)."""
    if os.path.lexists(out) and (tmp.is_dir() or (out.is_dir() and not out.is_symlink())):
        aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, aside / "old")
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside / "old", out)
            aside.rmdir()
            raise
        shutil.rmtree(aside)
    else:
        os.replace(tmp, out)


#: `os.link` errors that mean the file system has no hard links (publish by rename then).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
             errno.ENOSYS}  # fmt: skip


def _appeared(out: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST,
        "exists now (written while this ran, by another run?); not replacing it without "
        "--force; nothing was written",
        str(out),
    )


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished ``tmp`` (a file or folder) to ``out``.

    With ``force`` whatever is at ``out`` is replaced (`_replace`). Without, ``out`` was
    checked not to exist before any work (`_check_new_output`), but another run may have
    written it since: that one is refused, never replaced. A file is published with
    `os.link`, which fails if ``out`` exists (then ``tmp`` is unlinked), or, where the file
    system has no hard links, renamed after checking again. A folder is renamed after
    checking again; the rename itself fails onto a file or a non-empty folder (onto an
    empty folder made in that instant it would replace it: nothing is lost then).
    """
    if force:
        _replace(tmp, out)
        return
    if tmp.is_dir():
        if os.path.lexists(out):
            raise _appeared(out)
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise _appeared(out) from exc
            raise
        return
    try:
        os.link(tmp, out)
    except FileExistsError as exc:
        raise _appeared(out) from exc
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(out):
            raise _appeared(out) from exc
        os.replace(tmp, out)
        return
    tmp.unlink()


def _output_error(exc: OSError, out: Path, tmp: Path) -> OSError:
    """A failure to write ``out`` (or its temporary file ``tmp``) as a one-line error that
    names ``out``. Errors that name another file (a missing input, say) are returned as
    they are."""
    if exc.filename is not None and exc.filename != str(tmp):
        return exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(exc.errno, "no space left on the device; nothing was written", str(out))
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"cannot write: {reason}; nothing was written", str(out))


def _raise_for_output(exc: OSError, out: Path, tmp: Path):
    error = _output_error(exc, out, tmp)
    if error is exc:
        raise exc
    raise error from exc


def _temporary_name(out: Path) -> Path:
    """A fresh hidden name beside ``out``: ``.NAME.<64 random bits>.part``."""
    return out.parent / f".{out.name}.{secrets.token_hex(8)}.part"


def _create(tmp: Path, folder: bool) -> bool:
    """Create ``tmp`` (only if nothing is there), mode 0666 or 0777 less the umask, as the
    output will have; False if the name is taken."""
    try:
        if folder:
            os.mkdir(tmp, 0o777)
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    return True


# The temporary file or folder is named before it is created, inside the ``try``, so that
# its name is known whenever a Ctrl-C or SIGTERM may arrive and what was made is always
# removed (`tempfile.mkstemp` gives the name only after creating the file).


@contextlib.contextmanager
def _atomic_file(out: Path, force: bool = False):
    """Yields a binary file open on a temporary file beside ``out``; on success it is synced
    and published as ``out`` (`_publish`: replacing an ``out`` that exists only with
    ``force``), on any error (Ctrl-C and SIGTERM too) removed."""
    tmp = _temporary_name(out)
    try:
        while not _create(tmp, folder=False):
            tmp = _temporary_name(out)
        with open(tmp, "wb") as f:
            yield f
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
        _publish(tmp, out, force)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_for_output(exc, out, tmp)
        raise


@contextlib.contextmanager
def _atomic_folder(out: Path, force: bool = False):
    """Yields a temporary folder beside ``out``; on success published as ``out``
    (`_publish`), on any error (Ctrl-C and SIGTERM too) removed with everything in it."""
    tmp = _temporary_name(out)
    try:
        while not _create(tmp, folder=True):
            tmp = _temporary_name(out)
        yield tmp
        _publish(tmp, out, force)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            _raise_for_output(exc, out, tmp)
        raise


@contextlib.contextmanager
def _progress(total: int, what: str, quiet: bool):
    """A tqdm bar over images on stderr (off with ``quiet`` or when stderr is no terminal)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=what, unit="img", file=sys.stderr,
              disable=True if quiet else None, leave=False) as bar:  # fmt: skip
        yield bar
