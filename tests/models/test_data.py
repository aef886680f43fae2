"""Tests for bbcodec.models.data: round trips on small synthetic files, and every bad input
raising DataError (never another exception type)."""

from __future__ import annotations

import doctest
import gzip
import hashlib
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import SHARED_DATA
from PIL import Image

from bbcodec.models import data
from bbcodec.models.data import SPLITS, DataError, dataset_kind, load_images

SHARED = SHARED_DATA
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _reseed():
    """Every test draws the same data whether it runs alone or in the full suite."""
    global RNG
    RNG = np.random.default_rng(0)


def rand_u8(*shape: int, high: int = 256) -> np.ndarray:
    return RNG.integers(0, high, size=shape, dtype=np.uint8)


def check_images(x: np.ndarray, expected: np.ndarray) -> None:
    """Same values and shape, plus the guarantees load_images makes about every result."""
    assert type(x) is np.ndarray
    assert x.dtype == np.uint8
    assert x.flags.c_contiguous and x.flags.writeable
    np.testing.assert_array_equal(x, expected)
    assert x.shape == expected.shape


# --------------------------------------------------------------------------------------
# writers for synthetic files


def idx_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    return struct.pack(">4I", magic, *images.shape) + images.tobytes()


def write_idx(path: Path, images: np.ndarray, magic: int = 2051) -> Path:
    raw = idx_bytes(images, magic)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def mnist_folder(root: Path, train: np.ndarray, test: np.ndarray) -> Path:
    root.mkdir(exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", train)
    write_idx(root / "t10k-images-idx3-ubyte.gz", test)
    labels = struct.pack(">2I", 2049, len(test)) + bytes(len(test))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return root


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """HWC images -> CIFAR's (N, 3072) rows: all R, then all G, then all B, row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def write_cifar_batch(path: Path, images: np.ndarray, protocol: int = 2) -> Path:
    batch = {
        b"batch_label": b"synthetic batch",
        b"labels": list(range(len(images))),
        b"data": cifar_rows(images),
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def py2_batch_pickle(rows: np.ndarray) -> bytes:
    """Python 2 cPickle, protocol 2, of {"data": rows}: how the CIFAR-10 batches were written.

    Python 2 str objects load as bytes (encoding="bytes"), and numpy is named numpy.core.
    """

    def py2_str(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    n, m = rows.shape
    dtype = b"cnumpy\ndtype\n" + py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
    array += py2_str(b"b") + b"\x87R"
    state = b"(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", m) + b"\x86"
    state += dtype + b"\x89" + py2_str(rows.tobytes()) + b"tb"
    return b"\x80\x02}" + py2_str(b"data") + array + state + b"s."


def cifar_folder(root: Path, train: list[np.ndarray], test: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, batch in enumerate(train, start=1):
        write_cifar_batch(root / f"data_batch_{i}", batch)
    write_cifar_batch(root / "test_batch", test)
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}, protocol=2))
    return root


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + tag
        + payload
        + struct.pack(">I", zlib.crc32(tag + payload))
    )


def write_png_raw(path: Path, rows: list[bytes], width: int, depth: int, colour: int) -> Path:
    """A PNG written by hand, for layouts Pillow cannot write (each row unfiltered)."""
    ihdr = struct.pack(">2I5B", width, len(rows), depth, colour, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + row for row in rows))
    png = data._PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
    path.write_bytes(png + png_chunk(b"IEND", b""))
    return path


def write_png16_rgb(path: Path, height: int = 3, width: int = 4) -> Path:
    """A 16-bit RGB PNG, which Pillow would silently cut to 8 bits."""
    return write_png_raw(path, [bytes(range(6 * width))] * height, width, 16, 2)


def write_palette_png(path: Path, img: np.ndarray) -> None:
    """Palette PNG holding exactly the colours of img ((H, W) grey or (H, W, 3) RGB)."""
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
    colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    pal = Image.frombytes("P", (img.shape[1], img.shape[0]), index.astype(np.uint8).tobytes())
    pal.putpalette(colours.ravel().tolist())
    pal.save(path)


def png_folder(root: Path, images: np.ndarray) -> Path:
    """One PNG per image; Pillow picks the mode: bool -> 1, (H, W, 2) -> LA, (H, W, 4) -> RGBA."""
    root.mkdir(exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"img_{i:03d}.png")
    return root


# --------------------------------------------------------------------------------------
# MNIST IDX


def test_mnist_folder_splits(tmp_path):
    train, test = rand_u8(5, 28, 28), rand_u8(3, 28, 28)
    root = mnist_folder(tmp_path / "mnist", train, test)
    check_images(load_images(root, "train"), train)
    check_images(load_images(str(root)), test)  # default split is test; str paths work
    with pytest.raises(DataError, match=r"no 'valid' split; available splits: train, test"):
        load_images(root, "valid")


def test_mnist_folder_with_one_split_uncompressed(tmp_path):
    test = rand_u8(2, 5, 7)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", test)  # dot variant, no .gz
    check_images(load_images(tmp_path, "test"), test)
    with pytest.raises(DataError, match="available splits: test$"):
        load_images(tmp_path, "train")


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "custom.idx", "t10k-raw"])
def test_single_idx_file_ignores_split(tmp_path, name):
    images = rand_u8(4, 6, 3)
    path = write_idx(tmp_path / name, images)
    for split in SPLITS:
        check_images(load_images(path, split), images)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    gz=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_idx_round_trip_property(tmp_path_factory, n, h, w, gz, seed):
    images = np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x.idx")
    write_idx(path, images)
    check_images(load_images(path), images)


def test_idx_bad_inputs(tmp_path):
    images = rand_u8(3, 4, 4)
    raw = idx_bytes(images)

    cases = {
        "labels.gz": (gzip.compress(struct.pack(">2I", 2049, 3) + bytes(3)), "label file"),
        "magic.idx": (idx_bytes(images, magic=0x0D03), "IDX magic 3331, expected 2051"),
        "trunc.idx": (raw[:-5], "truncated IDX data"),
        "trunc.gz": (gzip.compress(raw[:-1]), "truncated IDX data"),
        "header.gz": (gzip.compress(raw[:10]), "truncated IDX header"),
        "extra.idx": (raw + b"\0\0", "2 unexpected bytes"),
        "zero.idx": (struct.pack(">4I", 2051, 0, 28, 28), "hold no pixels"),
        "cutgz.gz": (gzip.compress(raw)[:-12], "truncated or corrupt gzip"),
        "crc.gz": (gzip.compress(raw)[:-8] + b"\0" * 8, "truncated or corrupt gzip"),
        "notidx.gz": (gzip.compress(b"hello world, not idx"), "not an IDX file"),
        "huge.idx": (struct.pack(">4I", 2051, 2**31, 2**16, 2**16), "truncated IDX data"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message) as info:
            load_images(tmp_path / name)
        assert name in str(info.value)


def test_truncated_idx_inside_mnist_folder(tmp_path):
    root = mnist_folder(tmp_path / "m", rand_u8(2, 28, 28), rand_u8(2, 28, 28))
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated or corrupt gzip"):
        load_images(root, "train")
    assert load_images(root, "test").shape == (2, 28, 28)  # the other split still loads


# --------------------------------------------------------------------------------------
# .npz: binarized MNIST and x_<split> arrays


def test_binarized_npz_splits(tmp_path):
    train, valid, test = (
        rand_u8(4, 28, 28, high=2),
        rand_u8(3, 28, 28, high=2),
        rand_u8(2, 784, high=2),
    )
    path = tmp_path / "bin.npz"
    np.savez_compressed(path, train=train, valid=valid, test=test)
    check_images(load_images(path, "train"), train)
    check_images(load_images(path, "valid"), valid)
    x = load_images(path, "test")  # (N, 784) rows come back as 28 x 28 images
    check_images(x, test.reshape(2, 28, 28))
    assert dataset_kind(x) == "binary"


def test_binarized_npz_accepts_bool(tmp_path):
    bits = rand_u8(2, 28, 28, high=2)
    np.savez(tmp_path / "b.npz", test=bits.astype(bool))
    check_images(load_images(tmp_path / "b.npz"), bits)


def test_cifar_style_npz(tmp_path):
    x_train, x_test = rand_u8(3, 32, 32, 3), rand_u8(2, 32, 32, 3)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x_train=x_train, y_train=np.arange(3), x_test=x_test)
    check_images(load_images(path, "train"), x_train)
    check_images(load_images(path, "test"), x_test)
    with pytest.raises(DataError, match="no 'valid' split; available splits: train, test"):
        load_images(path, "valid")


def test_grey_npz_with_x_keys(tmp_path):
    x = rand_u8(2, 5, 6)
    np.savez(tmp_path / "g.npz", x_valid=x)
    check_images(load_images(tmp_path / "g.npz", "valid"), x)


def test_npz_bad_inputs(tmp_path):
    def npz(name: str, **arrays: np.ndarray) -> Path:
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    bits = rand_u8(2, 28, 28, high=2)
    cases = [
        (npz("two.npz", test=bits * 2), "binary data holds value 2"),
        (npz("float.npz", test=bits.astype(np.float32)), "dtype float32"),
        (npz("rows.npz", test=rand_u8(2, 700, high=2)), r"expected \(N, 28, 28\) or \(N, 784\)"),
        (npz("nd4.npz", test=rand_u8(1, 2, 28, 28, high=2)), "expected"),
        (npz("xfloat.npz", x_test=np.zeros((2, 4, 4), np.float64)), "dtype float64"),
        (npz("xshape.npz", x_test=rand_u8(2, 4, 4, 4)), r"shape \(2, 4, 4, 4\)"),
        (npz("x2d.npz", x_test=rand_u8(2, 16)), r"shape \(2, 16\)"),
        (npz("xempty.npz", x_test=rand_u8(0, 4, 4)), "holds no pixels"),
        (npz("nokeys.npz", images=bits, labels=np.arange(2)), "found: images, labels"),
        (npz("nosplit.npz", train=bits), "no 'test' split; available splits: train$"),
    ]
    good = npz("good.npz", x_test=rand_u8(50, 8, 8)).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    cases.append((tmp_path / "cut.npz", "corrupt or unreadable"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    cases.append((tmp_path / "junk.npz", "corrupt or unreadable"))
    flipped = bytearray(good)
    flipped[200] ^= 0xFF  # inside the stored array: zip CRC check fails
    (tmp_path / "crc.npz").write_bytes(bytes(flipped))
    cases.append((tmp_path / "crc.npz", "corrupt or unreadable"))

    for path, message in cases:
        with pytest.raises(DataError, match=message) as info:
            load_images(path)
        assert path.name in str(info.value)


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_test=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="obj.npz"):
        load_images(path)


# --------------------------------------------------------------------------------------
# .npy


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 6, 3), (1, 1, 1)])
def test_npy_round_trip(tmp_path, shape):
    x = rand_u8(*shape)
    np.save(tmp_path / "x.npy", x)
    check_images(load_images(tmp_path / "x.npy", "train"), x)


def test_npy_fortran_order_and_bool(tmp_path):
    x = np.asfortranarray(rand_u8(3, 5, 7))
    np.save(tmp_path / "f.npy", x)
    check_images(load_images(tmp_path / "f.npy"), x)
    b = rand_u8(2, 3, 3, high=2)
    np.save(tmp_path / "b.npy", b.astype(bool))
    check_images(load_images(tmp_path / "b.npy"), b)


def test_npy_bad_inputs(tmp_path):
    cases = {
        "float.npy": (np.zeros((2, 4, 4), np.float32), "dtype float32"),
        "int16.npy": (np.zeros((2, 4, 4), np.int16), "dtype int16"),
        "2d.npy": (rand_u8(4, 4), r"shape \(4, 4\)"),
        "rgba.npy": (rand_u8(2, 4, 4, 4), r"shape \(2, 4, 4, 4\)"),
        "5d.npy": (rand_u8(1, 2, 4, 4, 3), r"shape \(1, 2, 4, 4, 3\)"),
        "empty.npy": (rand_u8(0, 4, 4), "holds no pixels"),
        "object.npy": (np.array([None, 1], dtype=object), "corrupt or unreadable"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array, allow_pickle=True)
        with pytest.raises(DataError, match=message) as info:
            load_images(tmp_path / name)
        assert name in str(info.value)
    good = tmp_path / "good.npy"
    np.save(good, rand_u8(10, 10, 10))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="cut.npy: corrupt or unreadable"):
        load_images(tmp_path / "cut.npy")


# --------------------------------------------------------------------------------------
# CIFAR-10 python batches


def test_cifar_rows_are_chw():
    """The test writer follows CIFAR's layout: 1024 R, then 1024 G, then 1024 B values."""
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 0, 1] = (10, 20, 30)  # row 0, column 1
    row = cifar_rows(img)[0]
    assert (row[1], row[1024 + 1], row[2048 + 1]) == (10, 20, 30)


def test_cifar_folder(tmp_path):
    train = [rand_u8(2, 32, 32, 3) for _ in range(5)]
    test = rand_u8(3, 32, 32, 3)
    root = cifar_folder(tmp_path / "cifar", train, test)
    check_images(load_images(root, "train"), np.concatenate(train))
    check_images(load_images(root, "test"), test)
    with pytest.raises(DataError, match="no 'valid' split; available splits: train, test"):
        load_images(root, "valid")
    # the folder the tarball was extracted into works too
    sub = cifar_folder(tmp_path / "parent" / "cifar-10-batches-py", train, test)
    check_images(load_images(sub.parent, "train"), np.concatenate(train))


def test_cifar_single_batch_file_and_protocols(tmp_path):
    images = rand_u8(4, 32, 32, 3)
    for protocol in (2, 4, 5):
        path = write_cifar_batch(tmp_path / f"batch_p{protocol}", images, protocol)
        check_images(load_images(path, "train"), images)


def test_cifar_python2_pickles(tmp_path):
    train = [rand_u8(2, 32, 32, 3) for _ in range(5)]
    test = rand_u8(1, 32, 32, 3)
    for i, batch in enumerate(train, start=1):
        (tmp_path / f"data_batch_{i}").write_bytes(py2_batch_pickle(cifar_rows(batch)))
    (tmp_path / "test_batch").write_bytes(py2_batch_pickle(cifar_rows(test)))
    check_images(load_images(tmp_path, "train"), np.concatenate(train))
    check_images(load_images(tmp_path, "test"), test)


def test_cifar_batch_with_str_keys(tmp_path):
    images = rand_u8(2, 32, 32, 3)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({"data": cifar_rows(images), "labels": [0, 1]}, protocol=4))
    check_images(load_images(path), images)


class _Exploit:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    root = cifar_folder(tmp_path / "c", [rand_u8(1, 32, 32, 3)] * 5, rand_u8(1, 32, 32, 3))
    (root / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: .*refusing to load \w+\.open"):
        load_images(root, "test")
    assert not marker.exists()


def test_cifar_bad_inputs(tmp_path):
    good = write_cifar_batch(tmp_path / "good", rand_u8(2, 32, 32, 3)).read_bytes()
    cases = {
        "cut": (good[: len(good) // 2], "not a readable CIFAR-10 batch"),
        "list": (pickle.dumps([1, 2], protocol=2), "expected a dict"),
        "nodata": (pickle.dumps({b"labels": [1]}, protocol=2), "expected a dict"),
        "shape": (pickle.dumps({b"data": rand_u8(2, 3000)}, protocol=2), r"\(2, 3000\)"),
        "float": (pickle.dumps({b"data": np.zeros((2, 3072))}, protocol=2), "float64"),
        "empty": (pickle.dumps({b"data": rand_u8(0, 3072)}, protocol=2), "holds no images"),
        "codecs": (
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R.",
            "refusing _codecs.encode",
        ),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message) as info:
            load_images(tmp_path / name)
        assert name in str(info.value)


def test_cifar_folder_missing_batch(tmp_path):
    root = cifar_folder(tmp_path / "c", [rand_u8(1, 32, 32, 3)] * 5, rand_u8(1, 32, 32, 3))
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing"):
        load_images(root, "train")
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match="no 'test' split; available splits: train$"):
        load_images(root, "test")


# --------------------------------------------------------------------------------------
# PNG folders


def test_png_folder_grey_and_rgb(tmp_path):
    grey, rgb = rand_u8(3, 5, 7), rand_u8(2, 6, 4, 3)
    x = load_images(png_folder(tmp_path / "grey", grey))
    check_images(x, grey)
    assert dataset_kind(x) == "grey"
    x = load_images(png_folder(tmp_path / "rgb", rgb), "train")
    check_images(x, rgb)
    assert dataset_kind(x) == "rgb"


def test_png_folder_sorted_by_name_ignoring_other_files(tmp_path):
    images = rand_u8(3, 4, 4)
    for name, img in zip(["b.png", "c.PNG", "a.png"], images):
        Image.fromarray(img).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder with a .png name is not a file
    check_images(load_images(tmp_path), images[[2, 0, 1]])


def test_png_one_bit_palette_and_opaque_alpha(tmp_path):
    bits = rand_u8(2, 5, 9, high=2)
    x = load_images(png_folder(tmp_path / "bits", bits.astype(bool)))
    check_images(x, bits)  # 1-bit PNGs read as 0/1
    assert dataset_kind(x) == "binary"

    # colour palette -> RGB; grey palette -> grey; alpha 255 everywhere is dropped
    rgb = rand_u8(2, 4, 6, 3)
    (tmp_path / "pal").mkdir()
    for i, img in enumerate(rgb):
        write_palette_png(tmp_path / "pal" / f"{i}.png", img)
    assert Image.open(tmp_path / "pal" / "0.png").mode == "P"
    check_images(load_images(tmp_path / "pal"), rgb)

    grey = rand_u8(2, 4, 5)
    (tmp_path / "gpal").mkdir()
    for i, img in enumerate(grey):
        write_palette_png(tmp_path / "gpal" / f"{i}.png", img)
    assert Image.open(tmp_path / "gpal" / "0.png").mode == "P"
    check_images(load_images(tmp_path / "gpal"), grey)

    rgba = np.concatenate([rgb, np.full((2, 4, 6, 1), 255, np.uint8)], axis=-1)
    check_images(load_images(png_folder(tmp_path / "rgba", rgba)), rgb)
    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    check_images(load_images(png_folder(tmp_path / "la", la)), grey)


def test_png_low_bit_depth_grey(tmp_path):
    levels = rand_u8(4, 4, high=16)  # 4-bit grey, read back scaled to 0, 17, ..., 255
    rows = [bytes((a << 4) | b for a, b in zip(r[::2], r[1::2])) for r in levels.tolist()]
    write_png_raw(tmp_path / "g4.png", rows, width=4, depth=4, colour=0)
    check_images(load_images(tmp_path / "g4.png"), levels[None] * 17)


def test_single_png_file(tmp_path):
    img = rand_u8(1, 3, 8, 3)
    Image.fromarray(img[0]).save(tmp_path / "one.png")
    check_images(load_images(tmp_path / "one.png", "valid"), img)


def test_png_bad_inputs(tmp_path):
    def folder(name: str) -> Path:
        (tmp_path / name).mkdir()
        return tmp_path / name

    cases = []

    d = png_folder(folder("size"), rand_u8(2, 4, 4))
    Image.fromarray(rand_u8(4, 5)).save(d / "img_001.png")
    cases.append((d, r"img_001\.png: size 5x4 differs from img_000\.png \(4x4\)"))

    d = png_folder(folder("mode"), rand_u8(3, 4, 4))
    Image.fromarray(rand_u8(4, 4, 3)).save(d / "img_002.png")
    cases.append((d, r"img_002\.png: rgb image, but img_000\.png is grey"))

    d = png_folder(folder("binary_vs_grey"), rand_u8(2, 4, 4, high=2).astype(bool))
    Image.fromarray(rand_u8(4, 4)).save(d / "img_001.png")
    cases.append((d, r"img_001\.png: grey image, but img_000\.png is binary"))

    rgba = rand_u8(1, 4, 4, 4)
    rgba[..., 3] = 255
    rgba[0, 1, 2, 3] = 128
    cases.append(
        (png_folder(folder("alpha"), rgba), r"img_000\.png: 1 of 16 pixels are not fully opaque")
    )

    d = folder("trns")
    Image.fromarray(np.array([[1, 2], [3, 9]], np.uint8)).save(d / "k.png", transparency=9)
    cases.append((d, r"k\.png: 1 of 4 pixels are not fully opaque"))

    d = folder("grey16")
    Image.fromarray(np.full((3, 3), 1000, np.uint16)).save(d / "g.png")
    cases.append((d, r"g\.png: 16-bit PNG"))

    cases.append((write_png16_rgb(folder("rgb16") / "c.png").parent, r"c\.png: 16-bit PNG"))

    d = png_folder(folder("corrupt"), rand_u8(2, 8, 8))
    (d / "img_001.png").write_bytes((d / "img_001.png").read_bytes()[:40])
    cases.append((d, r"img_001\.png: corrupt or unreadable PNG"))

    d = png_folder(folder("fake"), rand_u8(1, 8, 8))
    (d / "img_001.png").write_bytes(b"GIF89a not a format bbcodec reads")
    cases.append((d, r"img_001\.png: not an image bbcodec reads"))

    d = png_folder(folder("noihdr"), rand_u8(1, 8, 8))
    (d / "img_001.png").write_bytes(data._PNG_MAGIC + b"\0\0\0\0junk")
    cases.append((d, r"img_001\.png: corrupt PNG \(no IHDR"))

    cases.append(
        (
            folder("empty"),
            r"holds no MNIST IDX image files, CIFAR-10 python batches or images \(\*\.png",
        )
    )

    for path, message in cases:
        with pytest.raises(DataError, match=message):
            load_images(path)


def test_animated_png_is_refused(tmp_path):
    frames = [Image.fromarray(img) for img in rand_u8(2, 4, 4, 3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="anim.png: animated PNG with 2 frames"):
        load_images(tmp_path / "anim.png")


# --------------------------------------------------------------------------------------
# paths, formats, splits, dataset_kind


def test_path_and_format_errors(tmp_path):
    with pytest.raises(DataError, match="nope: no such file or folder"):
        load_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: unknown format"):
        load_images(tmp_path / "notes.txt")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.bin: unknown format"):
        load_images(tmp_path / "empty.bin")
    for bad in ("tests", "val", "", None):
        with pytest.raises(DataError, match="unknown split"):
            load_images(tmp_path / "notes.txt", bad)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)
    assert SPLITS == ("train", "valid", "test")


def test_dataset_kind():
    assert dataset_kind(np.zeros((2, 3, 3), np.uint8)) == "binary"
    assert dataset_kind(np.ones((2, 3, 3), np.uint8)) == "binary"
    assert dataset_kind(np.zeros((0, 3, 3), np.uint8)) == "binary"
    assert dataset_kind(np.full((2, 3, 3), 2, np.uint8)) == "grey"
    assert dataset_kind(np.zeros((2, 3, 3, 3), np.uint8)) == "rgb"
    with pytest.raises(DataError, match="dtype float32"):
        dataset_kind(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(DataError, match="dtype list"):
        dataset_kind([[[0]]])
    for shape in [(3, 3), (1, 3, 3, 4), (1, 3, 3, 3, 3)]:
        with pytest.raises(DataError, match="expected"):
            dataset_kind(np.zeros(shape, np.uint8))


def test_docstring_examples():
    result = doctest.testmod(data, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------
# the real datasets in ../shared/data (skipped where they are absent)

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")


@needs_shared
def test_real_test_splits():
    mnist = load_images(SHARED / "mnist", "test")
    assert mnist.shape == (10000, 28, 28) and dataset_kind(mnist) == "grey"
    header = struct.pack(">4I", 2051, 10000, 28, 28)
    assert (  # README: SHA-256 of the decompressed t10k-images file
        hashlib.sha256(header + mnist.tobytes()).hexdigest()
        == "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    )

    binary = load_images(SHARED / "binarized_mnist.npz", "test")
    assert binary.shape == (10000, 28, 28)
    assert set(np.unique(binary)) == {0, 1} and dataset_kind(binary) == "binary"

    cifar = load_images(SHARED / "cifar10.npz", "test")
    assert cifar.shape == (10000, 32, 32, 3) and dataset_kind(cifar) == "rgb"
    assert [int(v) for v in cifar[:5, 0, 0, 0]] == [158, 235, 158, 155, 65]  # README: first R


@needs_shared
def test_real_kodak_folder_mixes_orientations():
    with pytest.raises(DataError, match=r"kodim04\.png: size 512x768 differs from kodim01"):
        load_images(SHARED / "kodak")


@needs_shared
@pytest.mark.slow
def test_real_train_splits_match_published_hashes():
    mnist = load_images(SHARED / "mnist", "train")
    header = struct.pack(">4I", 2051, 60000, 28, 28)
    assert (
        hashlib.sha256(header + mnist.tobytes()).hexdigest()
        == "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    )
    cifar = load_images(SHARED / "cifar10.npz", "train")
    assert cifar.shape == (50000, 32, 32, 3)
    assert (
        hashlib.sha256(cifar.tobytes()).hexdigest()
        == "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a"
    )
    assert load_images(SHARED / "binarized_mnist.npz", "valid").shape == (10000, 28, 28)


def test_16_bit_pngs_holding_8_bit_values_are_narrowed(tmp_path):
    grey = rand_u8(5, 7)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g.png")
    pixels, kind = data.read_png(tmp_path / "g.png")
    assert kind == "grey" and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, grey)
    rgb = rand_u8(3, 4, 3)
    wide = (rgb.astype(np.uint16) * 257).astype(">u2")  # PNG samples are big-endian
    rows = [wide[i].tobytes() for i in range(3)]
    pixels, kind = data.read_png(write_png_raw(tmp_path / "c.png", rows, 4, 16, 2))
    assert kind == "rgb"
    np.testing.assert_array_equal(pixels, rgb)
    with pytest.raises(DataError, match=r"c2\.png: 16-bit PNG with 1 samples that are not 8-bit"):
        wide[1, 2, 0] += 1
        data.read_png(write_png_raw(tmp_path / "c2.png", [w.tobytes() for w in wide], 4, 16, 2))


def test_image_runs_keep_pngs_of_different_sizes(tmp_path):
    sizes = [(4, 4), (4, 4), (6, 3), (4, 4)]
    images = [rand_u8(*hw, 3) for hw in sizes]
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
    runs = data.load_image_runs(tmp_path)
    assert [run.shape for run in runs] == [(2, 4, 4, 3), (1, 6, 3, 3), (1, 4, 4, 3)]
    np.testing.assert_array_equal(
        np.concatenate([runs[0], runs[2]]), np.stack(images[:2] + images[3:])
    )
    np.testing.assert_array_equal(runs[1][0], images[2])
    with pytest.raises(DataError, match="same size"):
        load_images(tmp_path)
