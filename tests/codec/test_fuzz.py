"""Fuzzing the decoder: damaged ``.bbc`` files end in a typed error or in exact pixels.

Small files of every kind (binary, grey, RGB; batched and tiled; VLAE and δ-VAE; one and
several chunks) are mutated at random — bit flips, cuts, splices, and length fields that
lie while every CRC is recomputed to match — and decoded. Each decode must raise a
`bbcodec.errors.BbcodecError` or give back exactly the images that were encoded; any other
exception, wrong pixels, a slow decode or a memory blow-up fails the test.
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
from bbcodec.errors import BbcodecError

#: Mutations in all; the slow suite runs every one.
N_MUTATIONS = int(os.environ.get("BBCODEC_FUZZ_N", "10000"))
#: Longest one decode may take, seconds (a tiny file decodes in milliseconds).
MAX_DECODE_SECONDS = 10.0
#: Largest growth of this process's peak memory over the whole run.
MAX_PEAK_GROWTH_BYTES = 500 * 2**20

_PREAMBLE_BYTES = 18
_CHUNK_FRAME_BYTES = 52


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


def _u32(data: bytes | bytearray, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def _length_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, format) of every count and length field of a well-formed file."""
    fields = [(10, "<I")]  # header length
    body = _PREAMBLE_BYTES
    at = body + 1 + data[body] + 32  # model id, weights sha256
    at += 1 + data[at] + 8  # seed generator name, seed
    fields += [(at, "<I"), (at + 4, "<I")]  # seed words, settings length
    at += 8 + _u32(data, at + 4) + 1  # settings, dtype
    fields += [(at, "<I"), (at + 4, "<I")]  # image count, shape runs
    n_runs, at = _u32(data, at + 4), at + 8
    for _ in range(n_runs):
        ndim = data[at + 4]
        fields += [(at, "<I"), (at + 4, "<B")] + [(at + 5 + 4 * d, "<I") for d in range(ndim)]
        at += 5 + 4 * ndim
    at += 4  # header crc
    while data[at : at + 4] == b"CHNK":
        fields += [(at + 4, "<I"), (at + 8, "<I"), (at + 12, "<I")]  # first, count, words
        at += _CHUNK_FRAME_BYTES + 4 * _u32(data, at + 12) + 4
    fields.append((at + 4, "<I"))  # the end record's chunk count
    return fields


def _recompute_crcs(data: bytearray) -> None:
    """Make every CRC match what the (possibly lying) length fields now frame."""

    def put_crc(start: int, end: int, seed: int) -> int:
        if end + 4 > len(data) or start > end:
            raise IndexError
        crc = zlib.crc32(data[start:end], seed)
        struct.pack_into("<I", data, end, crc)
        return crc

    try:
        preamble = put_crc(0, 14, 0)
        body_end = _PREAMBLE_BYTES + _u32(data, 10)
        header = put_crc(_PREAMBLE_BYTES, body_end, preamble)
        at = body_end + 4
        while data[at : at + 4] == b"CHNK":
            frame = put_crc(at, at + 48, header)
            stream_end = at + _CHUNK_FRAME_BYTES + 4 * _u32(data, at + 12)
            put_crc(at + _CHUNK_FRAME_BYTES, stream_end, frame)
            at = stream_end + 4
        if data[at : at + 4] == b"BEND":
            put_crc(at, at + 8, header)
    except (IndexError, struct.error):
        pass  # a length that runs past the end: the reader must say so


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
    if kind == 4:  # a length field lies, every CRC recomputed
        offset, fmt = _length_fields(data)[rng.integers(len(_length_fields(data)))]
        width = struct.calcsize(fmt)
        old = struct.unpack_from(fmt, out, offset)[0]
        lies = [0, 1, old - 1, old + 1, old * 2, 2 ** (8 * width) - 1, 65536, 1 << 20]
        value = int(lies[rng.integers(len(lies))]) % 2 ** (8 * width)
        struct.pack_into(fmt, out, offset, value)
        _recompute_crcs(out)
        return f"lie@{offset}={value}", bytes(out)
    # stream words changed, every CRC recomputed: only the codec's own checks remain
    start = _length_fields(data)[-1][0]  # somewhere before the end record
    for _ in range(rng.integers(1, 4)):
        out[rng.integers(start)] ^= 1 << int(rng.integers(8))
    _recompute_crcs(out)
    return "flip+crc", bytes(out)


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
