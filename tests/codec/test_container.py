"""Tests for the ``.bbc`` container: round trips, sizes, truncation, bit flips, lying
fields (format version 3), and reading format version 2."""

from __future__ import annotations

import dataclasses
import io
import itertools
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import REPO

from bbcodec import container as bbc
from bbcodec import container_v2
from bbcodec.container import (
    Chunk,
    ContainerReader,
    ContainerWriter,
    Header,
    dumps,
    loads,
    pixel_digest_bytes,
    pixels_checksum,
    pixels_digest,
    verify_pixels,
)
from bbcodec.errors import (
    BbcFileError,
    ChecksumError,
    ContainerError,
    DecodeError,
    SizeLimitError,
)
from bbcodec.plan import MAX_DATASET_PIXELS_FACTOR

V2_FIXTURE = REPO / "tests" / "fixtures" / "readme-digits-v2.bbc"
SETTINGS = {
    "grid_step_log2": -8,
    "grid_bound": 32.0,
    "seed": 12345,
    "device": "cpu",
    "posterior_window_stds": None,
}


def make_images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]


def digest_of(images) -> bytes:
    """The pixel digest a version-3 chunk of ``images`` stores."""
    return pixels_digest(images, pixel_digest_bytes(sum(a.size for a in images)))


def make_file(shapes, split, seed=0):
    """A header and chunks over random images; ``split`` lists the chunk image counts."""
    images = make_images(shapes, seed)
    rng = np.random.default_rng(seed + 1)
    header = Header("vlae-bmnist", bytes(range(4)), SETTINGS, tuple(shapes))
    chunks, first = [], 0
    for count in split:
        words = rng.integers(0, 2**32, size=int(rng.integers(0, 6)), dtype=np.uint32)
        chunks.append(Chunk(first, count, words, digest_of(images[first : first + count])))
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


def header_size(header: Header) -> int:
    return ContainerWriter(io.BytesIO()).write_header(header)


# --------------------------------------------------------------------------- round trips


def test_round_trip_many_chunks_mixed_shapes():
    header, chunks = loads(SMALL)
    assert header == HEADER and header.version == 3
    assert chunks == CHUNKS
    assert header.image_count == 5
    assert header.shapes[2] == (2, 2, 3)
    assert header.settings == SETTINGS
    for chunk in chunks:
        assert chunk.words.dtype == np.uint32 and len(chunk.pixels_digest) == 4
        verify_pixels(chunk, IMAGES[chunk.first : chunk.stop])


def test_round_trip_one_chunk_and_zero_images():
    header, chunks, _ = make_file([(28, 28)] * 10, [10])
    assert loads(dumps(header, chunks)) == (header, chunks)
    empty = Header("m", bytes(4), {}, ())
    assert loads(dumps(empty, [])) == (empty, [])


def test_streaming_writer_and_reader_on_files(tmp_path):
    header, chunks, images = make_file([(4, 4)] * 7 + [(2, 3, 3)] * 3, [3, 3, 1, 3])
    path = tmp_path / "x.bbc"
    with open(path, "wb") as f, ContainerWriter(f) as writer:
        head = writer.write_header(header)
        sizes = [writer.write_chunk(c) for c in chunks]
    assert head + sum(sizes) == writer.bytes_written == path.stat().st_size
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


printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
setting_value = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(printable, max_size=255)
)
model_id = st.sampled_from(sorted(bbc.MODEL_CODES.values())) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255
)
shape = st.tuples(st.integers(1, 300), st.integers(1, 300)) | st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)
)


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(shape, min_size=1, max_size=8),
    data=st.data(),
    # band_rows shapes the chunk records (tests/codec/test_bands.py): any other key here
    cfg=st.dictionaries(
        st.sampled_from([key for key in bbc.SETTINGS_KEYS if key != "band_rows"]), setting_value
    ),
    model=model_id,
)
def test_round_trip_hypothesis(shapes, data, cfg, model):
    n = len(shapes)
    flags = data.draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    cuts = [0] + [i for i, cut in enumerate(flags, 1) if cut] + [n]
    images = make_images(shapes)
    header = Header(model, bytes(4), cfg, shapes)
    words = st.lists(st.integers(0, 2**32 - 1), max_size=6)
    chunks = [
        Chunk(a, b - a, np.array(data.draw(words), dtype=np.uint32), digest_of(images[a:b]))
        for a, b in itertools.pairwise(cuts)
    ]
    blob = dumps(header, chunks)
    assert loads(blob) == (header, chunks)
    assert read_all(Unseekable(blob, piece=3)) == (header, chunks)
    assert dumps(*loads(blob)) == blob


# --------------------------------------------------------------------------- sizes


def test_a_one_image_file_takes_a_few_bytes_besides_its_stream():
    """22 bytes of header (registered model, no settings stored), 10 of chunk framing."""
    header = Header("vlae-bmnist", bytes(4), {}, ((28, 28),))
    words = np.array([7, 7, 7, 7, 0x01020304], np.uint32)  # 20 bytes
    chunk = Chunk(0, 1, words, bytes(4))
    data = dumps(header, [chunk])
    assert header_size(header) == 22
    assert len(data) == 22 + 10 + 20
    assert len(data) - 20 <= 45  # the header and framing besides the stream
    named = Header("my-model", bytes(4), {"seed": 0, "chunk_images": 1}, ((28, 28),))
    assert len(dumps(named, [chunk])) == len(data) + 9 + 4  # 1 + 8 for the id, 4 settings


@pytest.mark.parametrize(
    ("words", "n_bytes"),
    [([], 0), ([0], 1), ([5], 1), ([1, 0x0102], 6), ([1, 0x010203], 7), ([0, 2**32 - 1], 8)],
)
def test_the_stream_leaves_out_the_top_words_high_zero_bytes(words, n_bytes):
    header = Header("vlae-bmnist", bytes(4), {}, ((1, 1),))
    chunk = Chunk(0, 1, np.array(words, np.uint32), bytes(4))
    data = dumps(header, [chunk])
    assert len(data) == header_size(header) + 10 + n_bytes
    assert loads(data)[1] == [chunk]


# --------------------------------------------------------------------------- corruption

ONE = dumps(*make_file([(2, 2)], [1])[:2])


@pytest.mark.parametrize("data", [SMALL, ONE, dumps(Header("m", bytes(4), {}, ()), [])])
def test_every_truncation_point_raises(data):
    for n in range(len(data)):
        with pytest.raises(ContainerError):
            loads(data[:n])
        with pytest.raises(ContainerError):
            read_all(Unseekable(data[:n], piece=64))


def test_truncation_at_a_chunk_boundary_names_the_next_chunk():
    buf = io.BytesIO()
    writer = ContainerWriter(buf)
    writer.write_header(HEADER)
    writer.write_chunk(CHUNKS[0])
    writer.write_chunk(CHUNKS[1])
    assert SMALL.startswith(buf.getvalue())
    with pytest.raises(ContainerError, match="truncated file: chunk 2 image count needs 1"):
        loads(buf.getvalue())


@pytest.mark.parametrize("data", [SMALL, ONE])
def test_every_single_bit_flip_is_detected(data):
    flipped = bytearray(data)
    for bit in range(8 * len(flipped)):
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContainerError):
            loads(bytes(flipped))
        flipped[bit // 8] ^= 1 << (bit % 8)


def test_random_multi_bit_flips_are_detected():
    rng = np.random.default_rng(2024)
    for _ in range(1000):
        data = bytearray(SMALL)
        for bit in rng.choice(8 * len(data), size=int(rng.integers(1, 9)), replace=False):
            data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContainerError):
            loads(bytes(data))


@pytest.mark.parametrize("data", [SMALL, dumps(Header("m", bytes(4), {}, ()), [])])
def test_trailing_bytes(data):
    for extra in (b"\x00", b"\x01", data):
        with pytest.raises(ContainerError, match="trailing bytes"):
            loads(data + extra)
        with pytest.raises(ContainerError, match="trailing bytes"):
            read_all(Unseekable(data + extra))


def test_wrong_magic_and_unknown_version():
    assert SMALL[:5] == bbc.MAGIC + bytes([bbc.FORMAT_VERSION]) == b"\x89BBC\x03"
    with pytest.raises(ContainerError, match="not a .bbc file: bad magic"):
        loads(b"PK\x03\x04" + SMALL[4:])
    with pytest.raises(ContainerError, match="truncated file: magic needs 4 bytes"):
        loads(b"")
    for version in (0, 2, 4, 0xFF):  # checked before the CRC: a newer file gets this message
        with pytest.raises(ContainerError, match=rf"^unsupported \.bbc format version {version} "):
            loads(SMALL[:4] + bytes([version]) + SMALL[5:])


def test_error_messages_are_one_line():
    cases = [SMALL[:n] for n in range(0, len(SMALL), 5)] + [SMALL + b"x"]
    for blob in cases:
        with pytest.raises(ContainerError) as info:
            loads(blob)
        assert "\n" not in str(info.value) and str(info.value)


# --------------------------------------------------------------------------- lying fields
# Files built by hand from the layout in the module docstring, with correct CRCs.


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n >= 0x80 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def assemble(body: bytes, records=(), body_len: bytes | None = None) -> bytes:
    """A version-3 file: the header record around ``body``, then the chunk ``records``
    (each from its count through its stream), every CRC computed."""
    head = b"\x89BBC\x03" + (varint(len(body)) if body_len is None else body_len) + body
    crc = zlib.crc32(head)
    out = head + struct.pack("<I", crc)
    for record in records:
        out += record + struct.pack("<I", zlib.crc32(record, crc))
    return out


def body_bytes(
    *, model=b"\x01", settings=b"\x00", count=b"\x02", runs=b"\x01\x02\x02\x03\x04", extra=b""
) -> bytes:
    """A header body: vlae-bmnist, no settings, two 3 x 4 images (one run)."""
    return model + bytes(4) + settings + count + runs + extra


def record(count=b"\x02", stream=b"\x01\x00\x00\x00\x02", n_bytes=None, digest=bytes(4)):
    return count + (varint(len(stream)) if n_bytes is None else n_bytes) + digest + stream


def test_hand_built_file_matches_writer():
    blob = assemble(body_bytes(), [record(b"\x01"), record(b"\x01", stream=b"")])
    header, chunks = loads(blob)
    assert header.shapes == ((3, 4), (3, 4)) and header.model_id == "vlae-bmnist"
    assert [c.count for c in chunks] == [1, 1] and chunks[0].words.tolist() == [1, 2]
    assert dumps(header, chunks) == blob


def test_hand_built_settings_and_model_id():
    settings = b"\x05"  # five settings: (tag = 4 x key index + type, value)
    settings += b"\x00\x0f"  # grid_step_log2, int: zigzag 15 = -8
    settings += b"\x05" + struct.pack("<d", 2.5)  # grid_bound, float
    settings += b"\x10\x01"  # seed, int: zigzag 1 = -1
    settings += b"\x16\x03cpu"  # device, str
    settings += b"\x1f"  # posterior_window_stds, None
    blob = assemble(body_bytes(model=b"\x00\x03abc", settings=settings), [record()])
    header, _ = loads(blob)
    assert header.model_id == "abc"
    assert header.settings == {
        "grid_step_log2": -8,
        "grid_bound": 2.5,
        "seed": -1,
        "device": "cpu",
        "posterior_window_stds": None,
    }
    assert dumps(*loads(blob)) == blob


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


TOO_LONG = b"\x80" * 10 + b"\x01"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"count": varint(bbc.MAX_IMAGES + 1)}, "more than the limit"),
        ({"count": b"\x82\x00"}, "image count at byte .* shortest form"),
        ({"count": TOO_LONG}, "image count at byte .* longer than 10 bytes"),
        ({"runs": b"\x01\x02\x02" + varint(10**9) + b"\x04"}, r"must be in 1\.\.65536"),
        ({"runs": b"\x01\x02\x03\x03\x04" + varint(10**6)}, r"must be in 1\.\.4"),
        ({"runs": b"\x01\x02\x02\x03\x00"}, r"must be in 1\.\.65536"),
        ({"runs": b"\x01\x02\x04\x01\x02\x03\x04"}, "ndim 4"),
        ({"runs": b"\x01\x01\x02\x03\x04"}, "cover 1 images"),
        ({"runs": b"\x01\x03\x02\x03\x04"}, "does not fit"),
        ({"runs": b"\x02\x00\x02\x03\x04\x02\x02\x03\x04"}, "does not fit"),
        ({"runs": b"\x00"}, "cover 0 images"),
        ({"runs": varint(2**40)}, "shape runs for"),
        ({"runs": b"\x02\x01\x02\x03\x04"}, "truncated header body: shape run 1"),
        ({"extra": b"\x00"}, "trailing bytes after the header fields"),
        ({"model": b"\x63"}, "unknown model code 99"),
        ({"model": b"\x00\x00"}, "model id"),
        ({"model": b"\x00\x09has space"}, "model id"),
        ({"model": b"\x00\x04caf\xe9"}, "model id"),
        ({"model": b"\x00\xfa"}, "truncated header body: model id needs 250 bytes"),
        ({"settings": b"\x01" + bytes([4 * 40])}, "unknown setting key index 40"),
        ({"settings": b"\x02\x13\x13"}, "setting seed out of order"),
        ({"settings": b"\x02\x17\x13"}, "setting seed out of order"),
        ({"settings": b"\x01\x05" + struct.pack("<d", float("nan"))}, "not a finite number"),
        ({"settings": b"\x01\x16" + varint(256) + b"x" * 256}, "more than 255"),
        ({"settings": b"\x01\x16\x01\x0a"}, "printable ASCII"),
        ({"settings": b"\x01\x10" + varint(2**64)}, "does not fit in 64 bits"),
        ({"settings": b"\x01\x10" + TOO_LONG}, "longer than 10 bytes"),
    ],
)
def test_lying_header_fields(fields, match):
    assert_rejected_cheaply(assemble(body_bytes(**fields), [record()]), match)


def test_lying_header_length():
    body = body_bytes()
    assert_rejected_cheaply(assemble(body, body_len=varint(2**40)), "header length")
    limit = varint(bbc.MAX_HEADER_BYTES)
    assert_rejected_cheaply(assemble(body, body_len=limit), "truncated file: header needs")
    assert_rejected_cheaply(assemble(body, body_len=bytes([len(body) | 0x80, 0])), "shortest")


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([record(n_bytes=varint(4 * bbc.MAX_CHUNK_WORDS))], "truncated file: chunk 0 stream"),
        ([record(n_bytes=varint(4 * bbc.MAX_CHUNK_WORDS + 1))], "more than"),
        ([record(count=b"\x00")], r"chunk 0 at byte \d+ holds 0 images, expected 1\.\.2"),
        ([record(count=b"\x03")], "holds 3 images"),
        ([record(count=varint(2**63))], "holds 9223372036854775808 images"),
        ([record(count=b"\x81\x00")], "shortest form"),
        ([record(b"\x01")], "truncated file: chunk 1 image count"),
        ([record(), record(b"\x01")], "trailing bytes after the last chunk"),
        ([record(digest=bytes(8))], r"chunk 0 at byte \d+: CRC mismatch"),
    ],
)
def test_lying_chunk_fields(records, match):
    assert_rejected_cheaply(assemble(body_bytes(), records), match)


def test_chunk_from_another_file_is_rejected():
    """Chunk CRCs start from the header CRC, so chunks cannot be spliced between files."""
    other = dumps(dataclasses.replace(HEADER, weights_digest=b"othr"), CHUNKS)
    head_len = header_size(HEADER)
    assert len(other) == len(SMALL) and other[:head_len] != SMALL[:head_len]
    with pytest.raises(ContainerError, match=r"chunk 0 at byte \d+: CRC mismatch"):
        loads(SMALL[:head_len] + other[head_len:])


def test_size_limits_are_checked_before_the_stream_is_read():
    n = MAX_DATASET_PIXELS_FACTOR + 1
    header = Header("m", bytes(4), {}, ((10, 10),) * n)
    data = dumps(header, [Chunk(0, n, np.ones(2, np.uint32), bytes(4))])
    with pytest.raises(SizeLimitError, match=r"image 0 of the file \(10×10, 100 pixels\)"):
        loads(data, max_pixels=99)
    assert loads(data, max_pixels=102)[0] == header  # 64 × 102 >= 6,500
    cut = data[:-9]  # the 5-byte stream and the CRC cut off: the limit is checked first
    with pytest.raises(SizeLimitError, match=rf"chunk 0 at byte \d+ \({n} images, {100 * n:,}"):
        loads(cut, max_pixels=100)
    assert loads(data, max_pixels=None)[0] == header


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
        writer.write_chunk(Chunk(2, 4, np.zeros(1, np.uint32), bytes(4)))
    writer.write_chunk(CHUNKS[1])
    writer.write_chunk(CHUNKS[2])
    assert writer.finalize() is None
    with pytest.raises(ContainerError, match="already finalized"):
        writer.finalize()
    assert buf.getvalue() == SMALL


def test_writer_checks_the_pixel_digest_length():
    header = Header("m", bytes(4), {}, ((2, 2),) + ((256, 256),) * 2)
    writer = ContainerWriter(io.BytesIO())
    writer.write_header(header)
    words = np.ones(1, np.uint32)
    with pytest.raises(ContainerError, match="pixel digest of 32 bytes, its 4 subpixels take 4"):
        writer.write_chunk(Chunk(0, 1, words, bytes(32)))
    writer.write_chunk(Chunk(0, 1, words, bytes(4)))
    with pytest.raises(ContainerError, match="131,072 subpixels take 8"):
        writer.write_chunk(Chunk(1, 2, words, bytes(4)))
    writer.write_chunk(Chunk(1, 2, words, bytes(8)))


def test_writer_refuses_version_2_headers():
    v2 = Header("m", bytes(32), {"any": ["json", 1]}, ((2, 2),), version=2)
    with pytest.raises(ContainerError, match="writes format version 3 only"):
        dumps(v2, [])


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
    ok = {"model_id": "m", "weights_digest": bytes(4), "settings": {}, "shapes": ((2, 2),)}
    bad = [
        ({"model_id": ""}, "model id"),
        ({"model_id": "caf\xe9"}, "model id"),
        ({"weights_digest": bytes(32)}, "must be 4 bytes, got 32"),
        ({"weights_digest": "00" * 4}, "must be bytes"),
        ({"settings": {"seed": True}}, "setting seed is a bool"),
        ({"settings": {"latent_step": 0.01}}, "unknown setting 'latent_step'"),
        ({"settings": {1: 2}}, "unknown setting 1"),
        ({"settings": {"seed": 2**63}}, "setting seed must be in"),
        ({"settings": {"grid_bound": float("inf")}}, "not a finite number"),
        ({"settings": {"device": "caf\xe9"}}, "printable ASCII"),
        ({"settings": {"device": "x" * 256}}, "at most 255"),
        ({"settings": {"seed": np.int64(3)}}, "int64 is not an int, float, str or None"),
        ({"settings": {"seed": [1]}}, "list is not"),
        ({"settings": [1]}, "must be a dict"),
        ({"shapes": ((2,),)}, r"\(H, W\) or \(H, W, C\)"),
        ({"shapes": ((2, 2), (2, 2.5))}, "image 1 dim 1 must be an integer"),
        ({"shapes": ((2, 2, 0),)}, r"1\.\.4"),
        ({"shapes": ((True, 2),)}, "dim 0"),
        ({"dtype": "uint16"}, "dtype"),
        ({"version": 4}, r"format version must be in 2\.\.3"),
        ({"version": 2}, "must be 32 bytes, got 4"),
        ({"version": 2, "weights_digest": bytes(32), "settings": {1: 2}}, "not a str"),
        ({"version": 2, "weights_digest": bytes(32), "settings": {"x": np.int64(1)}}, "JSON"),
        (
            {"version": 2, "weights_digest": bytes(32), "settings": {"x": "y" * 2**20}},
            "more than 1048576",
        ),
    ]
    for change, match in bad:
        with pytest.raises(ContainerError, match=match):
            Header(**{**ok, **change})
    settings = {"seed": 1, "grid_bound": np.float64(2)}
    header = Header("m", bytes(4), settings, [[2, np.int64(3)], (4, 4, 3)])
    assert list(header.settings) == ["grid_bound", "seed"]  # key order: SETTINGS_KEYS
    assert type(header.settings["grid_bound"]) is float
    assert header.shapes == ((2, 3), (4, 4, 3))
    v2 = Header("m", bytes(32), {"r": (1, 2)}, (), version=2)
    assert v2.settings == {"r": [1, 2]} and v2.version == 2


def test_chunk_validation_and_immutability():
    words = np.array([1, 2, 3], dtype=np.uint32)
    chunk = Chunk(0, 1, words, bytes(4))
    words[0] = 9
    assert chunk.words[0] == 1
    with pytest.raises(ValueError):
        chunk.words[0] = 5
    assert Chunk(0, 1, np.array([1, 2, 3], dtype=">u4"), bytes(4)) == chunk
    for size in (4, 8, 16, 32):
        assert len(Chunk(0, 1, words, bytes(size)).pixels_digest) == size
    for args, match in [
        ((0, 1, np.array([1, 2]), bytes(4)), "uint32"),
        ((0, 1, [1, 2], bytes(4)), "numpy"),
        ((0, 1, np.zeros((1, 2), np.uint32), bytes(4)), "1-D"),
        ((0, 0, words, bytes(4)), "count"),
        ((-1, 1, words, bytes(4)), "first"),
        ((0, 1, words, bytes(3)), "must be 4 or 8 or 16 or 32 bytes"),
    ]:
        with pytest.raises(ContainerError, match=match):
            Chunk(*args)


def test_pixel_digest_sizes():
    sizes = [pixel_digest_bytes(n) for n in (1, 2**16 - 1, 2**16, 2**24 - 1, 2**24, 2**40)]
    assert sizes == [4, 4, 8, 8, 16, 16]


def test_pixels_checksum_digest_and_verify():
    images = make_images([(4, 6), (2, 2, 3)])
    checksum = pixels_checksum(images)
    assert checksum == pixels_checksum(iter(images)) and len(checksum) == 32
    assert pixels_digest(images, 4) == checksum[:4]
    assert pixels_checksum([images[0].reshape(6, 4), images[1]]) != checksum
    assert pixels_checksum([np.asfortranarray(images[0]), images[1]]) == checksum
    changed = [images[0].copy(), images[1]]
    changed[0][1, 1] ^= 1
    for digest in (checksum[:4], checksum):  # version 3's short digest, version 2's sha256
        chunk = Chunk(0, 2, np.zeros(0, np.uint32), digest)
        verify_pixels(chunk, images)
        with pytest.raises(ChecksumError, match=r"images 0\.\.1: decoded pixels do not match"):
            verify_pixels(chunk, changed)
        with pytest.raises(ChecksumError, match="got 1 decoded images"):
            verify_pixels(chunk, images[:1])
    assert issubclass(ChecksumError, DecodeError) and issubclass(ContainerError, BbcFileError)
    assert not issubclass(ChecksumError, ContainerError) and issubclass(ContainerError, ValueError)
    with pytest.raises(ContainerError, match="uint8"):
        pixels_checksum([np.zeros((2, 2), np.int16)])


# --------------------------------------------------------------------------- version 2

V2 = V2_FIXTURE.read_bytes()


def test_a_version_2_file_reads():
    header, chunks = loads(V2)
    assert header.version == 2 and header.model_id == "vlae-bmnist"
    assert len(header.weights_digest) == 32 and header.shapes == ((28, 28),) * 32
    assert header.settings["seed"] == 0 and header.settings["chunk_images"] == 32
    assert [(c.first, c.count, len(c.pixels_digest)) for c in chunks] == [(0, 32, 32)]
    assert read_all(Unseekable(V2, piece=5)) == (header, chunks)


def test_a_damaged_version_2_file_raises():
    for n in range(len(V2)):
        with pytest.raises(ContainerError):
            loads(V2[:n])
    flipped = bytearray(V2)
    for bit in range(0, 8 * len(V2), 7):
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContainerError):
            loads(bytes(flipped))
        flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ContainerError, match="trailing bytes after the end record"):
        loads(V2 + b"\x00")


# Version-2 files built by hand from the layout in `bbcodec.container_v2`.


def v2_header(body: bytes, version: int = 2) -> tuple[bytes, int]:
    pre = container_v2.MAGIC + struct.pack("<HI", version, len(body))
    pre_crc = zlib.crc32(pre)
    header_crc = zlib.crc32(body, pre_crc)
    return pre + struct.pack("<I", pre_crc) + body + struct.pack("<I", header_crc), header_crc


def v2_body(*, gen=b"numpy.PCG64", seed_words=4, settings=b"{}", dtype=1, extra=b"") -> bytes:
    body = b"\x0bvlae-bmnist" + bytes(32) + struct.pack("<B", len(gen)) + gen
    body += struct.pack("<QII", 7, seed_words, len(settings)) + settings
    return body + struct.pack("<BIIIB2I", dtype, 2, 1, 2, 2, 3, 4) + extra


def v2_chunk(header_crc, first, count, words=(1, 2)) -> bytes:
    frame = b"CHNK" + struct.pack("<III", first, count, len(words)) + bytes(32)
    frame_crc = zlib.crc32(frame, header_crc)
    payload = np.asarray(words, dtype="<u4").tobytes()
    stream_crc = zlib.crc32(payload, frame_crc)
    return frame + struct.pack("<I", frame_crc) + payload + struct.pack("<I", stream_crc)


def v2_end(header_crc, n_chunks) -> bytes:
    end = b"BEND" + struct.pack("<I", n_chunks)
    return end + struct.pack("<I", zlib.crc32(end, header_crc))


def test_a_hand_built_version_2_file_reads():
    head, crc = v2_header(v2_body())
    header, chunks = loads(head + v2_chunk(crc, 0, 1) + v2_chunk(crc, 1, 1, ()) + v2_end(crc, 2))
    assert header.version == 2 and header.shapes == ((3, 4), (3, 4))
    assert [(c.first, c.count, c.words.tolist()) for c in chunks] == [(0, 1, [1, 2]), (1, 1, [])]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"settings": b"[1, 2]"}, "must be an object"),
        ({"settings": b'{"a": NaN}'}, "NaN"),
        ({"settings": b'{"a": 1e999}'}, "not a finite number"),
        ({"settings": b'{"a": 1, "a": 2}'}, "repeats a key"),
        ({"settings": b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"}, "nests too deeply"),
        ({"settings": b'{"a":' + b"[" * 17 + b"]" * 17 + b"}"}, "nest deeper than 16"),
        ({"settings": b'{"a": 99999999999999999999999}'}, "64 bits"),
        ({"settings": b"\xff\xfe"}, "not valid UTF-8 JSON"),
        ({"gen": b"has space"}, "seed generator"),
        ({"gen": b"caf\xe9"}, "seed generator is not ASCII"),
        ({"seed_words": 2**32 - 1}, "seed words"),
        ({"dtype": 9}, "dtype code 9"),
        ({"extra": b"\x00"}, "trailing bytes after the header fields"),
    ],
)
def test_lying_version_2_header_fields(fields, match):
    head, crc = v2_header(v2_body(**fields))
    assert_rejected_cheaply(head + v2_chunk(crc, 0, 2) + v2_end(crc, 1), match)


def test_lying_version_2_framing():
    head, crc = v2_header(v2_body())
    with pytest.raises(ContainerError, match=r"^unsupported \.bbc format version 7 "):
        loads(v2_header(v2_body(), version=7)[0])
    with pytest.raises(ContainerError, match="bad magic"):
        loads(head[:5] + b"\x00" + head[6:])
    for blob, match in [
        (head + v2_chunk(crc, 0, 2) + v2_end(crc, 5), "counts 5 chunks"),
        (head + v2_chunk(crc, 0, 2) + b"XXXX" + bytes(8), "end-record tag"),
        (head + v2_chunk(crc, 0, 2) + v2_chunk(crc, 2, 1), "extra chunk"),
        (head + v2_chunk(crc, 0, 1) + v2_end(crc, 1), "have no chunk"),
        (head + v2_chunk(crc, 1, 1), r"holds images 1\.\.1, expected a range starting at 0"),
        (head + v2_chunk(crc ^ 1, 0, 2), "framing: CRC mismatch"),
    ]:
        assert_rejected_cheaply(blob, match)
