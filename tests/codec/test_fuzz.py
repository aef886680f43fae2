"""Fuzzing the decoder: damaged ``.bbc`` files end in a typed error or in exact pixels.

Small files of every kind (binary, grey, RGB; batched and tiled; VLAE and δ-VAE; one and
several chunks) are mutated at random — bit flips, cuts, splices, and length and count
fields that lie or bytes that change while every CRC is recomputed to match — and decoded.
Each decode must raise a `bbcodec.errors.BbcodecError` or give back exactly the images that
were encoded; any other exception, wrong pixels, a slow decode or a memory blow-up fails
the test.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

from bbcodec.api import compress, decompress_from
from bbcodec.codec import CodingSettings
from bbcodec.container import Chunk, Header, dumps, pixel_digest_bytes
from bbcodec.errors import BbcodecError

#: Mutations in all; the slow suite runs every one.
N_MUTATIONS = int(os.environ.get("BBCODEC_FUZZ_N", "10000"))
#: Longest one decode may take, seconds (a tiny file decodes in milliseconds).
MAX_DECODE_SECONDS = 10.0
#: Largest growth of this process's peak memory over the whole run.
MAX_PEAK_GROWTH_BYTES = 500 * 2**20


def _files() -> list[tuple[str, object, bytes, list[np.ndarray]]]:
    """(name, model, file bytes, images) of small files of every kind."""
    cases = []
    settings = CodingSettings(chunk_images=2, max_batch=2)
    for family, kind in [("vlae", "binary"), ("vlae", "grey"), ("vlae", "rgb"),
                         ("delta-vae", "grey")]:  # fmt: skip
        config = tiny_config(family, kind, hw=(4, 4))
        model = random_model(config)
        images = random_images(config, 3, seed=1)
        cases.append((f"{family}-{kind}", model, compress(images, model, settings), list(images)))
    config = tiny_config("vlae", "rgb", hw=(4, 4))
    model = random_model(config)
    mixed = [*random_images(config, 2, seed=2), np.full((6, 5, 3), 7, np.uint8),
             np.arange(3 * 2 * 3, dtype=np.uint8).reshape(3, 2, 3)]  # fmt: skip
    cases.append(("vlae-rgb-tiled", model, compress(mixed, model, settings), mixed))
    return cases


class _Fields:
    """Reads a well-formed version-3 file (`bbcodec.container`) field by field."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def raw(self, n: int) -> list:
        self.pos += n
        return ["raw", self.data[self.pos - n : self.pos]]

    def u8(self) -> list:
        self.pos += 1
        return ["u8", self.data[self.pos - 1]]

    def varint(self) -> list:
        value, shift = 0, 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return ["varint", value]

    def setting(self) -> list[list]:
        tag = self.u8()
        kind = tag[1] % 4
        if kind == 0:
            return [tag, self.varint()]
        if kind == 1:
            return [tag, self.raw(8)]
        if kind == 2:
            length = self.varint()
            return [tag, length, self.raw(length[1])]
        return [tag]


def _records(data: bytes) -> list[list[list]]:
    """The header record (magic and version, ``L``, the body's fields) and each chunk record
    (count, stream length, digest, stream) as lists of ``[kind, value]`` fields, kind
    ``"raw"`` (bytes), ``"u8"`` or ``"varint"``; the CRCs are left out."""
    r = _Fields(data)
    head = [r.raw(5), r.varint(), r.varint()]  # magic and version, L, model code
    if head[-1][1] == 0:
        head += [length := r.u8(), r.raw(length[1])]
    head += [r.raw(4), n := r.varint()]  # weights digest, settings count
    for _ in range(n[1]):
        head += r.setting()
    head += [r.varint(), runs := r.varint()]  # image count, shape runs
    subpixels = []
    for _ in range(runs[1]):
        head += [length := r.varint(), ndim := r.u8()]
        dims = [r.varint() for _ in range(ndim[1])]
        head += dims
        subpixels += [int(np.prod([d[1] for d in dims]))] * length[1]
    records, first = [head], 0
    r.pos += 4
    while r.pos < len(data):
        count, n_bytes = r.varint(), r.varint()
        n = sum(subpixels[first : first + count[1]])
        records.append([count, n_bytes, r.raw(pixel_digest_bytes(n)), r.raw(n_bytes[1])])
        first += count[1]
        r.pos += 4
    return records


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _encode(fields: list[list]) -> bytes:
    kinds = {"raw": bytes, "u8": lambda v: bytes([v]), "varint": _varint}
    return b"".join(kinds[kind](value) for kind, value in fields)


def _assemble(records: list[list[list]], lying: list | None = None) -> bytes:
    """The file of ``records`` with every CRC, the header length ``L`` and each stream
    length recomputed, but for the ``lying`` field, which keeps its value."""
    head, *chunks = records
    if head[1] is not lying:
        head[1][1] = len(_encode(head[2:]))
    out = _encode(head)
    header_crc = zlib.crc32(out)
    out += struct.pack("<I", header_crc)
    for chunk in chunks:
        if chunk[1] is not lying:
            chunk[1][1] = len(chunk[3][1])
        record = _encode(chunk)
        out += record + struct.pack("<I", zlib.crc32(record, header_crc))
    return out


def _mutate(data: bytes, other: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of ``data`` (``other``: another file, for splices)."""
    kind = rng.integers(6)
    out = bytearray(data)
    if kind == 0:  # bit flips
        for _ in range(rng.integers(1, 9)):
            out[rng.integers(len(out))] ^= 1 << int(rng.integers(8))
        return "flip", bytes(out)
    if kind == 1:  # cut
        return "cut", bytes(out[: rng.integers(len(out))])
    if kind == 2:  # splice a piece of another file (or random bytes) in
        at, end = sorted(rng.integers(len(out), size=2))
        piece = other[slice(*sorted(rng.integers(len(other), size=2)))]
        if rng.random() < 0.3:
            piece = rng.integers(0, 256, len(piece), dtype=np.uint8).tobytes()
        return "splice", bytes(out[:at]) + piece + bytes(out[end:])
    if kind == 3:  # junk after the end, or the file twice
        tail = data if rng.random() < 0.5 else rng.integers(0, 256, 9, np.uint8).tobytes()
        return "append", data + tail
    records = _records(data)
    if kind == 4:  # a length or count field lies, every CRC recomputed
        fields = [f for record in records for f in record if f[0] != "raw"]
        field = fields[rng.integers(len(fields))]
        old, top = field[1], 255 if field[0] == "u8" else 2**64 - 1
        lies = [0, 1, old - 1, old + 1, old * 2, top, 65536, 1 << 20]
        field[1] = int(lies[rng.integers(len(lies))]) % (top + 1)
        return f"lie {field[0]} {old}->{field[1]}", _assemble(records, lying=field)
    # bytes changed (mostly in the streams), every CRC recomputed: only the codec's own
    # checks remain
    fields = [f for record in records for f in record if f[0] == "raw" and f[1]]
    for _ in range(rng.integers(1, 4)):
        field = fields[rng.integers(len(fields))]
        flipped = bytearray(field[1])
        flipped[rng.integers(len(flipped))] ^= 1 << int(rng.integers(8))
        field[1] = bytes(flipped)
    return "flip+crc", _assemble(records)


def _decode(data: bytes, model) -> list[np.ndarray]:
    return [image for part in decompress_from(io.BytesIO(data), model) for image in part]


@pytest.mark.slow
def test_damaged_files_end_in_a_typed_error_or_exact_pixels():
    torch.set_num_threads(1)
    cases = _files()
    rng = np.random.default_rng(2026)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    failures, typed, exact, slowest = [], 0, 0, 0.0
    for i in range(N_MUTATIONS):
        name, model, data, images = cases[i % len(cases)]
        how, damaged = _mutate(data, cases[(i + 1) % len(cases)][2], rng)
        start = time.perf_counter()
        try:
            decoded = _decode(damaged, model)
        except BbcodecError:
            typed += 1
        except Exception as exc:  # noqa: BLE001 — anything untyped is the failure we look for
            failures.append(f"{name} {how}: {type(exc).__name__}: {exc}"[:300])
        else:
            same = len(decoded) == len(images) and all(
                np.array_equal(a, b) for a, b in zip(decoded, images, strict=True)
            )
            if same:
                exact += 1
            else:
                failures.append(f"{name} {how}: decoded to other pixels")
        slowest = max(slowest, time.perf_counter() - start)
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    assert not failures, f"{len(failures)} of {N_MUTATIONS}: " + "; ".join(failures[:10])
    assert typed + exact == N_MUTATIONS and typed > N_MUTATIONS // 2
    assert slowest < MAX_DECODE_SECONDS, f"a decode took {slowest:.1f} s"
    assert peak_growth < MAX_PEAK_GROWTH_BYTES, f"peak memory grew by {peak_growth >> 20} MiB"


def test_the_mutator_reads_and_rebuilds_files_exactly():
    """`_records` and `_assemble` follow the format: a file rebuilt from its fields is the
    same file (named and registered models, every setting type, 2-D and 3-D shapes)."""
    settings = {"grid_bound": 2.5, "seed": -3, "device": "cpu", "posterior_window_stds": None}
    shapes = ((300, 300),) * 2 + ((2, 3, 3),)
    for model_id in ("vlae-bmnist", "custom"):
        header = Header(model_id, bytes(4), settings, shapes)
        words = [np.array([], np.uint32), np.array([1, 0x10000], np.uint32)]
        chunks = [Chunk(0, 1, words[0], bytes(8)), Chunk(1, 2, words[1], bytes(8))]
        data = dumps(header, chunks)
        assert _assemble(_records(data)) == data
