"""Photo-model training data and the tiled training loss (`bbcodec.models.photos`,
`LatentVariableModel.elbo_terms` on images of whole tiles)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from bbcodec.errors import DataError, UsageError
from bbcodec.models.evaluate import check_images, evaluate
from bbcodec.models.photos import (
    VALID_EVERY,
    PhotoCrops,
    central_crops,
    load_photos,
    photo_files,
    to_kind,
)
from bbcodec.models.presets import Recipe
from bbcodec.models.tiles import tiled_elbo_terms
from bbcodec.models.train import train
from bbcodec.models.vae import _join_tiles, _split_tiles
from tests.tiny import random_model, tiny_config


def _photo_folder(root, n: int = 2 * VALID_EVERY, seed: int = 0):
    rng = np.random.default_rng(seed)
    (root / "a").mkdir(parents=True)
    for i in range(n):
        h, w = rng.integers(20, 40, 2)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "a" / f"{i:03d}.png")
    return root


def test_split_and_join_tiles_invert_each_other():
    x = torch.arange(2 * 16 * 24 * 3).reshape(2, 16, 24, 3)
    tiles = _split_tiles(x, 2, 3)
    assert tiles.shape == (12, 8, 8, 3)
    assert torch.equal(tiles[1], x[0, :8, 8:16])  # row-major tiles of each image
    assert torch.equal(tiles[3], x[0, 8:, :8])
    assert torch.equal(tiles[6], x[1, :8, :8])
    assert torch.equal(_join_tiles(tiles, 2, 3), x)


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_elbo_of_whole_tiles_is_the_tiled_codecs_elbo(kind):
    """The training loss on a crop of 2×3 tiles is the −ELBO the tiled codec codes against."""
    config = tiny_config("vlae", kind)
    model = random_model(config)
    shape = (16, 24) + ((3,) if kind == "rgb" else ())
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    torch.manual_seed(5)
    recon, kl = tiled_elbo_terms(model, image)
    torch.manual_seed(5)
    with torch.no_grad():
        terms = model.elbo_terms(torch.from_numpy(image)[None])
    assert float(terms.recon_nats[0]) == pytest.approx(recon, rel=1e-5)
    assert float(terms.kl_nats[0]) == pytest.approx(kl, rel=1e-5, abs=1e-4)
    assert terms.kl_dims_nats.shape == (1, config.latent_dim)
    loss, _ = model.loss(torch.from_numpy(image)[None])
    assert float(loss.detach()) > 0


def test_elbo_refuses_parts_of_tiles():
    model = random_model(tiny_config("vlae", "grey"))
    with pytest.raises(ValueError, match="whole 8x8 tiles"):
        model.elbo_terms(torch.zeros(1, 12, 16, dtype=torch.uint8))


def test_photo_split_is_fixed_and_disjoint(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    train_photos = load_photos(root, "rgb", "train")
    valid_photos = load_photos(root, "rgb", "valid")
    assert len(valid_photos) == 2 and len(train_photos) == 2 * VALID_EVERY - 2
    files = photo_files(root)
    held_out = np.asarray(Image.open(files[VALID_EVERY - 1]))
    assert np.array_equal(valid_photos[0], held_out)
    grey = load_photos(root, "grey", "valid")
    assert np.array_equal(grey[0], np.asarray(Image.fromarray(held_out).convert("L")))


def test_too_few_photos_is_one_clear_error(tmp_path):
    root = _photo_folder(tmp_path / "photos", n=3)
    with pytest.raises(DataError, match="at least"):
        photo_files(root)


def test_to_kind_refuses_binary():
    with pytest.raises(ValueError, match="rgb or grey"):
        to_kind(np.zeros((4, 4, 3), np.uint8), "binary")


def test_crops_are_fixed_by_seed_and_index():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (30, 50, 3), dtype=np.uint8) for _ in range(3)]
    crops = PhotoCrops(photos, (16, 16), n=100, seed=3)
    batch = crops[np.array([4, 9, 4])]
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[0], batch[2])
    again = PhotoCrops(photos, (16, 16), n=100, seed=3)
    assert np.array_equal(again[np.array([9])][0], batch[1])
    other = PhotoCrops(photos, (16, 16), n=100, seed=4)
    assert not np.array_equal(other[np.arange(10)], crops[np.arange(10)])
    # every crop is a window of one photo, as it is or mirrored left to right
    for k in range(20):
        crop = crops.crop(k)
        found = False
        for photo in photos:
            for candidate in (crop, crop[:, ::-1]):
                windows = np.lib.stride_tricks.sliding_window_view(photo, (16, 16, 3))[
                    ..., 0, :, :, :
                ]
                found |= bool((windows == candidate).all(axis=(-3, -2, -1)).any())
        assert found


def test_crops_refuse_small_photos():
    with pytest.raises(DataError, match="smaller"):
        PhotoCrops([np.zeros((10, 40, 3), np.uint8)], (16, 16), n=5)


def test_central_crops():
    photo = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    crops = central_crops([photo, photo], 16)
    assert crops.shape == (2, 16, 16)
    assert np.array_equal(crops[0], photo[7:23, 12:28])
    with pytest.raises(DataError):
        central_crops([photo], 32)


def test_evaluate_and_check_images_take_whole_tiles():
    config = tiny_config("vlae", "rgb")
    model = random_model(config)
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    result = evaluate(model, images, progress=False)
    assert result.dims_per_image == 16 * 16 * 3
    assert result.kl_nats + result.recon_nats == pytest.approx(result.neg_elbo_nats)
    with pytest.raises(DataError, match="whole 8x8 tiles"):
        check_images(config, images[:, :12], whole_tiles=True)
    full_context = tiny_config("delta-vae", "rgb")
    with pytest.raises(DataError):
        check_images(full_context, images, whole_tiles=True)
    with pytest.raises(DataError):
        check_images(config, images)  # whole tiles only where asked for


def test_training_on_crops_runs_and_resumes(tmp_path):
    torch.set_num_threads(1)
    config = tiny_config("vlae", "grey")
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(4)]
    crops = PhotoCrops(photos, (16, 16), n=64)
    valid = PhotoCrops(photos, (16, 16), n=8, seed=1)[np.arange(8)]
    recipe = Recipe(batch_size=4, crop_tiles=2)
    train(config, recipe, crops, valid, tmp_path / "run", epochs=0.25)
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert "final_valid_neg_elbo_bpd" in log
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_validation_history_for_the_card(tmp_path):
    from bbcodec.models.train import validation_history

    assert validation_history(tmp_path) == ""
    lines = [
        '{"step": 50, "images": 800, "train_seconds": 60.0, "loss_bpd": 3.1}',
        *(
            f'{{"step": {k}, "images": {k * 16}, "train_seconds": {k * 1.5}, '
            f'"valid_neg_elbo_bpd": {4 - k / 1000}}}'
            for k in range(100, 3100, 100)
        ),
        '{"step": 3100, "valid_neg',  # cut short by a kill
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    text = validation_history(tmp_path, rows=5)
    table = [line for line in text.splitlines() if line.startswith("| ") and "min" in line]
    assert len(table) == 5
    assert table[0] == "| 2.5 min | 1,600 | 3.9000 |"
    assert table[-1] == "| 75.0 min | 48,000 | 1.0000 |"


def test_grey_start_from_an_rgb_model_sees_grey_as_equal_colours():
    from bbcodec.models.grow import grey_from_rgb, grow_into, starting_model

    rgb = random_model(tiny_config("vlae", "rgb"))
    grey = grey_from_rgb(rgb).eval()
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    x3 = torch.from_numpy(np.repeat(x[..., None], 3, axis=3))
    xg = torch.from_numpy(x)
    with torch.no_grad():
        q_rgb, q_grey = rgb.posterior(x3), grey.posterior(xg)
        assert torch.allclose(q_rgb.mean, q_grey.mean, atol=1e-5)
        z = q_rgb.mean
        p_rgb, p_grey = rgb.likelihood_params(x3, z), grey.likelihood_params(xg, z)
    k = rgb.config.n_mixtures
    assert torch.allclose(p_grey[..., :k], p_rgb[..., :k], atol=1e-5)  # weights
    assert torch.allclose(p_grey[..., k : 2 * k], p_rgb[..., k : 2 * k], atol=1e-5)  # red means
    assert torch.allclose(p_grey[..., 2 * k :], p_rgb[..., 4 * k : 5 * k], atol=1e-5)  # red scales
    bigger = dataclasses.replace(grey.config, kernel_size=5)
    start = starting_model(rgb, bigger)
    grown = random_model(bigger)
    grow_into(start, grown)  # the grey start grows like any model
    with pytest.raises(UsageError):
        grey_from_rgb(grey)
