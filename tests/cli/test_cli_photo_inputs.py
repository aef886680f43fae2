"""Photo inputs through `bbcodec compress` / `bbcodec decompress` (issue 15): TIFF,
PPM/PGM, JPEG-XL and JPEG files and folders, on tiny random models, in ``tmp_path``. Each
round trip must give back exactly the pixels the reader read; a damaged or oversized file
is one error line; a JPEG is coded with a one-line note that it was already lossy."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from cli_runs import listing, run
from PIL import Image

from bbcodec import zoo
from bbcodec.models.data import load_images, read_image
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights

SMALL = {"channels": 8, "n_blocks": 1, "made_hidden": 16, "kernel_size": 3}
CONFIGS = {
    "grey": ModelConfig("vlae", "grey", (8, 8), latent_dim=4, n_mixtures=2, **SMALL),
    "rgb": ModelConfig("vlae", "rgb", (8, 8), latent_dim=4, n_mixtures=2, **SMALL),
}


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))  # never touch the real zoo
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def _weights(kind: str) -> str:
    torch.manual_seed(0)
    path = Path.cwd().parent / f"{kind}.safetensors"  # outside the work folder
    if not path.exists():
        save_weights(LatentVariableModel(CONFIGS[kind]), path)
    return str(path)


def _pixels(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write(name: str, image: np.ndarray) -> str:
    """``image`` saved as ``name``, in the format its suffix names."""
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        path.write_bytes(imagecodecs.tiff_encode(image))
    elif suffix in (".ppm", ".pgm"):
        magic = b"P6" if image.ndim == 3 else b"P5"
        header = b"%s %d %d 255\n" % (magic, image.shape[1], image.shape[0])
        path.write_bytes(header + image.tobytes())
    elif suffix == ".jxl":
        path.write_bytes(imagecodecs.jpegxl_encode(image, lossless=True))
    else:
        Image.fromarray(image).save(path)
    return name


def _round_trip(capsys, inputs: list[str], kind: str, out: str) -> str:
    """Compresses ``inputs`` and decompresses to ``out``; returns compress's stderr."""
    weights = _weights(kind)
    code, _, err = run(capsys, "compress", "-q", *inputs, "-o", "x.bbc", "--model", weights,
                       "--workers", "1")  # fmt: skip
    assert code == 0, err
    code, _, derr = run(capsys, "decompress", "-q", "x.bbc", "-o", out, "--model", weights)
    assert code == 0, derr
    return err


@pytest.mark.parametrize("name", ["photo.tif", "photo.ppm", "photo.pgm", "photo.jxl"])
def test_each_format_round_trips_to_a_png(capsys, name):
    """One image in, one PNG out (as for a PNG input), holding exactly its pixels."""
    image = _pixels((8, 8) if name.endswith(".pgm") else (8, 8, 3))
    err = _round_trip(capsys, [_write(name, image)], "grey" if image.ndim == 2 else "rgb",
                      "back.png")  # fmt: skip
    assert err == ""  # exact inputs: no note
    with Image.open("back.png") as png:
        assert png.mode == ("L" if image.ndim == 2 else "RGB")
    np.testing.assert_array_equal(load_images("back.png")[0], image)


def test_a_folder_of_photos_in_several_formats_and_sizes(capsys):
    """A folder of .tif/.ppm/.jxl/.png photos of different sizes: coded tiled, in name
    order, back as a folder of PNGs."""
    images = [_pixels((8, 8, 3)), _pixels((9, 12, 3), seed=1), _pixels((8, 8, 3), seed=2),
              _pixels((8, 8, 3), seed=3)]  # fmt: skip
    for name, image in zip(["photos/a.tif", "photos/b.ppm", "photos/c.jxl", "photos/d.png"],
                           images):  # fmt: skip
        _write(name, image)
    _round_trip(capsys, ["photos"], "rgb", "back")
    for i, image in enumerate(images):
        np.testing.assert_array_equal(load_images(f"back/{i:06d}.png")[0], image)


def test_a_jpeg_is_coded_with_a_note(capsys):
    _write("photo.jpg", _pixels((8, 8, 3)))
    decoded, _ = read_image("photo.jpg")
    err = _round_trip(capsys, ["photo.jpg"], "rgb", "back.npy")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: photo.jpg is a JPEG: "), err
    assert "already lossily compressed" in lines[0] and "larger" in lines[0]
    np.testing.assert_array_equal(np.load("back.npy")[0], decoded)  # the pixels, exactly


def test_several_lossy_inputs_make_one_note(capsys):
    _write("a.jpg", _pixels((8, 8, 3)))
    _write("b.jpg", _pixels((8, 8, 3), seed=1))
    Path("c.jxl").write_bytes(imagecodecs.jpegxl_encode(_pixels((8, 8, 3), seed=2), level=80))
    err = _round_trip(capsys, ["a.jpg", "b.jpg", "c.jxl"], "rgb", "back.npy")
    assert err.strip() == (
        "note: a.jpg is a JPEG (and 2 more such files): its pixels were already lossily "
        "compressed; bbcodec codes the decoded pixels exactly, so the .bbc file will likely "
        "be larger than the original"
    )


def _fails_cleanly(capsys, argv: list[str], *fragments: str) -> str:
    before = listing()
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("bbcodec: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert listing() == before
    return lines[0]


@pytest.mark.parametrize("name", ["photo.tif", "photo.ppm", "photo.jxl", "photo.jpg"])
def test_a_damaged_file_is_one_error_line(capsys, name):
    content = Path(_write(name, _pixels((16, 16, 3)))).read_bytes()
    Path(name).write_bytes(content[: len(content) // 2])
    weights = _weights("rgb")
    _fails_cleanly(capsys, ["compress", name, "-o", "x.bbc", "--model", weights], name)
    Path("photos").mkdir()
    Path(name).rename(f"photos/{name}")
    _fails_cleanly(capsys, ["compress", "photos", "-o", "x.bbc", "--model", weights],
                   f"photos/{name}")  # fmt: skip


def test_an_oversized_photo_is_refused_from_its_header(capsys):
    Path("huge.pgm").write_bytes(b"P5 300 200 255\n" + bytes(300 * 200))
    _fails_cleanly(capsys, ["compress", "huge.pgm", "-o", "x.bbc", "--model", _weights("grey"),
                            "--max-pixels", "1000"], "huge.pgm", "300×200", "--max-pixels")  # fmt: skip
