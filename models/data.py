"""Readers for the image datasets bbcodec compresses (numpy and Pillow only, no torch).

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
PNG images                              a folder of ``*.png`` files, or one PNG file
``.npy`` arrays                         one ``.npy`` file
======================================  ==============================================

Files are recognised by their content (magic bytes), not by their extension.

Result: ``(N, H, W)`` for grey and binary data, ``(N, H, W, 3)`` for RGB, always uint8,
C-contiguous, writeable, and with N, H, W > 0.

Splits: sources that hold several splits (an MNIST folder, a CIFAR batches folder, an
``.npz``) pick one with ``split``; asking for a split they lack raises `DataError` naming
the splits they have. Sources that hold a single set of images (one IDX file, one CIFAR
batch file, a PNG folder or file, an ``.npy``) *ignore* ``split``: the file is the split,
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
sizes from the file's header — PNG IHDR, ``.npy`` header (also inside an ``.npz``), IDX
header, a CIFAR batch's file size — and refuses, with `SizeLimitError`, an image of more
than ``max_pixels`` pixels (H × W) or a dataset of more than
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
from typing import BinaryIO

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
    "SPLITS",
    "DataError",
    "SizeLimitError",
    "dataset_kind",
    "load_image_runs",
    "load_images",
    "npz_keys",
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
            (one IDX, CIFAR batch, PNG or ``.npy`` file; a PNG folder).
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
_IDX_IMAGES = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS = 2049  # 0x00000801: unsigned bytes, 1 dimension

_MNIST_PREFIX = {"train": "train-images", "test": "t10k-images"}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBFOLDER = "cifar-10-batches-py"


def _load_file(p: Path, split: str, limits: _Limits) -> np.ndarray:
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(_GZIP_MAGIC) or _looks_like_idx(head):
        return _read_idx(p, limits)
    if head.startswith(_ZIP_MAGIC):
        return _read_npz(p, split, limits)
    if head.startswith(_NPY_MAGIC):
        return _read_npy(p, limits)
    if head.startswith(_PNG_MAGIC):
        return _read_pngs([p], limits)
    if head.startswith(_PICKLE_PROTO):
        return _images(_read_cifar_batch(p, limits), str(p))
    raise DataError(
        f"{p}: unknown format (not MNIST IDX, .npz, .npy, PNG or a CIFAR-10 python batch)"
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

    pngs = sorted(
        (f for f in p.iterdir() if f.suffix.lower() == ".png" and f.is_file()),
        key=lambda f: f.name,
    )
    if pngs:
        return _read_pngs(pngs, limits)
    raise DataError(
        f"{p}: folder holds no MNIST IDX image files, CIFAR-10 python batches or PNG files"
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
# PNG

_PNG_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    struct.error,
)


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


def _png_pixels(f: Path, img: Image.Image) -> tuple[np.ndarray, str]:
    """Decode one opened PNG losslessly to (H, W) or (H, W, 3) uint8 and its kind."""
    mode = img.mode
    if mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        raise DataError(f"{f}: unsupported PNG mode {mode}")
    if getattr(img, "n_frames", 1) > 1:
        raise DataError(f"{f}: animated PNG with {img.n_frames} frames; expected one image")
    if mode in ("LA", "RGBA") or "transparency" in img.info:
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        clear = int(np.count_nonzero(alpha != 255))
        if clear:
            raise DataError(
                f"{f}: {clear} of {alpha.size} pixels are not fully opaque; alpha cannot be coded, "
                "only opaque images are supported"
            )
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


def read_png(f: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """One PNG, losslessly, as (H, W) or (H, W, 3) uint8 and its kind (binary/grey/rgb).

    Palette images become grey or RGB; 16-bit images whose values are all 8-bit values
    ×257 become 8-bit; an alpha channel must be fully opaque; animated PNGs are refused.
    Anything else that cannot be coded exactly is a `DataError` naming the problem. An
    image of more than ``max_pixels`` pixels (H × W, read from the IHDR header before
    anything is decoded; ``None``: no limit) is a `SizeLimitError`.
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
                return _png_pixels(f, img)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise SizeLimitError(
            f"{f}: Pillow refuses a {width}×{height} image ({width * height:,} pixels) as a "
            f"possible decompression bomb: {exc}"
        ) from None
    except _PNG_ERRORS as exc:
        raise DataError(f"{f}: corrupt or unreadable PNG ({exc})") from exc


def _png16_pixels(f: Path) -> tuple[np.ndarray, str]:
    """A 16-bit PNG whose samples are exactly 257·v (8-bit values widened) → 8-bit."""
    import imagecodecs

    with Image.open(f) as img:
        if getattr(img, "n_frames", 1) > 1:
            raise DataError(f"{f}: animated PNG with {img.n_frames} frames; expected one image")
    try:
        wide = np.asarray(imagecodecs.png_decode(f.read_bytes()))
    except imagecodecs.PngError as exc:
        raise DataError(f"{f}: corrupt or unreadable PNG ({exc})") from exc
    channels = 1 if wide.ndim == 2 else wide.shape[2]
    if channels in (2, 4):
        clear = int(np.count_nonzero(wide[..., -1] != 65535))
        if clear:
            raise DataError(
                f"{f}: {clear} of {wide[..., -1].size} pixels are not fully opaque; alpha "
                "cannot be coded, only opaque images are supported"
            )
        wide = wide[..., :-1] if channels == 4 else wide[..., 0]
    inexact = np.flatnonzero(wide.reshape(-1) % 257)
    if inexact.size:
        raise DataError(
            f"{f}: 16-bit PNG with {inexact.size} samples that are not 8-bit values (e.g. "
            f"{int(wide.reshape(-1)[inexact[0]])}); bbcodec codes 8-bit images, and this one "
            "would lose precision (convert it to 8-bit first if that is acceptable)"
        )
    return (wide // 257).astype(np.uint8), ("rgb" if wide.ndim == 3 else "grey")


def _read_pngs(files: list[Path], limits: _Limits) -> np.ndarray:
    """Stack PNG files (all the same size and kind) into one array, in the given order."""
    runs = _png_runs(files, limits)
    if len(runs) > 1:
        bad = files[len(runs[0])]
        raise DataError(
            f"{bad}: size {runs[1].shape[2]}x{runs[1].shape[1]} differs from {files[0].name} "
            f"({runs[0].shape[2]}x{runs[0].shape[1]}); all PNGs must be the same size"
        )
    return runs[0]


def _png_runs(files: list[Path], limits: _Limits) -> list[np.ndarray]:
    """PNG files as runs of consecutive same-size images, each (n, H, W[, 3]); one kind."""
    runs: list[list[np.ndarray]] = []
    first_kind = ""
    for f in files:
        pixels, kind = _read_png(f, limits)
        if not first_kind:
            first_kind = kind
        elif kind != first_kind:
            raise DataError(
                f"{f}: {kind} image, but {files[0].name} is {first_kind}; "
                "all PNGs must have the same mode"
            )
        if runs and runs[-1][0].shape == pixels.shape:
            runs[-1].append(pixels)
        else:
            runs.append([pixels])
    return [np.stack(run) for run in runs]


def load_image_runs(
    path: str | Path, split: str = "test", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[np.ndarray]:
    """Like `load_images` (``max_pixels`` too), but PNGs may differ in size: runs of
    consecutive same-size images, each (n, H, W[, 3]) uint8, in file-name order."""
    if not isinstance(split, str) or split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    limits = _Limits(max_pixels)
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".png":
        return _png_runs([p], limits)
    if p.is_dir() and not any(_find_mnist_file(p, x) for x in _MNIST_PREFIX.values()):
        cifar = _has_cifar_batches(p) or _has_cifar_batches(p / _CIFAR_SUBFOLDER)
        pngs = sorted(f for f in p.iterdir() if f.suffix.lower() == ".png" and f.is_file())
        if pngs and not cifar:
            try:
                return _png_runs(pngs, limits)
            except OSError as exc:
                raise DataError(f"{p}: cannot read: {exc}") from exc
    return [_load_images(p, split, limits)]
