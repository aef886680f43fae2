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
