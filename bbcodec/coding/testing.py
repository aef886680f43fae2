"""Test support for codec authors: the exact round trip every codec must pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from bbcodec.coding.message import Message
from bbcodec.coding.protocols import Codec

__all__ = ["assert_symbols_equal", "check_codec"]


def assert_symbols_equal(actual: Any, expected: Any) -> None:
    """Asserts that two symbol values (arrays, or nested tuples of them) are equal.

    Raises:
        AssertionError: Structure, shape or any element differs.
    """
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), (actual, expected)
        for actual_item, expected_item in zip(actual, expected, strict=True):
            assert_symbols_equal(actual_item, expected_item)
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(actual, expected)


def check_codec(codec: Codec, symbols: Any, message: Message) -> Message:
    """Pushes then pops ``symbols``; asserts the symbols and the whole message come back.

    Args:
        codec: The codec under test.
        symbols: A value the codec can code.
        message: The message to code on; it is not modified (a copy is used).

    Returns:
        The copy of ``message`` with ``symbols`` pushed (before popping), for size checks.

    Raises:
        AssertionError: Popped symbols differ, or the message is not restored bit for bit.

    Example:
        >>> from bbcodec.coding.leaves import Uniform
        >>> pushed = check_codec(Uniform(5, (3,)), np.array([4, 0, 2]), Message.seeded(0, 4))
        >>> pushed.num_bits() > Message.seeded(0, 4).num_bits()
        True
    """
    work = message.copy()
    codec.push(work, symbols)
    pushed = work.copy()
    assert_symbols_equal(codec.pop(work), symbols)
    assert work == message, "message not restored bit for bit after push + pop"
    return pushed
