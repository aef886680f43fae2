"""The layers keep their shape: what each may import, no import cycles, torch-free planning."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

#: Repository folders and the package each becomes once installed.
PACKAGES = {"bbcodec": "bbcodec", "models": "bbcodec.models", "cli": "bbcodec.cli"}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[0] in ("models", "cli") and folder == "bbcodec":
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """bbcodec modules imported at module level (imports inside functions are lazy on
    purpose and cannot form a cycle at import time)."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        imported |= {n for n in names if n in modules}
    return imported


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _top_level_imports(path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if other.startswith(name + "."):
                continue  # a package importing its own submodules
            assert state.get(other) != 1, " → ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_coding_layer_imports_numpy_and_constriction_only():
    allowed = {
        "numpy",
        "constriction",
        "__future__",
        "collections",
        "dataclasses",
        "math",
        "typing",
        "decimal",
        "fractions",
        "functools",
        "hashlib",
        "io",
        "pathlib",
    }  # fmt: skip (the shipped tables: fixed_point)
    for path in (REPO / "bbcodec" / "coding").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                ok = name.split(".")[0] in allowed or name.startswith("bbcodec.coding")
                assert ok or name == "bbcodec.errors", f"{path.name} imports {name}"


@pytest.mark.parametrize(
    "module", ["bbcodec.plan", "bbcodec.errors", "bbcodec.cli.args", "bbcodec.cli.main"]
)
def test_planning_errors_and_the_cli_entry_need_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
