"""Where the tests find the repository and the shared datasets beside it."""

from pathlib import Path

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
#: ``../shared/data`` beside the repository (the datasets; tests that need them skip or
#: are marked slow).
SHARED_DATA = REPO.parent / "shared" / "data"
