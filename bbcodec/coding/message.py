"""The ANS message: a stack of compressed bits that codecs push symbols onto and pop from.

A :class:`Message` wraps constriction's ``AnsCoder`` (32-bit words, a 64-bit head, 24-bit
probabilities) and adds what bits-back coding needs on top of it:

* an explicit **initial-bits policy**: :meth:`Message.seeded` fills the stack with words
  from a named, seeded generator, so the first pops have real bits to consume and the file
  can record (or regenerate) them;
* a typed **underflow** error: constriction's coder decodes silently from an exhausted
  stack, so :meth:`Message.pop` checks the coder state after every decode call (unless
  :attr:`Message.underflow_guard` is off: a decoder popping the last symbols an encoder
  pushed onto an :meth:`Message.empty` stack drains it to nothing, legitimately);
* a full-state equality, :meth:`Message.check_seed` and :meth:`Message.check_empty`, so
  decoding can prove that the stack is what it started from again, bit for bit.

Example:
    >>> import constriction
    >>> family = constriction.stream.model.Categorical(perfect=False)
    >>> table = np.array([[0.25, 0.75], [0.5, 0.5]])
    >>> message = Message.seeded(seed=7, n_words=4)
    >>> message.push(np.array([1, 0], dtype=np.int32), family, table)
    >>> message.pop(family, table).tolist()
    [1, 0]
    >>> message.check_seed()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import constriction
import numpy as np

from bbcodec.errors import MessageError, MessageSeedMismatchError, MessageUnderflowError

if TYPE_CHECKING:
    from bbcodec.coding.rate import InformationMeter

__all__ = [
    "SEED_GENERATOR",
    "WORD_BITS",
    "Message",
    "MessageError",
    "MessageSeedMismatchError",
    "MessageUnderflowError",
    "Seed",
]

#: Bits per compressed word of constriction's default ANS coder.
WORD_BITS = 32

#: Name of the generator that makes seed words, as a file format records it. The words are
#: ``numpy.random.PCG64(seed).random_raw(...)`` (bit generators are stream-stable across
#: numpy versions, unlike ``Generator`` methods), each uint64 split into two uint32 words,
#: low half first; the most significant bit of the last word is then set to one.
SEED_GENERATOR = "numpy.PCG64.random_raw.u32le.msb"

# The coder's head holds at most two words. After a decode it refills from the bulk when the
# head drops below one word; with nothing left to refill, the stack is exhausted.
_HEAD_REFILL_THRESHOLD = 1 << WORD_BITS

# mix_head: the low 24 bits (the quantile the next pop reads) are XORed with the top 24 bits
# of the product of the other head bits and this odd constant (2**64 / golden ratio).
# Part of the bitstream format: changing it changes every bits-back stream.
_MIX_BITS = 24
_MIX_MULTIPLIER = 0x9E3779B97F4A7C15
_UINT64_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Seed:
    """A reproducible source of initial bits: ``n_words`` words from a named generator.

    Attributes:
        value: Seed of the generator, an integer ``0 <= value < 2**64``.
        n_words: Number of uint32 words, at least 2 (the coder's head is two words).
        generator: Name of the generator; only :data:`SEED_GENERATOR` is implemented.
    """

    value: int
    n_words: int
    generator: str = SEED_GENERATOR

    def __post_init__(self) -> None:
        if self.generator != SEED_GENERATOR:
            raise ValueError(
                f"unknown seed generator {self.generator!r}; this version implements "
                f"{SEED_GENERATOR!r}"
            )
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"seed value must be in [0, 2**64), got {self.value}")
        if self.n_words < 2:
            raise ValueError(f"a seed needs at least 2 words (one full head), got {self.n_words}")

    @property
    def initial_bits(self) -> int:
        """Cost of the seed in bits: ``32 * n_words``."""
        return WORD_BITS * self.n_words

    def words(self) -> np.ndarray:
        """The seed words.

        Returns:
            uint32 array of shape ``(n_words,)``; its last word (the top of the stack) has
            its most significant bit set, so the coder starts with a full 64-bit head.

        Example:
            >>> Seed(value=1, n_words=3).words().shape
            (3,)
        """
        n_raw = (self.n_words + 1) // 2
        raw = np.random.PCG64(self.value).random_raw(n_raw).astype("<u8")
        words = raw.view("<u4")[: self.n_words].astype(np.uint32)
        words[-1] |= np.uint32(1 << (WORD_BITS - 1))
        return words


class Message:
    """An ANS stack of compressed bits, mutated in place by :meth:`push` and :meth:`pop`.

    Create one with :meth:`seeded` (encoder side) or :meth:`from_words` (decoder side, from
    the words an encoder wrote). Codecs call :meth:`push` / :meth:`pop` with a constriction
    model and parameters that are already contiguous ``float64`` (see
    :func:`bbcodec.coding.handover.coder_float64`).

    Capacity: the last word of the stack is a reserve that can never be popped. A pop that
    would leave the coder's head below one word with nothing to refill it raises
    :class:`MessageUnderflowError`; a fresh seed of ``n`` words can therefore give back
    between ``32 * (n - 2)`` and ``32 * (n - 1)`` bits.

    Attributes:
        seed: The seed this message started from, or ``None`` if unknown (or empty).
        meter: Optional :class:`~bbcodec.coding.rate.InformationMeter`; leaf codecs add the
            information content of every symbol they push or pop to it. Not part of the
            message state (ignored by ``==`` and not copied by :meth:`copy`).
        underflow_guard: Whether :meth:`pop` refuses to eat into the last word (on by
            default). A decoder turns it off only for the symbols an encoder pushed before
            its first pop: they may drain the stack to nothing.
    """

    __hash__ = None  # mutable

    def __init__(self, coder: constriction.stream.stack.AnsCoder, seed: Seed | None) -> None:
        """Wraps an existing coder; prefer :meth:`seeded` or :meth:`from_words`."""
        self._coder = coder
        self.seed = seed
        self.meter: InformationMeter | None = None
        self.underflow_guard = True

    @classmethod
    def empty(cls) -> Message:
        """A message holding nothing: pushes only, until something is on it.

        Symbols pushed onto an empty stack cost their information content and nothing
        more; popping them back (with the guard off) leaves the stack empty again.
        """
        return cls(constriction.stream.stack.AnsCoder(), None)

    @classmethod
    def seeded(cls, seed: int, n_words: int) -> Message:
        """A message holding ``n_words`` seed words from :data:`SEED_GENERATOR`.

        Args:
            seed: Generator seed, ``0 <= seed < 2**64``.
            n_words: Number of uint32 words of initial bits, at least 2.

        Returns:
            The seeded message; ``initial_bits == 32 * n_words``.

        Example:
            >>> Message.seeded(seed=0, n_words=8).initial_bits
            256
        """
        spec = Seed(value=seed, n_words=n_words)
        return cls(constriction.stream.stack.AnsCoder(spec.words()), spec)

    @classmethod
    def from_words(cls, words: np.ndarray, seed: Seed | None = None) -> Message:
        """A message restored from the words :meth:`to_words` returned.

        Args:
            words: 1-D uint32 array, bottom of the stack first (an empty array is an empty
                message, from which nothing can be popped).
            seed: The seed the encoder started from, if known, for :meth:`check_seed`.

        Raises:
            ValueError: ``words`` is not 1-D uint32, or its last word is zero (no coder
                ever writes that).

        Example:
            >>> message = Message.seeded(seed=3, n_words=4)
            >>> Message.from_words(message.to_words()) == message
            True
        """
        words = np.asarray(words)
        if words.dtype != np.uint32 or words.ndim != 1:
            raise ValueError(f"words must be a 1-D uint32 array, got {words.dtype} {words.shape}")
        if words.size and words[-1] == 0:
            raise ValueError("invalid message: the last word (top of the stack) is zero")
        return cls(constriction.stream.stack.AnsCoder(np.ascontiguousarray(words)), seed)

    @property
    def initial_bits(self) -> int:
        """Bits of the seed this message started from (0 if no seed is known)."""
        return 0 if self.seed is None else self.seed.initial_bits

    def num_bits(self) -> int:
        """Information held by the stack in bits (not rounded up to whole words)."""
        return self._coder.num_valid_bits()

    def num_words(self) -> int:
        """Length of :meth:`to_words`, in uint32 words."""
        return self._coder.num_words()

    def to_words(self) -> np.ndarray:
        """The whole stack as a new 1-D uint32 array, bottom first (native byte order)."""
        return self._coder.get_compressed()

    def copy(self) -> Message:
        """An independent copy of the stack (same seed, no meter)."""
        return Message(self._coder.clone(), self.seed)

    def __eq__(self, other: object) -> bool:
        """Equal iff both stacks hold exactly the same words (the full coder state)."""
        if not isinstance(other, Message):
            return NotImplemented
        return np.array_equal(self.to_words(), other.to_words())

    def __repr__(self) -> str:
        return f"Message(num_bits={self.num_bits()}, num_words={self.num_words()})"

    def is_seed(self) -> bool:
        """Whether the stack is exactly its seed again (``False`` if no seed is known)."""
        return self.seed is not None and np.array_equal(self.to_words(), self.seed.words())

    def check_seed(self) -> None:
        """Asserts that decoding gave back the seed exactly: the free integrity check.

        Raises:
            MessageSeedMismatchError: The stack differs from the seed words, or no seed is
                known.
        """
        if self.seed is None:
            raise MessageSeedMismatchError("this message does not know its seed")
        if not self.is_seed():
            raise MessageSeedMismatchError(
                f"stack after decoding is not the seed: {self.num_words()} words left, "
                f"expected the {self.seed.n_words} seed words (data do not belong to this "
                "stream, or encoder and decoder used different models or settings)"
            )

    def check_empty(self) -> None:
        """Asserts that decoding drained the stack completely (a stream that started empty).

        Raises:
            MessageSeedMismatchError: Words are left on the stack.
        """
        if self.num_words():
            raise MessageSeedMismatchError(
                f"stack after decoding is not empty: {self.num_words()} words left (data do "
                "not belong to this stream, or encoder and decoder used different models or "
                "settings)"
            )

    def mix_head(self) -> None:
        """Scrambles the bits the next pop reads, keeping the message size (self-inverse).

        Right after a push, the low 24 bits of the coder's head lie inside the interval of
        the symbol just pushed, so a pop with an unrelated distribution would read a biased
        quantile. This XORs them with a hash of the head's other bits: a bijection of the
        coder state that leaves ``num_bits()`` and every other bit unchanged and is its own
        inverse (calling it twice restores the state). Heads below one word are left alone.
        """
        n_bulk_words, head = self._coder.pos()
        if head < _HEAD_REFILL_THRESHOLD:
            return
        upper = head >> _MIX_BITS
        mask = ((upper * _MIX_MULTIPLIER) & _UINT64_MASK) >> (64 - _MIX_BITS)
        self._coder.seek(n_bulk_words, head ^ mask)

    def push(self, symbols: np.ndarray, model: Any, *params: np.ndarray) -> None:
        """Pushes symbols; the first symbol of the array ends up on top of the stack.

        Args:
            symbols: 1-D contiguous int32 array.
            model: A constriction model family (then ``params`` give one entry per symbol)
                or a concrete model (then ``params`` is empty).
            *params: Per-symbol parameters in the dtype and layout constriction expects.
        """
        self._coder.encode_reverse(symbols, model, *params)

    def pop(self, model: Any, *params: np.ndarray, count: int | None = None) -> np.ndarray:
        """Pops symbols, the top of the stack first.

        Args:
            model: A constriction model family or a concrete model.
            *params: Per-symbol parameters for a model family.
            count: Number of i.i.d. symbols to pop with a concrete model (``params`` must then
                be empty).

        Returns:
            1-D int32 array of the popped symbols.

        Raises:
            MessageUnderflowError: The stack did not hold enough bits (checked while
                :attr:`underflow_guard` is on); the message is left as it was before this
                call.
        """
        if count is None:
            symbols = self._coder.decode(model, *params)
        else:
            symbols = self._coder.decode(model, count)
        n_bulk_words, head = self._coder.pos()
        if self.underflow_guard and n_bulk_words == 0 and head < _HEAD_REFILL_THRESHOLD:
            # Every decode step is the exact inverse of an encode step, so pushing the
            # symbols back restores the state this call started from.
            self._coder.encode_reverse(symbols, model, *params)
            raise MessageUnderflowError(
                f"popping {symbols.size} symbols needs more bits than the message holds "
                f"({self.num_bits()} bits, of which the last word is a reserve); seed the "
                "message with more words"
            )
        return symbols
