"""Entry point of the `bbcodec` command: the parser, and one-line errors.

The commands live in their own modules, each a set of pairs
``_add_<command>(subparsers, common)`` (its arguments) and ``_cmd_<command>(args) -> int``
(the work), built from the shared pieces in `bbcodec.cli.args`::

    cli/
    ├── main.py            build_parser, main: errors as one line
    ├── args.py            parser class, argument types, common options, torch set-up
    ├── codec_commands.py  compress, decompress
    ├── model_commands.py  models, eval, train, export-model
    ├── bench_command.py   bench
    └── latent_commands.py latent (reconstruct, sample, interpolate, attribute, report)

Only this module imports the command modules. Heavy imports (torch) happen inside the
commands, so ``bbcodec --help`` stays fast.

Errors users can cause (a `bbcodec.errors.BbcodecError`: bad data, bad or tampered
weights, bad options, damaged files; an `OSError`: missing or unwritable files; running out
of memory; Ctrl-C; SIGTERM) print one line, ``bbcodec: error: ...``, and exit non-zero
(130 after Ctrl-C, 143 after SIGTERM, else 1); ``--debug`` re-raises them with the
traceback. Anything else is a bug and keeps its traceback. SIGTERM raises `Terminated` in
the running command, so its output files are cleaned up as on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from bbcodec.cli.args import Parser, common
from bbcodec.cli.bench_command import _add_bench
from bbcodec.cli.codec_commands import _add_compress, _add_decompress
from bbcodec.cli.latent_commands import _add_latent
from bbcodec.cli.model_commands import _add_eval, _add_export, _add_models, _add_train
from bbcodec.errors import BbcodecError

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
  bbcodec latent reconstruct --model vlae-bmnist --data ../shared/data/binarized_mnist.npz -o r.png

Run `bbcodec COMMAND --help` for a command's options and an example. Errors print one
line (`bbcodec: error: ...`) and exit non-zero; --debug shows the traceback."""


# ----- main -----------------------------------------------------------------------------

COMMANDS = (
    _add_compress, _add_decompress, _add_models, _add_eval, _add_train, _add_export, _add_bench,
    _add_latent,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bbcodec", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    parent = common()
    for add in COMMANDS:
        add(subparsers, parent)
    return parser


class Terminated(BaseException):
    """Raised in a running command by SIGTERM: like `KeyboardInterrupt`, it unwinds the
    command (temporary outputs removed, worker processes stopped), then exits with 143."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM raises `Terminated` (main thread only: signal
    handlers can be set nowhere else); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _out_of_memory(exc: BaseException) -> bool:
    """A `MemoryError`, or torch's out-of-memory error (a `RuntimeError`)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


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
        with _sigterm_raises():
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("bbcodec: error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        if args.debug:
            raise
        print("bbcodec: error: terminated", file=sys.stderr)
        return 143
    except (BbcodecError, OSError) as exc:
        if args.debug:
            raise
        print(f"bbcodec: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if args.debug or not _out_of_memory(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"bbcodec: error: out of memory ({' '.join(first.split())})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
