"""`bbcodec bench --per-file`: every image of a dataset alone in its own file, as `bbcodec
compress IMAGE.png` codes it, next to the −ELBO and the baselines' files, in bytes per file.

Models are tiny and randomly initialised (never trained); the images are random.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

import bbcodec.bench
from bbcodec.api import compress
from bbcodec.baselines import BASELINES
from bbcodec.bench import BenchOptions, PhotoBench, run_bench
from bbcodec.cli.main import main
from bbcodec.models.weights import save_weights

pytestmark = pytest.mark.usefixtures("isolated")

CONFIG = tiny_config("vlae", "binary")  # 8×8 binary images


@pytest.fixture
def model_and_data(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A tiny random model's weights file, and a .npy file of 5 images for it."""
    model = tmp_path / "tiny.safetensors"
    save_weights(random_model(CONFIG), model)
    images = random_images(CONFIG, 5)
    data = tmp_path / "bits.npy"
    np.save(data, images)
    return model, data, images


def _bench(model: Path, data: Path, *options: str) -> int:
    return main(["bench", "--model", str(model), "--data", str(data), "--per-file",
                 "--threads", "1", "-q", *options])  # fmt: skip


def test_per_file_sizes_are_those_of_compress_one_image(capsys, tmp_path, model_and_data):
    model, data, images = model_and_data
    out = tmp_path / "per-file.json"
    code = _bench(model, data, "-n", "4", "--workers", "2", "--json", str(out))
    stdout, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out.read_text(), parse_constant=pytest.fail)  # no NaN in the record
    assert (r["mode"], r["n_images"], r["dims_per_image"]) == ("one file per image", 4, 64)
    assert r["roundtrip_ok"] is True and r["workers"] == 2 and r["threads"] == 1
    sizes = r["file_bytes"]
    assert list(sizes) == ["bbcodec", *BASELINES]
    # each file is what the API writes for that image alone, with its default settings
    assert sizes["bbcodec"] == [len(compress(image[None], str(model))) for image in images[:4]]
    for name, per_image in sizes.items():
        assert len(per_image) == 4 and all(size > 0 for size in per_image)
        assert math.isclose(r["mean_file_bytes"][name], np.mean(per_image))
    ours = np.array(sizes["bbcodec"])
    for name in BASELINES:
        assert math.isclose(r["bbcodec_ratio"][name], ours.mean() / r["mean_file_bytes"][name])
        assert r["bbcodec_smaller"][name] == int((ours < np.array(sizes[name])).sum())
        assert math.isclose(r["baselines"][name], 8 * sum(sizes[name]) / (4 * 64))
    assert math.isclose(r["neg_elbo_bytes"], r["neg_elbo_bpd"] * 64 / 8)
    assert math.isclose(r["bbcodec_ratio"]["neg_elbo"], ours.mean() / r["neg_elbo_bytes"])
    assert math.isclose(r["achieved_bpd"], 8 * ours.mean() / 64)
    for timing in (r["encode_seconds_per_file"], r["decode_seconds_per_file"]):
        assert 0 < timing["mean"] <= timing["max"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "each its own file" in stdout and "bytes/file" in stdout and "jpegxl" in stdout
    assert "roundtrip  ok" in stdout


def test_per_file_codes_in_process_with_the_threads_compress_uses(tmp_path, model_and_data):
    """By default each file is coded here, as `compress` codes it with the same --threads:
    the same bytes (a small image is coded with one torch thread whatever --threads says,
    `bbcodec.plan.MIN_PIXELS_FOR_THREADS`)."""
    model, data, images = model_and_data
    out = tmp_path / "per-file.json"
    assert main(["bench", "--model", str(model), "--data", str(data), "--per-file", "-n", "2",
                 "--threads", "2", "-q", "--json", str(out)]) == 0  # fmt: skip
    r = json.loads(out.read_text())
    assert (r["workers"], r["threads"], r["roundtrip_ok"]) == (1, 1, True)
    assert torch.get_num_threads() == 2  # --threads: what compress's defaults follow
    expected = [len(compress(image[None], str(model))) for image in images[:2]]
    assert r["file_bytes"]["bbcodec"] == expected


def test_per_file_fails_loudly_when_an_image_decodes_wrongly(
    capsys, tmp_path, monkeypatch, model_and_data
):
    model, data, _ = model_and_data
    real = bbcodec.bench.decompress_from

    def corrupting(*args, **kwargs):
        for images in real(*args, **kwargs):
            images = images.copy()
            images[0, 0, 0] ^= 1
            yield images

    monkeypatch.setattr(bbcodec.bench, "decompress_from", corrupting)
    out = tmp_path / "per-file.json"
    code = _bench(model, data, "-n", "2", "--workers", "1", "--json", str(out))
    stdout, err = capsys.readouterr()
    assert code == 3 and "roundtrip failed" in err
    assert "image 0: 1 of 1 images decode wrongly" in err and "image 1:" in err
    assert "FAILED (2)" in stdout
    assert json.loads(out.read_text())["roundtrip_ok"] is False


def test_per_file_refuses_options_that_do_not_apply(capsys, model_and_data):
    model, data, _ = model_and_data
    for option in ("--chunk-images", "--max-batch"):
        code = _bench(model, data, option, "2")
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("bbcodec: error: --per-file") and option in err
    assert main(["bench", "--help"]) == 0 and "--per-file" in capsys.readouterr().out


def test_per_file_on_photos_is_the_photo_bench(tmp_path):
    from PIL import Image

    model = tmp_path / "tiny.safetensors"
    save_weights(random_model(CONFIG), model)
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = random_images(CONFIG, 1)[0, :, :5].repeat(2, 0).astype(bool)  # 16×5, not 8×8
    Image.fromarray(photo).save(folder / "a.png")
    options = BenchOptions(workers=1, per_file=True)
    result = run_bench(str(model), str(folder), options=options)
    assert isinstance(result, PhotoBench) and result.n_images == 1 and result.failure is None
