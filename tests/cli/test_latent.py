"""`bbcodec latent` through `main(argv)` on tiny random models: each sub-command writes a
PNG grid of the stated size and its JSON, repeats under --seed, and bad input gives one
line."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import random_images, random_model, tiny_config

from bbcodec.cli.main import main
from bbcodec.models.weights import save_weights

pytestmark = pytest.mark.usefixtures("isolated")

PAD, ZOOM = 2, 2  # the grid's padding, and --zoom's default


@pytest.fixture(params=[("vlae", "binary"), ("delta-vae", "rgb")], ids=["vlae", "delta-rgb"])
def model(request, tmp_path) -> Path:
    config = tiny_config(*request.param)
    path = tmp_path / f"{request.param[0]}-{request.param[1]}.safetensors"
    save_weights(random_model(config), path)
    return path


@pytest.fixture
def binary_model(tmp_path) -> Path:
    path = tmp_path / "binary.safetensors"
    save_weights(random_model(tiny_config("vlae", "binary")), path)
    return path


def _data(model: Path, n: int = 12) -> str:
    kind = "rgb" if "rgb" in model.name else "binary"
    images = random_images(tiny_config("vlae", kind), n)
    np.save("data.npy", images)
    return "data.npy"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["latent", *argv, "--threads", "1", "-q"])
    out, err = capsys.readouterr()
    return code, out, err


def _grid_size(rows: int, cols: int, side: int = 8) -> tuple[int, int]:
    """(width, height) of a grid of rows × cols cells of side × side pixels."""
    return ZOOM * (cols * (side + PAD) + PAD), ZOOM * (rows * (side + PAD) + PAD)


def _written(capsys, *argv: str, out: str = "grid.png") -> tuple[Image.Image, dict, bytes]:
    code, stdout, err = run(capsys, *argv, "-o", out, "--json", "out.json")
    assert code == 0, err
    assert f"wrote {out}" in stdout
    data = Path(out).read_bytes()
    return Image.open(out), json.loads(Path("out.json").read_text()), data


def test_reconstruct(capsys, model):
    data = _data(model)
    args = ("reconstruct", "--model", str(model), "--data", data, "-n", "3", "--samples", "2")
    image, js, first = _written(capsys, *args)
    assert image.size == _grid_size(3, 3)
    assert js["grid"]["rows"] == 3 and js["grid"]["cols"] == 3 and len(js["images"]) == 3
    assert [i["index"] for i in js["images"]] == [0, 6, 11]  # spread over the split
    assert len(js["images"][0]["sample_mean_abs_diff"]) == 2
    assert _written(capsys, *args)[2] == first


def test_sample_repeats_under_the_seed_and_changes_with_it(capsys, model):
    args = ("sample", "--model", str(model), "-n", "5")
    image, js, first = _written(capsys, *args)
    assert image.size == _grid_size(2, 3) and len(js["z"]) == 5
    assert _written(capsys, *args)[2] == first
    assert _written(capsys, *args, "--seed", "1")[2] != first


def test_interpolate(capsys, model):
    data = _data(model)
    args = ("interpolate", "--model", str(model), "--data", data, "--pair", "1", "4")
    image, js, first = _written(capsys, *args, "--steps", "3")
    assert image.size == _grid_size(2, 5)
    assert js["t"] == [0.0, 0.5, 1.0] and js["pair"] == [1, 4]
    assert js["norm_slerp"][0] == pytest.approx(js["norm_linear"][0])
    assert _written(capsys, *args, "--steps", "3")[2] == first


def _labels(labels: list[int]) -> str:
    with gzip.open("labels.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + bytes(labels))
    return "labels.gz"


def test_attribute(capsys, binary_model):
    data = _data(binary_model)
    labels = _labels([0, 1] * 6)
    args = ("attribute", "--model", str(binary_model), "--data", data, "--labels", labels,
            "--from", "0", "--to", "1", "--per-class", "3", "-n", "2", "--steps", "4")  # fmt: skip
    image, js, first = _written(capsys, *args)
    assert image.size == _grid_size(2, 5)
    assert (js["n_from"], js["n_to"], js["edited"]) == (3, 3, [6, 8])
    assert js["alphas"] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert _written(capsys, *args)[2] == first
    sorted_run = _written(capsys, *args, "--labels-sorted")[1]  # labels 0 ×6, then 1 ×6
    assert sorted_run["edited"] == [3, 4]


def test_attribute_reads_npz_labels(capsys, binary_model):
    data = _data(binary_model)
    np.savez("y.npz", y_test=np.array([2, 5] * 6, np.uint8))
    args = ("attribute", "--model", str(binary_model), "--data", data, "--labels", "y.npz",
            "--from", "2", "--to", "5", "--per-class", "2", "-n", "1")  # fmt: skip
    image, js, _ = _written(capsys, *args)
    assert image.size == _grid_size(1, 6) and js["edited"] == [4]


def test_report(capsys, model):
    data = _data(model)
    args = ("report", "--model", str(model), "--data", data, "-n", "10", "--batch-size", "4")
    image, js, first = _written(capsys, *args, out="kl.png")
    assert image.format == "PNG" and image.size[0] >= 600
    assert js["n_images"] == 10 and len(js["kl_dims_nats"]) == js["latent_dim"]
    assert sum(js["kl_dims_nats"]) == pytest.approx(js["kl_nats"])
    assert _written(capsys, *args, out="kl.png")[2] == first


ATTRIBUTE = ("attribute", "--data", "data.npy", "--from", "0", "--labels")


@pytest.mark.parametrize(
    "argv,message",
    [
        (("reconstruct", "--data", "missing.npy"), "missing.npy: no such file"),
        (("interpolate", "--data", "data.npy", "--pair", "0", "12"), "has 12 images"),
        ((*ATTRIBUTE, "labels.gz", "--to", "7"), "class 7 has no images"),
        ((*ATTRIBUTE, "data.npy", "--to", "1"), "not an IDX label file"),
        (("reconstruct", "--data", "big.npy"), "model is for binary images of shape (8, 8)"),
        (("reconstruct", "--data", "grey.npy"), "binary (0/1)"),
        (("sample", "--model", "nothing-here"), "neither a registered model"),
    ],
)
def test_bad_input_gives_one_line(capsys, binary_model, argv, message):
    _data(binary_model)
    _labels([0, 1] * 6)
    np.save("big.npy", np.zeros((2, 16, 16), np.uint8))
    np.save("grey.npy", np.full((2, 8, 8), 200, np.uint8))
    model = () if "--model" in argv else ("--model", str(binary_model))
    code, _, err = run(capsys, *argv, *model, "-o", "grid.png")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("bbcodec: error: "), err
    assert message in lines[0]
    assert not Path("grid.png").exists()


def test_usage_errors(capsys, binary_model):
    code, _, err = run(capsys, "interpolate", "--model", str(binary_model), "--data", "x.npy",
                       "--pair", "0", "1", "--steps", "1", "-o", "g.png")  # fmt: skip
    assert code == 2 and "at least 2" in err
    code, _, err = run(capsys, "sample", "--model", str(binary_model))
    assert code == 2 and "--output" in err
