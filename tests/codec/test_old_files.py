"""Files written by earlier releases still decode, to the same pixels (a float-arithmetic
file: where the floats are the same; elsewhere with the error that says so)."""

import numpy as np
import pytest
from paths import REPO, SHARED_DATA
from PIL import Image

import bbcodec
from bbcodec.codec import CodingSettings
from bbcodec.container import ContainerReader
from bbcodec.errors import DecodeError
from bbcodec.models.data import load_images

FIXTURES = REPO / "tests" / "fixtures"


def test_a_format_2_file_from_before_the_posterior_window_decodes():
    """`readme-digits-v2.bbc`: the README's 32 example digits, compressed by
    `bbcodec compress examples/binarized-mnist` at commit 5bb5350 (format version 2, the
    posterior coded on the whole ±32 grid)."""
    path = FIXTURES / "readme-digits-v2.bbc"
    with open(path, "rb") as f:
        header = ContainerReader(f).header
    assert header.version == 2 and "posterior_window_stds" not in header.settings
    settings = CodingSettings.from_header(header)
    assert settings.posterior_window_stds is None and settings.initial_bits == "seed"
    # Float arithmetic: the digits come back where PyTorch, numpy and the CPU compute the
    # floats the writing machine did; anywhere else, the error that says so, never wrong
    # pixels (this machine's CPU and libraries need not be the writer's).
    try:
        decoded = bbcodec.decompress(path.read_bytes())
    except DecodeError as exc:
        assert "written with float arithmetic" in str(exc), str(exc)
        return
    np.testing.assert_array_equal(decoded, load_images(REPO / "examples" / "binarized-mnist"))


#: Format-3 files of the exact path, written at commit 7d0904d (one 256-way symbol per
#: 8-bit value), by `bbcodec.compress(images, MODEL, CodingSettings(torch_threads=1),
#: workers=1)`: (file, model, what the images are).
FORMAT_3_FILES = [
    ("binarized-examples-v3.bbc", "vlae-bmnist", "examples/binarized-mnist"),
    ("binarized-examples-0-3-delta-v3.bbc", "delta-vae-bmnist", "examples/binarized-mnist[:4]"),
    ("mnist-examples-v3.bbc", "vlae-mnist", "examples/mnist"),
    ("cifar10-test-0-3-v3.bbc", "vlae-cifar10", "CIFAR-10 test images 0-3"),
    ("cifar10-test-4-5-delta-v3.bbc", "delta-vae-cifar10", "CIFAR-10 test images 4-5"),
    ("kodim23-crop-v3.bbc", "vlae-photo", "kodim23 rows 200-247, columns 300-379"),
    ("kodim23-crop-grey-v3.bbc", "vlae-photo-grey", "the same crop, convert('L')"),
]


def _format_3_images(what: str) -> np.ndarray:
    if what.startswith("examples/"):
        folder, _, part = what.partition("[")
        images = load_images(REPO / folder)
        return images[:4] if part else images
    if what.startswith("CIFAR-10"):
        first, last = map(int, what.rsplit(" ", 1)[1].split("-"))
        return np.load(SHARED_DATA / "cifar10.npz")["x_test"][first : last + 1]
    photo = Image.open(SHARED_DATA / "kodak" / "kodim23.png")
    pixels = np.asarray(photo.convert("L") if "convert" in what else photo)
    return pixels[None, 200:248, 300:380]


@pytest.mark.parametrize(("name", "model", "what"), FORMAT_3_FILES)
def test_format_3_files_of_the_exact_path_decode(name, model, what):
    """The integer twins, the exact tables and the coding layout of format-3 files stay
    as they were: files written then decode to the same pixels."""
    if not what.startswith("examples/") and not SHARED_DATA.exists():
        pytest.skip("needs ../shared/data")
    data = (FIXTURES / name).read_bytes()
    with open(FIXTURES / name, "rb") as f:
        header = ContainerReader(f).header
    assert header.version == 3 and header.model_id == model
    decoded = bbcodec.decompress(data, workers=1)
    expected = _format_3_images(what)
    np.testing.assert_array_equal(np.asarray(decoded).reshape(expected.shape), expected)
