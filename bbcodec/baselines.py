"""Classic lossless codecs as baselines: PNG, WebP lossless and JPEG-XL lossless.

Each image is written to its own file (in memory) and **decoded back**; a file that does not
give back the identical pixels is a `BaselineError`, never a number. The rate is every byte
of every file (headers included), in bits per sub-pixel.

What each codec is given — its best *honest* result: a standard file any decoder of the
format reads back to exactly the input array.

=========  ===============================================================================
codec      settings
=========  ===============================================================================
png        binary: Pillow, 1-bit greyscale (mode ``"1"``), ``optimize=True``.
           grey / RGB: the smaller of Pillow (``optimize=True``) and imagecodecs' libpng
           (``level=9``, adaptive filters), per image — as a PNG optimiser would pick.
webp       imagecodecs ``webp_encode(lossless=True, level=100, method=6)`` (libwebp's
           slowest, strongest lossless search). WebP has no grey mode: grey and binary
           images go in as RGB with three equal channels (the subtract-green transform
           makes the copies nearly free); binary images keep their values 0/1, which
           libwebp codes smaller than 0/255.
jpegxl     imagecodecs ``jpegxl_encode(lossless=True, effort=9)``, single-threaded;
           binary images as 1-bit greyscale (``bitspersample=1``), grey as 8-bit
           greyscale, RGB as 8-bit RGB.
=========  ===============================================================================

Example:
    >>> import numpy as np
    >>> x = np.zeros((3, 28, 28), np.uint8); x[:, 10:18, 12:16] = 1
    >>> results = run_baselines(x, progress=False)
    >>> sorted(results), all(r.bpd > 0 for r in results.values())
    (['jpegxl', 'png', 'webp'], True)
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image
from tqdm import tqdm

from bbcodec.errors import BaselineError, DataError, UsageError

__all__ = [
    "BASELINES",
    "BaselineError",
    "BaselineResult",
    "baseline_codec",
    "image_kind",
    "run_baselines",
]

#: The baseline codecs, in the order reports list them.
BASELINES = ("png", "webp", "jpegxl")


@dataclass(frozen=True)
class BaselineResult:
    """One codec's rate on a set of images (one file per image).

    Attributes:
        codec: ``png``, ``webp`` or ``jpegxl``.
        settings: how the files were made (see the module docstring).
        n_images: images coded; dims_per_image: sub-pixels per image.
        image_bits: (n_images,) int64, the size of each image's file in bits.
        seconds: wall time to encode and decode-check every image.
    """

    codec: str
    settings: str
    n_images: int
    dims_per_image: int
    image_bits: np.ndarray
    seconds: float

    @property
    def total_bits(self) -> int:
        return int(self.image_bits.sum())

    @property
    def bpd(self) -> float:
        """Bits per sub-pixel over all files."""
        return self.total_bits / (self.n_images * self.dims_per_image)

    @property
    def images_per_s(self) -> float:
        return self.n_images / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-image sizes)."""
        return {
            "bpd": self.bpd, "total_bits": self.total_bits, "n_images": self.n_images,
            "seconds": self.seconds, "images_per_s": self.images_per_s, "settings": self.settings,
        }  # fmt: skip


def image_kind(images: np.ndarray) -> str:
    """``binary`` (all values 0/1, no channels), ``grey`` or ``rgb`` for (N, H, W[, 3]) uint8."""
    if (
        images.dtype != np.uint8
        or images.ndim not in (3, 4)
        or (images.ndim == 4 and images.shape[-1] != 3)
    ):
        raise DataError(
            f"expected (N, H, W) or (N, H, W, 3) uint8 images, got {images.dtype} {images.shape}"
        )
    if images.ndim == 4:
        return "rgb"
    return "binary" if images.size == 0 or images.max() <= 1 else "grey"


# ----- one codec = (encode, decode) on one (H, W[, 3]) image -------------------------------


def _pillow_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _png_encode(image: np.ndarray, kind: str) -> bytes:
    if kind == "binary":
        return _pillow_png(image.astype(bool))  # Pillow mode "1": a 1-bit greyscale PNG
    candidates = (_pillow_png(image), imagecodecs.png_encode(image, level=9))
    return min(candidates, key=len)


def _png_decode(data: bytes, kind: str) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels.astype(np.uint8) if kind == "binary" else pixels


def _webp_encode(image: np.ndarray, kind: str) -> bytes:
    rgb = image if kind == "rgb" else np.repeat(image[..., None], 3, axis=-1)
    return imagecodecs.webp_encode(rgb, level=100, lossless=True, method=6, numthreads=1)


def _webp_decode(data: bytes, kind: str) -> np.ndarray:
    pixels = imagecodecs.webp_decode(data)
    if kind == "rgb":
        return pixels
    if (
        pixels.ndim != 3
        or not (pixels[..., 0] == pixels[..., 1]).all()
        or not (pixels[..., 0] == pixels[..., 2]).all()
    ):
        raise BaselineError("webp: a grey image came back with unequal colour channels")
    return pixels[..., 0]


def _jpegxl_encode(image: np.ndarray, kind: str) -> bytes:
    bits = 1 if kind == "binary" else None
    return imagecodecs.jpegxl_encode(
        image, lossless=True, effort=9, bitspersample=bits, numthreads=1
    )


def _jpegxl_decode(data: bytes, kind: str) -> np.ndarray:
    return imagecodecs.jpegxl_decode(data, numthreads=1)


_Encode = Callable[[np.ndarray, str], bytes]
_Decode = Callable[[bytes, str], np.ndarray]
_CODECS: dict[str, tuple[_Encode, _Decode]] = {
    "png": (_png_encode, _png_decode),
    "webp": (_webp_encode, _webp_decode),
    "jpegxl": (_jpegxl_encode, _jpegxl_decode),
}

_SETTINGS = {
    ("png", "binary"): "Pillow 1-bit greyscale, optimize=True",
    ("png", "grey"): "smaller of Pillow optimize=True and libpng level 9, per image",
    ("png", "rgb"): "smaller of Pillow optimize=True and libpng level 9, per image",
    ("webp", "binary"): "lossless, level 100, method 6; values 0/1 as equal RGB channels",
    ("webp", "grey"): "lossless, level 100, method 6; grey as equal RGB channels",
    ("webp", "rgb"): "lossless, level 100, method 6",
    ("jpegxl", "binary"): "lossless, effort 9, 1-bit greyscale",
    ("jpegxl", "grey"): "lossless, effort 9, 8-bit greyscale",
    ("jpegxl", "rgb"): "lossless, effort 9, 8-bit RGB",
}


def baseline_codec(codec: str, kind: str) -> Callable[[np.ndarray], int]:
    """A function coding one image with ``codec`` and returning its file size in bits.

    The file is decoded straight back and compared with the image.

    Args:
        codec: one of `BASELINES`.
        kind: ``binary``, ``grey`` or ``rgb`` (see `image_kind`).

    Raises:
        UsageError: an unknown codec or kind. BaselineError (when called): the decoded
            image differs from the input.

    Example:
        >>> png_bits = baseline_codec("png", "grey")
        >>> png_bits(np.full((4, 4), 7, np.uint8)) > 0
        True
    """
    if codec not in _CODECS:
        raise UsageError(f"unknown baseline codec {codec!r} (known: {', '.join(BASELINES)})")
    if kind not in ("binary", "grey", "rgb"):
        raise UsageError(f"unknown image kind {kind!r}")
    encode, decode = _CODECS[codec]

    def bits(image: np.ndarray) -> int:
        data = encode(image, kind)
        back = decode(data, kind)
        if back.shape != image.shape or not np.array_equal(back, image):
            raise BaselineError(f"{codec}: an image did not decode back to its pixels")
        return 8 * len(data)

    return bits


def _map(fn: Callable[[np.ndarray], int], images: np.ndarray, workers: int, bar) -> Iterable[int]:
    if workers <= 1:
        for image in images:
            yield fn(image)
            bar.update(1)
        return
    # imagecodecs and Pillow release the GIL while coding, so threads run in parallel.
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(fn, images, chunksize=1):
            yield result
            bar.update(1)


def run_baselines(
    images: np.ndarray,
    codecs: Sequence[str] = BASELINES,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, BaselineResult]:
    """Code every image with each classic codec, one file per image, verified by decoding.

    Args:
        images: (N, H, W) binary (0/1) or grey, or (N, H, W, 3) RGB, uint8.
        codecs: which of `BASELINES` to run.
        workers: threads (default: the machine's CPU count).
        progress: tqdm bars (on stderr), one per codec.

    Returns:
        ``{codec: BaselineResult}`` in the order of ``codecs``.

    Raises:
        DataError: bad images. UsageError: an unknown codec. BaselineError: a file that does not
            decode back to its image.
    """
    kind = image_kind(images)
    if len(images) == 0:
        raise DataError("no images to code")
    fns = {codec: baseline_codec(codec, kind) for codec in codecs}
    workers = workers or os.cpu_count() or 1
    dims = int(np.prod(images.shape[1:]))
    results = {}
    for codec, fn in fns.items():
        t0 = time.perf_counter()
        with tqdm(total=len(images), desc=codec, unit="img", disable=not progress) as bar:
            bits = np.fromiter(_map(fn, images, workers, bar), dtype=np.int64, count=len(images))
        results[codec] = BaselineResult(
            codec, _SETTINGS[codec, kind], len(images), dims, bits, time.perf_counter() - t0
        )
    return results
