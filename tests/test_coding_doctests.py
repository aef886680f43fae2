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


def test_the_coding_layer_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, bbcodec.coding; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
