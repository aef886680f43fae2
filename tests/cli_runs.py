"""Running the `bbcodec` CLI in-process from the CLI tests, in a work folder of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbcodec.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``bbcodec ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def npy(name: str, images: np.ndarray) -> str:
    """Saves ``images`` as ``name`` in the work folder; returns the name."""
    np.save(name, images)
    return name


def listing() -> set[str]:
    """Everything in the work folder, hidden temporary files included."""
    return {str(p.relative_to(Path.cwd())) for p in Path.cwd().rglob("*")}
