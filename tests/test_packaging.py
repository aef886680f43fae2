"""The wheel: only `bbcodec` reaches site-packages, and it installs and runs in a clean venv."""

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from paths import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (found,) = out.glob("bbcodec-*.whl")
    return found


def _venv_python(where: Path) -> Path:
    venv.create(where, with_pip=True)
    return where / "bin" / "python"


def test_wheel_has_only_the_bbcodec_import_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    roots = {name.split("/")[0] for name in names}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"bbcodec"}
    for sub in ("bbcodec/coding/", "bbcodec/models/", "bbcodec/cli/", "bbcodec/container.py"):
        assert any(name.startswith(sub) for name in names), sub
    assert "bbcodec/coding/tables.npz" in names  # the exact path's precomputed tables


def test_wheel_installs_into_a_clean_venv_and_help_runs(wheel, tmp_path):
    """Installs the wheel alone; its dependencies are borrowed from this environment."""
    python = _venv_python(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Only the dependency folders of this environment: not the editable bbcodec finder.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "borrowed_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    where = subprocess.run(
        [python, "-c", "import bbcodec, bbcodec.models, bbcodec.cli; print(bbcodec.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(tmp_path / "venv"))
    result = subprocess.run(
        [tmp_path / "venv" / "bin" / "bbcodec", "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: bbcodec" in result.stdout


@pytest.mark.slow
def test_wheel_installs_with_its_dependencies(wheel, tmp_path):
    """A full install as a user would do it: torch pinned first, then the wheel."""
    python = _venv_python(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    result = subprocess.run(
        [tmp_path / "venv" / "bin" / "bbcodec", "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
