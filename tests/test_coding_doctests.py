"""Every example in the coding layer's docstrings runs and gives what it shows."""

import doctest
import importlib

import pytest

MODULES = [
    "combinators",
    "handover",
    "leaves",
    "logistic",
    "message",
    "quantization",
    "rate",
    "testing",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"bbcodec.coding.{name}")
    failures, attempts = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempts > 0 and failures == 0


def test_the_coding_layer_imports_numpy_and_constriction_only():
    import ast
    import pathlib

    import bbcodec.coding

    allowed = {"numpy", "constriction", "bbcodec", "__future__"}
    standard = {"collections", "dataclasses", "math", "typing"}
    for path in pathlib.Path(bbcodec.coding.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed | standard, f"{path.name} imports {roots}"
