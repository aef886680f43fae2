"""What every `bbcodec` command shares: the parser class, argument types, common options.

Command modules (`bbcodec.cli.codec_commands`, `bbcodec.cli.model_commands`,
`bbcodec.cli.bench_command`) import this module; only `bbcodec.cli.main` imports them.
Each command module declares pairs ``_add_<command>(subparsers, common)`` (its arguments,
built with `sub`) and ``_cmd_<command>(args) -> int`` (the work).

Nothing here imports torch at import time: ``bbcodec --help`` stays fast. Argument types
raise `argparse.ArgumentTypeError` (a usage error: one line, exit code 2); checks made when
a command runs raise `bbcodec.errors.UsageError` (one line, exit code 1).

Example:
    >>> positive_int("3"), non_negative_int("0"), positive_float("0.5"), device("cuda:1")
    (3, 0, 0.5, 'cuda:1')
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

from bbcodec.errors import SizeLimitError, UsageError
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_BATCH_LIMIT, MIN_IMAGES_PER_WORKER

__all__ = [
    "MAX_PIXELS_HELP",
    "WORKERS_HELP",
    "Parser",
    "PngFacts",
    "add_debug",
    "add_max_pixels",
    "add_model_and_data",
    "batch_limit",
    "check_output_folder",
    "check_png_sizes",
    "common",
    "device",
    "model_name",
    "non_negative_int",
    "pillow_unlimited",
    "png_facts",
    "png_files",
    "positive_float",
    "positive_int",
    "setup_torch",
    "sub",
    "write_json",
]

#: Help of ``--workers`` (compress, decompress, bench).
WORKERS_HELP = (
    "worker processes coding chunks side by side, one torch thread each (default: one per "
    f"CPU core, at most one per chunk and per {MIN_IMAGES_PER_WORKER} images; 1 codes in "
    "this process)"
)

#: Help of ``--max-pixels`` (compress, decompress, bench).
MAX_PIXELS_HELP = (
    f"largest image in pixels to read or decode (default {DEFAULT_MAX_PIXELS:,}): a guard "
    "against files that claim huge sizes"
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2) and descriptions that may be
    functions (called only when the help is shown, so ``--help`` needs no torch import)."""

    def format_help(self) -> str:
        if callable(self.description):
            self.description = self.description()
        return super().format_help()

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ----- argument types --------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def batch_limit(text: str) -> int:
    """A positive batch size a file can record (at most `bbcodec.plan.MAX_BATCH_LIMIT`)."""
    value = positive_int(text)
    if value > MAX_BATCH_LIMIT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BATCH_LIMIT}, got {text!r}")
    return value


def device(text: str) -> str:
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def model_name(text: str) -> str:
    from bbcodec.zoo import check_name

    try:
        return check_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ----- options and sub-commands ----------------------------------------------------------


def add_debug(parser) -> None:
    """``--debug`` on a sub-command (or one of its groups); ``bbcodec --debug`` sets the
    default, so the option is suppressed unless given."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )


def add_max_pixels(parser) -> None:
    """``--max-pixels N`` (default `bbcodec.plan.DEFAULT_MAX_PIXELS`)."""
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        metavar="N", help=MAX_PIXELS_HELP)  # fmt: skip


def add_model_and_data(parser) -> None:
    """``--model NAME|PATH``, ``--data PATH`` and ``--split`` (default test), all a command
    needs to name a model and the images to run it on."""
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="a shipped model name (see `bbcodec models`), a .safetensors file "
                        "or a run folder")  # fmt: skip
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="dataset file or folder (IDX, npz, CIFAR, PNGs, npy)")  # fmt: skip
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test",
                        help="split (default test)")  # fmt: skip


def common() -> argparse.ArgumentParser:
    """Options every torch command shares (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("run options")
    group.add_argument("--device", type=device, default="cpu",
                       help="torch device: cpu (default), cuda, cuda:N")  # fmt: skip
    group.add_argument("--threads", type=positive_int, metavar="T",
                       help="torch CPU threads (default: torch's choice)")  # fmt: skip
    group.add_argument("--seed", type=int, default=0,
                       help="random seed (default 0): results repeat")  # fmt: skip
    add_debug(group)
    return parent


def sub(subparsers, name: str, help: str, description, example: str, parents):
    """A sub-command's parser: its one-line ``help``, its ``description`` (text, or a
    function giving it, called only for ``--help``) and one ``example`` command line."""
    return subparsers.add_parser(
        name, help=help, description=description, epilog=f"example:\n  {example}",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


# ----- running ---------------------------------------------------------------------------


def setup_torch(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and check that ``--device`` exists (imports torch)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {args.device}: CUDA is not available on this machine; use --device cpu"
        )


def check_output_folder(path: str | None) -> None:
    """Refuse, before any work, an output file whose folder does not exist."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(2, "no such folder for the output file", str(Path(path).parent))


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` (through a temporary file, then renamed)."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----- PNG inputs ------------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: PNG chunks that are not stored in a ``.bbc`` file and that a user may miss: those that
#: change how the pixels are shown (colour profile, gamma, colour space) and those that
#: carry words (text, EXIF). Not listed, so dropped without a note: layout and housekeeping
#: hints that do not change what the pixels mean (pHYs: dpi, tIME, bKGD, sBIT, hIST, sPLT).
PNG_METADATA = {
    b"iCCP": "ICC profile",
    b"gAMA": "gamma",
    b"sRGB": "sRGB intent",
    b"cHRM": "chromaticities",
    b"cICP": "colour space",
    b"mDCV": "mastering display",
    b"cLLI": "light levels",
    b"tEXt": "text",
    b"zTXt": "text",
    b"iTXt": "text",
    b"eXIf": "EXIF",
}


class PngFacts(NamedTuple):
    """What a PNG's chunk headers say, read without decoding a pixel."""

    width: int
    height: int
    #: The kinds of `PNG_METADATA` the file carries ("ICC profile", "text", ...).
    metadata: frozenset[str]


def png_facts(path: Path) -> PngFacts | None:
    """A PNG's size and the metadata it carries (`PNG_METADATA`), from its chunk headers
    only (the chunks' data is skipped, nothing is decoded); None for a file that is not a
    readable PNG (the image reader reports what is wrong with it)."""
    kinds = set()
    try:
        with open(path, "rb") as f:
            head = f.read(33)  # magic, IHDR length and type, 13 bytes of IHDR, its CRC
            if len(head) < 33 or not head.startswith(_PNG_MAGIC) or head[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", head[16:24])
            while len(frame := f.read(8)) == 8:
                length, kind = struct.unpack(">I4s", frame)
                if kind == b"IEND":
                    break
                if kind in PNG_METADATA:
                    kinds.add(PNG_METADATA[kind])
                f.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    except OSError:
        return None
    return PngFacts(width, height, frozenset(kinds))


def png_files(path: Path) -> list[Path]:
    """The PNG files an input names: itself, or the ``.png`` files of a folder (sorted)."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".png" else []
    if path.is_dir():
        try:
            return sorted(f for f in path.iterdir() if f.suffix.lower() == ".png" and f.is_file())
        except OSError:
            return []  # the image reader reports it
    return []


def check_png_sizes(path: Path, max_pixels: int) -> list[PngFacts]:
    """Refuse, before any is decoded, a PNG under ``path`` (a file or folder) that claims
    more than ``max_pixels`` pixels; returns the facts of its PNG files.

    Raises:
        SizeLimitError: naming the file, its size and ``--max-pixels``.
    """
    facts = []
    for f in png_files(path):
        fact = png_facts(f)
        if fact is None:
            continue
        pixels = fact.width * fact.height
        if pixels > max_pixels:
            raise SizeLimitError(
                f"{f}: a {fact.width}×{fact.height} image ({pixels:,} pixels) is over the "
                f"limit of {max_pixels:,} pixels; raise it with --max-pixels N if the file "
                "is to be trusted"
            )
        facts.append(fact)
    return facts


@contextlib.contextmanager
def pillow_unlimited():
    """Pillow's own size guard off (no ``DecompressionBombWarning`` printed raw, no
    ``DecompressionBombError``) while a command reads images whose sizes it has checked
    against ``--max-pixels`` itself (`check_png_sizes`, the readers' ``max_pixels``)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit
