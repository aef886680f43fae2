"""The ``.bbc`` container: the file format of bbcodec's compressed output.

A ``.bbc`` file holds everything a decoder needs besides the model weights themselves:
which model (a code or an id, and a digest of the weights), the coding settings, the
images' shapes, and one or more **independently decodable chunks**, each an ANS stream
for a contiguous run of images plus a digest of those images' pixels. Chunks let a big
input stream through bounded memory and be decoded in parallel. This docstring is the
specification of format version 3, the one this module writes.

Everything is little-endian. ``u8/u32`` are unsigned integers; ``f64`` an IEEE double;
``varint`` an unsigned LEB128 integer (7 bits a byte, low bits first, the top bit set on
every byte but the last) of at most 10 bytes and in its shortest form (no last byte 0
after the first: anything else is an error); ``zigzag`` a signed integer ``v`` stored as
the varint ``2v`` (``v >= 0``) or ``-2v - 1`` (``v < 0``). ``crc32`` is ``zlib.crc32``
with the stated initial value.

**Header record**

====== ======= ========================================================================
size   name    field
====== ======= ========================================================================
4              magic ``b"\\x89BBC"`` (:data:`MAGIC`)
1              format version, u8 = 3 (:data:`FORMAT_VERSION`)
varint ``L``   length of the header body in bytes (at most :data:`MAX_HEADER_BYTES`)
L              the header body (below)
4              ``header_crc`` = crc32 of every byte from the magic through the body,
               initial value 0; checked before the body is parsed
====== ======= ========================================================================

**Header body** (must be consumed exactly)

=========== ==========================================================================
size        field
=========== ==========================================================================
varint      model code ``k``: ``k >= 1`` names the model :data:`MODEL_CODES` ``[k]``
            (an unknown code is an error); ``k = 0``: the model id follows
1           ``m`` = length of the model id, u8 (1..255) — only if ``k = 0``
m           model id, printable ASCII without spaces — only if ``k = 0``
4           weights digest: the first :data:`WEIGHTS_DIGEST_BYTES` bytes of the sha256
            of the model weights
varint      ``n`` = number of settings
n × …       settings: u8 tag = ``4 × key index + type``, then the value. The key index
            points into :data:`SETTINGS_KEYS`; indices strictly increase. Types: 0 int
            (zigzag, fits in 64 bits signed), 1 float (f64, finite), 2 string (varint
            length <= 255, then printable ASCII), 3 None (no value bytes)
varint      ``N`` = image count (at most :data:`MAX_IMAGES`)
varint      ``R`` = number of shape runs (0 if ``N`` is 0, else 1..N)
R × …       shape runs in image order: varint run length (>= 1), u8 ``ndim`` (2 or 3),
            then ``ndim`` varint dims ``(H, W)`` or ``(H, W, C)``, each >= 1, sides at
            most :data:`MAX_IMAGE_SIDE`, channels at most :data:`MAX_CHANNELS`; the runs
            sum to ``N``
=========== ==========================================================================

Pixels are uint8. Settings not stored are absent (the codec supplies their defaults); new
keys are only ever appended to :data:`SETTINGS_KEYS`, new models to :data:`MODEL_CODES`.

**Chunk record** (repeated: the chunks cover images ``0..N-1`` in order, without gaps; a
chunk's first image is the previous chunk's first plus its count, 0 for the first chunk;
but see *bands*, below)

====== ======= ========================================================================
size   name    field
====== ======= ========================================================================
varint         image count (>= 1; first + count <= N)
varint ``B``   length of the stream in bytes (at most 4 × :data:`MAX_CHUNK_WORDS`)
d              pixel digest: the first ``d`` = :func:`pixel_digest_bytes` ``(s)`` bytes
               of :func:`pixels_checksum` of the chunk's images, ``s`` = their number of
               subpixels (H × W × C, C = 1 for ``(H, W)``) from the header's shapes
B              the ANS stream: the chunk's u32 words, but for the high zero bytes of the
               last word (its top word, never 0 in a real stream), which are left out (at
               most 3: one byte of it stays); the reader pads the stream with zero bytes
               to a multiple of 4
4              crc32 of the record from the image count through the stream, initial
               value ``header_crc`` (so a chunk verifies only under its own header)
====== ======= ========================================================================

The file ends right after the chunk that reaches image ``N - 1`` (a file of no images is
its header alone): any byte after it is an error, and so is a file that ends early.

**Bands.** If the settings hold ``band_rows`` = ``b`` (key 11, an int >= 1), every image
taller than ``b`` rows is cut into horizontal bands of ``b`` rows, the last one shorter
(rows ``0..b-1``, ``b..2b-1``, …; `bbcodec.plan.image_bands`), and such an image takes one
chunk record per band, in band order, each with image count 1 (the next record's first
image is the same image until its last band). A band's record is a chunk of one image of
the band's shape ``(rows, W[, C])``: its pixel digest is that of the band's pixels as an
image of that shape (:func:`pixels_digest`), sized by the band's subpixels, and its
stream decodes alone (:attr:`Chunk.band` numbers it). Without ``band_rows`` no image is
cut.

A one-image file of a registered model with no settings stored takes 22 bytes of header
for a 28 × 28 image and 10 bytes of chunk framing (1 + 1 + 4 + 4) besides its stream.

**What the checks guarantee.** Every byte but the CRCs' own is covered by a CRC-32 (the
magic and version byte too, though they are checked first to tell other files and other
versions apart). A CRC-32 detects any single flipped bit and any burst of up to 32 bits in
the bytes it covers (when the reader frames them as they were written); random damage
escapes with probability about 2**-32. A flipped bit in a length or count field (``L``, ``N``, a shape run, a
chunk's count or ``B``) makes the reader take other bytes for the rest of the record and
read its CRC from another place, which fails except with probability about 2**-32; past
that, the decoder checks the chunk's pixel digest. Every length is checked against its
limit and, when the input's size is known, against the bytes remaining, before anything is
allocated; when the size is unknown (a pipe) reads proceed in pieces of at most 1 MiB, so
a lying length costs no more memory than the bytes actually present. Every malformed input
raises one :class:`ContainerError` with a one-line message, never another exception.

**Size limits.** A well-formed header may still claim images far larger than the file
(a few bytes claiming one 65536 × 65536 image). The reader checks every claimed image
against ``max_pixels`` (default `bbcodec.plan.DEFAULT_MAX_PIXELS`) when the header is read,
and each chunk's images together against ``MAX_DATASET_PIXELS_FACTOR × max_pixels`` before
its stream is read, raising :class:`~bbcodec.errors.SizeLimitError` (a ``DataError``: the
file may be intact, only larger than the caller allows) before a decoder allocates anything
that size. (A chunk's count is checked before its CRC, which comes after the stream: a
damaged count that claims too many pixels is reported as this error.)

A pixel-digest mismatch after decoding (the codec's check, :func:`verify_pixels`) raises
:class:`~bbcodec.errors.ChecksumError` (a `DecodeError`, not a `ContainerError`): the stream
was intact but decoded to other pixels (wrong model, or the determinism contract broken).

**Format version 2** (written until bbcodec switched to version 3) is still read, by
`bbcodec.container_v2`, which specifies it. Its magic ``b"\\x89BBC\\r\\n\\x1a\\n"`` starts
with this version's, so the reader reads the 4-byte magic, then one byte: 3 is version 3,
``0x0D`` (the ``\\r`` of the longer magic) is version 2, anything else an unsupported
version. Its headers hold the whole sha256 of the weights and of each chunk's pixels
(:attr:`Header.version` and the digests' lengths tell them apart).

**Versions** (what a decoder must know of each):

- 2 — the first public format: a long magic, JSON settings, whole sha256 digests, an end
  record. Coded with float arithmetic: a file decodes only where PyTorch and the C library
  compute the same floats as where it was written (`bbcodec.container_v2`).
- 3 — this format: short varint header, small digests, no end record; a chunk starts from
  an empty stack and codes its first images without bits back. The setting
  ``arithmetic`` (key 10) says how the probabilities were computed; absent, it is
  ``"exact"``: the model's integer twin and exact tables, the same on every machine and
  device (`bbcodec.models.exact`). ``"float"`` marks a version-3 file of the float path.
- 3 with ``band_rows`` (key 11, added later without a version change): images taller
  than it are cut into bands, one chunk record per band (*Bands*, above). Files without
  the key are read as before; a reader older than the key refuses a file that has it
  ("unknown setting key index 11: file from a newer bbcodec?") instead of misreading it.
- 3 with ``pixel_bins`` (key 12, added the same way): 8-bit pixels coded in two stages,
  a bin of ``256 / pixel_bins`` values, then the value in it
  (`bbcodec.coding.logistic`); absent, each pixel value is one 256-way symbol.
- 3 with ``tile_latents`` (key 13, added the same way): ``"prior-mean"`` when the images
  coded tiled code no latents, each tile's latent being the prior's mean
  (`bbcodec.codec.tiled`); absent, every latent is coded with bits back.

Example:
    >>> import numpy as np
    >>> images = [np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8)]
    >>> header = Header(
    ...     model_id="vlae-bmnist",
    ...     weights_digest=bytes(4),
    ...     settings={"device": "cpu", "grid_step_log2": -8, "grid_bound": 32.0},
    ...     shapes=((2, 3), (2, 3)),
    ... )
    >>> chunk = Chunk(first=0, count=2, words=np.arange(1, 6, dtype=np.uint32),
    ...               pixels_digest=pixels_digest(images, pixel_digest_bytes(12)))
    >>> data = dumps(header, [chunk])
    >>> len(data)
    65
    >>> header2, chunks2 = loads(data)
    >>> header2 == header and chunks2 == [chunk]
    True
    >>> verify_pixels(chunks2[0], images)
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import operator
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Self

import numpy as np

from bbcodec.errors import ChecksumError, ContainerError, SizeLimitError
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_DATASET_PIXELS_FACTOR, image_bands

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_CHUNK_WORDS",
    "MAX_HEADER_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGE_SIDE",
    "MODEL_CODES",
    "SETTINGS_KEYS",
    "WEIGHTS_DIGEST_BYTES",
    "Chunk",
    "ContainerReader",
    "ContainerWriter",
    "Header",
    "check_claimed_pixels",
    "dumps",
    "loads",
    "pixel_digest_bytes",
    "pixels_checksum",
    "pixels_digest",
    "verify_pixels",
]

MAGIC = b"\x89BBC"
# 3: compact varint header and chunk records, short digests, no end record.
FORMAT_VERSION = 3

#: Images per file. Shapes are kept per image in :attr:`Header.shapes`, so this bounds the
#: memory a (possibly lying) header can make the reader spend (8 bytes per image).
MAX_IMAGES = 1 << 22
#: Largest height or width.
MAX_IMAGE_SIDE = 1 << 16
#: Largest channel count of an ``(H, W, C)`` image.
MAX_CHANNELS = 4
#: Largest ANS stream of one chunk, in u32 words (1 GiB).
MAX_CHUNK_WORDS = 1 << 28
#: Largest header body: room for the settings, the model id and a distinct shape per image.
MAX_HEADER_BYTES = 1 << 27
#: Bytes of the weights' sha256 a version-3 header keeps (a check against using the wrong
#: weights by mistake, not against forgery).
WEIGHTS_DIGEST_BYTES = 4

#: Model codes of the header (part of the format: never renumbered, only appended to).
MODEL_CODES: dict[int, str] = {
    1: "vlae-bmnist",
    2: "delta-vae-bmnist",
    3: "vlae-mnist",
    4: "vlae-cifar10",
    5: "delta-vae-cifar10",
    6: "vlae-photo",
    7: "vlae-photo-grey",
    8: "vlae-photo-2",
    9: "vlae-photo-grey-2",
    10: "vlae-photo-grey-3",
}
#: Setting names by key index (part of the format: new keys are only ever appended).
SETTINGS_KEYS = (
    "grid_step_log2",
    "grid_bound",
    "max_batch",
    "chunk_images",
    "seed",
    "device",
    "torch_threads",
    "posterior_window_stds",
    "initial_bits",
    "direct_latent_stds",
    "arithmetic",
    "band_rows",
    "pixel_bins",
    "tile_latents",
)

_MODEL_CODE_OF = {model_id: code for code, model_id in MODEL_CODES.items()}
_V2_VERSION_BYTE = 0x0D  # the "\r" that follows MAGIC in format version 2's longer magic
_DIGEST_SIZES = (4, 8, 16, 32)  # version 3's pixel digests, and version 2's whole sha256
_MAX_TEXT = 255
_MAX_VARINT_BYTES = 10
_READ_PIECE = 1 << 20
_U64_MAX = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U32 = struct.Struct("<I")
_DTYPES = ("uint8",)
_INT, _FLOAT, _STR, _NONE = range(4)  # setting value types


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
    """A model id: 1..255 printable ASCII characters, no spaces."""
    if not isinstance(value, str):
        raise ContainerError(f"{what} must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= _MAX_TEXT or not all("!" <= ch <= "~" for ch in value):
        raise ContainerError(
            f"{what} must be 1..{_MAX_TEXT} printable ASCII characters without "
            f"spaces, got {value[:40]!r}"
        )
    return value


def _digest(value: Any, what: str, sizes: Sequence[int]) -> bytes:
    """``value`` as bytes of one of the ``sizes``, else :class:`ContainerError`."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ContainerError(f"{what} must be bytes, got {type(value).__name__}")
    digest = bytes(value)
    if len(digest) not in sizes:
        raise ContainerError(
            f"{what} must be {' or '.join(map(str, sizes))} bytes, got {len(digest)}"
        )
    return digest


def _setting(key: Any, value: Any) -> int | float | str | None:
    """A version-3 setting's value as stored (a plain int, float, str or None)."""
    if key not in SETTINGS_KEYS:
        raise ContainerError(
            f"unknown setting {key!r}: format version {FORMAT_VERSION} stores "
            f"{', '.join(SETTINGS_KEYS)}"
        )
    what = f"setting {key}"
    if value is None:
        return None
    if isinstance(value, bool):
        raise ContainerError(f"{what} is a bool ({value}): settings store ints, not bools")
    if isinstance(value, int):
        return _index(value, what, _I64_MIN, _I64_MAX)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContainerError(f"{what}: {value} is not a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > _MAX_TEXT or not all(" " <= ch <= "~" for ch in value):
            raise ContainerError(
                f"{what} must be at most {_MAX_TEXT} printable ASCII characters, got {value[:40]!r}"
            )
        return value
    raise ContainerError(f"{what}: {type(value).__name__} is not an int, float, str or None")


def _settings(settings: Any, version: int) -> dict[str, Any]:
    """The settings of a header of ``version``, validated, in canonical key order."""
    if not isinstance(settings, Mapping):
        raise ContainerError(f"settings must be a dict, got {type(settings).__name__}")
    if version == 2:
        from bbcodec import container_v2  # here: container_v2 builds on this module

        return container_v2.json_settings(settings)
    checked = [(key, _setting(key, value)) for key, value in settings.items()]
    return dict(sorted(checked, key=lambda item: SETTINGS_KEYS.index(item[0])))


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


def _shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    """Per-image shapes, validated once per run of equal shapes."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ContainerError("shapes must be a sequence of (H, W) or (H, W, C) tuples")
    raw = list(value)
    if len(raw) > MAX_IMAGES:
        raise ContainerError(f"{len(raw)} images, more than the limit {MAX_IMAGES}")
    if not all(type(s) is tuple for s in raw):
        raw = [_shape(s, f"shape of image {i}") for i, s in enumerate(raw)]
    shapes: list[tuple[int, ...]] = []
    for s, run in itertools.groupby(raw):
        n = sum(1 for _ in run)
        shapes.extend(itertools.repeat(_shape(s, f"shape of image {len(shapes)}"), n))
    return tuple(shapes)


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
        >>> header = Header("m", bytes(4), {}, ((20, 30),))
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


def _check_chunk_pixels(
    header: Header, first: int, count: int, max_pixels: int | None, where: str
) -> None:
    """A decoder holds a chunk's images at once: refuse more than the limit allows."""
    if max_pixels is None:
        return
    limit = MAX_DATASET_PIXELS_FACTOR * max_pixels
    pixels = 0
    for shape, run in itertools.groupby(header.shapes[first : first + count]):
        pixels += shape[0] * shape[1] * sum(1 for _ in run)
    if pixels > limit:
        size = f"{count:,} images, {pixels:,} pixels in all"
        raise _over_limit(
            where, size, f"{limit:,} pixels per chunk, {MAX_DATASET_PIXELS_FACTOR} × max pixels"
        )


@dataclass(frozen=True)
class Header:
    """Everything about a ``.bbc`` file except its chunks. Validated on construction.

    Attributes:
        model_id: Which model coded the file, e.g. ``"vlae-bmnist"`` (printable ASCII).
        weights_digest: The first bytes of the sha256 of the model weights:
            :data:`WEIGHTS_DIGEST_BYTES` (4) in version 3, all 32 in version 2.
        settings: Coding settings. Version 3: keys from :data:`SETTINGS_KEYS`, values int
            (64-bit signed, not bool), finite float, str (printable ASCII, at most 255
            characters) or None, kept in key order. Version 2: any JSON object (stored
            normalised: tuples become lists; see `bbcodec.container_v2`).
        shapes: Per-image shapes, ``(H, W)`` or ``(H, W, C)``; may differ between images.
        dtype: Pixel dtype name; only ``"uint8"`` exists.
        version: The format version the header was read as (2 or 3); only version 3 is
            written.

    Raises:
        ContainerError: if any field is invalid or past the ``MAX_*`` limits.
    """

    model_id: str
    weights_digest: bytes
    settings: dict[str, Any]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "uint8"
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        version = _index(self.version, "format version", 2, FORMAT_VERSION)
        object.__setattr__(self, "version", version)
        _name(self.model_id, "model id")
        sizes = (WEIGHTS_DIGEST_BYTES,) if version == FORMAT_VERSION else (32,)
        digest = _digest(self.weights_digest, "weights digest", sizes)
        object.__setattr__(self, "weights_digest", digest)
        object.__setattr__(self, "settings", _settings(self.settings, version))
        if self.dtype not in _DTYPES:
            raise ContainerError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        object.__setattr__(self, "shapes", _shapes(self.shapes))
        if version == FORMAT_VERSION and "band_rows" in self.settings:
            _index(self.settings["band_rows"], "setting band_rows", 1, MAX_IMAGE_SIDE)

    @property
    def image_count(self) -> int:
        """Number of images in the file."""
        return len(self.shapes)

    @property
    def band_rows(self) -> int:
        """Rows of a band (0: no image is cut into bands; see the module docstring)."""
        if self.version != FORMAT_VERSION:
            return 0
        return self.settings.get("band_rows", 0)

    def bands(self, image: int) -> list[tuple[int, int]]:
        """``(row0, row1)`` of each band of image ``image`` (one band: ``[(0, H)]``)."""
        return image_bands(self.shapes[image][0], self.band_rows)

    def band_shape(self, image: int, band: int) -> tuple[int, ...]:
        """The shape of band ``band`` of image ``image`` (band 0 of an image not cut into
        bands: the image's shape)."""
        shape = self.shapes[image]
        r0, r1 = self.bands(image)[band]
        return (r1 - r0, *shape[1:])


@dataclass(frozen=True, eq=False)
class Chunk:
    """One independently decodable piece of a file: images ``first..first+count-1``, or
    one band of image ``first`` (see *Bands* in the module docstring).

    Attributes:
        first: Index of the chunk's first image.
        count: Number of images in the chunk, ``>= 1`` (1 for a band).
        words: The ANS stream, a 1-D uint32 array (stored as a read-only copy).
        pixels_digest: :func:`pixels_digest` of the chunk's images (a band: of the band's
            pixels): 4, 8 or 16 bytes in version 3 (:func:`pixel_digest_bytes` of their
            subpixels, which the writer checks), the whole 32-byte sha256 in version 2.
        band: Which band of image ``first`` the chunk holds (0 for a chunk of whole
            images; `Header.bands` gives its rows). Not stored: the band records of an
            image follow each other in order.

    Raises:
        ContainerError: if any field is invalid.
    """

    first: int
    count: int
    words: np.ndarray
    pixels_digest: bytes
    band: int = 0

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
        digest = _digest(self.pixels_digest, "pixels digest", _DIGEST_SIZES)
        object.__setattr__(self, "pixels_digest", digest)
        band = _index(self.band, "chunk band", 0, MAX_IMAGE_SIDE - 1)
        if band and count != 1:
            raise ContainerError(f"band {band} of a chunk of {count} images: a band is one image's")
        object.__setattr__(self, "band", band)

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
            and self.band == other.band
            and self.pixels_digest == other.pixels_digest
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


def pixels_digest(images: Iterable[np.ndarray], n_bytes: int) -> bytes:
    """The first ``n_bytes`` bytes of :func:`pixels_checksum` ``(images)``: what a chunk
    stores (``n_bytes`` = :func:`pixel_digest_bytes` of the images' subpixels).

    Example:
        >>> import numpy as np
        >>> pixels_digest([np.zeros((2, 2), np.uint8)], 4).hex()
        'be22ddd6'
    """
    return pixels_checksum(images)[:n_bytes]


def pixel_digest_bytes(n_subpixels: int) -> int:
    """Bytes of pixel digest a version-3 chunk of ``n_subpixels`` subpixels stores
    (H × W × C summed over its images): 4 below 2**16, 8 below 2**24, else 16.

    A wrong decode of a big chunk costs more, and is rarer per byte of file, than of a
    small one: the digest grows with the chunk while staying a small part of its file.

    Example:
        >>> [pixel_digest_bytes(n) for n in (28 * 28, 768 * 512 * 3, 4096 * 4096)]
        [4, 8, 16]
    """
    if n_subpixels < 1 << 16:
        return 4
    if n_subpixels < 1 << 24:
        return 8
    return 16


def _subpixels(header: Header, first: int, count: int, band: int | None = None) -> int:
    """Subpixels (H × W × C) of images ``first..first+count-1`` by the header's shapes, or
    of band ``band`` of image ``first`` if it is cut into bands."""
    if band is not None and len(header.bands(first)) > 1:
        return math.prod(header.band_shape(first, band))
    return sum(
        math.prod(shape) * sum(1 for _ in run)
        for shape, run in itertools.groupby(header.shapes[first : first + count])
    )


def _what(chunk: Chunk) -> str:
    """``chunk with images 3..5``, or ``band 2 of image 3``, for messages."""
    if chunk.band:
        return f"band {chunk.band} of image {chunk.first}"
    return f"chunk with images {chunk.first}..{chunk.stop - 1}"


def verify_pixels(chunk: Chunk, images: Sequence[np.ndarray]) -> None:
    """Check decoded images against the chunk's stored pixel digest.

    Args:
        chunk: The chunk the images were decoded from.
        images: The decoded images, ``chunk.count`` uint8 arrays.

    Raises:
        ChecksumError: if the count or the pixels differ from what was encoded.
    """
    what = _what(chunk)
    if len(images) != chunk.count:
        raise ChecksumError(f"{what}: got {len(images)} decoded images")
    got = pixels_digest(images, len(chunk.pixels_digest))
    if got != chunk.pixels_digest:
        raise ChecksumError(
            f"{what}: decoded pixels do not match the stored digest "
            f"({got.hex()[:16]} != {chunk.pixels_digest.hex()[:16]})"
        )


# --------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as an unsigned LEB128 varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    """A signed 64-bit int as the unsigned int that stores it (0, -1, 1, -2 → 0, 1, 2, 3)."""
    return 2 * value if value >= 0 else -2 * value - 1


def _encode_model(model_id: str) -> bytes:
    code = _MODEL_CODE_OF.get(model_id)
    if code is not None:
        return _varint(code)
    name = model_id.encode("ascii")
    return _varint(0) + bytes([len(name)]) + name


def _encode_setting(key: str, value: float | str | None) -> bytes:
    """One settings entry: tag, then the value."""
    if value is None:
        kind, payload = _NONE, b""
    elif isinstance(value, int):
        kind, payload = _INT, _varint(_zigzag(value))
    elif isinstance(value, float):
        kind, payload = _FLOAT, struct.pack("<d", value)
    else:
        kind, payload = _STR, _varint(len(value)) + value.encode("ascii")
    return bytes([4 * SETTINGS_KEYS.index(key) + kind]) + payload


def _encode_shapes(shapes: Sequence[tuple[int, ...]]) -> bytes:
    runs = [(shape, sum(1 for _ in group)) for shape, group in itertools.groupby(shapes)]
    out = _varint(len(shapes)) + _varint(len(runs))
    for shape, length in runs:
        out += _varint(length) + bytes([len(shape)]) + b"".join(map(_varint, shape))
    return out


def _encode_header_body(header: Header) -> bytes:
    settings = b"".join(_encode_setting(key, value) for key, value in header.settings.items())
    return b"".join(
        [
            _encode_model(header.model_id),
            header.weights_digest,
            _varint(len(header.settings)),
            settings,
            _encode_shapes(header.shapes),
        ]
    )


def _stream_bytes(words: np.ndarray) -> memoryview:
    """The stream as stored: words little-endian, the last word's high zero bytes left out."""
    data = memoryview(np.ascontiguousarray(words, dtype="<u4")).cast("B")
    if words.size == 0:
        return data
    top_bytes = max(1, (int(words[-1]).bit_length() + 7) // 8)
    return data[: len(data) - 4 + top_bytes]


class ContainerWriter:
    """Streams a ``.bbc`` file: :meth:`write_header`, then :meth:`write_chunk` (in image
    order) as many times as needed, then :meth:`finalize`.

    Nothing but the current chunk is held in memory. As a context manager it finalizes on
    a clean exit (and leaves the file unfinished, hence unreadable, after an exception).

    Args:
        f: A binary file object opened for writing.

    Example:
        >>> import io, numpy as np
        >>> header = Header("m", bytes(4), {}, ((1, 1),))
        >>> buf = io.BytesIO()
        >>> with ContainerWriter(buf) as w:
        ...     _ = w.write_header(header)
        ...     _ = w.write_chunk(Chunk(0, 1, np.ones(3, np.uint32), bytes(4)))
        >>> ContainerReader(io.BytesIO(buf.getvalue())).header == header
        True
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._header: Header | None = None
        self._header_crc = 0
        self._next_first = 0
        self._next_band = 0
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
        """Write the header record. Returns the number of bytes written.

        Raises:
            ContainerError: if a header was written already, or ``header`` is not a
                version-3 `Header`.
        """
        if self._header is not None:
            raise ContainerError("header already written")
        if not isinstance(header, Header):
            raise ContainerError(f"expected a Header, got {type(header).__name__}")
        if header.version != FORMAT_VERSION:
            raise ContainerError(
                f"cannot write a version {header.version} header: this writer writes format "
                f"version {FORMAT_VERSION} only"
            )
        body = _encode_header_body(header)
        if len(body) > MAX_HEADER_BYTES:
            raise ContainerError(f"header of {len(body)} bytes is more than {MAX_HEADER_BYTES}")
        record = MAGIC + bytes([FORMAT_VERSION]) + _varint(len(body)) + body
        self._header_crc = zlib.crc32(record)
        self._header = header
        return self._write(record, _U32.pack(self._header_crc))

    def write_chunk(self, chunk: Chunk) -> int:
        """Write the next chunk; its images must follow the previous chunk's.

        Returns:
            The number of bytes written (framing included).

        Raises:
            ContainerError: out of order, past the last image, or a pixel digest of
                another length than :func:`pixel_digest_bytes` of the chunk's subpixels.
        """
        header = self._require_open()
        if not isinstance(chunk, Chunk):
            raise ContainerError(f"expected a Chunk, got {type(chunk).__name__}")
        if chunk.first != self._next_first or chunk.stop > header.image_count:
            raise ContainerError(
                f"{_what(chunk)} does not continue at image "
                f"{self._next_first} of {header.image_count}"
            )
        n_bands = len(header.bands(chunk.first))
        if chunk.band != self._next_band or (n_bands > 1 and chunk.count != 1):
            expected = f"band {self._next_band} of image" if n_bands > 1 else "whole images from"
            raise ContainerError(
                f"{_what(chunk)}: expected {expected} {self._next_first} (the header's "
                f"band_rows cuts it into {n_bands} band{'s' if n_bands > 1 else ''})"
            )
        subpixels = _subpixels(header, chunk.first, chunk.count, chunk.band)
        if len(chunk.pixels_digest) != pixel_digest_bytes(subpixels):
            raise ContainerError(
                f"{_what(chunk)}: a pixel digest of "
                f"{len(chunk.pixels_digest)} bytes, its {subpixels:,} subpixels take "
                f"{pixel_digest_bytes(subpixels)}"
            )
        stream = _stream_bytes(chunk.words)
        framing = _varint(chunk.count) + _varint(len(stream)) + chunk.pixels_digest
        crc = zlib.crc32(stream, zlib.crc32(framing, self._header_crc))
        if chunk.band + 1 < n_bands:
            self._next_band += 1
        else:
            self._next_first, self._next_band = chunk.stop, 0
        return self._write(framing, stream, _U32.pack(crc))

    def finalize(self) -> None:
        """Check that every image is in a chunk (the file has no end record to write)."""
        header = self._require_open()
        if self._next_first != header.image_count:
            raise ContainerError(
                f"cannot finalize: images {self._next_first}..{header.image_count - 1} have "
                "no chunk"
            )
        self._finalized = True

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


def _remaining(f: BinaryIO) -> int | None:
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


class _Input:
    """Fields read from a binary file object, with a running CRC of the bytes read.

    Also reads a header body (`bbcodec.container_v2` reads version 2 with it). Running
    past the end, a bad varint or a CRC mismatch is a :class:`ContainerError`.

    Args:
        f: The file object, at the start of what is to be read.
        name: What it is, for messages (``"file"``, ``"header body"``).
    """

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self._name = name
        self._size = _remaining(f)
        self.pos = 0
        self.crc = 0  # crc32 of the bytes read since a record set it to its initial value

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, allocating no more than the input really holds."""
        if self._size is not None and n > self._size - self.pos:
            raise self._truncated(n, self._size - self.pos, what)
        parts = []
        got = 0
        while got < n:
            piece = self._f.read(min(n - got, _READ_PIECE))
            if not piece:
                raise self._truncated(n, got, what)
            parts.append(piece)
            got += len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.pos += n
        self.crc = zlib.crc32(data, self.crc)
        return data

    def _truncated(self, n: int, left: int, what: str) -> ContainerError:
        return ContainerError(
            f"truncated {self._name}: {what} needs {n} bytes at byte {self.pos}, only {left} left"
        )

    def u8(self, what: str) -> int:
        return self.read(1, what)[0]

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))

    def varint(self, what: str) -> int:
        """An unsigned LEB128 varint of at most 10 bytes, in its shortest form."""
        start = self.pos
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if byte == 0 and i > 0:
                    raise ContainerError(
                        f"{what} at byte {start} of the {self._name}: varint not in its "
                        "shortest form"
                    )
                return value
        raise ContainerError(
            f"{what} at byte {start} of the {self._name}: varint longer than "
            f"{_MAX_VARINT_BYTES} bytes"
        )

    def check_crc(self, what: str) -> int:
        """Read a stored u32 CRC and check it against :attr:`crc`.

        Returns:
            The CRC, from which the running CRC restarts (the next CRC chains from it).
        """
        expected = self.crc
        (stored,) = self.unpack("<I", f"{what} CRC")
        if stored != expected:
            raise ContainerError(f"{what}: CRC mismatch, the file is corrupted")
        self.crc = expected
        return expected

    def check_end(self, after: str) -> None:
        """Raise unless the input ends here."""
        if self._f.read(1):
            extra = "" if self._size is None else f" ({self._size - self.pos} bytes)"
            raise ContainerError(f"trailing bytes after {after} at byte {self.pos}{extra}")


def _read_model(body: _Input) -> str:
    code = body.varint("model code")
    if code == 0:
        n = body.u8("model id length")
        return body.read(n, "model id").decode("latin-1")  # Header checks it is ASCII
    if code not in MODEL_CODES:
        raise ContainerError(f"unknown model code {code}: file from a newer bbcodec?")
    return MODEL_CODES[code]


def _read_setting_value(body: _Input, kind: int, what: str) -> Any:
    """One setting's value of type ``kind`` (Header checks range, finiteness, ASCII)."""
    if kind == _INT:
        stored = body.varint(what)
        if stored > _U64_MAX:
            raise ContainerError(f"{what}: integer does not fit in 64 bits")
        return (stored >> 1) ^ -(stored & 1)
    if kind == _FLOAT:
        return body.unpack("<d", what)[0]
    if kind == _STR:
        n = body.varint(f"{what} length")
        if n > _MAX_TEXT:
            raise ContainerError(f"{what}: a string of {n} bytes, more than {_MAX_TEXT}")
        return body.read(n, what).decode("latin-1")
    return None


def _read_settings(body: _Input) -> dict[str, Any]:
    n = body.varint("settings count")
    settings: dict[str, Any] = {}
    last = -1
    for i in range(n):
        key, kind = divmod(body.u8(f"setting {i} tag"), 4)
        if key >= len(SETTINGS_KEYS):
            raise ContainerError(f"unknown setting key index {key}: file from a newer bbcodec?")
        if key <= last:
            raise ContainerError(f"setting {SETTINGS_KEYS[key]} out of order: keys must increase")
        settings[SETTINGS_KEYS[key]] = _read_setting_value(
            body, kind, f"setting {SETTINGS_KEYS[key]}"
        )
        last = key
    return settings


def _read_shapes(body: _Input) -> list[tuple[int, ...]]:
    image_count = body.varint("image count")
    if image_count > MAX_IMAGES:
        raise ContainerError(f"image count {image_count} is more than the limit {MAX_IMAGES}")
    n_runs = body.varint("shape runs")
    if n_runs > image_count:
        raise ContainerError(f"{n_runs} shape runs for {image_count} images")
    shapes: list[tuple[int, ...]] = []
    for r in range(n_runs):
        length = body.varint(f"shape run {r} length")
        if not 1 <= length <= image_count - len(shapes):
            raise ContainerError(
                f"shape run {r} of {length} images does not fit the image count {image_count}"
            )
        ndim = body.u8(f"shape run {r} ndim")
        if ndim not in (2, 3):
            raise ContainerError(f"shape run {r}: ndim {ndim}, expected 2 or 3")
        dims = [body.varint(f"shape run {r} dim {d}") for d in range(ndim)]
        shapes.extend(itertools.repeat(_shape(dims, f"shape run {r}"), length))
    if len(shapes) != image_count:
        raise ContainerError(f"shape runs cover {len(shapes)} images, header says {image_count}")
    return shapes


def _parse_header_body(data: bytes) -> Header:
    body = _Input(io.BytesIO(data), "header body")
    model_id = _read_model(body)
    digest = body.read(WEIGHTS_DIGEST_BYTES, "weights digest")
    settings = _read_settings(body)
    shapes = _read_shapes(body)
    body.check_end("the header fields")
    return Header(model_id, digest, settings, tuple(shapes))


def _read_header(src: _Input) -> tuple[Header, int]:
    """The header record after the magic and version byte: (header, ``header_crc``)."""
    body_len = src.varint("header length")
    if body_len > MAX_HEADER_BYTES:
        raise ContainerError(f"header length {body_len} is more than {MAX_HEADER_BYTES}")
    data = src.read(body_len, "header")
    header_crc = src.check_crc("header")
    return _parse_header_body(data), header_crc


def _read_chunk(
    src: _Input, header: Header, header_crc: int, first: int, band: int, index: int,
    max_pixels: int | None,
) -> Chunk:  # fmt: skip
    where = f"chunk {index} at byte {src.pos}"
    src.crc = header_crc
    count = src.varint(f"chunk {index} image count")
    if not 1 <= count <= header.image_count - first:
        raise ContainerError(
            f"{where} holds {count} images, expected 1..{header.image_count - first} "
            f"(images {first}..{header.image_count - 1} are left)"
        )
    n_bands = len(header.bands(first))
    if n_bands > 1 and count != 1:
        raise ContainerError(
            f"{where} holds {count} images, expected band {band} of the {n_bands} of image "
            f"{first} (one image)"
        )
    n_bytes = src.varint(f"chunk {index} stream length")
    if n_bytes > 4 * MAX_CHUNK_WORDS:
        raise ContainerError(f"{where}: {n_bytes} stream bytes, more than {4 * MAX_CHUNK_WORDS}")
    _check_chunk_pixels(header, first, count, max_pixels, where)
    n_digest = pixel_digest_bytes(_subpixels(header, first, count, band))
    digest = src.read(n_digest, f"chunk {index} pixel digest")
    stream = src.read(n_bytes, f"chunk {index} stream")
    src.check_crc(where)
    words = np.frombuffer(stream + bytes(-n_bytes % 4), dtype="<u4")
    return Chunk(first, count, words, digest, band)


def _read_chunks(
    src: _Input, header: Header, header_crc: int, max_pixels: int | None
) -> Iterator[Chunk]:
    first, band, index = 0, 0, 0
    while first < header.image_count:
        chunk = _read_chunk(src, header, header_crc, first, band, index, max_pixels)
        yield chunk
        index += 1
        if band + 1 < len(header.bands(first)):
            band += 1
        else:
            first, band = chunk.stop, 0
    src.check_end("the last chunk" if header.image_count else "the header")


class ContainerReader:
    """Reads a ``.bbc`` file (format version 3 or 2) from a binary file object, one chunk
    at a time.

    The header is read and verified on construction; iterating yields each chunk once its
    CRC and range have been checked, then checks that nothing follows the last one (so stop
    iterating early and that last check is skipped). Only the current chunk is held in
    memory. Iterate once.

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
        >>> reader = ContainerReader(io.BytesIO(dumps(Header("m", bytes(4), {}, ()), [])))
        >>> reader.header.image_count, list(reader)
        (0, [])
    """

    def __init__(self, f: BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self._src = _Input(f, "file")
        self._max_pixels = max_pixels
        self._started = False
        self.header, self._header_crc = self._read_header()
        check_claimed_pixels(self.header, max_pixels)

    def _read_header(self) -> tuple[Header, int]:
        magic = self._src.read(len(MAGIC), "magic")
        if magic != MAGIC:
            raise ContainerError(f"not a .bbc file: bad magic {magic!r}")
        version = self._src.u8("format version")
        if version == FORMAT_VERSION:
            return _read_header(self._src)
        if version == _V2_VERSION_BYTE:
            from bbcodec import container_v2  # here: container_v2 builds on this module

            return container_v2.read_header(self._src)
        raise ContainerError(
            f"unsupported .bbc format version {version} (this reader knows versions 2 and "
            f"{FORMAT_VERSION})"
        )

    def __iter__(self) -> Iterator[Chunk]:
        if self._started:
            raise ContainerError("the chunks of this reader were already read")
        self._started = True
        if self.header.version == FORMAT_VERSION:
            return _read_chunks(self._src, self.header, self._header_crc, self._max_pixels)
        from bbcodec import container_v2

        return container_v2.read_chunks(self._src, self.header, self._header_crc, self._max_pixels)


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
