"""Readers for the images and datasets bbcodec compresses (numpy, Pillow, imagecodecs; no torch).

`load_images(path, split)` turns what users have on disk into one uint8 array:

======================================  ==============================================
source                                  recognised by
======================================  ==============================================
MNIST IDX images (``.gz`` or raw)       a folder holding ``train-images-idx3-ubyte[.gz]``
                                        / ``t10k-images-idx3-ubyte[.gz]``, or one IDX file
binarized MNIST ``.npz``                keys ``train`` / ``valid`` / ``test``
CIFAR-10 ``.npz`` (and similar)         keys ``x_train`` / ``x_valid`` / ``x_test``
CIFAR-10 python batches                 a folder holding ``data_batch_1..5`` and
                                        ``test_batch`` (or a ``cifar-10-batches-py``
                                        subfolder), or one batch file
images: PNG, TIFF, binary PPM/PGM,      one image file, or a folder of them: its files
JPEG-XL, JPEG                           named ``*.png``, ``*.tif[f]``, ``*.ppm``,
                                        ``*.pgm``, ``*.pnm``, ``*.jxl``, ``*.jpg``,
                                        ``*.jpeg`` (any case; `image_files`)
``.npy`` arrays                         one ``.npy`` file
======================================  ==============================================

Files are recognised by their content (magic bytes), not by their extension (a folder's
images are the files with the names above, each then read as what its content is).

Images are read exactly, whatever the format (`read_image`): grey stays grey and RGB stays
RGB (an RGB image with three equal channels is still RGB; a palette of greys gives grey);
an alpha channel must be fully opaque and is dropped; 16-bit samples (PNG, TIFF, PGM/PPM
of maxval 65535, JPEG-XL) are narrowed only when every one is an 8-bit value × 257. Other
depths, floating-point or signed samples, CMYK, extra channels, animations and multi-page
TIFFs are refused. A JPEG (its primary image, as Pillow decodes it) is read like any
other image, though its pixels were already lossily compressed, and so is a lossy
JPEG-XL; `lossy_files` names such files (from their headers) so that the CLI can say so.
`load_images` stacks a folder's images (one size and kind); `load_image_runs` keeps runs
of images of different sizes.

Result: ``(N, H, W)`` for grey and binary data, ``(N, H, W, 3)`` for RGB, always uint8,
C-contiguous, writeable, and with N, H, W > 0.

Splits: sources that hold several splits (an MNIST folder, a CIFAR batches folder, an
``.npz``) pick one with ``split``; asking for a split they lack raises `DataError` naming
the splits they have. Sources that hold a single set of images (one IDX file, one CIFAR
batch file, an image file or folder, an ``.npy``) *ignore* ``split``: the file is the split,
and the default ``split="test"`` must not stop anyone from loading a training file. The
value of ``split`` is still checked against `SPLITS` everywhere.

Every problem with the input (missing path, unknown format, wrong dtype or shape, values
out of range, truncated or corrupt files, unsafe pickles) raises `DataError`, a
`ValueError` with a one-line message of the form ``"<file>: <what is wrong>"``.

Pickles: CIFAR-10's python batches are pickles, and unpickling runs code chosen by the
file. They are read with a restricted unpickler that can only rebuild numpy arrays and
the byte strings inside them; any other global is refused with a `DataError`.

Size limits (``max_pixels``, default `bbcodec.plan.DEFAULT_MAX_PIXELS`): a small file can
claim a huge image (a 519 KB PNG of 13000 × 13000, a 1 KB ``.npy`` header claiming 100 GB,
a 6 MB ``.npz`` or a 1 MB gzip IDX file expanding to gigabytes). Every reader takes the
sizes from the file's header — PNG IHDR, TIFF IFD and JPEG frame header (parsed by
Pillow, nothing decoded), PPM/PGM header, JPEG-XL SizeHeader (parsed here from the
codestream, inside its container if it has one), ``.npy`` header (also inside an
``.npz``), IDX header, a CIFAR batch's file size — and refuses, with `SizeLimitError`, an
image of more than ``max_pixels`` pixels (H × W) or a dataset of more than
`bbcodec.plan.MAX_DATASET_PIXELS_FACTOR` × ``max_pixels`` pixels in all, before decoding
or allocating any of it. Headers that claim more data than an uncompressed file holds
are `DataError` s; compressed data (gzip, zip members) is read in bounded pieces up to
what the header claims, never trusting a declared size alone. ``max_pixels=None`` lifts
the limits (the truncation checks stay). Pillow's own decompression-bomb guard never
prints its warning: above our limit the image was refused first, below it the warning is
silenced, and Pillow's `DecompressionBombError` becomes a `SizeLimitError`.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
import struct
import warnings
import zipfile
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image

from bbcodec.errors import DataError, SizeLimitError, UsageError
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_DATASET_PIXELS_FACTOR

try:  # numpy >= 2 (numpy 1.26 also has these aliases)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "DataError",
    "SizeLimitError",
    "dataset_kind",
    "image_files",
    "load_image_runs",
    "load_images",
    "lossy_files",
    "npz_keys",
    "read_image",
    "read_npz_images",
    "read_png",
]

SPLITS = ("train", "valid", "test")

_LIMIT_HINT = "raise it with --max-pixels N (max_pixels= in Python) if the file is to be trusted"


class _Limits:
    """The size limits of one read: ``max_pixels`` per image, and
    `MAX_DATASET_PIXELS_FACTOR` × ``max_pixels`` for all the images it returns together."""

    def __init__(self, max_pixels: int | None):
        if max_pixels is not None and (
            not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1
        ):
            raise UsageError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
        self.image = max_pixels
        self.total = None if max_pixels is None else MAX_DATASET_PIXELS_FACTOR * max_pixels
        self.used = 0

    def check(self, where: object, n: int, height: int, width: int, count: bool = True) -> None:
        """Refuse ``n`` images of ``height`` × ``width`` over the limits; count them in
        the total read (unless ``count`` is false: a bound checked ahead of the read)."""
        if self.image is None:
            return
        pixels = height * width
        if pixels > self.image:
            raise SizeLimitError(
                f"{where}: a {width}×{height} image ({pixels:,} pixels) is over the limit of "
                f"{self.image:,} pixels; {_LIMIT_HINT}"
            )
        if self.used + n * pixels > self.total:
            raise SizeLimitError(
                f"{where}: {n:,} images of {width}×{height} bring the data to "
                f"{self.used + n * pixels:,} pixels, over the limit of {self.total:,} pixels "
                f"read at once ({MAX_DATASET_PIXELS_FACTOR} × max pixels); {_LIMIT_HINT}"
            )
        if count:
            self.used += n * pixels


# --------------------------------------------------------------------------------------
# public API


def load_images(
    path: str | Path, split: str = "test", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Load one split of an image dataset as a uint8 array.

    Args:
        path: a file or folder in one of the layouts listed in the module docstring.
        split: ``"train"``, ``"valid"`` or ``"test"``. Ignored by single-set sources
            (one IDX, CIFAR batch, image or ``.npy`` file; a folder of images).
        max_pixels: the largest image (H × W) to read; the split may hold
            `bbcodec.plan.MAX_DATASET_PIXELS_FACTOR` times as many pixels in all. Checked
            from the files' headers before anything is decoded; ``None``: no limit.

    Returns:
        uint8 array, C-contiguous and writeable: ``(N, H, W)`` for grey or binary
        images, ``(N, H, W, 3)`` for RGB (HWC, channels R, G, B).

    Raises:
        DataError: the path is missing or its content is not a valid dataset.
        SizeLimitError: (a `DataError`) an image or the split is over the limits.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     np.save(f"{d}/digits.npy", np.zeros((5, 28, 28), np.uint8))
        ...     x = load_images(f"{d}/digits.npy")
        >>> x.shape, x.dtype
        ((5, 28, 28), dtype('uint8'))
    """
    if not isinstance(split, str) or split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return _load_images(Path(path), split, _Limits(max_pixels))


def _load_images(p: Path, split: str, limits: _Limits) -> np.ndarray:
    try:
        if p.is_dir():
            return _load_folder(p, split, limits)
        if p.is_file():
            return _load_file(p, split, limits)
        if p.exists():
            raise DataError(f"{p}: not a regular file or folder")
        raise DataError(f"{p}: no such file or folder")
    except DataError:
        raise
    except OSError as exc:  # permissions, I/O errors, files vanishing while we read
        raise DataError(f"{p}: cannot read: {exc}") from exc


def dataset_kind(images: np.ndarray) -> str:
    """Classify a batch of images as returned by `load_images`.

    Args:
        images: uint8 array, ``(N, H, W)`` or ``(N, H, W, 3)``.

    Returns:
        ``"rgb"`` for ``(N, H, W, 3)``; for ``(N, H, W)``, ``"binary"`` when every value
        is 0 or 1 (vacuously so for an empty array), else ``"grey"``.

    Raises:
        DataError: not a uint8 array of one of those shapes.

    Example:
        >>> dataset_kind(np.array([[[0, 1], [1, 0]]], np.uint8))
        'binary'
        >>> dataset_kind(np.full((1, 2, 2), 200, np.uint8))
        'grey'
        >>> dataset_kind(np.zeros((1, 2, 2, 3), np.uint8))
        'rgb'
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"images have dtype {dtype}; expected a uint8 numpy array")
    if images.ndim == 4 and images.shape[-1] == 3:
        return "rgb"
    if images.ndim == 3:
        return "binary" if images.size == 0 or images.max() <= 1 else "grey"
    raise DataError(f"images have shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")


# --------------------------------------------------------------------------------------
# dispatch

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PICKLE_PROTO = b"\x80"  # protocol >= 2 pickles start with PROTO
_TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little/big endian, classic/BigTIFF
_JPEG_MAGIC = b"\xff\xd8\xff"
_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\0\0\0\x0cJXL \r\n\x87\n"
_HEAD_BYTES = len(_JXL_CONTAINER)  # enough to tell every format apart
_IDX_IMAGES = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS = 2049  # 0x00000801: unsigned bytes, 1 dimension

_MNIST_PREFIX = {"train": "train-images", "test": "t10k-images"}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBFOLDER = "cifar-10-batches-py"


def _load_file(p: Path, split: str, limits: _Limits) -> np.ndarray:
    with open(p, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if head.startswith(_GZIP_MAGIC) or _looks_like_idx(head):
        return _read_idx(p, limits)
    if head.startswith(_ZIP_MAGIC):
        return _read_npz(p, split, limits)
    if head.startswith(_NPY_MAGIC):
        return _read_npy(p, limits)
    if _image_format(head):
        return _read_image_stack([p], limits)
    if head.startswith(_PICKLE_PROTO):
        return _images(_read_cifar_batch(p, limits), str(p))
    raise DataError(
        f"{p}: unknown format (not MNIST IDX, .npz, .npy, an image (PNG, TIFF, PPM/PGM, "
        "JPEG-XL, JPEG) or a CIFAR-10 python batch)"
    )


def _load_folder(p: Path, split: str, limits: _Limits) -> np.ndarray:
    idx_files = {s: _find_mnist_file(p, prefix) for s, prefix in _MNIST_PREFIX.items()}
    if any(idx_files.values()):
        available = [s for s in SPLITS if idx_files.get(s)]
        _check_available(p, split, available)
        return _read_idx(idx_files[split], limits)

    cifar_dir = p if _has_cifar_batches(p) else p / _CIFAR_SUBFOLDER
    if _has_cifar_batches(cifar_dir):
        return _read_cifar_folder(cifar_dir, split, limits)

    files = image_files(p)
    if files:
        return _read_image_stack(files, limits)
    raise DataError(
        f"{p}: folder holds no MNIST IDX image files, CIFAR-10 python batches or images "
        f"({', '.join('*' + s for s in IMAGE_SUFFIXES)})"
    )


def _check_available(where: Path, split: str, available: list[str]) -> None:
    if split not in available:
        raise DataError(f"{where}: no {split!r} split; available splits: {', '.join(available)}")


def _images(arr: np.ndarray, where: str) -> np.ndarray:
    """Validate a decoded array; return it uint8, C-contiguous and writeable (copy if needed)."""
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: dtype {arr.dtype}; expected uint8 pixel values")
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise DataError(f"{where}: shape {arr.shape}; expected (N, H, W) or (N, H, W, 3)")
    if arr.size == 0:
        raise DataError(f"{where}: holds no pixels (shape {arr.shape})")
    if type(arr) is not np.ndarray or not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, dtype=np.uint8, order="C", copy=True)
    return arr


# --------------------------------------------------------------------------------------
# MNIST IDX


def _looks_like_idx(head: bytes) -> bool:
    """IDX magic: two zero bytes, a type code (0x08..0x0E) and a dimension count."""
    return len(head) >= 4 and head[:2] == b"\0\0" and 0x08 <= head[2] <= 0x0E


def _find_mnist_file(folder: Path, prefix: str) -> Path | None:
    for stem in (f"{prefix}-idx3-ubyte", f"{prefix}.idx3-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


_READ_PIECE = 1 << 20


def _read_into(f: BinaryIO, out: np.ndarray) -> int:
    """Fill ``out`` (C-contiguous, one byte per element) from ``f`` in pieces of at most
    1 MiB; returns the bytes read (fewer at the end of the stream). Nothing is read past
    ``out``, so a compressed stream is decompressed no further than the caller allows."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < len(view):
        n = f.readinto(view[got : got + _READ_PIECE])
        if not n:
            break
        got += n
    return got


def _read_idx(p: Path, limits: _Limits) -> np.ndarray:
    """Read an IDX image file (magic 2051, uint8, N x H x W), gzip-compressed or not.

    The 16-byte header is read first and its dimensions checked (against the file's size
    when it is not compressed, and against the limits) before the pixels are read; a gzip
    stream is decompressed only as far as the header says, plus a small probe for bytes
    after it."""
    with open(p, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        size = os.fstat(raw.fileno()).st_size
        try:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else nullcontext(raw)
            with stream as f:
                n, h, w = _idx_header(p, f.read(16))
                if not compressed:
                    _check_idx_size(p, n, h, w, size)
                limits.check(p, n, h, w)
                images = np.empty((n, h, w), np.uint8)  # pages are taken only as they are read
                got = _read_into(f, images)
                if got < images.size:
                    _check_idx_size(p, n, h, w, 16 + got)
                extra = f.read(_READ_PIECE) if compressed else b""
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{p}: truncated or corrupt gzip data ({exc})") from exc
    if extra:
        many = "more than " if len(extra) == _READ_PIECE else ""
        raise DataError(
            f"{p}: {many}{len(extra)} unexpected bytes after the {n}x{h}x{w} IDX images"
        )
    return _images(images, str(p))


def _idx_header(p: Path, head: bytes) -> tuple[int, int, int]:
    """(N, H, W) from the first 16 bytes of an IDX image file."""
    if len(head) < 4:
        raise DataError(f"{p}: truncated IDX file ({len(head)} bytes, no complete header)")
    (magic,) = struct.unpack(">I", head[:4])
    if magic != _IDX_IMAGES:
        if magic == _IDX_LABELS:
            raise DataError(f"{p}: an IDX label file (magic 2049), not images (magic 2051)")
        what = "IDX magic" if _looks_like_idx(head[:4]) else "not an IDX file: magic"
        raise DataError(f"{p}: {what} {magic}, expected {_IDX_IMAGES} (uint8 images)")
    if len(head) < 16:
        raise DataError(f"{p}: truncated IDX header ({len(head)} of 16 bytes)")
    n, h, w = struct.unpack(">3I", head[4:16])
    if n == 0 or h == 0 or w == 0:
        raise DataError(f"{p}: IDX dimensions {n}x{h}x{w} hold no pixels")
    return n, h, w


def _check_idx_size(p: Path, n: int, h: int, w: int, size: int) -> None:
    """The IDX data must be exactly the 16-byte header and N·H·W pixels."""
    expected = 16 + n * h * w
    if size < expected:
        raise DataError(
            f"{p}: truncated IDX data: header says {n}x{h}x{w} ({expected} bytes), "
            f"file has {size} bytes"
        )
    if size > expected:
        raise DataError(f"{p}: {size - expected} unexpected bytes after the {n}x{h}x{w} IDX images")


# --------------------------------------------------------------------------------------
# .npz / .npy

# .npz layouts: bare split names are binarized MNIST ({0, 1}, (N, 28, 28) or (N, 784));
# x_<split> keys hold ordinary uint8 images, as in cifar10.npz.
_BINARY_SIDE = 28


def _npz_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The arrays of an .npz by key (member name without ``.npy``, as `np.load` names them)."""
    return {info.filename.removesuffix(".npy"): info for info in zf.infolist() if not info.is_dir()}


def _open_npz(p: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(p)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{p}: corrupt or unreadable .npz ({exc})") from exc


def _read_npz(p: Path, split: str, limits: _Limits) -> np.ndarray:
    with _open_npz(p) as zf:
        members = _npz_members(zf)
        keys = set(members)
        if any(f"x_{s}" in keys for s in SPLITS):
            binary, key_of = False, {s: f"x_{s}" for s in SPLITS}
        elif any(s in keys for s in SPLITS):
            binary, key_of = True, {s: s for s in SPLITS}
        else:
            found = ", ".join(sorted(keys)) or "none"
            raise DataError(
                f"{p}: no image arrays: expected keys train/valid/test (binarized MNIST) "
                f"or x_train/x_valid/x_test; found: {found}"
            )
        available = [s for s in SPLITS if key_of[s] in keys]
        _check_available(p, split, available)
        key = key_of[split]
        where = f"{p}[{key!r}]"
        arr = _read_npz_member(zf, members[key], where, binary, limits)
    if binary:
        return _binary_images(arr, where)
    return _images(arr, where)


def npz_keys(path: str | Path) -> list[str]:
    """The names of the arrays in an .npz file, from its zip directory (nothing is
    decompressed), in archive order; as `np.load(path).files` names them.

    Raises:
        DataError: not a readable zip archive.
    """
    p = Path(path)
    try:
        with _open_npz(p) as zf:
            return list(_npz_members(zf))
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc


def read_npz_images(
    path: str | Path, key: str, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """One array of an .npz file as images, bounded: its ``.npy`` header is read first and
    checked (uint8 or bool, ``(N, H, W)`` or ``(N, H, W, 3)``, at most ``max_pixels``
    pixels an image and `bbcodec.plan.MAX_DATASET_PIXELS_FACTOR` × ``max_pixels`` in
    all, no more than the archive says the member holds), then its data is decompressed
    in bounded pieces, never past what the header claims.

    Returns:
        uint8 array, C-contiguous and writeable (bool arrays become 0/1).

    Raises:
        DataError: a missing key, or an array that is corrupt or not images.
        SizeLimitError: (a `DataError`) an image or the array over the limits.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     np.savez(f"{d}/a.npz", digits=np.zeros((5, 28, 28), np.uint8))
        ...     keys = npz_keys(f"{d}/a.npz")
        ...     x = read_npz_images(f"{d}/a.npz", keys[0])
        >>> keys, x.shape
        (['digits'], (5, 28, 28))
    """
    p = Path(path)
    limits = _Limits(max_pixels)
    where = f"{p}[{key!r}]"
    try:
        with _open_npz(p) as zf:
            members = _npz_members(zf)
            if key not in members:
                found = ", ".join(members) or "none"
                raise DataError(f"{p}: no array {key!r} in the .npz; found: {found}")
            arr = _read_npz_member(zf, members[key], where, False, limits)
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    return _images(arr, where)


def _read_npz_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, binary: bool, limits: _Limits
) -> np.ndarray:
    """One member's array, its header checked (`_check_claim`) before its data is read."""
    try:
        with zf.open(info) as f:
            shape, fortran, dtype, header_bytes = _npy_header(f, where)
            n, h, w = _check_claim(where, shape, dtype, binary)
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size < header_bytes + nbytes:
                raise DataError(
                    f"{where}: corrupt or unreadable array (its header claims {shape} {dtype}, "
                    f"{header_bytes + nbytes:,} bytes with the header; the archive says the "
                    f"member holds {info.file_size:,})"
                )
            limits.check(where, n, h, w)
            arr = _read_array(f, shape, fortran, dtype, where)
            f.read(_READ_PIECE)  # on to the member's end, where zipfile checks its CRC
    except DataError:
        raise
    except (
        OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
        RuntimeError,
    ) as exc:  # fmt: skip
        raise DataError(f"{where}: corrupt or unreadable array ({exc})") from exc
    return arr


class _Counted:
    """Reads from a stream, counting the bytes (how long a ``.npy`` header was)."""

    def __init__(self, f: BinaryIO):
        self.f, self.n = f, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        return data


def _npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, header bytes) of the ``.npy`` header at ``f``; no
    data is read (numpy's header reader refuses headers over 10 kB)."""
    fmt = np.lib.format
    counted = _Counted(f)
    try:
        version = fmt.read_magic(counted)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(counted)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(counted)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"{where}: corrupt or unreadable .npy ({exc})") from exc
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), counted.n


def _check_claim(
    where: str, shape: tuple[int, ...], dtype: np.dtype, binary: bool
) -> tuple[int, int, int]:
    """What a ``.npy`` header claims must be images: their (N, H, W) (nothing read yet)."""
    if dtype.hasobject:
        raise DataError(
            f"{where}: corrupt or unreadable .npy (it holds Python objects, which would need "
            "unpickling; refused)"
        )
    if dtype not in (np.uint8, np.bool_):
        expected = "binarized MNIST must be uint8 0/1" if binary else "expected uint8 pixel values"
        raise DataError(f"{where}: dtype {dtype}; {expected}")
    if binary and len(shape) == 2 and shape[1] == _BINARY_SIDE * _BINARY_SIDE:
        n, h, w = shape[0], _BINARY_SIDE, _BINARY_SIDE
    elif binary and len(shape) != 3:
        raise DataError(f"{where}: shape {shape}; expected (N, 28, 28) or (N, 784)")
    elif not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)):
        raise DataError(f"{where}: shape {shape}; expected (N, H, W) or (N, H, W, 3)")
    else:
        n, h, w = shape[:3]
    if n * h * w == 0:
        raise DataError(f"{where}: holds no pixels (shape {shape})")
    return n, h, w


def _read_array(
    f: BinaryIO, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, where: str
) -> np.ndarray:
    """The data after a ``.npy`` header (one byte per element), read in bounded pieces."""
    out = np.empty(math.prod(shape), dtype)  # pages are taken only as they are read
    got = _read_into(f, out)
    if got < out.size:
        raise DataError(
            f"{where}: corrupt or unreadable .npy (truncated: {got:,} of the {out.size:,} "
            "bytes of data its header claims)"
        )
    return out.reshape(shape, order="F" if fortran else "C")


def _binary_images(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype not in (np.uint8, np.bool_):
        raise DataError(f"{where}: dtype {arr.dtype}; binarized MNIST must be uint8 0/1")
    if arr.ndim == 2 and arr.shape[1] == _BINARY_SIDE * _BINARY_SIDE:
        arr = arr.reshape(-1, _BINARY_SIDE, _BINARY_SIDE)
    elif arr.ndim != 3:
        raise DataError(f"{where}: shape {arr.shape}; expected (N, 28, 28) or (N, 784)")
    arr = _images(arr, where)
    top = int(arr.max())
    if top > 1:
        raise DataError(
            f"{where}: binary data holds value {top}; only 0 and 1 are allowed "
            "(store grey images under x_train/x_valid/x_test instead)"
        )
    return arr


def _read_npy(p: Path, limits: _Limits) -> np.ndarray:
    where = str(p)
    with open(p, "rb") as f:
        shape, fortran, dtype, header_bytes = _npy_header(f, where)
        n, h, w = _check_claim(where, shape, dtype, False)
        held = os.fstat(f.fileno()).st_size - header_bytes
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > held:
            raise DataError(
                f"{where}: corrupt or unreadable .npy (truncated: its header claims {shape} "
                f"{dtype}, {nbytes:,} bytes of data; the file holds {held:,})"
            )
        limits.check(where, n, h, w)
        arr = _read_array(f, shape, fortran, dtype, where)
    return _images(arr, where)


# --------------------------------------------------------------------------------------
# CIFAR-10 python batches (pickles)


def _latin1_encode(text: object, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild a bytes object."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild b""."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain containers, strings and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (only numpy arrays are allowed)"
            ) from None


def _read_cifar_batch(p: Path, limits: _Limits) -> np.ndarray:
    """One CIFAR-10 batch: dict with b"data" uint8 (N, 3072) rows, CHW -> (N, 32, 32, 3).

    A pickle holds its pixels uncompressed, so the file's size bounds what it can hold: a
    file larger than the limits allow is refused before it is unpickled."""
    limits.check(p, os.path.getsize(p) // (3 * 32 * 32), 32, 32, count=False)
    try:
        with open(p, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except OSError:
        raise
    except Exception as exc:  # any failure on untrusted pickle bytes means a bad file
        raise DataError(
            f"{p}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})"
        ) from exc
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray):
        raise DataError(f"{p}: not a CIFAR-10 batch (expected a dict with a b'data' array)")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{p}: CIFAR-10 b'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)"
        )
    if data.shape[0] == 0:
        raise DataError(f"{p}: CIFAR-10 batch holds no images")
    limits.check(p, data.shape[0], 32, 32)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _has_cifar_batches(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in (*_CIFAR_TRAIN, _CIFAR_TEST))


def _read_cifar_folder(folder: Path, split: str, limits: _Limits) -> np.ndarray:
    names = {"train": _CIFAR_TRAIN, "test": (_CIFAR_TEST,)}
    available = [s for s in SPLITS if s in names and any((folder / n).is_file() for n in names[s])]
    _check_available(folder, split, available)
    files = [folder / n for n in names[split]]
    for f in files:
        if not f.is_file():
            raise DataError(
                f"{f}: missing; the CIFAR-10 {split} split needs {', '.join(names[split])}"
            )
    batches = [_read_cifar_batch(f, limits) for f in files]
    out = np.empty((sum(len(b) for b in batches), 32, 32, 3), np.uint8)
    start = 0
    for b in batches:
        out[start : start + len(b)] = b
        start += len(b)
    return out


# --------------------------------------------------------------------------------------
# images: PNG, TIFF, PPM/PGM, JPEG-XL, JPEG

#: How a folder's image files are named (each is then read as what its content is).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".jxl", ".jpg", ".jpeg")

_PNG_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    struct.error,
)
#: What Pillow's TIFF and JPEG plugins raise on damaged files (parsing IFDs and markers).
_PIL_ERRORS = (*_PNG_ERRORS, KeyError, IndexError, TypeError, ZeroDivisionError)


def _image_format(head: bytes) -> str | None:
    """``"png"``, ``"tiff"``, ``"jpeg"``, ``"jxl"`` or ``"pnm"`` from a file's first
    `_HEAD_BYTES` bytes; None for anything else."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith((_JXL_CODESTREAM, _JXL_CONTAINER)):
        return "jxl"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567Ff" and head[2:3].isspace():
        return "pnm"  # P5/P6 are read; the reader names the others and refuses them
    return None


def image_files(folder: str | Path) -> list[Path]:
    """The image files `load_images` and `load_image_runs` read from ``folder``, in the
    order they read them (by name): its regular files named with `IMAGE_SUFFIXES` (any
    case); none when it is an MNIST or CIFAR-10 folder, which are read as such.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("b.TIF", "a.jxl", "notes.txt"):
        ...         _ = Path(d, name).write_bytes(b"")
        ...     names = [f.name for f in image_files(d)]
        >>> names
        ['a.jxl', 'b.TIF']
    """
    p = Path(folder)
    if any(_find_mnist_file(p, x) for x in _MNIST_PREFIX.values()):
        return []
    if _has_cifar_batches(p) or _has_cifar_batches(p / _CIFAR_SUBFOLDER):
        return []
    files = (f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    return sorted(files, key=lambda f: f.name)


def read_image(
    f: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, str]:
    """One image file — PNG, TIFF, PPM/PGM, JPEG-XL or JPEG, told apart by content —
    losslessly, as (H, W) or (H, W, 3) uint8 and its kind (binary/grey/rgb).

    The rules are those of the module docstring (and `read_png`): grey and RGB stay as
    they are, alpha must be fully opaque, 16-bit samples must hold 8-bit values, one image
    per file. An image of more than ``max_pixels`` pixels (H × W, from the file's header
    before anything is decoded; ``None``: no limit) is a `SizeLimitError`.

    Raises:
        DataError: a missing, unreadable or damaged file, or one that cannot be coded
            exactly; one line naming the file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "x.pgm").write_bytes(b"P5 3 2 255\\n" + bytes(range(6)))
        ...     pixels, kind = read_image(Path(d, "x.pgm"))
        >>> pixels.tolist(), kind
        ([[0, 1, 2], [3, 4, 5]], 'grey')
    """
    p = Path(f)
    try:
        return _read_image(p, _Limits(max_pixels))
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc


def _read_image(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    with open(f, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    fmt = _image_format(head)
    if fmt is None:
        raise DataError(f"{f}: not an image bbcodec reads (PNG, TIFF, PPM/PGM, JPEG-XL or JPEG)")
    return _READERS[fmt](f, limits)


def lossy_files(path: str | Path) -> list[tuple[Path, str]]:
    """The image files an input names (itself, or a folder's `image_files`) whose pixels
    were already lossily compressed, each with what it is: ``"a JPEG"``, ``"a
    JPEG-compressed TIFF"``, ``"a lossy (XYB) JPEG-XL"`` or ``"a JPEG-XL recompressed from
    a JPEG"``. Read from headers only; a file that cannot be read is skipped (reading its
    pixels reports what is wrong)."""
    p = Path(path)
    try:
        files = image_files(p) if p.is_dir() else [p] if p.is_file() else []
    except OSError:
        return []
    found = []
    for f in files:
        what = _lossy(f)
        if what:
            found.append((f, what))
    return found


def _lossy(f: Path) -> str | None:
    try:
        with open(f, "rb") as fh:
            fmt = _image_format(fh.read(_HEAD_BYTES))
        if fmt == "jpeg":
            return "a JPEG"
        if fmt == "tiff":
            return "a JPEG-compressed TIFF" if _tiff_tags(f)[0].get(259) in _TIFF_JPEG else None
        if fmt == "jxl":
            header = _jxl_header(f)
            if header.from_jpeg:
                return "a JPEG-XL recompressed from a JPEG"
            return "a lossy (XYB) JPEG-XL" if header.xyb_encoded else None
    except (DataError, *_PIL_ERRORS, UserWarning):
        return None
    return None


def _image_runs(files: list[Path], limits: _Limits) -> list[np.ndarray]:
    """Image files as runs of consecutive same-size images, each (n, H, W[, 3]); one kind."""
    runs: list[list[np.ndarray]] = []
    first_kind = ""
    for f in files:
        pixels, kind = _read_image(f, limits)
        if not first_kind:
            first_kind = kind
        elif kind != first_kind:
            raise DataError(
                f"{f}: {kind} image, but {files[0].name} is {first_kind}; "
                "all images must be of one kind"
            )
        if runs and runs[-1][0].shape == pixels.shape:
            runs[-1].append(pixels)
        else:
            runs.append([pixels])
    return [np.stack(run) for run in runs]


def _read_image_stack(files: list[Path], limits: _Limits) -> np.ndarray:
    """Image files (all the same size and kind) as one array, in the given order."""
    runs = _image_runs(files, limits)
    if len(runs) > 1:
        bad = files[len(runs[0])]
        raise DataError(
            f"{bad}: size {runs[1].shape[2]}x{runs[1].shape[1]} differs from {files[0].name} "
            f"({runs[0].shape[2]}x{runs[0].shape[1]}); all images must be the same size"
        )
    return runs[0]


def load_image_runs(
    path: str | Path, split: str = "test", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[np.ndarray]:
    """Like `load_images` (``max_pixels`` too), but a folder's images may differ in size:
    runs of consecutive same-size images, each (n, H, W[, 3]) uint8, in file-name order."""
    if not isinstance(split, str) or split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    limits = _Limits(max_pixels)
    p = Path(path)
    if p.is_dir():
        try:
            files = image_files(p)
            if files:
                return _image_runs(files, limits)
        except OSError as exc:
            raise DataError(f"{p}: cannot read: {exc}") from exc
    return [_load_images(p, split, limits)]


# ----- pixels, whatever the format -----------------------------------------------------------


def _pil_pixels(f: Path, img: Image.Image, what: str) -> tuple[np.ndarray, str]:
    """Decode one opened 8-bit (or 1-bit) Pillow image losslessly to (H, W) or (H, W, 3)
    uint8 and its kind. ``what`` names the format in messages ("PNG", "TIFF", "JPEG")."""
    mode = img.mode
    if mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
        raise DataError(f"{f}: {_mode_problem(mode, what)}")
    if mode in ("LA", "PA", "RGBA") or "transparency" in img.info:
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        _check_opaque(f, alpha, 255)
    if mode == "1":  # 1-bit: values 0 / 1, so the data reads as binary
        return np.asarray(img).astype(np.uint8), "binary"
    if mode == "L":
        return np.asarray(img), "grey"
    if mode == "LA":
        return np.asarray(img)[..., 0], "grey"
    if mode == "RGB":
        return np.asarray(img), "rgb"
    if mode == "RGBA":
        return np.asarray(img)[..., :3], "rgb"
    # palette: a grey palette gives grey pixels, any colour in it gives RGB
    rgb = np.asarray(img.convert("RGB"))
    palette = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)
    if (palette == palette[:, :1]).all():
        return rgb[..., 0], "grey"
    return rgb, "rgb"


def _mode_problem(mode: str, what: str) -> str:
    if mode == "CMYK":
        return f"a CMYK {what}; bbcodec codes grey and RGB images (convert it to RGB first)"
    if mode == "F":
        return f"{what} of floating-point samples; bbcodec codes 8-bit images"
    return f"unsupported {what} mode {mode}"


def _check_opaque(f: Path, alpha: np.ndarray, opaque: int) -> None:
    clear = int(np.count_nonzero(alpha != opaque))
    if clear:
        raise DataError(
            f"{f}: {clear} of {alpha.size} pixels are not fully opaque; alpha cannot be coded, "
            "only opaque images are supported"
        )


def _array_pixels(f: Path, arr: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """A decoder's (H, W) or (H, W, C) array (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA;
    uint8, or uint16 holding 8-bit values × 257) as 8-bit pixels and their kind."""
    if arr.dtype.kind == "f":
        raise DataError(f"{f}: {what} of floating-point samples; bbcodec codes 8-bit images")
    if not (arr.ndim == 2 or (arr.ndim == 3 and 1 <= arr.shape[2] <= 4)):
        raise DataError(f"{f}: {what} decoded to shape {arr.shape}; expected a grey or RGB image")
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{f}: {what} of {arr.dtype} samples; bbcodec codes 8-bit images")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    top = np.iinfo(arr.dtype).max
    if channels in (2, 4):
        _check_opaque(f, arr[..., -1], top)
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint16:
        flat = arr.reshape(-1)
        inexact = np.flatnonzero(flat % 257)
        if inexact.size:
            raise DataError(
                f"{f}: 16-bit {what} with {inexact.size} samples that are not 8-bit values "
                f"(e.g. {int(flat[inexact[0]])}); bbcodec codes 8-bit images, and this one "
                "would lose precision (convert it to 8-bit first if that is acceptable)"
            )
        arr = (arr // 257).astype(np.uint8)
    return np.ascontiguousarray(arr), ("rgb" if arr.ndim == 3 else "grey")


# ----- PNG -------------------------------------------------------------------------------


def _png_header(f: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk, which must come first."""
    with open(f, "rb") as fh:
        head = fh.read(26)
    if not head.startswith(_PNG_MAGIC):
        raise DataError(f"{f}: not a PNG file")
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise DataError(f"{f}: corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[24], head[25]


def read_png(f: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """One PNG, losslessly, as (H, W) or (H, W, 3) uint8 and its kind (binary/grey/rgb).

    Palette images become grey or RGB; 16-bit images whose values are all 8-bit values
    ×257 become 8-bit; an alpha channel must be fully opaque; animated PNGs are refused.
    Anything else that cannot be coded exactly is a `DataError` naming the problem. An
    image of more than ``max_pixels`` pixels (H × W, read from the IHDR header before
    anything is decoded; ``None``: no limit) is a `SizeLimitError`. (`read_image` reads
    the other formats too.)
    """
    return _read_png(Path(f), _Limits(max_pixels))


def _read_png(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    width, height, depth, _ = _png_header(f)
    limits.check(f, 1, height, width)
    try:
        # The size was checked above: Pillow's own guard must not print its warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if depth == 16:
                return _png16_pixels(f)
            with Image.open(f) as img:
                _check_png_frames(f, img)
                return _pil_pixels(f, img, "PNG")
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise SizeLimitError(
            f"{f}: Pillow refuses a {width}×{height} image ({width * height:,} pixels) as a "
            f"possible decompression bomb: {exc}"
        ) from None
    except _PNG_ERRORS as exc:
        raise DataError(f"{f}: corrupt or unreadable PNG ({exc})") from exc


def _check_png_frames(f: Path, img: Image.Image) -> None:
    if getattr(img, "n_frames", 1) > 1:
        raise DataError(f"{f}: animated PNG with {img.n_frames} frames; expected one image")


def _png16_pixels(f: Path) -> tuple[np.ndarray, str]:
    """A 16-bit PNG whose samples are exactly 257·v (8-bit values widened) → 8-bit."""
    import imagecodecs

    with Image.open(f) as img:
        _check_png_frames(f, img)
    try:
        wide = np.asarray(imagecodecs.png_decode(f.read_bytes()))
    except imagecodecs.PngError as exc:
        raise DataError(f"{f}: corrupt or unreadable PNG ({exc})") from exc
    return _array_pixels(f, wide, "PNG")


# ----- TIFF ------------------------------------------------------------------------------

#: TIFF compression codes whose data is JPEG (old-style 6, new-style 7): already lossy.
_TIFF_JPEG = (6, 7)


def _tag_tuple(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _tiff_tags(f: Path) -> tuple[dict[int, object], bool]:
    """The tags of a TIFF's first IFD, by number (read by Pillow's
    ``ImageFileDirectory_v2``, classic or BigTIFF; nothing decoded), and whether another
    IFD (page) follows it. Pillow's warnings about a damaged IFD are errors here."""
    from PIL import TiffImagePlugin

    with open(f, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("error")
        prefix = fh.read(8)
        if prefix[:4] in _TIFF_MAGICS[2:]:  # BigTIFF: a 16-byte header
            prefix += fh.read(8)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix)
        fh.seek(ifd.next)
        try:
            ifd.load(fh)
            tags = dict(ifd)  # the values are parsed (and warned about) when first read
        except UserWarning as exc:
            raise DataError(f"{f}: corrupt TIFF (its first IFD: {str(exc).strip()})") from None
    return tags, ifd.next != 0


#: TIFF photometric interpretations: the colour channels of each that is read.
_TIFF_COLOURS = {0: 1, 1: 1, 2: 3, 3: 1, 6: 3}
_TIFF_PHOTOMETRIC = {4: "transparency mask", 5: "CMYK", 8: "CIELab", 9: "ICCLab", 10: "ITULab"}


def _read_tiff(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    """One TIFF; more pages are refused. Its first IFD is read and checked — size
    against the limits, and a layout bbcodec can code exactly — before anything is
    decoded; libtiff (``imagecodecs``) then decodes the samples as stored (it reports a
    damaged file as an error, printing nothing), and they are read as Pillow would show
    them: min-is-white inverted, a palette looked up (its 16-bit entries >> 8, as Pillow
    and libtiff do), 2- and 4-bit grey scaled to 8 bits (as Pillow reads such PNGs)."""
    import imagecodecs

    try:
        tags, more_pages = _tiff_tags(f)
        height, width = tags.get(257), tags.get(256)
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 < width):
            raise DataError(f"{f}: corrupt TIFF (image width {width}, length {height})")
        limits.check(f, 1, height, width)
        if more_pages:
            raise DataError(f"{f}: a TIFF of several pages (images); expected one image")
        photometric, bits, samples = _tiff_layout(f, tags)
        arr = np.asarray(imagecodecs.tiff_decode(f.read_bytes(), index=0))
    except DataError:
        raise
    except (*_PIL_ERRORS, RuntimeError) as exc:  # imagecodecs.TiffError is a RuntimeError
        raise DataError(f"{f}: corrupt or unreadable TIFF ({str(exc).strip()})") from exc
    if samples > 1 and arr.shape == (samples, height, width) and tags.get(284) == 2:
        arr = arr.transpose(1, 2, 0)  # planar configuration 2: one plane per sample
    expected = (height, width) if samples == 1 else (height, width, samples)
    if arr.shape != expected:
        raise DataError(f"{f}: TIFF decoded to shape {arr.shape}; its IFD says {expected}")
    if bits == 1:
        pixels = arr.astype(np.uint8)
        return (1 - pixels if photometric == 0 else pixels), "binary"
    if photometric == 3:
        return _tiff_palette(f, tags, arr, bits)
    if photometric == 0:  # min-is-white
        arr = arr.dtype.type(2**bits - 1) - arr
    if bits in (2, 4):
        arr = arr * np.uint8(255 // (2**bits - 1))
    return _array_pixels(f, arr, "TIFF")


def _tiff_layout(f: Path, tags) -> tuple[int, int, int]:
    """(photometric interpretation, bits per sample, samples per pixel) of a TIFF that
    can be coded exactly; anything else is refused, naming what it is."""
    formats = set(_tag_tuple(tags.get(339, 1)))
    if formats != {1}:
        kind = {2: "signed integer", 3: "floating-point"}.get(max(formats), "unusual")
        raise DataError(f"{f}: TIFF of {kind} samples; bbcodec codes 8-bit images")
    photometric = tags.get(262, 1)
    if photometric not in _TIFF_COLOURS:
        what = _TIFF_PHOTOMETRIC.get(photometric, f"photometric interpretation {photometric}")
        extra = " (convert it to RGB first)" if photometric == 5 else ""
        raise DataError(f"{f}: a {what} TIFF; bbcodec codes grey and RGB images{extra}")
    if photometric == 6 and tags.get(259) not in _TIFF_JPEG:
        raise DataError(f"{f}: a YCbCr TIFF not compressed with JPEG; convert it to RGB first")
    depths = set(_tag_tuple(tags.get(258, 1)))
    bits = max(depths)
    allowed = {0: (1, 2, 4, 8, 16), 1: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 6: (8,)}
    if len(depths) > 1 or bits not in allowed[photometric]:
        depth = "/".join(str(b) for b in sorted(depths))
        raise DataError(
            f"{f}: TIFF of {depth} bits per sample; bbcodec reads 8-bit samples (also 1-bit "
            "bilevel, low-depth grey and palette images), or 16-bit ones holding 8-bit values"
        )
    samples, colours = tags.get(277, 1), _TIFF_COLOURS[photometric]
    extra = _tag_tuple(tags.get(338, ()))
    alpha = samples == colours + 1 and extra in ((1,), (2,)) and bits >= 8 and photometric < 3
    if samples != colours and not alpha:
        raise DataError(
            f"{f}: TIFF with {samples} samples per pixel for {colours} colour channel(s): "
            "extra channels other than one alpha channel cannot be coded"
        )
    return photometric, bits, samples


def _tiff_palette(f: Path, tags, index: np.ndarray, bits: int) -> tuple[np.ndarray, str]:
    """Palette indices looked up: grey pixels if every entry is grey, else RGB (as PNG)."""
    colormap = np.asarray(tags.get(320, ()), np.uint16)
    if colormap.size != 3 << bits:
        raise DataError(
            f"{f}: corrupt TIFF (a colour map of {colormap.size} values for {bits}-bit indices)"
        )
    palette = np.ascontiguousarray((colormap.reshape(3, -1) >> 8).T.astype(np.uint8))
    rgb = palette[index]
    if (palette == palette[:, :1]).all():
        return np.ascontiguousarray(rgb[..., 0]), "grey"
    return rgb, "rgb"


# ----- PPM / PGM -------------------------------------------------------------------------

_PNM_OTHERS = {
    b"P1": "an ASCII PBM bitmap",
    b"P2": "an ASCII PGM",
    b"P3": "an ASCII PPM",
    b"P4": "a PBM bitmap",
    b"P7": "a PAM",
    b"PF": "a floating-point PFM",
    b"Pf": "a floating-point PFM",
}
#: The most header bytes (magic, sizes, maxval, comments) a PPM/PGM may have.
_PNM_HEADER_MAX = 1 << 16


def _pnm_header(f: Path, head: bytes) -> tuple[int, int, int, int, int]:
    """(channels, width, height, maxval, header bytes) of a binary PGM (P5) or PPM (P6):
    the magic, three decimal numbers separated by whitespace and ``#`` comments, then
    exactly one whitespace byte before the pixels."""
    magic = head[:2]
    if magic not in (b"P5", b"P6"):
        what = _PNM_OTHERS.get(magic, "a PNM variant")
        raise DataError(
            f"{f}: {what} ({magic.decode('latin1')}); bbcodec reads binary PGM (P5) and PPM "
            "(P6) files: convert it to one of those, or to PNG"
        )
    what = "PGM" if magic == b"P5" else "PPM"
    pos, numbers = 2, []
    while len(numbers) < 3:
        while pos < len(head) and (head[pos : pos + 1].isspace() or head[pos] == ord("#")):
            if head[pos] == ord("#"):  # a comment runs to the end of the line
                ends = [i for i in (head.find(b"\n", pos), head.find(b"\r", pos)) if i >= 0]
                pos = min(ends) if ends else len(head)
            pos += 1
        start = pos
        while pos < len(head) and head[pos : pos + 1].isdigit() and pos - start < 10:
            pos += 1
        if pos == start or head[pos : pos + 1].isdigit():
            where = "its header ends" if pos >= len(head) else f"byte {pos}"
            raise DataError(f"{f}: corrupt {what} header (no valid number at {where})")
        numbers.append(int(head[start:pos]))
    if not head[pos : pos + 1].isspace():
        raise DataError(f"{f}: corrupt {what} header (no whitespace after the maxval)")
    width, height, maxval = numbers
    if width == 0 or height == 0:
        raise DataError(f"{f}: a {width}×{height} {what} holds no pixels")
    if not 0 < maxval < 65536:
        raise DataError(f"{f}: corrupt {what} header (maxval {maxval}, expected 1..65535)")
    return (1 if magic == b"P5" else 3), width, height, maxval, pos + 1


def _read_pnm(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    """A binary PGM (P5) or PPM (P6) of maxval 255 (or 65535, holding 8-bit values). The
    header is checked against the file's size and the limits before any pixel is read."""
    with open(f, "rb") as fh:
        channels, width, height, maxval, start = _pnm_header(f, fh.read(_PNM_HEADER_MAX))
        what = "PGM" if channels == 1 else "PPM"
        if maxval not in (255, 65535):
            raise DataError(
                f"{f}: {what} of maxval {maxval}; bbcodec reads 8-bit samples (maxval 255), "
                "or 16-bit ones (maxval 65535) that hold 8-bit values"
            )
        dtype = np.dtype(np.uint8 if maxval == 255 else ">u2")
        claimed = height * width * channels * dtype.itemsize
        held = os.fstat(fh.fileno()).st_size - start
        if held < claimed:
            raise DataError(
                f"{f}: truncated {what}: its header says {width}×{height}, {claimed:,} bytes of "
                f"pixels; the file holds {held:,}"
            )
        if held > claimed:
            raise DataError(
                f"{f}: {held - claimed:,} unexpected bytes after the {width}×{height} {what} "
                "(one image per file)"
            )
        limits.check(f, 1, height, width)
        fh.seek(start)
        arr = np.empty((height, width, channels), dtype)  # pages are taken only as they are read
        if _read_into(fh, arr) < claimed:
            raise DataError(f"{f}: truncated {what} (the file shrank while it was read)")
    return _array_pixels(f, arr.astype(np.uint16) if maxval == 65535 else arr, what)


# ----- JPEG-XL ----------------------------------------------------------------------------


class _JxlHeader(NamedTuple):
    width: int
    height: int
    animated: bool
    #: Whether the pixels are coded in XYB (lossy: a lossless JPEG-XL never is); None when
    #: the header is too unusual to read that far.
    xyb_encoded: bool | None
    #: Whether the container holds JPEG reconstruction data (a recompressed JPEG).
    from_jpeg: bool


class _Bits:
    """JPEG XL's bit reader: least significant bit first; U32 fields as (offset, bits)."""

    def __init__(self, data: bytes):
        self.value, self.size, self.pos = int.from_bytes(data, "little"), 8 * len(data), 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise EOFError("header truncated")
        self.pos += n
        return (self.value >> (self.pos - n)) & ((1 << n) - 1)

    def u32(self, *choices: tuple[int, int]) -> int:
        offset, n = choices[self.u(2)]
        return offset + self.u(n)


_JXL_SIZE = ((1, 9), (1, 13), (1, 18), (1, 30))
_JXL_PREVIEW_DIV8 = ((16, 0), (32, 0), (1, 5), (33, 9))
_JXL_PREVIEW = ((1, 6), (65, 8), (321, 10), (1345, 12))
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
_JXL_ENUM = ((0, 0), (1, 0), (2, 4), (18, 6))
#: Bytes of codestream read for the header (more than any header but an unusual one needs).
_JXL_HEADER_BYTES = 4096
_JXL_ALPHA, _JXL_SPOT, _JXL_CFA = 0, 2, 5  # extra channel types with extra fields


def _jxl_dims(bits: _Bits, small: bool, choices, scale: int = 1) -> tuple[int, int]:
    """(width, height) of a SizeHeader (``small``: in multiples of 8) or PreviewHeader."""
    height = (bits.u(5) + 1) * 8 if small else bits.u32(*choices) * scale
    ratio = bits.u(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        return height * num // den, height
    return ((bits.u(5) + 1) * 8 if small else bits.u32(*choices) * scale), height


def _jxl_bit_depth(bits: _Bits) -> None:
    if bits.u(1):  # floating-point samples: mantissa bits, then exponent bits
        bits.u32((32, 0), (16, 0), (24, 0), (1, 6))
        bits.u(4)
    else:
        bits.u32((8, 0), (10, 0), (12, 0), (1, 6))


def _jxl_header(f: Path) -> _JxlHeader:
    """The facts of a JPEG-XL's codestream header (ISO/IEC 18181-1: SizeHeader, then
    ImageMetadata up to ``xyb_encoded``), read without decoding anything."""
    codestream, from_jpeg = _jxl_codestream_start(f)
    if not codestream.startswith(_JXL_CODESTREAM):
        raise DataError(f"{f}: corrupt JPEG-XL (no codestream signature)")
    bits = _Bits(codestream[2:])
    try:
        small = bool(bits.u(1))
        width, height = _jxl_dims(bits, small, _JXL_SIZE)
        if bits.u(1):  # all_default: no animation; XYB
            return _JxlHeader(width, height, False, True, from_jpeg)
        animated = False
        if bits.u(1):  # extra_fields
            bits.u(3)  # orientation (a transposed image holds as many pixels)
            if bits.u(1):  # intrinsic size
                _jxl_dims(bits, bool(bits.u(1)), _JXL_SIZE)
            if bits.u(1):  # preview
                div8 = bool(bits.u(1))
                _jxl_dims(
                    bits, False, _JXL_PREVIEW_DIV8 if div8 else _JXL_PREVIEW, 8 if div8 else 1
                )
            animated = bool(bits.u(1))
        if animated:
            return _JxlHeader(width, height, True, None, from_jpeg)
    except EOFError as exc:
        raise DataError(f"{f}: corrupt JPEG-XL ({exc})") from exc
    try:
        _jxl_bit_depth(bits)
        bits.u(1)  # modular_16bit_buffers
        for _ in range(bits.u32((0, 0), (1, 0), (2, 4), (1, 12))):  # extra channels
            if bits.u(1):  # all default: an alpha channel
                continue
            kind = bits.u32(*_JXL_ENUM)
            _jxl_bit_depth(bits)
            bits.u32((0, 0), (3, 0), (4, 0), (1, 3))  # dim_shift
            bits.u(8 * bits.u32((0, 0), (0, 4), (16, 5), (48, 10)))  # the name
            if kind == _JXL_ALPHA:
                bits.u(1)
            elif kind == _JXL_SPOT:
                bits.u(64)
            elif kind == _JXL_CFA:
                bits.u32((1, 0), (0, 2), (3, 4), (19, 8))
        xyb: bool | None = bool(bits.u(1))
    except EOFError:
        xyb = None  # only the lossy notice needs it: a bound on the header bytes is no error
    return _JxlHeader(width, height, False, xyb, from_jpeg)


def _jxl_codestream_start(f: Path) -> tuple[bytes, bool]:
    """The first `_JXL_HEADER_BYTES` bytes of a JPEG-XL's codestream — the file itself, or
    the ``jxlc`` box or ``jxlp`` boxes of its ISOBMFF container (other boxes are skipped,
    not read) — and whether the container holds a ``jbrd`` box (JPEG reconstruction)."""
    with open(f, "rb") as fh:
        if fh.read(len(_JXL_CONTAINER)) != _JXL_CONTAINER:
            fh.seek(0)
            return fh.read(_JXL_HEADER_BYTES), False
        size = os.fstat(fh.fileno()).st_size
        pos, parts, got, from_jpeg = len(_JXL_CONTAINER), [], 0, False
        while pos < size and got < _JXL_HEADER_BYTES:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                raise DataError(f"{f}: corrupt JPEG-XL container (a box header is truncated)")
            length, kind = struct.unpack(">I4s", head)
            header = 8
            if length == 1:
                large = fh.read(8)
                if len(large) < 8:
                    raise DataError(f"{f}: corrupt JPEG-XL container (a box header is truncated)")
                (length,), header = struct.unpack(">Q", large), 16
            end = size if length == 0 else pos + length
            if length != 0 and length < header:
                raise DataError(f"{f}: corrupt JPEG-XL container (a box of {length} bytes)")
            if kind == b"jbrd":
                from_jpeg = True
            elif kind in (b"jxlc", b"jxlp"):
                if kind == b"jxlp":
                    fh.read(4)  # the part's index
                want = min(_JXL_HEADER_BYTES - got, max(0, end - fh.tell()))
                part = fh.read(want)
                parts.append(part)
                got += len(part)
                if kind == b"jxlc":
                    break
            pos = end
    if not parts:
        raise DataError(f"{f}: corrupt JPEG-XL container (no codestream box)")
    return b"".join(parts), from_jpeg


def _read_jxl(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    """A JPEG-XL, decoded by libjxl (``imagecodecs``) after its header's size was checked
    against the limits; animations are refused from the header."""
    import imagecodecs

    header = _jxl_header(f)
    limits.check(f, 1, header.height, header.width)
    if header.animated:
        raise DataError(f"{f}: animated JPEG-XL; expected one image")
    try:
        arr = np.asarray(imagecodecs.jpegxl_decode(f.read_bytes()))
    except RuntimeError as exc:  # imagecodecs.JpegxlError, and plain ones it raises too
        raise DataError(f"{f}: corrupt or unreadable JPEG-XL ({exc})") from exc
    if arr.ndim < 2 or arr.shape[0] * arr.shape[1] != header.width * header.height:
        raise DataError(
            f"{f}: JPEG-XL decoded to shape {arr.shape}, not the {header.width}×{header.height} "
            "image its header claims"
        )
    return _array_pixels(f, arr, "JPEG-XL")


# ----- JPEG ------------------------------------------------------------------------------


def _read_jpeg(f: Path, limits: _Limits) -> tuple[np.ndarray, str]:
    """A JPEG's primary image as Pillow (libjpeg) decodes it; its frame header is parsed
    and the size checked first. The pixels were already lossily compressed: they are read
    exactly as decoded (`lossy_files` names such inputs)."""
    from PIL import JpegImagePlugin

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # The plugin class, not Image.open: no bomb check before ours, and the primary
            # image only (Image.open would make a camera's JPEG with previews an MPO).
            with JpegImagePlugin.JpegImageFile(f) as img:
                limits.check(f, 1, img.height, img.width)
                return _pil_pixels(f, img, "JPEG")
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise SizeLimitError(
            f"{f}: Pillow refuses the image as a possible decompression bomb: {exc}"
        ) from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{f}: corrupt or unreadable JPEG ({exc})") from exc


_READERS = {
    "png": _read_png,
    "tiff": _read_tiff,
    "pnm": _read_pnm,
    "jxl": _read_jxl,
    "jpeg": _read_jpeg,
}
