"""The public Python API: `bbcodec.compress` / `bbcodec.decompress` and friends.

Tiny random models, passed as objects or registered in a temporary zoo (the
``BBCODEC_WEIGHTS_DIR`` variable), so a file decodes from its bytes alone. Damaged and
truncated files raise `ContainerError` subclasses only; images a model cannot code raise
`ImageKindError`; the README's example runs as written; a slow test codes 2000 real
binarized-MNIST test images with the shipped model when there is one.
"""

from __future__ import annotations

import io
import json
import math
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO, SHARED_DATA
from tiny import random_images, random_model, tiny_config

import bbcodec
from bbcodec import zoo
from bbcodec.api import (
    CompressReport,
    compress_to,
    decompress_from,
    default_model_for,
    load_model,
)
from bbcodec.codec import CodingSettings, initial_seed_words
from bbcodec.container import loads
from bbcodec.errors import ContainerError, DecodeError, ImageKindError
from bbcodec.models.vae import LatentVariableModel
from bbcodec.models.weights import WeightsError, save_weights
from bbcodec.plan import DEFAULT_MODELS

BMNIST = SHARED_DATA / "binarized_mnist.npz"


@pytest.fixture(autouse=True)
def zoo_dir(monkeypatch, tmp_path) -> Path:
    """An empty private zoo: tests never read or write the shipped one."""
    torch.set_num_threads(1)  # two trainings share the machine's two cores
    folder = tmp_path / "zoo"
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(folder))
    return folder


def _register(name: str, model: LatentVariableModel, tmp_path: Path) -> None:
    """Registers ``model`` under ``name`` in the zoo the environment names."""
    path = tmp_path / f"{name}-run.safetensors"
    save_weights(model, path)
    zoo.register_model(
        name, path, dataset="random test images", test_neg_elbo_bpd=1.0, test_neg_elbo_nats=1.0
    )


# ----- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "kind", "n"), [("vlae", "binary", 10), ("delta-vae", "grey", 5), ("vlae", "rgb", 4)]
)
def test_round_trip_with_a_model_object(family, kind, n):
    model = random_model(tiny_config(family, kind))
    images = random_images(model.config, n)
    data = bbcodec.compress(images, model=model)
    assert data[:5] == b"\x89BBC\x03"  # format version 3
    decoded = bbcodec.decompress(data, model=model)
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    np.testing.assert_array_equal(decoded, images)
    with pytest.raises(DecodeError, match="unregistered weights: pass the model"):
        bbcodec.decompress(data)  # a model object is recorded as "custom"


def test_one_image_and_a_list_of_images():
    model = random_model(tiny_config("vlae", "binary"))
    image = random_images(model.config, 1)[0]  # (H, W)
    np.testing.assert_array_equal(
        bbcodec.decompress(bbcodec.compress(image, model=model), model=model), image[None]
    )
    several = list(random_images(model.config, 3, seed=1))
    decoded = bbcodec.decompress(bbcodec.compress(several, model=model), model=model)
    np.testing.assert_array_equal(decoded, np.stack(several))

    rgb_model = random_model(tiny_config("delta-vae", "rgb"))
    rgb = random_images(rgb_model.config, 1)[0]  # (H, W, 3)
    decoded = bbcodec.decompress(bbcodec.compress(rgb, model=rgb_model), model=rgb_model)
    assert decoded.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(decoded[0], rgb)


@pytest.mark.parametrize(("chunk_images", "max_batch"), [(1, 1), (4, 3), (100, 64)])
def test_chunk_and_batch_settings(chunk_images, max_batch):
    model = random_model(tiny_config("vlae", "grey"))
    images = random_images(model.config, 9)
    settings = CodingSettings(max_batch=max_batch, chunk_images=chunk_images)
    out = io.BytesIO()
    report = compress_to(out, images, model=model, settings=settings)
    n_chunks = -(-9 // chunk_images)
    assert len(report.chunk_batch_sizes) == n_chunks
    assert list(report.chunk_images) == [
        min(chunk_images, 9 - f) for f in range(0, 9, chunk_images)
    ]
    assert all(max(s, default=1) <= max_batch for s in report.chunk_batch_sizes)
    parts = list(decompress_from(io.BytesIO(out.getvalue()), model=model))
    assert len(parts) == n_chunks  # one array per chunk, as they decode
    np.testing.assert_array_equal(np.concatenate(parts), images)


def test_a_registered_model_is_found_from_the_file_alone(tmp_path):
    model = random_model(tiny_config("delta-vae", "binary"))
    _register("tiny-bin", model, tmp_path)
    assert [info.name for info in zoo.list_models()] == ["tiny-bin"]
    images = random_images(model.config, 6)
    data = bbcodec.compress(images, model="tiny-bin")
    assert b"tiny-bin" in data[:100]  # the header names the model
    np.testing.assert_array_equal(bbcodec.decompress(data), images)
    # The same weights as an object code the same ANS words (only the header's id differs).
    named_header, named_chunks = loads(data)
    custom_header, custom_chunks = loads(bbcodec.compress(images, model=model))
    assert (named_header.model_id, custom_header.model_id) == ("tiny-bin", "custom")
    assert named_header.weights_digest == custom_header.weights_digest
    assert [c.words.tolist() for c in named_chunks] == [c.words.tolist() for c in custom_chunks]


def test_a_registered_prior_mean_model_codes_photos_without_latents(tmp_path, zoo_dir):
    """A registry entry's ``tile_latents`` is the default of its photos (recorded in the
    file, which decodes from its bytes alone); images of the model's size keep bits back,
    and settings that say otherwise win."""
    model = random_model(tiny_config("vlae", "rgb"))
    _register("tiny-photo", model, tmp_path)
    registry = zoo_dir / zoo.REGISTRY_FILE
    entries = json.loads(registry.read_text())
    entries["tiny-photo"]["tile_latents"] = "prior-mean"
    registry.write_text(json.dumps(entries))
    photo = np.random.default_rng(3).integers(0, 256, (13, 21, 3), dtype=np.uint8)

    def recorded(images, settings=None):
        data = bbcodec.compress(images, model="tiny-photo", settings=settings)
        np.testing.assert_array_equal(np.reshape(bbcodec.decompress(data), images.shape), images)
        return loads(data)[0].settings.get("tile_latents")

    assert recorded(photo) == "prior-mean"
    assert recorded(random_images(model.config, 3)) is None  # batched: bits back
    assert recorded(photo, CodingSettings(tile_latents="bits-back")) is None
    assert loads(bbcodec.compress(photo, model=model))[0].settings.get("tile_latents") is None


def test_encoding_is_deterministic():
    model = random_model(tiny_config("vlae", "rgb"))
    images = random_images(model.config, 5)
    first = bbcodec.compress(images, model=model)
    out = io.BytesIO()
    compress_to(out, images, model=random_model(tiny_config("vlae", "rgb")))
    assert out.getvalue() == first


# ----- wrong models, damaged files --------------------------------------------------------


def test_wrong_model_is_a_clear_decode_error(tmp_path):
    config = tiny_config("vlae", "binary")
    images = random_images(config, 4)
    data = bbcodec.compress(images, model=random_model(config, seed=0))
    with pytest.raises(DecodeError, match="other weights than the given model"):
        bbcodec.decompress(data, model=random_model(config, seed=1))
    with pytest.raises(DecodeError, match="other weights"):
        bbcodec.decompress(data, model=random_model(tiny_config("delta-vae", "binary")))
    # A registered name whose weights changed after the file was made.
    _register("tiny", random_model(config, seed=0), tmp_path)
    data = bbcodec.compress(images, model="tiny")
    _register("tiny", random_model(config, seed=2), tmp_path)
    with pytest.raises(DecodeError, match=r"other weights.*'tiny' in the file"):
        bbcodec.decompress(data)


@pytest.fixture
def small_file(tmp_path) -> bytes:
    model = random_model(tiny_config("vlae", "binary"))
    _register("tiny", model, tmp_path)
    data = bbcodec.compress(random_images(model.config, 3), model="tiny")
    np.testing.assert_array_equal(bbcodec.decompress(data), random_images(model.config, 3))
    return data


def test_truncated_files_raise_container_errors(small_file):
    for size in [*range(0, len(small_file), 7), len(small_file) - 1]:
        with pytest.raises(ContainerError):  # anything else fails the test
            bbcodec.decompress(small_file[:size])
    with pytest.raises(ContainerError):
        bbcodec.decompress(small_file + b"\0")  # bytes after the last chunk


def test_flipped_bits_raise_container_errors(small_file):
    rng = np.random.default_rng(7)
    for _ in range(300):
        damaged = bytearray(small_file)
        for _ in range(rng.integers(1, 4)):
            position = int(rng.integers(len(damaged)))
            damaged[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(ContainerError):  # DecodeError and ChecksumError are subclasses
            bbcodec.decompress(bytes(damaged))


# ----- images the model cannot code -------------------------------------------------------


def test_images_the_model_cannot_code():
    model = random_model(tiny_config("vlae", "binary"))
    good = random_images(model.config, 2)
    cases = {
        "must be uint8": good.astype(np.float32),
        "uint8, got int16": good.astype(np.int16),
        r"binary \(H, W\) images, got shape \(8, 8, 3\)": np.zeros((2, 8, 8, 3), np.uint8),
        "binary images \\(0/1\\), got values up to 200": np.full((2, 8, 8), 200, np.uint8),
        r"\(N, H, W\) or \(N, H, W, 3\)": np.zeros((2, 8, 8, 4), np.uint8),
        "shape": np.zeros(8, np.uint8),
        "no images": np.zeros((0, 8, 8), np.uint8),
    }
    for message, images in cases.items():
        with pytest.raises(ImageKindError, match=message):
            bbcodec.compress(images, model=model)
    with pytest.raises(ImageKindError, match=r"\(H, W\) or \(H, W, 3\)"):
        bbcodec.compress([good[0], np.zeros((4, 4, 2), np.uint8)], model=model)
    grey = random_model(tiny_config("vlae", "grey"))
    with pytest.raises(ImageKindError, match=r"grey \(H, W\) images, got shape \(8, 8, 3\)"):
        bbcodec.compress(np.zeros((2, 8, 8, 3), np.uint8), model=grey)
    delta = random_model(tiny_config("delta-vae", "grey"))
    with pytest.raises(ImageKindError, match=r"of shape \(8, 8\) only .* VLAE"):
        bbcodec.compress(np.zeros((2, 8, 12), np.uint8), model=delta)


def test_images_of_any_sizes_in_one_file_round_trip():
    """Model-sized images go in batches, the others one by one, tiled; order is kept."""
    model = random_model(tiny_config("vlae", "rgb"))
    rng = np.random.default_rng(3)
    sizes = [(8, 8), (8, 8), (13, 5), (8, 8), (1, 17), (20, 20)]
    images = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in sizes]
    data = bbcodec.compress(images, model=model, workers=1)
    decoded = bbcodec.decompress(data, model=model)
    assert [d.shape for d in decoded] == [im.shape for im in images]
    for got, want in zip(decoded, images, strict=True):
        np.testing.assert_array_equal(got, want)


def test_default_model_errors_name_the_models_that_exist(tmp_path):
    with pytest.raises(ImageKindError) as error:
        default_model_for(np.zeros((1, 5, 7), np.uint8))
    message = str(error.value)
    assert "5x7" in message and "binary" in message
    for name in DEFAULT_MODELS.values():
        assert name in message
    with pytest.raises(ImageKindError, match="no shipped model for binary images of 30x40"):
        bbcodec.compress(np.zeros((1, 30, 40), np.uint8))  # "auto"
    with pytest.raises(ImageKindError, match="several kinds"):
        default_model_for([np.zeros((28, 28), np.uint8), np.zeros((32, 32, 3), np.uint8)])
    assert default_model_for(np.zeros((3, 28, 28), np.uint8)) == "vlae-bmnist"
    assert default_model_for(np.full((3, 28, 28), 9, np.uint8)) == "vlae-mnist"
    assert default_model_for(np.zeros((3, 32, 32, 3), np.uint8)) == "vlae-cifar10"
    # RGB or grey of any other size, or of several sizes: the photo models (tiled)
    assert default_model_for(np.zeros((1, 512, 768, 3), np.uint8)) == "vlae-photo-2"
    assert default_model_for([np.zeros((5, 7, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)]) == (
        "vlae-photo-2"
    )
    assert default_model_for(np.full((1, 512, 768), 9, np.uint8)) == "vlae-photo-grey-3"
    # The default exists in name only here (an empty zoo): the error lists what is registered.
    _register("tiny", random_model(tiny_config("vlae", "binary")), tmp_path)
    with pytest.raises(WeightsError, match=r"'vlae-bmnist'.*known models: tiny"):
        bbcodec.compress(np.zeros((1, 28, 28), np.uint8))


# ----- reports ----------------------------------------------------------------------------


def test_report_counts_every_byte():
    model = random_model(tiny_config("delta-vae", "grey"))
    images = random_images(model.config, 7)
    out = io.BytesIO()
    report = compress_to(out, images, model=model, settings=CodingSettings(chunk_images=3))
    data = out.getvalue()
    assert isinstance(report, CompressReport)
    assert (report.n_images, report.n_dims) == (7, 7 * 64)
    assert report.file_bits == 8 * len(data)
    assert report.achieved_bpd == 8 * len(data) / (7 * 64)
    # Theory next to practice: the file holds the net growth and the framing; each chunk
    # starts empty (no seed) and loses at most 24 bits to the coder's start from state 0.
    assert report.initial_bits == 0
    assert abs(report.net_bits - report.information_bits) < 3 * (24 + 64)  # + trailers
    assert report.file_bits > report.net_bits
    seeded = compress_to(
        io.BytesIO(), images, model, CodingSettings(chunk_images=3, initial_bits="seed")
    )
    assert seeded.initial_bits == 3 * 32 * initial_seed_words(8)  # three chunks, 8 latents
    assert seeded.file_bits > report.file_bits


# ----- the README's example ---------------------------------------------------------------


def _readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)
    assert len(section) == 2, "README.md has no 'Python API' section"
    blocks = re.findall(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.DOTALL)
    assert blocks, "the README's Python API section has no python code block"
    return blocks


def _readme_python_example() -> str:
    return _readme_python_blocks()[0]


def test_readme_examples_with_workers_keep_the_main_guard():
    """Spawned workers import the main module: code passing workers > 1 is guarded."""
    with_workers = [block for block in _readme_python_blocks() if "workers=" in block]
    assert with_workers, "the README's Python API section shows no workers= example"
    for block in with_workers:
        assert 'if __name__ == "__main__":' in block, block


def test_readme_python_example_runs(monkeypatch, tmp_path, capsys):
    if not BMNIST.is_file():
        pytest.skip(f"no binarized MNIST at {BMNIST}")
    code = _readme_python_example()
    assert 'model="vlae-bmnist"' in code
    # A tiny random model plays vlae-bmnist in the temporary zoo; the code runs unchanged
    # from the clone's folder, where ../shared/data is.
    _register("vlae-bmnist", random_model(tiny_config("vlae", "binary", hw=(28, 28))), tmp_path)
    example = tmp_path / "readme_example.py"
    example.write_text(code, encoding="utf-8")
    monkeypatch.chdir(REPO)
    runpy.run_path(str(example), run_name="__main__")
    assert re.fullmatch(r"\d+\.\d{3} bits/dim\n", capsys.readouterr().out)


# ----- real data, shipped model -----------------------------------------------------------


@pytest.mark.slow
def test_shipped_model_round_trips_2000_test_digits(monkeypatch):
    """Determinism over thousands of real test images: every pixel back, bit for bit."""
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV)  # the shipped zoo
    shipped = {info.name: info for info in zoo.list_models()}
    if "vlae-bmnist" not in shipped:
        pytest.skip("vlae-bmnist is not shipped yet")
    if not BMNIST.is_file():
        pytest.skip(f"no binarized MNIST at {BMNIST}")
    digits = np.load(BMNIST)["test"][:2000]
    out = io.BytesIO()
    report = compress_to(out, digits, model="vlae-bmnist")
    decoded = bbcodec.decompress(out.getvalue())
    np.testing.assert_array_equal(decoded, digits)
    # The rate is honest: close to the model's test −ELBO (a 2000-image subset, one-sample
    # estimate in the card; the file adds the seed, trailers and framing).
    assert report.achieved_bpd < 1.05 * shipped["vlae-bmnist"].test_neg_elbo_bpd + 0.002


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vlae-cifar10", "delta-vae-cifar10"])
def test_shipped_cifar10_model_round_trips_test_images(monkeypatch, name):
    """Both CIFAR-10 models on 256 real test images: every RGB pixel back, and the rate
    within 3 % of the card's test −ELBO (a subset; the file adds seed and trailers)."""
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV)
    shipped = {info.name: info for info in zoo.list_models()}
    cifar10 = BMNIST.parent / "cifar10.npz"
    if name not in shipped:
        pytest.skip(f"{name} is not shipped yet")
    if not cifar10.is_file():
        pytest.skip(f"no CIFAR-10 at {cifar10}")
    images = np.load(cifar10)["x_test"][:256]
    out = io.BytesIO()
    report = compress_to(out, images, model=name)
    np.testing.assert_array_equal(bbcodec.decompress(out.getvalue()), images)
    assert report.achieved_bpd < 1.03 * shipped[name].test_neg_elbo_bpd


@pytest.mark.slow
def test_a_real_photo_round_trips_tiled(monkeypatch):
    """A Kodak photo (a 256×384 crop) with a shipped model of small tiles: every pixel
    back, across hundreds of tiles; the file is within 3 % of the tiled −ELBO."""
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV)
    shipped = {info.name for info in zoo.list_models()}
    photo_path = BMNIST.parent / "kodak" / "kodim23.png"
    if not photo_path.is_file():
        pytest.skip(f"no Kodak photos at {photo_path.parent}")
    from bbcodec.models.data import read_png
    from bbcodec.models.tiles import tiled_elbo_terms

    name = "vlae-cifar10" if "vlae-cifar10" in shipped else "vlae-mnist"
    photo = read_png(photo_path)[0][:256, :384]
    if name == "vlae-mnist":  # grey tiles of 28×28: code the photo's luminance
        photo = np.ascontiguousarray(photo.mean(axis=2).round().astype(np.uint8))
    model = load_model(name)
    out = io.BytesIO()
    report = compress_to(out, photo, model=name)
    np.testing.assert_array_equal(bbcodec.decompress(out.getvalue())[0], photo)
    torch.manual_seed(0)
    neg_elbo_bits = sum(tiled_elbo_terms(model, photo)) / math.log(2)
    assert report.file_bits < 1.03 * neg_elbo_bits
