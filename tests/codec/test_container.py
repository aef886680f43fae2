"""Tests for the ``.bbc`` container: round trips, truncation, bit flips, lying headers."""

from __future__ import annotations

import io
import itertools
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbcodec import container as bbc
from bbcodec.container import (
    Chunk,
    ContainerReader,
    ContainerWriter,
    Header,
    SeedPolicy,
    dumps,
    loads,
    pixels_checksum,
    verify_pixels,
)
from bbcodec.errors import BbcFileError, ChecksumError, ContainerError, DecodeError

SEED = SeedPolicy(generator="numpy.PCG64", seed=12345, words=32)
SETTINGS = {"device": "cpu", "latent_step": 0.01, "latent_range": [-8.0, 8.0], "batch": [1, 2]}


def make_images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]


def make_file(shapes, split, seed=0):
    """A header and chunks over random images; ``split`` lists the chunk image counts."""
    images = make_images(shapes, seed)
    rng = np.random.default_rng(seed + 1)
    header = Header(
        model_id="vlae-bmnist",
        weights_sha256=bytes(range(32)),
        settings=SETTINGS,
        seed=SEED,
        shapes=tuple(shapes),
    )
    chunks, first = [], 0
    for count in split:
        words = rng.integers(0, 2**32, size=int(rng.integers(0, 6)), dtype=np.uint32)
        chunks.append(Chunk(first, count, words, pixels_checksum(images[first : first + count])))
        first += count
    return header, chunks, images


SHAPES = [(3, 4), (3, 4), (2, 2, 3), (5, 1), (3, 4)]
HEADER, CHUNKS, IMAGES = make_file(SHAPES, [2, 1, 2])
SMALL = dumps(HEADER, CHUNKS)


class Unseekable(io.RawIOBase):
    """A pipe-like stream: no seek, and short reads of at most ``piece`` bytes."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self._buf = io.BytesIO(data)
        self._piece = piece

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(self._piece if n < 0 else min(n, self._piece))


def read_all(f):
    reader = ContainerReader(f)
    return reader.header, list(reader)


# --------------------------------------------------------------------------- round trips


def test_round_trip_many_chunks_mixed_shapes():
    header, chunks = loads(SMALL)
    assert header == HEADER
    assert chunks == CHUNKS
    assert header.image_count == 5
    assert header.shapes[2] == (2, 2, 3)
    assert header.settings == SETTINGS
    for chunk in chunks:
        assert chunk.words.dtype == np.uint32
        verify_pixels(chunk, IMAGES[chunk.first : chunk.stop])


def test_round_trip_one_chunk_and_zero_images():
    header, chunks, _ = make_file([(28, 28)] * 10, [10])
    assert loads(dumps(header, chunks)) == (header, chunks)
    empty = Header("m", bytes(32), {}, SEED, ())
    assert loads(dumps(empty, [])) == (empty, [])


def test_streaming_writer_and_reader_on_files(tmp_path):
    header, chunks, images = make_file([(4, 4)] * 7 + [(2, 3, 3)] * 3, [3, 3, 1, 3])
    path = tmp_path / "x.bbc"
    with open(path, "wb") as f, ContainerWriter(f) as writer:
        assert writer.write_header(header) > 0
        sizes = [writer.write_chunk(c) for c in chunks]
    assert sizes == [52 + 4 * c.words.size + 4 for c in chunks]
    assert writer.bytes_written == path.stat().st_size
    assert path.read_bytes() == dumps(header, chunks)
    with open(path, "rb") as f:
        reader = ContainerReader(f)
        assert reader.header == header
        for chunk, expected in zip(reader, chunks, strict=True):
            assert chunk == expected
            verify_pixels(chunk, images[chunk.first : chunk.stop])
    assert read_all(Unseekable(path.read_bytes())) == (header, chunks)


def test_reader_iterates_once():
    reader = ContainerReader(io.BytesIO(SMALL))
    list(reader)
    with pytest.raises(ContainerError, match="already read"):
        list(reader)


json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)
json_leaf |= st.floats(allow_nan=False, allow_infinity=False)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
shape = st.tuples(st.integers(1, 5), st.integers(1, 5)) | st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)
)


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(shape, min_size=1, max_size=8),
    data=st.data(),
    cfg=st.dictionaries(st.text(max_size=6), json_value, max_size=4),
    seed=st.integers(0, 2**64 - 1),
    words=st.integers(0, bbc.MAX_SEED_WORDS),
)
def test_round_trip_hypothesis(shapes, data, cfg, seed, words):
    n = len(shapes)
    flags = data.draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    cuts = [0] + [i for i, cut in enumerate(flags, 1) if cut] + [n]
    images = make_images(shapes)
    header = Header("delta-vae/cifar10", bytes(32), cfg, SeedPolicy("g", seed, words), shapes)
    words = st.lists(st.integers(0, 2**32 - 1), max_size=6)
    chunks = [
        Chunk(a, b - a, np.array(data.draw(words), dtype=np.uint32), pixels_checksum(images[a:b]))
        for a, b in itertools.pairwise(cuts)
    ]
    blob = dumps(header, chunks)
    assert loads(blob) == (header, chunks)
    assert read_all(Unseekable(blob, piece=3)) == (header, chunks)
    assert json.loads(json.dumps(header.settings)) == header.settings


# --------------------------------------------------------------------------- corruption


def test_every_truncation_point_raises():
    for n in range(len(SMALL)):
        with pytest.raises(ContainerError):
            loads(SMALL[:n])
        with pytest.raises(ContainerError):
            read_all(Unseekable(SMALL[:n], piece=64))


def test_truncation_at_chunk_boundary_names_missing_images():
    header, chunks = HEADER, CHUNKS
    body = dumps(header, chunks)
    end_at = len(body) - 12 - (52 + 4 * chunks[-1].words.size + 4)
    with pytest.raises(ContainerError, match="truncated"):
        loads(body[:end_at])


def test_every_single_bit_flip_is_detected():
    data = bytearray(SMALL)
    for bit in range(8 * len(data)):
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContainerError):
            loads(bytes(data))
        data[bit // 8] ^= 1 << (bit % 8)


def test_random_multi_bit_flips_are_detected():
    rng = np.random.default_rng(2024)
    for _ in range(1000):
        data = bytearray(SMALL)
        for bit in rng.choice(8 * len(data), size=int(rng.integers(1, 9)), replace=False):
            data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContainerError):
            loads(bytes(data))


def test_trailing_bytes():
    for extra in (b"\x00", b"BEND", SMALL):
        with pytest.raises(ContainerError, match="trailing bytes"):
            loads(SMALL + extra)
        with pytest.raises(ContainerError, match="trailing bytes"):
            read_all(Unseekable(SMALL + extra))


def test_wrong_magic_and_unknown_version():
    with pytest.raises(ContainerError, match="bad magic"):
        loads(b"PK\x03\x04" + SMALL[4:])
    with pytest.raises(ContainerError, match="truncated: magic needs 8 bytes"):
        loads(b"")
    with pytest.raises(ContainerError, match=r"^unsupported \.bbc format version 7 "):
        loads(SMALL[:8] + struct.pack("<H", 7) + SMALL[10:])
    # Checked before the CRC, so a file from a newer writer gets the version message.
    assert SMALL[:8] == bbc.MAGIC and SMALL[8:10] == struct.pack("<H", bbc.FORMAT_VERSION)


def test_error_messages_are_one_line():
    cases = [SMALL[:n] for n in range(0, len(SMALL), 5)] + [SMALL + b"x"]
    for blob in cases:
        with pytest.raises(ContainerError) as info:
            loads(blob)
        assert "\n" not in str(info.value) and str(info.value)


# --------------------------------------------------------------------------- lying fields
# Files built by hand from the layout in the module docstring, with correct CRCs.


def frame_header(body: bytes, version: int = 2) -> tuple[bytes, int]:
    pre = bbc.MAGIC + struct.pack("<HI", version, len(body))
    pre_crc = zlib.crc32(pre)
    header_crc = zlib.crc32(body, pre_crc)
    return pre + struct.pack("<I", pre_crc) + body + struct.pack("<I", header_crc), header_crc


def header_body(
    *,
    model=b"vlae-bmnist",
    gen=b"numpy.PCG64",
    seed_words=4,
    settings=b"{}",
    settings_len=None,
    dtype=1,
    count=2,
    runs=((2, (3, 4)),),
    n_runs=None,
    model_len=None,
    extra=b"",
) -> bytes:
    body = struct.pack("<B", len(model) if model_len is None else model_len) + model
    body += bytes(32) + struct.pack("<B", len(gen)) + gen + struct.pack("<QI", 7, seed_words)
    body += struct.pack("<I", len(settings) if settings_len is None else settings_len) + settings
    body += struct.pack("<BII", dtype, count, len(runs) if n_runs is None else n_runs)
    for length, dims in runs:
        body += struct.pack(f"<IB{len(dims)}I", length, len(dims), *dims)
    return body + extra


def chunk_bytes(header_crc, first, count, words=(1, 2), n_words=None, sha=bytes(32)) -> bytes:
    n = len(words) if n_words is None else n_words
    frame = b"CHNK" + struct.pack("<III", first, count, n) + sha
    frame_crc = zlib.crc32(frame, header_crc)
    payload = np.asarray(words, dtype="<u4").tobytes()
    return (
        frame
        + struct.pack("<I", frame_crc)
        + payload
        + struct.pack("<I", zlib.crc32(payload, frame_crc))
    )


def end_bytes(header_crc, n_chunks) -> bytes:
    end = b"BEND" + struct.pack("<I", n_chunks)
    return end + struct.pack("<I", zlib.crc32(end, header_crc))


def test_hand_built_file_matches_writer():
    head, crc = frame_header(header_body())
    blob = head + chunk_bytes(crc, 0, 1) + chunk_bytes(crc, 1, 1, words=()) + end_bytes(crc, 2)
    header, chunks = loads(blob)
    assert header.shapes == ((3, 4), (3, 4)) and [c.count for c in chunks] == [1, 1]
    assert dumps(header, chunks) == blob


def assert_rejected_cheaply(blob: bytes, match: str) -> None:
    """Raises ContainerError matching ``match`` quickly, with no big allocation, both ways."""
    for stream in (io.BytesIO(blob), Unseekable(blob, piece=1 << 16)):
        tracemalloc.start()
        try:
            with pytest.raises(ContainerError, match=match):
                read_all(stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, peak


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"count": 2**32 - 1, "runs": ((2**32 - 1, (3, 4)),)}, "more than the limit"),
        ({"runs": ((2, (10**9, 10**9)),)}, r"must be in 1\.\.65536"),
        ({"runs": ((2, (28, 28, 10**6)),)}, r"must be in 1\.\.4"),
        ({"runs": ((2, (28, 0)),)}, r"must be in 1\.\.65536"),
        ({"runs": ((2, (1, 2, 3, 4)),)}, "ndim 4"),
        ({"runs": ((1, (3, 4)),)}, "cover 1 images"),
        ({"runs": ((3, (3, 4)),)}, "does not fit"),
        ({"runs": ((0, (3, 4)), (2, (3, 4)))}, "does not fit"),
        ({"n_runs": 2**32 - 1}, "shape runs for"),
        ({"n_runs": 2}, "runs past the end"),
        ({"extra": b"\x00"}, "1 unexpected trailing bytes"),
        ({"model_len": 250}, "runs past the end"),
        ({"model_len": 0, "model": b""}, "model id"),
        ({"model": b"has space"}, "model id"),
        ({"settings_len": 2**32 - 1}, "more than the limit"),
        ({"settings_len": 1000}, "runs past the end"),
        ({"settings": b"[1, 2]"}, "must be an object"),
        ({"settings": b'{"a": NaN}'}, "NaN"),
        ({"settings": b'{"a": 1e999}'}, "not a finite number"),
        ({"settings": b'{"a": 1, "a": 2}'}, "repeats a key"),
        ({"settings": b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"}, "nests too deeply"),
        ({"settings": b'{"a":' + b"[" * 17 + b"]" * 17 + b"}"}, "nest deeper than 16"),
        ({"settings": b'{"a": 1'}, "not valid UTF-8 JSON"),
        ({"model": b"caf\xe9"}, "not ASCII"),
        ({"settings": b'{"a": 99999999999999999999999}'}, "64 bits"),
        ({"settings": b"\xff\xfe"}, "not valid UTF-8 JSON"),
        ({"seed_words": 2**32 - 1}, "seed words"),
        ({"dtype": 9}, "dtype code 9"),
    ],
)
def test_lying_header_fields(fields, match):
    head, crc = frame_header(header_body(**fields))
    assert_rejected_cheaply(head + chunk_bytes(crc, 0, 2) + end_bytes(crc, 1), match)


def test_lying_header_length():
    body = header_body()
    pre = bbc.MAGIC + struct.pack("<HI", bbc.FORMAT_VERSION, 2**32 - 1)
    blob = pre + struct.pack("<I", zlib.crc32(pre)) + body
    assert_rejected_cheaply(blob, "header length")
    pre = bbc.MAGIC + struct.pack("<HI", bbc.FORMAT_VERSION, bbc.MAX_HEADER_BYTES)
    blob = pre + struct.pack("<I", zlib.crc32(pre)) + body
    assert_rejected_cheaply(blob, "truncated: header needs")


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ([(0, 1, {"n_words": bbc.MAX_CHUNK_WORDS})], "truncated: chunk 0 stream"),
        ([(0, 2, {"n_words": 2**32 - 1})], "more than"),
        ([(1, 1, {})], r"holds images 1\.\.1, expected a range starting at 0"),
        ([(0, 0, {})], "expected a range"),
        ([(0, 3, {})], "expected a range"),
        ([(0, 2**32 - 1, {})], "expected a range"),
        ([(0, 1, {}), (0, 1, {})], "starting at 1"),
        ([(0, 1, {}), (2, 1, {})], "starting at 1"),
        ([(0, 1, {})], "no chunk"),
        ([(0, 2, {}), (2, 1, {})], "extra chunk"),
    ],
)
def test_lying_chunk_fields(chunks, match):
    head, crc = frame_header(header_body())
    blob = head + b"".join(chunk_bytes(crc, a, n, **kw) for a, n, kw in chunks)
    assert_rejected_cheaply(blob + end_bytes(crc, len(chunks)), match)


def test_lying_end_record():
    head, crc = frame_header(header_body())
    assert_rejected_cheaply(head + chunk_bytes(crc, 0, 2) + end_bytes(crc, 5), "counts 5 chunks")
    assert_rejected_cheaply(head + chunk_bytes(crc, 0, 2) + b"XXXX" + bytes(8), "end-record tag")


def test_chunk_from_another_file_is_rejected():
    """Chunk CRCs start from the header CRC, so chunks cannot be spliced between files."""
    _, other_chunks, _ = make_file(SHAPES, [2, 1, 2], seed=5)
    other_header = Header("vlae-bmnist", bytes(32), SETTINGS, SEED, tuple(SHAPES))
    other = dumps(other_header, other_chunks)
    head_len = 18 + struct.unpack("<I", SMALL[10:14])[0] + 4
    assert other[:head_len] != SMALL[:head_len]
    with pytest.raises(ContainerError, match="chunk 0 at byte .*: framing CRC mismatch"):
        loads(SMALL[:head_len] + other[head_len:])
    head, crc = frame_header(header_body())
    foreign = chunk_bytes(crc ^ 1, 0, 2)
    with pytest.raises(ContainerError, match="framing CRC mismatch"):
        loads(head + foreign + end_bytes(crc, 1))


# --------------------------------------------------------------------------- writer misuse


def test_writer_enforces_order_and_completeness():
    buf = io.BytesIO()
    writer = ContainerWriter(buf)
    with pytest.raises(ContainerError, match="write_header must come first"):
        writer.write_chunk(CHUNKS[0])
    writer.write_header(HEADER)
    with pytest.raises(ContainerError, match="header already written"):
        writer.write_header(HEADER)
    with pytest.raises(ContainerError, match="does not continue at image 0"):
        writer.write_chunk(CHUNKS[1])
    writer.write_chunk(CHUNKS[0])
    with pytest.raises(ContainerError, match=r"images 2\.\.4 have no chunk"):
        writer.finalize()
    with pytest.raises(ContainerError, match="does not continue"):
        writer.write_chunk(Chunk(2, 4, np.zeros(1, np.uint32), bytes(32)))
    writer.write_chunk(CHUNKS[1])
    writer.write_chunk(CHUNKS[2])
    writer.finalize()
    with pytest.raises(ContainerError, match="already finalized"):
        writer.finalize()
    assert buf.getvalue() == SMALL


def test_writer_context_manager_leaves_unfinished_file_on_error():
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), ContainerWriter(buf) as writer:
        writer.write_header(HEADER)
        writer.write_chunk(CHUNKS[0])
        raise RuntimeError("encoder failed")
    with pytest.raises(ContainerError, match="truncated"):
        loads(buf.getvalue())


# --------------------------------------------------------------------------- values


def test_header_validation():
    ok = {
        "model_id": "m",
        "weights_sha256": bytes(32),
        "settings": {},
        "seed": SEED,
        "shapes": ((2, 2),),
    }
    bad = [
        ({"model_id": ""}, "model id"),
        ({"model_id": "caf\xe9"}, "model id"),
        ({"weights_sha256": bytes(31)}, "32 bytes"),
        ({"weights_sha256": "00" * 32}, "must be bytes"),
        ({"settings": {"x": float("nan")}}, "finite"),
        ({"settings": {1: 2}}, "not a str"),
        ({"settings": {"x": np.int64(3)}}, "not JSON-able"),
        ({"settings": {"x": "y" * bbc.MAX_SETTINGS_BYTES}}, "more than"),
        ({"settings": [1]}, "must be a dict"),
        ({"shapes": ((2,),)}, r"\(H, W\) or \(H, W, C\)"),
        ({"shapes": ((2, 2), (2, 2.5))}, "image 1 dim 1 must be an integer"),
        ({"shapes": ((2, 2, 0),)}, r"1\.\.4"),
        ({"shapes": ((True, 2),)}, "dim 0"),
        ({"dtype": "uint16"}, "dtype"),
        ({"seed": 3}, "SeedPolicy"),
    ]
    for change, match in bad:
        with pytest.raises(ContainerError, match=match):
            Header(**{**ok, **change})
    header = Header(**{**ok, "settings": {"r": (1, 2)}, "shapes": [[2, np.int64(3)], (4, 4, 3)]})
    assert header.settings == {"r": [1, 2]}
    assert header.shapes == ((2, 3), (4, 4, 3))
    with pytest.raises(ContainerError, match="seed"):
        SeedPolicy("g", -1, 0)
    with pytest.raises(ContainerError, match="seed words"):
        SeedPolicy("g", 0, bbc.MAX_SEED_WORDS + 1)


def test_chunk_validation_and_immutability():
    words = np.array([1, 2, 3], dtype=np.uint32)
    chunk = Chunk(0, 1, words, bytes(32))
    words[0] = 9
    assert chunk.words[0] == 1
    with pytest.raises(ValueError):
        chunk.words[0] = 5
    assert Chunk(0, 1, np.array([1, 2, 3], dtype=">u4"), bytes(32)) == chunk
    for args, match in [
        ((0, 1, np.array([1, 2]), bytes(32)), "uint32"),
        ((0, 1, [1, 2], bytes(32)), "numpy"),
        ((0, 1, np.zeros((1, 2), np.uint32), bytes(32)), "1-D"),
        ((0, 0, words, bytes(32)), "count"),
        ((-1, 1, words, bytes(32)), "first"),
        ((0, 1, words, bytes(3)), "32 bytes"),
    ]:
        with pytest.raises(ContainerError, match=match):
            Chunk(*args)


def test_pixels_checksum_and_verify():
    images = make_images([(4, 6), (2, 2, 3)])
    digest = pixels_checksum(images)
    assert digest == pixels_checksum(iter(images)) and len(digest) == 32
    assert pixels_checksum([images[0].reshape(6, 4), images[1]]) != digest
    assert pixels_checksum([np.asfortranarray(images[0]), images[1]]) == digest
    chunk = Chunk(0, 2, np.zeros(0, np.uint32), digest)
    verify_pixels(chunk, images)
    changed = [images[0].copy(), images[1]]
    changed[0][1, 1] ^= 1
    with pytest.raises(ChecksumError, match=r"images 0\.\.1: decoded pixels do not match"):
        verify_pixels(chunk, changed)
    with pytest.raises(ChecksumError, match="got 1 decoded images"):
        verify_pixels(chunk, images[:1])
    assert issubclass(ChecksumError, DecodeError) and issubclass(ContainerError, BbcFileError)
    assert not issubclass(ChecksumError, ContainerError) and issubclass(ContainerError, ValueError)
    with pytest.raises(ContainerError, match="uint8"):
        pixels_checksum([np.zeros((2, 2), np.int16)])
