"""Reading ``.bbc`` format version 2, the format before version 3 (`bbcodec.container`).

Nothing writes version 2 any more; `bbcodec.container.ContainerReader` reads it through
this module, into the same `~bbcodec.container.Header` (``version=2``, the whole sha256
of the weights) and `~bbcodec.container.Chunk` (the whole sha256 of the pixels). This
docstring is the specification of version 2.

Everything is little-endian. ``u8/u16/u32/u64`` are unsigned integers; ``crc32`` is
``zlib.crc32`` with the stated initial value (it chains: each CRC starts from an earlier
one, so a chunk only verifies under the header it was written with).

**Preamble** (18 bytes)

====== ====== =========================================================================
offset size   field
====== ====== =========================================================================
0      8      magic ``b"\\x89BBC\\r\\n\\x1a\\n"`` (PNG-style: catches 7-bit and newline
              mangling)
8      2      format version, u16 = 2
10     4      ``L`` = length of the header body in bytes, u32
14     4      ``preamble_crc`` = crc32 of bytes 0..13 (initial value 0)
====== ====== =========================================================================

**Header body** (``L`` bytes from offset 18), then a u32 ``header_crc`` = crc32 of the
body with initial value ``preamble_crc``. ``header_crc`` seeds every chunk's CRCs.

============== =========================================================================
size           field
============== =========================================================================
1              ``m`` = length of the model id, u8 (1..255)
m              model id, printable ASCII without spaces (e.g. ``vlae-bmnist``)
32             sha256 of the model weights
1              ``g`` = length of the seed generator name, u8 (1..255)
g              seed generator name, printable ASCII without spaces (e.g. ``numpy.PCG64``)
8              seed, u64 (repeated in the settings, which the codec reads)
4              number of seed words, u32 (at most :data:`MAX_SEED_WORDS`; 0 from the
               image codec, whose chunks record their own seed size)
4              ``s`` = length of the settings JSON, u32
s              coding settings: a JSON object, UTF-8, canonical (sorted keys, compact)
1              pixel dtype code, u8 (1 = uint8; nothing else)
4              ``N`` = image count, u32
4              ``R`` = number of shape runs, u32 (0 if ``N`` is 0, else 1..N)
R × (5 + 4k)   shape runs in image order: run length u32 (>= 1), ``k`` = ndim u8 (2 or
               3), then ``k`` dims u32 — ``(H, W)`` or ``(H, W, C)``; runs sum to ``N``
============== =========================================================================

The body must be consumed exactly; bytes left over are an error. The seed generator, seed
and seed words are checked for form and dropped (the settings hold the seed).

**Chunk** (repeated until the chunks cover images ``0..N-1``, in order, without gaps)

============ ====== ===================================================================
offset       size   field
============ ====== ===================================================================
0            4      tag ``b"CHNK"``
4            4      first image index, u32 (= the previous chunk's first + count; 0 at
                    the start)
8            4      image count, u32 (>= 1; first + count <= N)
12           4      ``n`` = number of ANS words, u32
16           32     `~bbcodec.container.pixels_checksum` of the chunk's images (sha256)
48           4      ``frame_crc`` = crc32 of chunk bytes 0..47, initial value
                    ``header_crc``
52           4n     the ANS stream: ``n`` u32 words
52 + 4n      4      crc32 of the ``4n`` stream bytes, initial value ``frame_crc``
============ ====== ===================================================================

**End record** (exactly once, after the last chunk; nothing may follow it)

====== ====== =========================================================================
offset size   field
====== ====== =========================================================================
0      4      tag ``b"BEND"``
4      4      number of chunks, u32
8      4      crc32 of end-record bytes 0..7, initial value ``header_crc``
====== ====== =========================================================================

Every length field sits in a fixed-size region that its own CRC covers, and that CRC is
checked before the length is used, so a single flipped bit anywhere (or any burst of up to
32 bits inside one CRC-protected region) is always detected. The limits and the reading of
lengths are version 3's (`bbcodec.container`), besides :data:`MAX_SETTINGS_BYTES` and
:data:`MAX_SEED_WORDS`.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bbcodec.container import (
    MAX_CHUNK_WORDS,
    MAX_HEADER_BYTES,
    MAX_IMAGES,
    Chunk,
    Header,
    _check_chunk_pixels,
    _index,
    _Input,
    _name,
    _shape,
)
from bbcodec.errors import ContainerError

__all__ = [
    "MAGIC",
    "MAX_SEED_WORDS",
    "MAX_SETTINGS_BYTES",
    "VERSION",
    "json_settings",
    "read_chunks",
    "read_header",
]

MAGIC = b"\x89BBC\r\n\x1a\n"
VERSION = 2
#: Largest number of seed words a version-2 header may state.
MAX_SEED_WORDS = 1 << 20
#: Largest canonical settings JSON.
MAX_SETTINGS_BYTES = 1 << 20

_MAX_JSON_DEPTH = 16
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_CHUNK_TAG = b"CHNK"
_END_TAG = b"BEND"
_SHA256_BYTES = 32


# --------------------------------------------------------------------------- settings


def _json_value(value: Any, path: str, depth: int) -> Any:
    """A normalised copy of a JSON-able value (tuples become lists), or ContainerError."""
    if depth > _MAX_JSON_DEPTH:
        raise ContainerError(f"settings nest deeper than {_MAX_JSON_DEPTH} levels at {path}")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            raise ContainerError(f"settings{path}: integer {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContainerError(f"settings{path}: {value} is not a finite number")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ContainerError(f"settings{path}: key {key!r} is not a str")
            out[key] = _json_value(v, f"{path}[{key!r}]", depth + 1)
        return out
    raise ContainerError(f"settings{path}: {type(value).__name__} is not JSON-able")


def json_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A version-2 header's settings: a normalised copy of a JSON object (tuples become
    lists) whose canonical JSON takes at most :data:`MAX_SETTINGS_BYTES`.

    Raises:
        ContainerError: a value that is not JSON (or not finite, or past 64 bits), nesting
            deeper than 16 levels, or too long.

    Example:
        >>> json_settings({"range": (1, 2)})
        {'range': [1, 2]}
    """
    out = _json_value(settings, "", 0)
    encoded = json.dumps(out, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if len(encoded) > MAX_SETTINGS_BYTES:
        raise ContainerError(
            f"settings take {len(encoded)} bytes as JSON, more than {MAX_SETTINGS_BYTES}"
        )
    return out


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ContainerError("settings JSON repeats a key")
    return out


def _reject_constant(name: str) -> Any:
    raise ContainerError(f"settings JSON holds {name}")


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        settings = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise ContainerError("settings JSON nests too deeply") from None
    except ContainerError:
        raise
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, too many int digits
        raise ContainerError(f"settings are not valid UTF-8 JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ContainerError(f"settings JSON must be an object, got {type(settings).__name__}")
    return settings


# --------------------------------------------------------------------------- header


def _read_ascii(body: _Input, what: str) -> str:
    """A u8 length, then that many bytes of ASCII (checked by `_name`)."""
    raw = body.read(body.u8(f"{what} length"), what)
    try:
        return _name(raw.decode("ascii"), what)
    except UnicodeDecodeError:
        raise ContainerError(f"{what} is not ASCII") from None


def _read_shapes(body: _Input) -> list[tuple[int, ...]]:
    dtype_code, image_count, n_runs = body.unpack("<BII", "image count")
    if dtype_code != 1:
        raise ContainerError(f"unknown pixel dtype code {dtype_code}")
    if image_count > MAX_IMAGES:
        raise ContainerError(f"image count {image_count} is more than the limit {MAX_IMAGES}")
    if n_runs > image_count:
        raise ContainerError(f"{n_runs} shape runs for {image_count} images")
    shapes: list[tuple[int, ...]] = []
    for r in range(n_runs):
        length, ndim = body.unpack("<IB", f"shape run {r}")
        if ndim not in (2, 3):
            raise ContainerError(f"shape run {r}: ndim {ndim}, expected 2 or 3")
        dims = body.unpack(f"<{ndim}I", f"shape run {r} dims")
        if not 1 <= length <= image_count - len(shapes):
            raise ContainerError(
                f"shape run {r} of {length} images does not fit the image count {image_count}"
            )
        shapes.extend(itertools.repeat(_shape(dims, f"shape run {r}"), length))
    if len(shapes) != image_count:
        raise ContainerError(f"shape runs cover {len(shapes)} images, header says {image_count}")
    return shapes


def _parse_header_body(data: bytes) -> Header:
    body = _Input(io.BytesIO(data), "header body")
    model_id = _read_ascii(body, "model id")
    weights = body.read(_SHA256_BYTES, "weights sha256")
    _read_ascii(body, "seed generator")
    _, seed_words = body.unpack("<QI", "seed")
    _index(seed_words, "seed words", 0, MAX_SEED_WORDS)
    (s,) = body.unpack("<I", "settings length")
    if s > MAX_SETTINGS_BYTES:
        raise ContainerError(f"settings length {s} is more than the limit {MAX_SETTINGS_BYTES}")
    settings = _parse_json(body.read(s, "settings"))
    shapes = _read_shapes(body)
    body.check_end("the header fields")
    return Header(model_id, weights, settings, tuple(shapes), version=VERSION)


def read_header(src: _Input) -> tuple[Header, int]:
    """The rest of a version-2 header, after the first 5 bytes of the magic.

    Returns:
        The header and ``header_crc``.

    Raises:
        ContainerError: a bad magic, another u16 version than 2, or a malformed header.
    """
    rest = src.read(len(MAGIC) - 5, "magic")
    if rest != MAGIC[5:]:
        raise ContainerError(f"not a .bbc file: bad magic {MAGIC[:5] + rest!r}")
    version, body_len = src.unpack("<HI", "preamble")
    if version != VERSION:  # checked before the CRC: a newer file gets this message
        raise ContainerError(
            f"unsupported .bbc format version {version} (this reader knows versions 2 and 3)"
        )
    src.check_crc("preamble")
    if body_len > MAX_HEADER_BYTES:
        raise ContainerError(f"header length {body_len} is more than {MAX_HEADER_BYTES}")
    data = src.read(body_len, "header")
    header_crc = src.check_crc("header")
    return _parse_header_body(data), header_crc


# --------------------------------------------------------------------------- chunks


def _read_chunk(
    src: _Input, header: Header, header_crc: int, first: int, index: int, max_pixels: int | None
) -> Chunk:
    where = f"chunk {index} at byte {src.pos}"
    src.crc = header_crc
    tag = src.read(4, f"chunk {index} tag")
    if tag == _END_TAG:
        raise ContainerError(
            f"end record at byte {src.pos - 4} but images {first}..{header.image_count - 1} "
            "have no chunk"
        )
    if tag != _CHUNK_TAG:
        raise ContainerError(f"{where}: bad chunk tag {tag!r}, file corrupted")
    stated_first, count, n_words = src.unpack("<III", f"chunk {index} framing")
    sha = src.read(_SHA256_BYTES, f"chunk {index} pixel sha256")
    src.check_crc(f"{where}: framing")
    if stated_first != first or not 1 <= count <= header.image_count - first:
        raise ContainerError(
            f"{where} holds images {stated_first}..{stated_first + count - 1}, expected a "
            f"range starting at {first} within 0..{header.image_count - 1}"
        )
    if n_words > MAX_CHUNK_WORDS:
        raise ContainerError(f"{where}: {n_words} words, more than {MAX_CHUNK_WORDS}")
    _check_chunk_pixels(header, first, count, max_pixels, where)
    payload = src.read(4 * n_words, f"chunk {index} stream")
    src.check_crc(f"{where}: stream")
    return Chunk(first, count, np.frombuffer(payload, dtype="<u4"), sha)


def _read_end(src: _Input, header_crc: int, n_chunks: int) -> None:
    start = src.pos
    src.crc = header_crc
    tag = src.read(4, "end record")
    if tag == _CHUNK_TAG:
        raise ContainerError(f"extra chunk at byte {start} after all the images")
    if tag != _END_TAG:
        raise ContainerError(f"bad end-record tag {tag!r} at byte {start}: file corrupted")
    (stated,) = src.unpack("<I", "end record")
    src.check_crc(f"end record at byte {start}")
    if stated != n_chunks:
        raise ContainerError(f"end record counts {stated} chunks, the file has {n_chunks}")
    src.check_end("the end record")


def read_chunks(
    src: _Input, header: Header, header_crc: int, max_pixels: int | None
) -> Iterator[Chunk]:
    """The chunks of a version-2 file, then its end record (checked after the last chunk
    is yielded; nothing may follow it). ``max_pixels``: see `ContainerReader`."""
    first, index = 0, 0
    while first < header.image_count:
        chunk = _read_chunk(src, header, header_crc, first, index, max_pixels)
        yield chunk
        first, index = chunk.stop, index + 1
    _read_end(src, header_crc, index)
