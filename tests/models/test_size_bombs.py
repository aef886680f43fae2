"""Size bombs for the dataset readers (`bbcodec.models.data`, issue 12).

Small files that claim, or expand to, huge images: each is made in ``tmp_path`` in well
under a second (zeros deflated once per 16 MiB and the block repeated; CRCs of the zeros
computed in closed form) and read by the real `load_images` in a child process that
reports its peak RSS. Each must end in one typed one-line error, decided from the file's
header before anything its size is allocated or decompressed, and the child must stay
under `MAX_PEAK_MB`:

- a 13000 × 13000 PNG (~170 KB; 169 M pixels, over the limit but under Pillow's own
  bomb error, so Pillow would warn): `SizeLimitError` from IHDR, no warning printed;
- a 1 KB ``.npy`` whose header claims 100 GB: `DataError` (truncated), nothing allocated;
- a ~6 MB ``.npz`` expanding to 5.7 GB: `SizeLimitError` from the member's ``.npy`` header;
- gzip IDX files: a header claiming 65536 × 65536 images, one claiming 1.25 G pixels of
  real (zero) data, and one whose gzip stream runs 1 GB past what its header claims.

Smaller tests check the limits themselves: ``max_pixels`` per image and
``MAX_DATASET_PIXELS_FACTOR × max_pixels`` in all, for every format; Pillow's
decompression-bomb warning never escapes and its error becomes a `SizeLimitError`.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from paths import REPO, child_script
from PIL import Image

from bbcodec.errors import DataError, SizeLimitError
from bbcodec.models import data
from bbcodec.models.data import load_image_runs, load_images, npz_keys, read_npz_images, read_png
from bbcodec.plan import DEFAULT_MAX_PIXELS, MAX_DATASET_PIXELS_FACTOR

#: Largest peak RSS of the reading child (Python, numpy and Pillow take ~30 MB of it).
MAX_PEAK_MB = 500

#: Address space capped at 2 GiB, so a regression fails rather than swaps.
_CHILD = child_script(
    "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    "from bbcodec.models.data import load_images; load_images(sys.argv[1], sys.argv[2])"
)

_PIECE = 1 << 24


# ----- bombs in milliseconds ---------------------------------------------------------------


def _deflate(prefix: bytes, zeros: int) -> bytes:
    """A raw deflate stream of ``prefix`` and then ``zeros`` zero bytes. Each part is
    compressed alone and ends on a full flush, so the 16 MiB block of zeros can repeat."""

    def alone(data: bytes, mode: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(mode)

    block = alone(bytes(_PIECE), zlib.Z_FULL_FLUSH)
    return (
        alone(prefix, zlib.Z_FULL_FLUSH)
        + block * (zeros // _PIECE)
        + alone(bytes(zeros % _PIECE), zlib.Z_FINISH)
    )


def _crc32_zeros(crc: int, n: int) -> int:
    """``zlib.crc32(bytes(n), crc)`` without touching n bytes (zlib's crc32_combine)."""

    def times(matrix: list[int], vector: int) -> int:
        out, i = 0, 0
        while vector:
            if vector & 1:
                out ^= matrix[i]
            vector, i = vector >> 1, i + 1
        return out

    def square(matrix: list[int]) -> list[int]:
        return [times(matrix, column) for column in matrix]

    op = [0xEDB88320] + [1 << i for i in range(31)]  # one zero bit
    for _ in range(3):
        op = square(op)  # one zero byte
    register = crc ^ 0xFFFFFFFF
    while n:
        if n & 1:
            register = times(op, register)
        n >>= 1
        op = square(op) if n else op
    return register ^ 0xFFFFFFFF


def _png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grey PNG, all black (every row: filter byte 0 and zeros)."""
    n = height * (width + 1)
    idat = b"\x78\xda" + _deflate(b"", n) + struct.pack(">I", (n % 65521) << 16 | 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        data._PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue()


def _npz_of_zeros(path: Path, key: str, shape: tuple[int, ...]) -> Path:
    """A valid .npz (zip64) of one deflated uint8 array of zeros of ``shape``."""
    header = _npy_header(shape)
    zeros = int(np.prod(shape))
    deflated = _deflate(header, zeros)
    size = len(header) + zeros
    crc = _crc32_zeros(zlib.crc32(header), zeros)
    name = f"{key}.npy".encode()
    sizes = struct.pack("<HHQQ", 1, 16, size, len(deflated))  # zip64: sizes in the extra
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
        len(name), len(sizes),
    )  # fmt: skip
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
        len(name), len(sizes), 0, 0, 0, 0, 0,
    )  # fmt: skip
    directory = central + name + sizes
    offset = len(local) + len(name) + len(sizes) + len(deflated)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), offset, 0)
    path.write_bytes(local + name + sizes + deflated + directory + end)
    return path


def _idx_gz(path: Path, dims: tuple[int, int, int], zeros: int) -> Path:
    """A gzip file of an IDX header claiming ``dims`` and then ``zeros`` zero bytes."""
    head = struct.pack(">4I", 2051, *dims)
    crc = _crc32_zeros(zlib.crc32(head), zeros)
    size = (len(head) + zeros) % (1 << 32)
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + _deflate(head, zeros)
    path.write_bytes(gz + struct.pack("<II", crc, size))
    return path


def test_the_bomb_makers_make_valid_files(tmp_path):
    for n in (0, 1, 1000, _PIECE + 3):
        assert _crc32_zeros(0x1234, n) == zlib.crc32(bytes(n), 0x1234)
        assert zlib.decompress(_deflate(b"head", n), -15) == b"head" + bytes(n)
    png = _png_of_zeros(tmp_path / "z.png", 7, 5)
    assert np.array_equal(np.asarray(Image.open(png)), np.zeros((5, 7), np.uint8))
    npz = _npz_of_zeros(tmp_path / "z.npz", "x_test", (2, 3, 4))
    with np.load(npz) as z:
        assert np.array_equal(z["x_test"], np.zeros((2, 3, 4), np.uint8))
    idx = _idx_gz(tmp_path / "z.gz", (2, 3, 4), 24)
    assert gzip.decompress(idx.read_bytes()) == struct.pack(">4I", 2051, 2, 3, 4) + bytes(24)
    np.testing.assert_array_equal(load_images(idx), np.zeros((2, 3, 4), np.uint8))


# ----- the bombs, read in a child ----------------------------------------------------------


def _read_in_child(path: Path, split: str = "test") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), split],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr[-2000:]  # no warning (DecompressionBomb...)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "\n" not in out["message"] and path.name in out["message"], out
    assert out["peak_mb"] < MAX_PEAK_MB, out
    return out


def test_png_claiming_169_megapixels(tmp_path):
    bomb = _png_of_zeros(tmp_path / "huge.png", 13000, 13000)
    assert bomb.stat().st_size < 600 * 1024
    assert Image.MAX_IMAGE_PIXELS < 13000**2 < 2 * Image.MAX_IMAGE_PIXELS  # Pillow: a warning
    out = _read_in_child(bomb)
    assert out["error"] == "SizeLimitError", out
    assert "13000×13000 image (169,000,000 pixels) is over the limit of" in out["message"]
    assert "--max-pixels" in out["message"]


def test_npy_header_claiming_100_gb(tmp_path):
    header = _npy_header((100_000, 1000, 1000))
    bomb = tmp_path / "claims.npy"
    bomb.write_bytes(header + bytes(1024 - len(header)))
    out = _read_in_child(bomb)
    assert out["error"] == "DataError", out
    assert "truncated: its header claims (100000, 1000, 1000) uint8" in out["message"]


def test_npz_expanding_to_6_gb(tmp_path):
    bomb = _npz_of_zeros(tmp_path / "bomb.npz", "x_test", (7_270_000, 28, 28))
    assert bomb.stat().st_size < 8 << 20
    out = _read_in_child(bomb)
    assert out["error"] == "SizeLimitError", out
    assert "7,270,000 images of 28×28 bring the data to 5,699,680,000 pixels" in out["message"]


@pytest.mark.parametrize(
    ("dims", "zeros", "error", "message"),
    [
        ((1, 65536, 65536), 1 << 30, "SizeLimitError", "65536×65536 image"),
        ((1_600_000, 28, 28), 1_600_000 * 784, "SizeLimitError", "1,254,400,000 pixels"),
        ((10, 28, 28), 1 << 30, "DataError", "more than 1048576 unexpected bytes"),
    ],
    ids=["huge-dims", "over-the-total", "stream-past-its-claim"],
)
def test_gzip_idx_bombs(tmp_path, dims, zeros, error, message):
    bomb = _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", dims, zeros)
    assert bomb.stat().st_size < 2 << 20
    out = _read_in_child(bomb)
    assert out["error"] == error and message in out["message"], out


# ----- the limits ------------------------------------------------------------------------


def test_the_default_limits():
    assert DEFAULT_MAX_PIXELS == 1 << 24 and MAX_DATASET_PIXELS_FACTOR == 64
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        load_images("anything", max_pixels=0)


def _cifar_batch(path: Path, n: int) -> Path:
    rows = np.zeros((n, 3072), np.uint8)
    path.write_bytes(pickle.dumps({b"data": rows, b"labels": [0] * n}, protocol=2))
    return path


def _png_folder(path: Path, n: int, hw=(1, 1)) -> Path:
    path.mkdir()
    for i in range(n):
        Image.fromarray(np.zeros(hw, np.uint8)).save(path / f"{i:03d}.png")
    return path


def _one_of_each(tmp_path: Path, n: int, hw: tuple[int, int]) -> list[Path]:
    """The same ``n`` zero images of ``hw`` in every format the readers know."""
    images = np.zeros((n, *hw), np.uint8)
    np.save(tmp_path / "x.npy", images)
    np.savez_compressed(tmp_path / "x.npz", x_test=images)
    idx = tmp_path / "x.idx"
    idx.write_bytes(struct.pack(">4I", 2051, n, *hw) + images.tobytes())
    gz = tmp_path / "x.idx.gz"
    gz.write_bytes(gzip.compress(idx.read_bytes()))
    return [tmp_path / "x.npy", tmp_path / "x.npz", idx, gz, _png_folder(tmp_path / "p", n, hw)]


def test_every_format_refuses_an_image_over_max_pixels(tmp_path):
    for path in _one_of_each(tmp_path, 2, (4, 5)):
        assert load_images(path, max_pixels=20).shape == (2, 4, 5)
        with pytest.raises(
            SizeLimitError, match=r"a 5×4 image \(20 pixels\) is over the limit of 19 pixels"
        ):
            load_images(path, max_pixels=19)
        assert load_images(path, max_pixels=None).shape == (2, 4, 5)
    batch = _cifar_batch(tmp_path / "test_batch", 2)
    assert load_images(batch, max_pixels=1024).shape == (2, 32, 32, 3)
    with pytest.raises(SizeLimitError, match=r"test_batch: a 32×32 image"):
        load_images(batch, max_pixels=1023)


def test_every_format_refuses_more_than_the_total(tmp_path):
    n = MAX_DATASET_PIXELS_FACTOR + 1
    for path in _one_of_each(tmp_path, n, (1, 1)):
        assert load_images(path, max_pixels=2).shape == (n, 1, 1)
        with pytest.raises(
            SizeLimitError, match=r"bring the data to 65 pixels, over the limit of 64"
        ):
            load_images(path, max_pixels=1)
    batch = _cifar_batch(tmp_path / "test_batch", n)
    with pytest.raises(SizeLimitError, match=r"over the limit of 65,536 pixels read at once"):
        load_images(batch, max_pixels=1024)  # refused from the file's size, not unpickled


def test_the_total_counts_every_file_of_a_split(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", 13)  # 65 images in all
    _cifar_batch(folder / "test_batch", 1)
    assert load_images(folder, "train", max_pixels=1100).shape == (65, 32, 32, 3)
    with pytest.raises(SizeLimitError, match=r"data_batch_5: 13 images of 32×32 bring the data"):
        load_images(folder, "train", max_pixels=1024)


def test_image_runs_and_npz_readers_take_the_limit(tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(folder / "b.png")
    assert [r.shape for r in load_image_runs(folder, max_pixels=30)] == [(1, 4, 5), (1, 6, 5)]
    with pytest.raises(SizeLimitError, match=r"b\.png: a 5×6 image"):
        load_image_runs(folder, max_pixels=29)
    np.savez(tmp_path / "one.npz", digits=np.ones((3, 4, 5), bool))
    assert npz_keys(tmp_path / "one.npz") == ["digits"]
    x = read_npz_images(tmp_path / "one.npz", "digits", max_pixels=20)
    assert x.dtype == np.uint8 and x.shape == (3, 4, 5) and x.max() == 1
    with pytest.raises(SizeLimitError):
        read_npz_images(tmp_path / "one.npz", "digits", max_pixels=19)
    with pytest.raises(DataError, match="no array 'other' in the .npz; found: digits"):
        read_npz_images(tmp_path / "one.npz", "other")


def test_an_npz_member_smaller_than_its_header_claims(tmp_path):
    bomb = _npz_of_zeros(tmp_path / "lying.npz", "x_test", (2, 3, 4))
    content = _npy_header((2, 3, 4)) + bytes(2 * 3 * 4)
    short = len(content) - 14  # the header and 10 bytes of data, with their own CRC
    blob = bytearray(bomb.read_bytes())
    at = blob.rindex(struct.pack("<HHQ", 1, 16, len(content)))  # the directory's zip64 sizes
    struct.pack_into("<Q", blob, at + 4, short)
    old, new = (struct.pack("<L", zlib.crc32(c)) for c in (content, content[:short]))
    (tmp_path / "short.npz").write_bytes(bytes(blob).replace(old, new))
    with pytest.raises(DataError, match=f"the archive says the member holds {short}"):
        load_images(tmp_path / "short.npz")


def test_pillow_bomb_warning_never_escapes_and_its_error_is_typed(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15)  # 20 pixels: Pillow warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_png(path)[0].shape == (4, 5)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 9)  # over twice the limit: Pillow refuses
    with pytest.raises(SizeLimitError, match=r"small\.png: Pillow refuses a 5×4 image"):
        read_png(path)
