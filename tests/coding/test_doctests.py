"""Every example in the docstrings of the coding layer and the torch-free modules runs."""

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


@pytest.mark.parametrize(
    "name",
    [f"bbcodec.coding.{m}" for m in MODULES]
    + ["bbcodec.plan", "bbcodec.errors", "bbcodec.container", "bbcodec.container_v2"],
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, attempts = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempts > 0 and failures == 0
