"""Where the tests find the repository and the shared datasets beside it."""

from pathlib import Path

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
#: ``../shared/data`` beside the repository (the datasets; tests that need them skip or
#: are marked slow).
SHARED_DATA = REPO.parent / "shared" / "data"


def child_script(call: str) -> str:
    """A Python program that runs ``call`` (which may read ``sys.argv``) and prints one JSON
    line: the exception's type name and message (``None`` and ``""`` if none) and the
    process's own peak RSS in MiB, ``peak_mb`` (VmHWM: ``ru_maxrss`` would carry the
    parent's peak over exec)."""
    return f"""
import json, sys
try:
    {call}
    out = {{"error": None, "message": ""}}
except Exception as exc:
    out = {{"error": type(exc).__name__, "message": str(exc)}}
status = open("/proc/self/status").read().split("VmHWM:")[1]
out["peak_mb"] = int(status.split()[0]) / 1024
print(json.dumps(out))
"""
