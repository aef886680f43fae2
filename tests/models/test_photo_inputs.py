"""Photo formats in `bbcodec.models.data` (issue 15): TIFF, binary PPM/PGM, JPEG-XL and
JPEG beside PNG. Every file is made here, in ``tmp_path``, with Pillow, imagecodecs or by
hand: exact round trips for each format and kind, the cases each format shares with PNG
(16-bit holding 8-bit values, opaque alpha, palettes), everything refused with one line
naming the file, sizes refused from the header before anything is decoded, and the lossy
inputs `lossy_files` names."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from bbcodec.errors import DataError, SizeLimitError
from bbcodec.models import data
from bbcodec.models.data import (
    image_files,
    load_image_runs,
    load_images,
    lossy_files,
    read_image,
)


def _pixels(shape, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8).astype(dtype)


# ----- writers ------------------------------------------------------------------------------


def write_tiff(path: Path, image: np.ndarray, **options) -> Path:
    path.write_bytes(imagecodecs.tiff_encode(image, **options))
    return path


def write_pnm(path: Path, image: np.ndarray, maxval: int = 255, comment: bool = False) -> Path:
    magic = b"P6" if image.ndim == 3 else b"P5"
    note = b"# made by a test\n" if comment else b""
    header = magic + b"\n" + note + b"%d %d\n%d\n" % (image.shape[1], image.shape[0], maxval)
    samples = image.astype(">u2") if maxval > 255 else image.astype(np.uint8)
    path.write_bytes(header + samples.tobytes())
    return path


def write_jxl(path: Path, image: np.ndarray, **options) -> Path:
    options = options or {"lossless": True}
    path.write_bytes(imagecodecs.jpegxl_encode(image, **options))
    return path


def write_pil(path: Path, image: np.ndarray | Image.Image, fmt: str, **options) -> Path:
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(path, format=fmt, **options)
    return path


WRITERS = {
    "tiff": lambda p, x: write_tiff(p.with_suffix(".tif"), x),
    "tiff-lzw": lambda p, x: write_pil(p.with_suffix(".tiff"), x, "TIFF", compression="tiff_lzw"),
    "pnm": lambda p, x: write_pnm(
        p.with_suffix(".ppm" if x.ndim == 3 else ".pgm"), x, comment=True
    ),
    "jxl": lambda p, x: write_jxl(p.with_suffix(".jxl"), x),
    "jxl-container": lambda p, x: write_jxl(
        p.with_suffix(".jxl"), x, lossless=True, usecontainer=True
    ),
    "png": lambda p, x: write_pil(p.with_suffix(".png"), x, "PNG"),
}


def _check(path: Path, expected: np.ndarray, kind: str) -> None:
    pixels, got = read_image(path)
    assert got == kind, (path, got)
    np.testing.assert_array_equal(pixels, expected, err_msg=str(path))


# ----- exact round trips ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_every_format_reads_exactly(tmp_path, fmt, kind):
    image = _pixels((7, 11, 3) if kind == "rgb" else (7, 11), seed=1)
    path = WRITERS[fmt](tmp_path / "photo", image)
    pixels, got_kind = read_image(path)
    assert got_kind == kind and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, image)
    np.testing.assert_array_equal(load_images(path), image[None])
    [run] = load_image_runs(path)
    np.testing.assert_array_equal(run, image[None])


def test_rgb_with_equal_channels_stays_rgb(tmp_path):
    """As for PNG: the file's colour type decides, not the values."""
    grey = _pixels((5, 6))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for path in (write_tiff(tmp_path / "a.tif", rgb), write_pnm(tmp_path / "a.ppm", rgb),
                 write_jxl(tmp_path / "a.jxl", rgb)):  # fmt: skip
        pixels, kind = read_image(path)
        assert kind == "rgb" and pixels.shape == (5, 6, 3), path


def test_a_folder_of_mixed_formats_in_name_order(tmp_path):
    images = [_pixels((6, 8, 3), seed=i) for i in range(5)]
    write_tiff(tmp_path / "a.tif", images[0])
    write_pnm(tmp_path / "b.ppm", images[1])
    write_jxl(tmp_path / "c.JXL", images[2])
    write_pil(tmp_path / "d.png", images[3], "PNG")
    write_pil(tmp_path / "e.TIFF", images[4], "TIFF")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [f.name for f in image_files(tmp_path)] == ["a.tif", "b.ppm", "c.JXL", "d.png", "e.TIFF"]
    np.testing.assert_array_equal(load_images(tmp_path), np.stack(images))


def test_image_runs_keep_photos_of_different_sizes(tmp_path):
    a, b, c = _pixels((6, 8, 3)), _pixels((9, 5, 3), seed=1), _pixels((6, 8, 3), seed=2)
    write_jxl(tmp_path / "1.jxl", a)
    write_tiff(tmp_path / "2.tif", b)
    write_pnm(tmp_path / "3.ppm", c)
    runs = load_image_runs(tmp_path)
    assert [run.shape for run in runs] == [(1, 6, 8, 3), (1, 9, 5, 3), (1, 6, 8, 3)]
    for run, image in zip(runs, (a, b, c)):
        np.testing.assert_array_equal(run[0], image)
    with pytest.raises(DataError, match=r"2\.tif: size 5x9 differs from 1\.jxl \(8x6\)"):
        load_images(tmp_path)


def test_content_decides_not_the_name(tmp_path):
    image = _pixels((4, 5, 3))
    tiff = write_tiff(tmp_path / "really-a-tiff.png", image)
    png = write_pil(tmp_path / "really-a-png.jxl", image, "PNG")
    pnm = write_pnm(tmp_path / "really-a-ppm.tif", image)
    for path in (tiff, png, pnm):
        np.testing.assert_array_equal(read_image(path)[0], image)
    (tmp_path / "folder").mkdir()
    write_tiff(tmp_path / "folder" / "a.tif", image[..., 0])
    write_jxl(tmp_path / "folder" / "other.png", image)
    with pytest.raises(DataError, match=r"other\.png: rgb image, but a\.tif is grey"):
        load_images(tmp_path / "folder")


def test_what_png_accepts_other_formats_accept(tmp_path):
    rgb, grey = _pixels((5, 6, 3)), _pixels((5, 6))
    opaque = np.concatenate([rgb, np.full((5, 6, 1), 255, np.uint8)], axis=2)
    grey_opaque = np.stack([grey, np.full_like(grey, 255)], axis=2)
    wide = rgb.astype(np.uint16) * 257
    cases = {
        "rgba.tif": (write_tiff(tmp_path / "rgba.tif", opaque, extrasample=2), rgb),
        "la.tif": (
            write_tiff(
                tmp_path / "la.tif",
                grey_opaque,
                photometric="minisblack",
                extrasample=2,
                planarconfig="contig",
            ),
            grey,
        ),
        "rgb16.tif": (write_tiff(tmp_path / "rgb16.tif", wide), rgb),
        "grey16-be.tif": (
            write_tiff(tmp_path / "grey16-be.tif", grey.astype(np.uint16) * 257, byteorder=">"),
            grey,
        ),
        "rgba16.tif": (
            write_tiff(tmp_path / "rgba16.tif", opaque.astype(np.uint16) * 257, extrasample=2),
            rgb,
        ),
        "planar16.tif": (
            write_tiff(
                tmp_path / "planar16.tif",
                wide.transpose(2, 0, 1),
                planarconfig="separate",
                photometric="rgb",
            ),
            rgb,
        ),
        "big.tif": (write_tiff(tmp_path / "big.tif", rgb, bigtiff=True), rgb),
        # min-is-white: the pixels are read as they look (as Pillow shows them)
        "white0.tif": (
            write_tiff(tmp_path / "white0.tif", grey, photometric="miniswhite"),
            255 - grey,
        ),
        "rgb16.ppm": (write_pnm(tmp_path / "rgb16.ppm", wide, maxval=65535), rgb),
        "grey16.pgm": (
            write_pnm(tmp_path / "grey16.pgm", grey.astype(np.uint16) * 257, maxval=65535),
            grey,
        ),
        "rgba.jxl": (write_jxl(tmp_path / "rgba.jxl", opaque), rgb),
        "la.jxl": (write_jxl(tmp_path / "la.jxl", grey_opaque), grey),
        "rgb16.jxl": (write_jxl(tmp_path / "rgb16.jxl", wide), rgb),
    }
    for name, (path, expected) in cases.items():
        pixels, kind = read_image(path)
        assert kind == ("rgb" if expected.ndim == 3 else "grey"), name
        np.testing.assert_array_equal(pixels, expected, err_msg=name)

    bits = _pixels((5, 6)) > 128
    for path in (write_pil(tmp_path / "bits.tif", bits, "TIFF", compression="group4"),
                 write_tiff(tmp_path / "white-bits.tif", ~bits, photometric="miniswhite")):  # fmt: skip
        pixels, kind = read_image(path)
        assert kind == "binary"
        np.testing.assert_array_equal(pixels, bits.astype(np.uint8))

    low = {
        "grey4.tif": (
            write_tiff(tmp_path / "grey4.tif", grey >> 4, bitspersample=4),
            (grey >> 4) * 17,
        ),
        "grey2-white.tif": (
            write_tiff(
                tmp_path / "grey2-white.tif", grey >> 6, bitspersample=2, photometric="miniswhite"
            ),
            (3 - (grey >> 6)) * 85,
        ),
    }
    for name, (path, expected) in low.items():  # as Pillow reads low-depth PNGs: scaled
        _check(path, expected, "grey")

    flat = np.full((16, 16, 3), (200, 30, 90), np.uint8)  # survives JPEG nearly unchanged
    for path in (write_tiff(tmp_path / "ycbcr.tif", flat, photometric="ycbcr", compression="jpeg"),
                 write_pil(tmp_path / "jpeg.tif", flat, "TIFF", compression="jpeg")):  # fmt: skip
        pixels, kind = read_image(path)
        assert kind == "rgb"
        with Image.open(path) as img:
            np.testing.assert_array_equal(pixels, np.asarray(img.convert("RGB")))
        assert np.abs(pixels.astype(int) - flat).max() <= 2

    tiled = write_tiff(tmp_path / "tiled.tif", _pixels((40, 40, 3)), tile=(16, 16))
    np.testing.assert_array_equal(read_image(tiled)[0], _pixels((40, 40, 3)))

    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "palette.tif")
    pixels, kind = read_image(tmp_path / "palette.tif")
    assert kind == "rgb"
    np.testing.assert_array_equal(pixels, np.asarray(palette.convert("RGB")))
    Image.fromarray(grey).convert("P").save(tmp_path / "grey-palette.tif")
    _check(tmp_path / "grey-palette.tif", grey, "grey")


# ----- refused, one line naming the file ----------------------------------------------------


def _tiff_pages(path: Path, image: np.ndarray) -> Path:
    frames = [Image.fromarray(image), Image.fromarray(image)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def _animated_jxl(path: Path, image: np.ndarray) -> Path:
    path.write_bytes(imagecodecs.jpegxl_encode(np.stack([image, image]), lossless=True,
                                               photometric="rgb"))  # fmt: skip
    return path


def _refused_cases(tmp_path: Path) -> list[tuple[Path, str]]:
    rgb, grey = _pixels((5, 6, 3)), _pixels((5, 6))
    seen = np.concatenate([rgb, np.full((5, 6, 1), 255, np.uint8)], axis=2)
    seen[2, 3, 3] = 7
    rng = np.random.default_rng(3)
    return [
        (write_tiff(tmp_path / "float.tif", rng.random((5, 6), np.float32)), "floating-point"),
        (write_tiff(tmp_path / "signed.tif", grey.astype(np.int16)), "signed integer samples"),
        (
            write_tiff(
                tmp_path / "twelve.tif",
                rng.integers(0, 4096, (5, 6, 3), np.uint16),
                bitspersample=12,
            ),
            "TIFF of 12 bits per sample",
        ),
        (write_tiff(tmp_path / "wide.tif", rgb.astype(np.uint16) * 250), "16-bit TIFF with"),
        (write_pil(tmp_path / "cmyk.tif", Image.fromarray(rgb).convert("CMYK"), "TIFF"), "CMYK"),
        (write_tiff(tmp_path / "extra.tif", seen, extrasample=0), "extra channels"),
        (write_tiff(tmp_path / "alpha.tif", seen, extrasample=2), "1 of 30 pixels are not fully"),
        (_tiff_pages(tmp_path / "pages.tif", rgb), "several pages"),
        (write_pil(tmp_path / "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "JPEG"), "CMYK"),
        (write_jxl(tmp_path / "alpha.jxl", seen), "1 of 30 pixels are not fully opaque"),
        (write_jxl(tmp_path / "float.jxl", rgb.astype(np.float32) / 255), "floating-point"),
        (write_jxl(tmp_path / "wide.jxl", rgb.astype(np.uint16) * 250), "16-bit JPEG-XL with"),
        (_animated_jxl(tmp_path / "anim.jxl", rgb), "animated JPEG-XL"),
        (write_pnm(tmp_path / "ten.pgm", grey.astype(np.uint16), maxval=1023), "maxval 1023"),
        (write_pnm(tmp_path / "wide.ppm", rgb.astype(np.uint16) * 3, maxval=65535), "16-bit PPM"),
    ]


def write_raw(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_what_cannot_be_coded_exactly_is_refused(tmp_path):
    cases = _refused_cases(tmp_path) + [
        (write_raw(tmp_path / "ascii.pgm", b"P2 2 1 255\n0 1\n"), r"an ASCII PGM \(P2\)"),
        (write_raw(tmp_path / "bits.pbm", b"P4 8 1\n\x00"), r"a PBM bitmap \(P4\)"),
        (write_raw(tmp_path / "pam.pnm", b"P7\nWIDTH 1\n"), r"a PAM \(P7\)"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message) as info:
            read_image(path)
        line = str(info.value)
        assert line.startswith(f"{path}: ") and "\n" not in line, line


def _damaged(tmp_path: Path) -> dict[str, Path]:
    """One damaged file of each format: truncated, or garbage after the magic."""
    image = _pixels((16, 16, 3))
    files = {
        "tiff": write_tiff(tmp_path / "whole.tif", image),
        "pnm": write_pnm(tmp_path / "whole.ppm", image),
        "jxl": write_jxl(tmp_path / "whole.jxl", image),
        "jxl-container": write_jxl(
            tmp_path / "whole-c.jxl", image, lossless=True, usecontainer=True
        ),
        "jpeg": write_pil(tmp_path / "whole.jpg", image, "JPEG"),
        "png": write_pil(tmp_path / "whole.png", image, "PNG"),
    }
    damaged = {}
    for name, path in files.items():
        content = path.read_bytes()
        damaged[f"{name}-half"] = write_raw(path.with_name(f"half-{path.name}"),
                                            content[: len(content) // 2])  # fmt: skip
        damaged[f"{name}-garbage"] = write_raw(path.with_name(f"garbage-{path.name}"),
                                               content[:12] + b"\xa5" * 200)  # fmt: skip
    damaged["pnm-header"] = write_raw(tmp_path / "header.pgm", b"P5 16 x 255\n" + bytes(256))
    damaged["pnm-after"] = write_raw(tmp_path / "after.pgm", b"P5 2 2 255\n" + bytes(5))
    damaged["jxl-magic-only"] = write_raw(tmp_path / "magic.jxl", data._JXL_CODESTREAM)
    damaged["tiff-magic-only"] = write_raw(tmp_path / "magic.tif", b"II*\0")
    return damaged


def test_a_damaged_file_of_each_format_is_one_error_line(tmp_path, capfd):
    """One DataError line naming the file, and nothing else: no Python warning, and no
    message printed by a C library (libtiff's own handler, as Pillow's decoder leaves it)."""
    damaged = _damaged(tmp_path)
    lzw = write_pil(tmp_path / "lzw.tif", _pixels((32, 32, 3)), "TIFF", compression="tiff_lzw")
    content = bytearray(lzw.read_bytes())
    content[100:160] = b"\xff" * 60  # inside the compressed strip
    damaged["tiff-lzw-data"] = write_raw(tmp_path / "bad-lzw.tif", bytes(content))
    for name, path in damaged.items():
        with pytest.raises(DataError) as info:
            read_image(path)
        line = str(info.value)
        assert line.startswith(f"{path}: ") and "\n" not in line, (name, line)
        with pytest.raises(DataError):
            load_images(path)
    assert "table" in str(pytest.raises(DataError, read_image, damaged["tiff-lzw-data"]).value)
    assert capfd.readouterr() == ("", "")


# ----- sizes refused from the header --------------------------------------------------------


def _tiff_claiming(path: Path, width: int, height: int) -> Path:
    """An 8-bit grey TIFF whose IFD claims ``width`` × ``height`` and holds 16 bytes."""
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
        (279, 4, 1, width * height & 0xFFFFFFFF),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries
    )
    path.write_bytes(b"II*\0" + struct.pack("<I", 24) + bytes(16) + ifd + b"\0\0\0\0")
    return path


def _jxl_claiming(path: Path, width: int, height: int) -> Path:
    """A bare JPEG-XL codestream whose SizeHeader claims ``width`` × ``height`` (30-bit
    fields), followed by garbage instead of a frame."""
    value, pos = 0, 0
    for n, v in ((1, 0), (2, 3), (30, height - 1), (3, 0), (2, 3), (30, width - 1), (1, 1)):
        value |= v << pos  # small = 0, U32 selector 3, size − 1, ratio 0, …, all_default
        pos += n
    path.write_bytes(data._JXL_CODESTREAM + value.to_bytes((pos + 7) // 8, "little") + bytes(64))
    return path


def _jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A real JPEG whose frame header (SOF0) is patched to claim ``width`` × ``height``."""
    content = bytearray(write_pil(path, _pixels((8, 8, 3)), "JPEG").read_bytes())
    sof = content.index(b"\xff\xc0")
    content[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(content))
    return path


def test_huge_claims_are_refused_from_the_header(tmp_path):
    side = 5_000  # 25 M pixels, over the default limit of 16.7 M
    ppm = tmp_path / "huge.pgm"
    header = b"P5 %d %d 255\n" % (side, side)
    with open(ppm, "wb") as f:  # a (sparse) file that really holds the pixels it claims
        f.write(header)
        f.truncate(len(header) + side * side)
    claims = [
        ppm,
        _tiff_claiming(tmp_path / "huge.tif", side, side),
        _jxl_claiming(tmp_path / "huge.jxl", side, side),
        _jpeg_claiming(tmp_path / "huge.jpg", side, side),
    ]
    for path in claims:
        with pytest.raises(SizeLimitError, match=f"{path.name}: a 5000×5000 image"):
            read_image(path)
        with pytest.raises(SizeLimitError):
            load_image_runs(path)


def test_the_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    image = _pixels((40, 50, 3))
    files = [
        write_tiff(tmp_path / "a.tif", image),
        write_tiff(tmp_path / "a16.tif", image.astype(np.uint16) * 257),
        write_pnm(tmp_path / "a.ppm", image),
        write_jxl(tmp_path / "a.jxl", image),
        write_pil(tmp_path / "a.jpg", image, "JPEG"),
    ]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(imagecodecs, "jpegxl_decode", no_decoding)
    monkeypatch.setattr(imagecodecs, "tiff_decode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", no_decoding)
    monkeypatch.setattr(data, "_read_into", no_decoding)
    for path in files:
        with pytest.raises(SizeLimitError, match=f"{path.name}: a 50×40 image"):
            read_image(path, max_pixels=1999)


def test_jxl_sizes_from_the_header(tmp_path):
    """Every SizeHeader form (small, ratios, 9- to 18-bit fields) against libjxl, bare
    and in a container; and a codestream cut into ``jxlp`` boxes."""
    path = tmp_path / "x.jxl"
    for h, w in [(1, 1), (8, 8), (16, 24), (3, 1000), (90, 160), (100, 150), (321, 481),
                 (513, 1025), (7, 9)]:  # fmt: skip
        for container in (False, True):
            write_jxl(path, _pixels((h, w)), lossless=True, usecontainer=container)
            header = data._jxl_header(path)
            assert (header.width, header.height) == (w, h), (h, w, container)
            assert header.xyb_encoded is False and not header.animated
    image = _pixels((9, 13, 3))
    stream = imagecodecs.jpegxl_encode(image, lossless=True)
    boxes = data._JXL_CONTAINER + struct.pack(">I4s", 20, b"ftyp") + b"jxl \0\0\0\0jxl "
    for index, part in ((0, stream[:3]), (0x80000001, stream[3:])):
        boxes += struct.pack(">I4sI", 12 + len(part), b"jxlp", index) + part
    write_raw(path, boxes)
    assert data._jxl_header(path)[:2] == (13, 9)
    np.testing.assert_array_equal(read_image(path)[0], image)


# ----- lossy inputs -------------------------------------------------------------------------


def test_lossy_files_are_named(tmp_path):
    image = _pixels((16, 16, 3))
    jpeg = write_pil(tmp_path / "a.jpg", image, "JPEG")
    lossy = {
        jpeg: "a JPEG",
        write_pil(tmp_path / "b.tif", image, "TIFF", compression="jpeg"): "a JPEG-compressed TIFF",
        write_jxl(tmp_path / "c.jxl", image, level=80): "a lossy (XYB) JPEG-XL",
        write_raw(tmp_path / "d.jxl", imagecodecs.jpegxl_encode_jpeg(jpeg.read_bytes())):
            "a JPEG-XL recompressed from a JPEG",
    }  # fmt: skip
    for path, what in lossy.items():
        assert lossy_files(path) == [(path, what)]
        pixels, kind = read_image(path)  # coded all the same
        assert kind == "rgb" and pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(read_image(jpeg)[0], np.asarray(Image.open(jpeg)))
    assert lossy_files(tmp_path) == list(lossy.items())
    (tmp_path / "exact").mkdir()
    for fmt, writer in WRITERS.items():
        writer(tmp_path / "exact" / fmt, image)
    assert len(image_files(tmp_path / "exact")) == len(WRITERS)
    assert lossy_files(tmp_path / "exact") == []
    assert lossy_files(tmp_path / "missing") == []


def test_a_jpeg_with_previews_reads_its_primary_image(tmp_path):
    """A camera JPEG holding previews (an MPO to Pillow) is read as its first image."""
    first, second = _pixels((16, 16, 3)), _pixels((16, 16, 3), seed=1)
    out = io.BytesIO()
    Image.fromarray(first).save(out, format="MPO", save_all=True,
                                append_images=[Image.fromarray(second)])  # fmt: skip
    path = write_raw(tmp_path / "camera.jpg", out.getvalue())
    with Image.open(path) as img:
        assert img.format == "MPO" and img.n_frames == 2
        expected = np.asarray(img)
    np.testing.assert_array_equal(read_image(path)[0], expected)
