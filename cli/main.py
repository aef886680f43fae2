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

Only this module imports the command modules, in `build_parser`, once `main` has taken
over Ctrl-C and SIGTERM: their imports (numpy, constriction: a few tenths of a second) are
part of the command, so a signal then ends it with one line like any other. Heavy imports
(torch) happen inside the commands, so ``bbcodec --help`` stays fast.

Errors users can cause (a `bbcodec.errors.BbcodecError`: bad data, bad or tampered
weights, bad options, damaged files; an `OSError`: missing or unwritable files; running out
of memory; Ctrl-C; SIGTERM) print one line, ``bbcodec: error: ...``, and exit non-zero
(130 after Ctrl-C, 143 after SIGTERM, else 1); ``--debug`` re-raises them with the
traceback. Anything else is a bug and keeps its traceback. SIGTERM raises `Terminated` in
the running command, so its output files are cleaned up as on Ctrl-C.

The installed command runs `run`: `main`, then the process ends without the interpreter's
teardown, which takes 0.7–1.5 s once torch is imported (more than some commands' work).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from typing import NoReturn

from bbcodec.cli.args import Parser, common
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


def build_parser() -> argparse.ArgumentParser:
    """The ``bbcodec`` parser with every command (imports the command modules)."""
    from bbcodec.cli.bench_command import _add_bench
    from bbcodec.cli.codec_commands import _add_compress, _add_decompress
    from bbcodec.cli.latent_commands import _add_latent
    from bbcodec.cli.model_commands import _add_eval, _add_export, _add_models, _add_train

    commands = (
        _add_compress, _add_decompress, _add_models, _add_eval, _add_train, _add_export,
        _add_bench, _add_latent,
    )  # fmt: skip
    parser = Parser(
        prog="bbcodec", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    parent = common()
    for add in commands:
        add(subparsers, parent)
    return parser


class Terminated(BaseException):
    """Raised in a running command by SIGTERM: like `KeyboardInterrupt`, it unwinds the
    command (temporary outputs removed, worker processes stopped), then exits with 143."""


_INTERRUPTIONS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


class _Interruption:
    """The Ctrl-C or SIGTERM received while the command ran, if any. Native code (a
    weights loader, say) may turn the exception a signal raised into an error of its own;
    with this record the command still ends as interrupted, not with that error."""

    signum: int | None = None

    @classmethod
    def on_sigint(cls, signum, frame) -> None:
        cls.signum = signum
        raise KeyboardInterrupt

    @classmethod
    def on_sigterm(cls, signum, frame) -> None:
        cls.signum = signum
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up
        raise Terminated


@contextlib.contextmanager
def _signals_raise():
    """While the command runs, Ctrl-C raises `KeyboardInterrupt` and SIGTERM `Terminated`,
    each recorded in `_Interruption` (main thread only: signal handlers can be set nowhere
    else); the previous handlers are restored after."""
    _Interruption.signum = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, _Interruption.on_sigint),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _Interruption.on_sigterm),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _out_of_memory(exc: BaseException) -> bool:
    """A `MemoryError`, or torch's out-of-memory error (a `RuntimeError`)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def _user_error(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message for an error a user can cause, None for a bug.
    Any error while a Ctrl-C or SIGTERM is being handled counts as that interruption."""
    if isinstance(exc, (KeyboardInterrupt, Terminated)) or _Interruption.signum is not None:
        return _INTERRUPTIONS[_Interruption.signum or signal.SIGINT]
    if isinstance(exc, (BbcodecError, OSError)):
        return 1, _one_line(exc)
    if _out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return 1, f"out of memory ({' '.join(first.split())})"
    return None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``bbcodec`` command; returns the exit code (0 on success). Ctrl-C and
    SIGTERM are handled from the start: while the parser is built and the arguments read,
    too."""
    debug = False
    try:
        with _signals_raise():
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help (0) or a usage error argparse printed (2)
                return exc.code if isinstance(exc.code, int) else 2
            if args.command is None:
                parser.print_help()
                return 0
            debug = args.debug
            return args.func(args)
    except BaseException as exc:
        error = _user_error(exc)
        if error is None or debug:
            raise
        code, message = error
        print(f"bbcodec: error: {message}", file=sys.stderr)
        return code


def run() -> NoReturn:
    """The ``bbcodec`` command: `main`, then the process ends at once with its exit code.

    What a normal exit does that matters is done first — other threads joined, exit
    handlers run (multiprocessing's, which stop and join child processes, among them), the
    standard streams flushed; every output file is closed by then — and what is skipped is
    freeing every module and object one by one, which torch makes slow.
    """
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
