"""What a codec is: a push/pop pair over a :class:`~bbcodec.coding.message.Message`."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from bbcodec.coding.message import Message

__all__ = ["Codec", "LeafCodec"]


class Codec(Protocol):
    """Codes one value (an array, or a tuple of them) onto an ANS stack.

    ``pop`` must be the exact inverse of ``push``: after ``codec.push(message, symbols)``,
    ``codec.pop(message)`` returns ``symbols`` and leaves ``message`` bit for bit as it was.
    """

    def push(self, message: Message, symbols: Any) -> None:
        """Pushes ``symbols`` onto ``message`` (mutates it)."""
        ...

    def pop(self, message: Message) -> Any:
        """Pops symbols off ``message`` (mutates it) and returns them."""
        ...


class LeafCodec(Codec, Protocol):
    """A codec that talks to constriction directly and knows its coding probabilities."""

    def fixed_point_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """int64 probabilities (out of ``2**24``) the coder gives ``symbols``, same shape."""
        ...
