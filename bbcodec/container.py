"""The ``.bbc`` container: the file format of bbcodec's compressed output.

A ``.bbc`` file holds everything a decoder needs besides the model weights themselves:
which model (id and sha256 of the weights), the coding settings, the images' shapes, the
seed policy for the initial bits, and one or more **independently decodable chunks**, each
an ANS stream for a contiguous run of images plus a sha256 of those images' pixels.
Chunks let a big input stream through bounded memory and be decoded in parallel.

Everything is little-endian. ``u8/u16/u32/u64`` are unsigned integers; ``crc32`` is
``zlib.crc32`` with the stated initial value (it chains: each CRC starts from an earlier
one, so a chunk only verifies under the header it was written with).

**Preamble** (18 bytes)

====== ====== =========================================================================
offset size   field
====== ====== =========================================================================
0      8      magic ``b"\\x89BBC\\r\\n\\x1a\\n"`` (PNG-style: catches 7-bit and newline
              mangling)
8      2      format version, u16 (this module reads and writes :data:`FORMAT_VERSION`)
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
8              seed, u64
4              number of seed words (u32 words of initial bits), u32; 0 from the image
               codec, whose chunks record their own seed size (see :class:`SeedPolicy`)
4              ``s`` = length of the settings JSON, u32
s              coding settings: a JSON object, UTF-8, canonical (sorted keys, compact)
1              pixel dtype code, u8 (1 = uint8; nothing else yet)
4              ``N`` = image count, u32
4              ``R`` = number of shape runs, u32 (0 if ``N`` is 0, else 1..N)
R × (5 + 4k)   shape runs in image order: run length u32 (>= 1), ``k`` = ndim u8 (2 or
               3), then ``k`` dims u32 — ``(H, W)`` or ``(H, W, C)``; runs sum to ``N``
============== =========================================================================

The body must be consumed exactly; bytes left over are an error.

**Chunk** (repeated until the chunks cover images ``0..N-1``, in order, without gaps)

============ ====== ===================================================================
offset       size   field
============ ====== ===================================================================
0            4      tag ``b"CHNK"``
4            4      first image index, u32 (= the previous chunk's first + count; 0 at
                    the start)
8            4      image count, u32 (>= 1; first + count <= N)
12           4      ``n`` = number of ANS words, u32
16           32     :func:`pixels_checksum` of the chunk's images (sha256)
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
32 bits inside one CRC-protected region) is always detected; random multi-bit damage
escapes with probability about 2**-32. Every length is checked against sane limits
(``MAX_*`` below) and, when the input's size is known, against the bytes remaining,
before anything is allocated; when the size is unknown (a pipe) reads proceed in pieces of
at most 1 MiB, so a lying length costs no more memory than the bytes actually present.
Every malformed input raises :class:`ContainerError` with a one-line message.

**Size limits.** A well-formed header may still claim images far larger than the file
(a few kilobytes claiming one 65536 × 65536 image). The reader checks every claimed image
against ``max_pixels`` (default `bbcodec.plan.DEFAULT_MAX_PIXELS`) when the header is read,
and each chunk's images together against ``MAX_DATASET_PIXELS_FACTOR × max_pixels`` before
its stream is read, raising :class:`~bbcodec.errors.SizeLimitError` (a ``DataError``: the
file may be intact, only larger than the caller allows) before a decoder allocates anything
that size.

A pixel-checksum mismatch after decoding (the codec's check) raises
:class:`~bbcodec.errors.ChecksumError` (a `DecodeError`, not a `ContainerError`): the stream was
intact but decoded to other pixels (wrong model, or the determinism contract broken).

Example:
    >>> import numpy as np
    >>> images = [np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8)]
    >>> header = Header(
    ...     model_id="vlae-bmnist",
    ...     weights_sha256=bytes(32),
    ...     settings={"device": "cpu", "latent_step": 0.01},
    ...     seed=SeedPolicy(generator="numpy.PCG64", seed=0, words=32),
    ...     shapes=((2, 3), (2, 3)),
    ... )
    >>> chunk = Chunk(first=0, count=2, words=np.arange(5, dtype=np.uint32),
    ...               pixels_sha256=pixels_checksum(images))
    >>> header2, chunks2 = loads(dumps(header, [chunk]))
    >>> header2 == header and chunks2 == [chunk]
    True
    >>> verify_pixels(chunks2[0], images)
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import operator
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Self

import numpy as np

from bbcodec.errors import ChecksumError, ContainerError, SizeLimitError
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_DATASET_PIXELS_FACTOR

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_CHUNK_WORDS",
    "MAX_HEADER_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGE_SIDE",
    "MAX_SEED_WORDS",
    "MAX_SETTINGS_BYTES",
    "Chunk",
    "ContainerReader",
    "ContainerWriter",
    "Header",
    "SeedPolicy",
    "check_claimed_pixels",
    "dumps",
    "loads",
    "pixels_checksum",
    "verify_pixels",
]

MAGIC = b"\x89BBC\r\n\x1a\n"
# 2: RGB pixels coded with the mixture re-weighted channel by channel; latent grid ±32.
FORMAT_VERSION = 2

#: Images per file. Shapes are kept per image in :attr:`Header.shapes`, so this bounds the
#: memory a (possibly lying) header can make the reader spend (8 bytes per image).
MAX_IMAGES = 1 << 22
#: Largest height or width.
MAX_IMAGE_SIDE = 1 << 16
#: Largest channel count of an ``(H, W, C)`` image.
MAX_CHANNELS = 4
#: Largest ANS stream of one chunk, in u32 words (1 GiB).
MAX_CHUNK_WORDS = 1 << 28
#: Largest seed (initial bits), in u32 words: the codec allocates this many words.
MAX_SEED_WORDS = 1 << 20
#: Largest canonical settings JSON.
MAX_SETTINGS_BYTES = 1 << 20
#: Largest header body: room for the settings, the names and a distinct shape per image.
MAX_HEADER_BYTES = 1 << 27

_MAX_NAME_BYTES = 255
_MAX_JSON_DEPTH = 16
_READ_PIECE = 1 << 20
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

_PREAMBLE = struct.Struct("<8sHI")  # magic, version, header length; then u32 crc
_PREAMBLE_SIZE = _PREAMBLE.size + 4
_CHUNK_TAG = b"CHNK"
_CHUNK_FRAME = struct.Struct("<4sIII32s")  # tag, first, count, n_words, pixels sha256
_END_TAG = b"BEND"
_END = struct.Struct("<4sI")  # tag, chunk count; then u32 crc
_U32 = struct.Struct("<I")
_DTYPE_CODES = {"uint8": 1}
_DTYPE_NAMES = {code: name for name, code in _DTYPE_CODES.items()}


# --------------------------------------------------------------------------- values


def _index(value: Any, what: str, lo: int, hi: int) -> int:
    """``value`` as a Python int in ``lo..hi``, else :class:`ContainerError`."""
    try:
        number = operator.index(value)
    except TypeError:
        raise ContainerError(f"{what} must be an integer, got {type(value).__name__}") from None
    if isinstance(value, bool) or not lo <= number <= hi:
        raise ContainerError(f"{what} must be in {lo}..{hi}, got {value!r}")
    return number


def _name(value: Any, what: str) -> str:
    """A model id / generator name: 1..255 printable ASCII characters, no spaces."""
    if not isinstance(value, str):
        raise ContainerError(f"{what} must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= _MAX_NAME_BYTES or not all("!" <= ch <= "~" for ch in value):
        raise ContainerError(
            f"{what} must be 1..{_MAX_NAME_BYTES} printable ASCII characters without "
            f"spaces, got {value[:40]!r}"
        )
    return value


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


def _canonical_json(settings: Mapping[str, Any]) -> bytes:
    return json.dumps(
        settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    """An image shape ``(H, W)`` or ``(H, W, C)`` within the limits, as a tuple of ints."""
    try:
        dims = tuple(value)
    except TypeError:
        raise ContainerError(f"{what} must be a tuple, got {type(value).__name__}") from None
    if len(dims) not in (2, 3):
        raise ContainerError(f"{what} must be (H, W) or (H, W, C), got {dims!r}")
    his = (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, MAX_CHANNELS)
    return tuple(_index(d, f"{what} dim {i}", 1, hi) for i, (d, hi) in enumerate(zip(dims, his)))


def _over_limit(what: str, size: str, limit: str) -> SizeLimitError:
    return SizeLimitError(
        f"{what} ({size}) is over the limit of {limit}; raise it with --max-pixels N "
        "(max_pixels= in Python) if the file is to be trusted"
    )


def check_claimed_pixels(header: Header, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a header that claims an image of more than ``max_pixels`` pixels (H × W).

    Only the header is looked at, so this costs nothing per pixel; ``None`` checks nothing.

    Raises:
        SizeLimitError: naming the first such image, its size and the limit.

    Example:
        >>> header = Header("m", bytes(32), {}, SeedPolicy("numpy.PCG64", 1, 4), ((20, 30),))
        >>> check_claimed_pixels(header, max_pixels=600)
        >>> check_claimed_pixels(header, max_pixels=599)
        Traceback (most recent call last):
        ...
        bbcodec.errors.SizeLimitError: image 0 of the file (30×20, 600 pixels) is over the limit of 599 pixels; raise it with --max-pixels N (max_pixels= in Python) if the file is to be trusted
    """
    if max_pixels is None:
        return
    first = 0
    for shape, run in itertools.groupby(header.shapes):
        pixels = shape[0] * shape[1]
        if pixels > max_pixels:
            size = f"{shape[1]}×{shape[0]}, {pixels:,} pixels"
            raise _over_limit(f"image {first} of the file", size, f"{max_pixels:,} pixels")
        first += sum(1 for _ in run)


@dataclass(frozen=True)
class SeedPolicy:
    """How the coder is seeded with initial bits: ``words`` u32 words from a named generator.

    Attributes:
        generator: Name of the seeded generator, e.g. ``"numpy.PCG64"``; the codec maps it
            to an implementation and must refuse names it does not know.
        seed: The generator's seed, ``0 <= seed < 2**64``.
        words: Number of u32 seed words pushed before the first image (``<= MAX_SEED_WORDS``).
            The image codec writes 0: each chunk sizes its own seed (doubling it until the
            first posterior pop fits) and records the size in its trailer
            (`bbcodec.codec.chunks`). Format version 2 also repeats ``seed`` in the settings
            JSON (``CodingSettings.seed``, the value the codec reads); both stay until the
            next format version, which drops this field and the repetition.
    """

    generator: str
    seed: int
    words: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "generator", _name(self.generator, "seed generator"))
        object.__setattr__(self, "seed", _index(self.seed, "seed", 0, _U64_MAX))
        object.__setattr__(self, "words", _index(self.words, "seed words", 0, MAX_SEED_WORDS))


@dataclass(frozen=True)
class Header:
    """Everything about a ``.bbc`` file except its chunks. Validated on construction.

    Attributes:
        model_id: Which model coded the file, e.g. ``"vlae-bmnist"`` (printable ASCII).
        weights_sha256: sha256 of the model weights, 32 bytes.
        settings: Coding settings, a JSON object (latent grid, batch schedule, the device
            the file was encoded on, ...). Stored normalised: tuples become lists.
        seed: The seed policy for the initial bits.
        shapes: Per-image shapes, ``(H, W)`` or ``(H, W, C)``; may differ between images.
        dtype: Pixel dtype name; only ``"uint8"`` exists.

    Raises:
        ContainerError: if any field is invalid or past the ``MAX_*`` limits.
    """

    model_id: str
    weights_sha256: bytes
    settings: dict[str, Any]
    seed: SeedPolicy
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "uint8"
    _settings_json: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _name(self.model_id, "model id")
        if not isinstance(self.weights_sha256, (bytes, bytearray, memoryview)):
            raise ContainerError("weights_sha256 must be bytes")
        sha = bytes(self.weights_sha256)
        if len(sha) != 32:
            raise ContainerError(f"weights_sha256 must be 32 bytes, got {len(sha)}")
        object.__setattr__(self, "weights_sha256", sha)
        if not isinstance(self.settings, Mapping):
            raise ContainerError(f"settings must be a dict, got {type(self.settings).__name__}")
        settings = _json_value(self.settings, "", 0)
        encoded = _canonical_json(settings)
        if len(encoded) > MAX_SETTINGS_BYTES:
            raise ContainerError(
                f"settings take {len(encoded)} bytes as JSON, more than {MAX_SETTINGS_BYTES}"
            )
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "_settings_json", encoded)
        if not isinstance(self.seed, SeedPolicy):
            raise ContainerError(f"seed must be a SeedPolicy, got {type(self.seed).__name__}")
        if self.dtype not in _DTYPE_CODES:
            raise ContainerError(f"dtype must be one of {sorted(_DTYPE_CODES)}, got {self.dtype!r}")
        if isinstance(self.shapes, (str, bytes)) or not isinstance(self.shapes, Iterable):
            raise ContainerError("shapes must be a sequence of (H, W) or (H, W, C) tuples")
        raw = list(self.shapes)
        if len(raw) > MAX_IMAGES:
            raise ContainerError(f"{len(raw)} images, more than the limit {MAX_IMAGES}")
        if not all(type(s) is tuple for s in raw):
            raw = [_shape(s, f"shape of image {i}") for i, s in enumerate(raw)]
        # Validate each run of equal shapes once (files usually hold one shape many times).
        shapes: list[tuple[int, ...]] = []
        for s, run in itertools.groupby(raw):
            n = sum(1 for _ in run)
            shapes.extend(itertools.repeat(_shape(s, f"shape of image {len(shapes)}"), n))
        object.__setattr__(self, "shapes", tuple(shapes))

    @property
    def image_count(self) -> int:
        """Number of images in the file."""
        return len(self.shapes)


@dataclass(frozen=True, eq=False)
class Chunk:
    """One independently decodable piece of a file: images ``first..first+count-1``.

    Attributes:
        first: Index of the chunk's first image.
        count: Number of images in the chunk, ``>= 1``.
        words: The ANS stream, a 1-D uint32 array (stored as a read-only copy).
        pixels_sha256: :func:`pixels_checksum` of the chunk's images, 32 bytes.

    Raises:
        ContainerError: if any field is invalid.
    """

    first: int
    count: int
    words: np.ndarray
    pixels_sha256: bytes

    def __post_init__(self) -> None:
        first = _index(self.first, "chunk first image", 0, MAX_IMAGES - 1)
        count = _index(self.count, "chunk image count", 1, MAX_IMAGES - first)
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "count", count)
        words = self.words
        if not isinstance(words, np.ndarray):
            raise ContainerError(f"words must be a numpy uint32 array, got {type(words).__name__}")
        if words.dtype.kind != "u" or words.dtype.itemsize != 4 or words.ndim != 1:
            raise ContainerError(
                f"words must be a 1-D uint32 array, got {words.ndim}-D {words.dtype}"
            )
        if words.size > MAX_CHUNK_WORDS:
            raise ContainerError(f"{words.size} words in one chunk, more than {MAX_CHUNK_WORDS}")
        words = np.array(words, dtype=np.uint32, copy=True)
        words.flags.writeable = False
        object.__setattr__(self, "words", words)
        sha = self.pixels_sha256
        if not isinstance(sha, (bytes, bytearray, memoryview)) or len(bytes(sha)) != 32:
            raise ContainerError("pixels_sha256 must be 32 bytes")
        object.__setattr__(self, "pixels_sha256", bytes(sha))

    @property
    def stop(self) -> int:
        """One past the index of the chunk's last image."""
        return self.first + self.count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chunk):
            return NotImplemented
        return (
            self.first == other.first
            and self.count == other.count
            and self.pixels_sha256 == other.pixels_sha256
            and np.array_equal(self.words, other.words)
        )

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- pixels


def pixels_checksum(images: Iterable[np.ndarray]) -> bytes:
    """sha256 of images in order: per image, u8 ndim, ndim u32 LE dims, pixels in C order.

    The shape is hashed with the pixels, so the same bytes under another shape differ.

    Args:
        images: uint8 arrays of shape ``(H, W)`` or ``(H, W, C)`` (a stacked
            ``(N, H, W[, C])`` array iterates as its images).

    Returns:
        The 32-byte digest.

    Raises:
        ContainerError: if an image is not a 2-D or 3-D uint8 array.

    Example:
        >>> import numpy as np
        >>> len(pixels_checksum([np.zeros((2, 2), np.uint8)]))
        32
    """
    digest = hashlib.sha256()
    for i, image in enumerate(images):
        a = np.asarray(image)
        if a.dtype != np.uint8 or a.ndim not in (2, 3):
            raise ContainerError(
                f"image {i} must be a 2-D or 3-D uint8 array, got {a.ndim}-D {a.dtype}"
            )
        digest.update(struct.pack(f"<B{a.ndim}I", a.ndim, *a.shape))
        digest.update(np.ascontiguousarray(a).data)
    return digest.digest()


def verify_pixels(chunk: Chunk, images: Sequence[np.ndarray]) -> None:
    """Check decoded images against the chunk's stored checksum.

    Args:
        chunk: The chunk the images were decoded from.
        images: The decoded images, ``chunk.count`` uint8 arrays.

    Raises:
        ChecksumError: if the count or the pixels differ from what was encoded.
    """
    span = f"images {chunk.first}..{chunk.stop - 1}"
    if len(images) != chunk.count:
        raise ChecksumError(f"chunk with {span}: got {len(images)} decoded images")
    got = pixels_checksum(images)
    if got != chunk.pixels_sha256:
        raise ChecksumError(
            f"chunk with {span}: decoded pixels do not match the stored checksum "
            f"(sha256 {got.hex()[:16]}... != {chunk.pixels_sha256.hex()[:16]}...)"
        )


# --------------------------------------------------------------------------- header bytes


def _encode_header_body(header: Header) -> bytes:
    out = bytearray()
    model = header.model_id.encode("ascii")
    out += struct.pack("<B", len(model)) + model + header.weights_sha256
    gen = header.seed.generator.encode("ascii")
    out += struct.pack("<B", len(gen)) + gen
    out += struct.pack("<QI", header.seed.seed, header.seed.words)
    out += _U32.pack(len(header._settings_json)) + header._settings_json
    runs = [(shape, sum(1 for _ in group)) for shape, group in itertools.groupby(header.shapes)]
    out += struct.pack("<BII", _DTYPE_CODES[header.dtype], header.image_count, len(runs))
    for shape, length in runs:
        out += struct.pack(f"<IB{len(shape)}I", length, len(shape), *shape)
    return bytes(out)


class _Cursor:
    """Reads fields from a header body; running past its end is a ContainerError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise ContainerError(
                f"header field {what} ({n} bytes at body offset {self.pos}) runs past the "
                f"end of the {len(self.data)}-byte header"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ContainerError("settings JSON repeats a key")
    return out


def _reject_constant(name: str) -> Any:
    raise ContainerError(f"settings JSON holds {name}")


def _decode_header_body(body: bytes) -> Header:
    cur = _Cursor(body)
    (m,) = cur.unpack("<B", "model id length")
    model_raw = cur.take(m, "model id")
    sha = cur.take(32, "weights sha256")
    (g,) = cur.unpack("<B", "seed generator length")
    gen_raw = cur.take(g, "seed generator")
    seed, seed_words = cur.unpack("<QI", "seed")
    (s,) = cur.unpack("<I", "settings length")
    if s > MAX_SETTINGS_BYTES:
        raise ContainerError(f"settings length {s} is more than the limit {MAX_SETTINGS_BYTES}")
    settings_raw = cur.take(s, "settings")
    try:
        model_id = model_raw.decode("ascii")
        generator = gen_raw.decode("ascii")
    except UnicodeDecodeError:
        raise ContainerError("model id or seed generator is not ASCII") from None
    try:
        settings = json.loads(
            settings_raw.decode("utf-8"),
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
    dtype_code, image_count, n_runs = cur.unpack("<BII", "image count")
    if dtype_code not in _DTYPE_NAMES:
        raise ContainerError(f"unknown pixel dtype code {dtype_code}")
    if image_count > MAX_IMAGES:
        raise ContainerError(f"image count {image_count} is more than the limit {MAX_IMAGES}")
    if n_runs > image_count:
        raise ContainerError(f"{n_runs} shape runs for {image_count} images")
    shapes: list[tuple[int, ...]] = []
    for r in range(n_runs):
        length, ndim = cur.unpack("<IB", f"shape run {r}")
        if ndim not in (2, 3):
            raise ContainerError(f"shape run {r}: ndim {ndim}, expected 2 or 3")
        dims = cur.unpack(f"<{ndim}I", f"shape run {r} dims")
        if not 1 <= length <= image_count - len(shapes):
            raise ContainerError(
                f"shape run {r} of {length} images does not fit the image count {image_count}"
            )
        shapes.extend(itertools.repeat(_shape(dims, f"shape run {r}"), length))
    if len(shapes) != image_count:
        raise ContainerError(f"shape runs cover {len(shapes)} images, header says {image_count}")
    if cur.pos != len(body):
        raise ContainerError(f"header has {len(body) - cur.pos} unexpected trailing bytes")
    return Header(
        model_id=model_id,
        weights_sha256=sha,
        settings=settings,
        seed=SeedPolicy(generator=generator, seed=seed, words=seed_words),
        shapes=tuple(shapes),
        dtype=_DTYPE_NAMES[dtype_code],
    )


# --------------------------------------------------------------------------- writing


class ContainerWriter:
    """Streams a ``.bbc`` file: :meth:`write_header`, :meth:`write_chunk` (in image order)
    as many times as needed, then :meth:`finalize`.

    Nothing but the current chunk is held in memory. As a context manager it finalizes on
    a clean exit (and leaves the file unfinished, hence unreadable, after an exception).

    Args:
        f: A binary file object opened for writing.

    Example:
        >>> import io, numpy as np
        >>> header = Header("m", bytes(32), {}, SeedPolicy("numpy.PCG64", 1, 4), ((1, 1),))
        >>> buf = io.BytesIO()
        >>> with ContainerWriter(buf) as w:
        ...     _ = w.write_header(header)
        ...     _ = w.write_chunk(Chunk(0, 1, np.zeros(3, np.uint32), bytes(32)))
        >>> ContainerReader(io.BytesIO(buf.getvalue())).header == header
        True
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._header: Header | None = None
        self._header_crc = 0
        self._next_first = 0
        self._n_chunks = 0
        self._finalized = False
        self.bytes_written = 0

    def _write(self, *parts: bytes | memoryview) -> int:
        n = 0
        for part in parts:
            self._f.write(part)
            n += len(part)
        self.bytes_written += n
        return n

    def write_header(self, header: Header) -> int:
        """Write the preamble and header. Returns the number of bytes written."""
        if self._header is not None:
            raise ContainerError("header already written")
        if not isinstance(header, Header):
            raise ContainerError(f"expected a Header, got {type(header).__name__}")
        body = _encode_header_body(header)
        if len(body) > MAX_HEADER_BYTES:
            raise ContainerError(f"header of {len(body)} bytes is more than {MAX_HEADER_BYTES}")
        pre = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(body))
        pre_crc = zlib.crc32(pre)
        self._header_crc = zlib.crc32(body, pre_crc)
        self._header = header
        return self._write(pre, _U32.pack(pre_crc), body, _U32.pack(self._header_crc))

    def write_chunk(self, chunk: Chunk) -> int:
        """Write the next chunk; its images must follow the previous chunk's.

        Returns:
            The number of bytes written (framing included).
        """
        header = self._require_open()
        if not isinstance(chunk, Chunk):
            raise ContainerError(f"expected a Chunk, got {type(chunk).__name__}")
        if chunk.first != self._next_first or chunk.stop > header.image_count:
            raise ContainerError(
                f"chunk with images {chunk.first}..{chunk.stop - 1} does not continue at image "
                f"{self._next_first} of {header.image_count}"
            )
        frame = _CHUNK_FRAME.pack(
            _CHUNK_TAG, chunk.first, chunk.count, chunk.words.size, chunk.pixels_sha256
        )
        frame_crc = zlib.crc32(frame, self._header_crc)
        payload = np.ascontiguousarray(chunk.words, dtype="<u4")
        view = memoryview(payload).cast("B")
        n = self._write(frame, _U32.pack(frame_crc), view, _U32.pack(zlib.crc32(view, frame_crc)))
        self._next_first = chunk.stop
        self._n_chunks += 1
        return n

    def finalize(self) -> int:
        """Write the end record once every image is in a chunk. Returns bytes written."""
        header = self._require_open()
        if self._next_first != header.image_count:
            raise ContainerError(
                f"cannot finalize: images {self._next_first}..{header.image_count - 1} have "
                "no chunk"
            )
        end = _END.pack(_END_TAG, self._n_chunks)
        self._finalized = True
        return self._write(end, _U32.pack(zlib.crc32(end, self._header_crc)))

    def _require_open(self) -> Header:
        if self._header is None:
            raise ContainerError("write_header must come first")
        if self._finalized:
            raise ContainerError("file already finalized")
        return self._header

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not self._finalized:
            self.finalize()


# --------------------------------------------------------------------------- reading


class ContainerReader:
    """Reads a ``.bbc`` file from a binary file object, one chunk at a time.

    The header is read and verified on construction; iterating yields each chunk once its
    CRCs and range have been checked, then verifies the end record and that nothing
    follows it (so stop iterating early and those last checks are skipped). Only the
    current chunk is held in memory. Iterate once.

    Args:
        f: A binary file object positioned at the start of the file; seekable or not.
        max_pixels: Largest image (H × W) the header may claim, and (times
            `bbcodec.plan.MAX_DATASET_PIXELS_FACTOR`) the most pixels one chunk may hold;
            ``None``: no limit. Checked before any of it is allocated.

    Raises:
        ContainerError: on any malformed, truncated or corrupted input.
        SizeLimitError: a claimed image or chunk over the limits (see the module docstring).

    Example:
        >>> import io
        >>> reader = ContainerReader(io.BytesIO(dumps(
        ...     Header("m", bytes(32), {}, SeedPolicy("numpy.PCG64", 1, 4), ()), [])))
        >>> reader.header.image_count, list(reader)
        (0, [])
    """

    def __init__(self, f: BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self._f = f
        self._pos = 0
        self._size = self._find_size(f)
        self._started = False
        self._max_pixels = max_pixels
        self.header, self._header_crc = self._read_header()
        check_claimed_pixels(self.header, max_pixels)

    @staticmethod
    def _find_size(f: BinaryIO) -> int | None:
        """Bytes from the current position to the end, if the stream can tell."""
        try:
            if not f.seekable():
                return None
            here = f.tell()
            end = f.seek(0, io.SEEK_END)
            f.seek(here)
        except (OSError, ValueError, AttributeError):
            return None
        return end - here

    def _read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, allocating no more than the input really holds."""
        if self._size is not None and n > self._size - self._pos:
            raise ContainerError(
                f"truncated: {what} needs {n} bytes at byte {self._pos}, only "
                f"{self._size - self._pos} left"
            )
        parts = []
        got = 0
        while got < n:
            piece = self._f.read(min(n - got, _READ_PIECE))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        if got < n:
            raise ContainerError(
                f"truncated: {what} needs {n} bytes at byte {self._pos}, only {got} left"
            )
        self._pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _check_chunk_pixels(self, index: int, start: int, first: int, count: int) -> None:
        """A decoder holds a chunk's images at once: refuse more than the limit allows."""
        if self._max_pixels is None:
            return
        limit = MAX_DATASET_PIXELS_FACTOR * self._max_pixels
        pixels = 0
        for shape, run in itertools.groupby(self.header.shapes[first : first + count]):
            pixels += shape[0] * shape[1] * sum(1 for _ in run)
        if pixels > limit:
            what = f"chunk {index} at byte {start}"
            size = f"{count:,} images, {pixels:,} pixels in all"
            raise _over_limit(
                what, size, f"{limit:,} pixels per chunk, {MAX_DATASET_PIXELS_FACTOR} × max pixels"
            )

    def _read_header(self) -> tuple[Header, int]:
        magic = self._read(len(MAGIC), "magic")
        if magic != MAGIC:
            raise ContainerError(f"not a .bbc file: bad magic {magic!r}")
        rest = self._read(_PREAMBLE_SIZE - len(MAGIC), "preamble")
        _, version, body_len = _PREAMBLE.unpack(magic + rest[:-4])
        if version != FORMAT_VERSION:
            raise ContainerError(
                f"unsupported .bbc format version {version} (this reader knows version "
                f"{FORMAT_VERSION})"
            )
        (pre_crc,) = _U32.unpack(rest[-4:])
        if zlib.crc32(magic + rest[:-4]) != pre_crc:
            raise ContainerError("preamble CRC mismatch: the file is corrupted")
        if body_len > MAX_HEADER_BYTES:
            raise ContainerError(f"header length {body_len} is more than {MAX_HEADER_BYTES}")
        body = self._read(body_len, "header")
        (header_crc,) = _U32.unpack(self._read(4, "header CRC"))
        if zlib.crc32(body, pre_crc) != header_crc:
            raise ContainerError("header CRC mismatch: the file is corrupted")
        return _decode_header_body(body), header_crc

    def __iter__(self) -> Iterator[Chunk]:
        if self._started:
            raise ContainerError("the chunks of this reader were already read")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[Chunk]:
        total = self.header.image_count
        next_first = 0
        index = 0
        while next_first < total:
            start = self._pos
            tag = self._read(4, f"chunk {index} tag")
            if tag == _END_TAG:
                raise ContainerError(
                    f"end record at byte {start} but images {next_first}..{total - 1} have no chunk"
                )
            if tag != _CHUNK_TAG:
                raise ContainerError(f"bad chunk tag {tag!r} at byte {start}: file corrupted")
            rest = self._read(_CHUNK_FRAME.size, f"chunk {index} framing")
            frame = tag + rest[:-4]
            frame_crc = zlib.crc32(frame, self._header_crc)
            if _U32.unpack(rest[-4:])[0] != frame_crc:
                raise ContainerError(f"chunk {index} at byte {start}: framing CRC mismatch")
            _, first, count, n_words, sha = _CHUNK_FRAME.unpack(frame)
            if first != next_first or count < 1 or count > total - first:
                raise ContainerError(
                    f"chunk {index} at byte {start} holds images {first}..{first + count - 1}"
                    f", expected a range starting at {next_first} within 0..{total - 1}"
                )
            if n_words > MAX_CHUNK_WORDS:
                raise ContainerError(
                    f"chunk {index} at byte {start}: {n_words} words, more than {MAX_CHUNK_WORDS}"
                )
            self._check_chunk_pixels(index, start, first, count)
            payload = self._read(4 * n_words, f"chunk {index} stream")
            (stored,) = _U32.unpack(self._read(4, f"chunk {index} stream CRC"))
            if zlib.crc32(payload, frame_crc) != stored:
                raise ContainerError(f"chunk {index} at byte {start}: stream CRC mismatch")
            words = np.frombuffer(payload, dtype="<u4")
            yield Chunk(first=first, count=count, words=words, pixels_sha256=sha)
            next_first += count
            index += 1
        start = self._pos
        tag = self._read(4, "end record")
        if tag == _CHUNK_TAG:
            raise ContainerError(f"extra chunk at byte {start} after all {total} images")
        if tag != _END_TAG:
            raise ContainerError(f"bad end-record tag {tag!r} at byte {start}: file corrupted")
        rest = self._read(_END.size, "end record")
        end = tag + rest[:-4]
        if zlib.crc32(end, self._header_crc) != _U32.unpack(rest[-4:])[0]:
            raise ContainerError(f"end record at byte {start}: CRC mismatch")
        (_, n_chunks) = _END.unpack(end)
        if n_chunks != index:
            raise ContainerError(f"end record counts {n_chunks} chunks, the file has {index}")
        if self._f.read(1):
            extra = "" if self._size is None else f" ({self._size - self._pos} bytes)"
            raise ContainerError(f"trailing bytes after the end record at byte {self._pos}{extra}")


# --------------------------------------------------------------------------- in memory


def dumps(header: Header, chunks: Iterable[Chunk]) -> bytes:
    """The ``.bbc`` bytes of a header and its chunks (which must tile the images in order).

    Raises:
        ContainerError: if the chunks do not tile ``0..header.image_count-1`` in order.
    """
    buf = io.BytesIO()
    writer = ContainerWriter(buf)
    writer.write_header(header)
    for chunk in chunks:
        writer.write_chunk(chunk)
    writer.finalize()
    return buf.getvalue()


def loads(
    data: bytes | bytearray | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[Header, list[Chunk]]:
    """Parse and verify a whole ``.bbc`` file held in memory (``max_pixels``: see
    `ContainerReader`).

    Raises:
        ContainerError: on any malformed, truncated or corrupted input.
        SizeLimitError: a claimed image or chunk over the limits.
    """
    reader = ContainerReader(io.BytesIO(data), max_pixels)
    return reader.header, list(reader)
