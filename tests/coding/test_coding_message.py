"""Message: seeding, serialisation, full-state equality, underflow and the seed check."""

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbcodec.coding import (
    SEED_GENERATOR,
    Message,
    MessageSeedMismatchError,
    MessageUnderflowError,
    Seed,
    Uniform,
)

BYTE = constriction.stream.model.Uniform(256)


def test_seed_words_follow_the_documented_generator():
    raw = np.random.PCG64(12345).random_raw(3)
    expected = []
    for value in raw.tolist():
        expected += [value & 0xFFFFFFFF, value >> 32]
    expected = np.array(expected[:5], dtype=np.uint32)
    expected[-1] |= 1 << 31

    words = Seed(value=12345, n_words=5).words()

    np.testing.assert_array_equal(words, expected)
    assert words.dtype == np.uint32
    assert SEED_GENERATOR == "numpy.PCG64.random_raw.u32le.msb"


def test_seeded_message_holds_exactly_its_seed():
    message = Message.seeded(seed=9, n_words=6)

    assert message.initial_bits == 6 * 32
    assert message.num_words() == 6
    assert message.num_bits() == 6 * 32 - 1  # the top word's leading one carries no data
    np.testing.assert_array_equal(message.to_words(), Seed(9, 6).words())
    assert message.is_seed()
    message.check_seed()


@pytest.mark.parametrize(
    ("value", "n_words", "generator"),
    [(0, 1, SEED_GENERATOR), (-1, 4, SEED_GENERATOR), (1 << 64, 4, SEED_GENERATOR), (0, 4, "mt")],
)
def test_invalid_seeds_are_rejected(value, n_words, generator):
    with pytest.raises(ValueError):
        Seed(value=value, n_words=n_words, generator=generator)


def test_words_round_trip_and_equality_is_on_the_full_state():
    message = Message.seeded(seed=1, n_words=4)
    Uniform(256, (10,)).push(message, np.arange(10))

    restored = Message.from_words(message.to_words(), seed=message.seed)

    assert restored == message
    assert Uniform(256, (10,)).pop(restored).tolist() == list(range(10))
    assert restored != message
    restored.check_seed()


def test_copy_is_independent():
    message = Message.seeded(seed=1, n_words=4)
    copy = message.copy()

    Uniform(7, (3,)).push(copy, np.array([1, 2, 3]))

    assert message.is_seed()
    assert copy != message
    assert copy.seed == message.seed


@pytest.mark.parametrize(
    "words",
    [
        np.array([1, 0], dtype=np.uint32),
        np.array([1, 2], dtype=np.int64),
        np.ones((2, 2), np.uint32),
    ],
)
def test_from_words_rejects_invalid_stacks(words):
    with pytest.raises(ValueError):
        Message.from_words(words)


def test_check_seed_detects_a_changed_or_unknown_stack():
    message = Message.seeded(seed=2, n_words=4)
    Uniform(3, (1,)).push(message, np.array([2]))

    with pytest.raises(MessageSeedMismatchError):
        message.check_seed()
    with pytest.raises(MessageSeedMismatchError):
        Message.from_words(message.to_words()).check_seed()


def test_popping_from_an_empty_message_raises():
    message = Message.from_words(np.empty(0, dtype=np.uint32))

    with pytest.raises(MessageUnderflowError):
        message.pop(BYTE, count=1)
    assert message.num_words() == 0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    n_words=st.integers(2, 12),
    chunk=st.integers(1, 40),
)
def test_popping_beyond_the_seed_raises_and_leaves_the_message_unchanged(seed, n_words, chunk):
    message = Message.seeded(seed, n_words)
    popped_bits = 0
    while True:
        before = message.copy()
        try:
            message.pop(BYTE, count=chunk)
        except MessageUnderflowError:
            assert message == before
            break
        popped_bits += 8 * chunk
    # Everything but the one-word reserve (and the failing chunk) could be popped.
    assert 32 * (n_words - 2) - 8 * chunk < popped_bits <= 32 * (n_words - 1)


def test_pop_after_underflow_is_never_silent():
    """Without the check constriction would keep decoding zeros from an exhausted coder."""
    message = Message.seeded(seed=3, n_words=2)
    for _ in range(3):
        message.pop(BYTE, count=1)
    with pytest.raises(MessageUnderflowError):
        for _ in range(10):
            message.pop(BYTE, count=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), n_words=st.integers(2, 8), n_pushed=st.integers(0, 30))
def test_mix_head_is_a_size_preserving_involution(seed, n_words, n_pushed):
    message = Message.seeded(seed, n_words)
    Uniform(251, (n_pushed,)).push(message, np.arange(n_pushed) % 251)
    before = message.copy()

    message.mix_head()

    assert message.num_bits() == before.num_bits()
    assert message.num_words() == before.num_words()
    np.testing.assert_array_equal(message.to_words()[:-2], before.to_words()[:-2])
    message.mix_head()
    assert message == before


def test_mix_head_leaves_a_short_head_alone():
    message = Message.from_words(np.array([12345], dtype=np.uint32))
    message.mix_head()
    assert message.to_words().tolist() == [12345]
