"""Every shipped model's coded rate, pinned: on 1,000 real test images (and a tiled photo)
the information content of what was coded stays within 0.3 % of the model's −ELBO on the
same images. A rate that drifts — a coding change that leaks bits — fails here, in CI."""

import io
import math

import numpy as np
import pytest
import torch
from paths import SHARED_DATA

from bbcodec import zoo
from bbcodec.api import compress_to, decompress_from
from bbcodec.models.data import load_images, read_png
from bbcodec.models.evaluate import evaluate
from bbcodec.models.tiles import tiled_elbo_terms

#: Largest |information / −ELBO − 1| allowed (the −ELBO is a one-sample estimate per
#: image: on 1,000 images its noise is well below this).
MAX_GAP = 0.003
N_IMAGES = 1000

DATASETS = {
    "vlae-bmnist": ("binarized_mnist.npz", "test"),
    "delta-vae-bmnist": ("binarized_mnist.npz", "test"),
    "vlae-mnist": ("mnist", "test"),
    "vlae-cifar10": ("cifar10.npz", "test"),
    "delta-vae-cifar10": ("cifar10.npz", "test"),
}


def _shipped(monkeypatch, name: str):
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV, raising=False)  # the shipped zoo
    if name not in {info.name for info in zoo.list_models()}:
        pytest.skip(f"{name} is not shipped")
    return zoo.load_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DATASETS))
def test_coded_information_is_the_negative_elbo(monkeypatch, name):
    model = _shipped(monkeypatch, name)
    path, split = DATASETS[name]
    if not (SHARED_DATA / path).exists():
        pytest.skip(f"no {path} in {SHARED_DATA}")
    images = load_images(SHARED_DATA / path, split)[:N_IMAGES]
    torch.set_num_threads(1)
    out = io.BytesIO()
    report = compress_to(out, images, model=name)
    out.seek(0)
    np.testing.assert_array_equal(np.concatenate(list(decompress_from(out))), images)
    neg_elbo_bpd = evaluate(model, images, seed=0, progress=False).neg_elbo_bpd
    information_bpd = report.information_bits / images.size
    gap = information_bpd / neg_elbo_bpd - 1
    assert abs(gap) < MAX_GAP, f"{name}: coded {information_bpd:.5f} vs −ELBO {neg_elbo_bpd:.5f}"


@pytest.mark.slow
def test_a_tiled_photo_codes_at_its_negative_elbo(monkeypatch):
    model = _shipped(monkeypatch, "vlae-cifar10")
    path = SHARED_DATA / "kodak" / "kodim05.png"
    if not path.is_file():
        pytest.skip(f"no Kodak photos in {path.parent}")
    photo = read_png(path)[0][:128, :192]
    torch.set_num_threads(1)
    out = io.BytesIO()
    report = compress_to(out, photo, model="vlae-cifar10")
    out.seek(0)
    np.testing.assert_array_equal(next(iter(decompress_from(out)))[0], photo)
    torch.manual_seed(0)
    with torch.inference_mode():
        neg_elbo_bits = sum(tiled_elbo_terms(model, photo)) / math.log(2)
    gap = report.information_bits / neg_elbo_bits - 1
    assert abs(gap) < MAX_GAP, f"coded {report.information_bits:.0f} vs −ELBO {neg_elbo_bits:.0f}"


#: What the README's example file (32 digits) may cost over the model's −ELBO: its fixed
#: costs (header, framing, the first images coded without bits back) show in so few images.
MAX_EXAMPLE_GAP = 0.10
#: What one image in a file of its own may cost, in bytes, besides its information content:
#: header and framing (32 bytes for a 28×28 image; one more for the channel dimension of
#: an RGB image and one more for a stream over 127 bytes), the coder's start from an empty
#: state (≤ 24 bits) and the unused bits of the last byte (< 8).
MAX_ONE_IMAGE_OVERHEAD_BYTES = 34 + 3 + 1


@pytest.mark.slow
def test_the_readme_example_file_is_within_ten_percent_of_the_negative_elbo(monkeypatch):
    from paths import REPO

    model = _shipped(monkeypatch, "vlae-bmnist")
    images = load_images(REPO / "examples" / "binarized-mnist")
    torch.set_num_threads(1)
    out = io.BytesIO()
    report = compress_to(out, images, model="vlae-bmnist")
    neg_elbo_bits = evaluate(model, images, seed=0, progress=False).neg_elbo_bpd * images.size
    assert report.file_bits == 8 * len(out.getvalue())
    assert report.file_bits < (1 + MAX_EXAMPLE_GAP) * neg_elbo_bits, (
        report.file_bits,
        neg_elbo_bits,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vlae-bmnist", "vlae-mnist", "vlae-cifar10"])
def test_a_one_image_file_is_its_information_and_a_few_dozen_bytes(monkeypatch, name):
    _shipped(monkeypatch, name)
    path, split = DATASETS[name]
    if not (SHARED_DATA / path).exists():
        pytest.skip(f"no {path} in {SHARED_DATA}")
    torch.set_num_threads(1)
    for image in load_images(SHARED_DATA / path, split)[:5]:
        out = io.BytesIO()
        report = compress_to(out, image[None], model=name)
        overhead_bytes = len(out.getvalue()) - report.information_bits / 8
        assert 0 < overhead_bytes <= MAX_ONE_IMAGE_OVERHEAD_BYTES, (name, overhead_bytes)
