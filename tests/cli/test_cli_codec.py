"""`bbcodec compress` / `bbcodec decompress` through `main(argv)`, on tiny random models and
small images in tmp_path: round trips, the rate report, and every error a user can cause
(one stderr line, exit code ≠ 0, nothing written and no temporary file left behind)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import listing as _listing
from cli_runs import npy as _npy
from cli_runs import run
from paths import REPO
from PIL import Image

from bbcodec import api, zoo
from bbcodec.cli import codec_commands
from bbcodec.codec import CodingSettings, ImageCodec
from bbcodec.container import ContainerReader, ContainerWriter
from bbcodec.models.data import load_images
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights

SMALL = {"channels": 8, "n_blocks": 1, "made_hidden": 16, "kernel_size": 3}
BINARY = ModelConfig("vlae", "binary", (8, 8), latent_dim=4, **SMALL)
GREY = ModelConfig("vlae", "grey", (8, 8), latent_dim=4, n_mixtures=2, **SMALL)
RGB = ModelConfig("vlae", "rgb", (8, 8), latent_dim=4, n_mixtures=2, **SMALL)
DELTA = ModelConfig("delta-vae", "binary", (8, 8), n_steps=4, step_dim=2, delta_nats=1.0, **SMALL)
MNIST_LIKE = ModelConfig("vlae", "binary", (28, 28), latent_dim=8, **SMALL)


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))  # never touch the real zoo
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def _weights(config: ModelConfig, name: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = Path.cwd().parent / f"{name}.safetensors"  # outside the work folder
    save_weights(LatentVariableModel(config), path)
    return path


def _register(name: str, weights: Path) -> None:
    zoo.register_model(name, weights, dataset="random", test_neg_elbo_bpd=1.0,
                       test_neg_elbo_nats=1.0)  # fmt: skip


@pytest.fixture
def binary_model() -> Path:
    return _weights(BINARY, "binary")


def _bits(n: int = 12, shape=(8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (n, *shape), dtype=np.uint8)


def _png_folder(name: str, images: np.ndarray, mode: str) -> str:
    Path(name).mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.astype(bool) if mode == "1" else image).save(f"{name}/{i:03d}.png")
    return name


def _assert_fails_cleanly(capsys, argv, *fragments: str, code: int | None = None) -> str:
    """Runs ``argv``; it must fail with one stderr line holding ``fragments`` and leave
    the work folder exactly as it was."""
    before = _listing()
    status, _, err = run(capsys, *argv)
    assert status != 0 if code is None else status == code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bbcodec: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert _listing() == before
    return lines[0]


def _compress(capsys, *argv: str) -> str:
    code, out, err = run(capsys, "compress", "-q", *argv)
    assert code == 0, err
    return out


def _decompress(capsys, *argv: str) -> str:
    code, out, err = run(capsys, "decompress", "-q", *argv)
    assert code == 0, err
    return out


# ----- help -----------------------------------------------------------------------------


def test_help_lists_the_codec_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "compress" in out and "decompress" in out
    for command in ("compress", "decompress"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and f"bbcodec {command}" in out and "example:" in out
    code, out, _ = run(capsys, "compress", "--help")
    assert "x_test" in out and '"written"' in out and "vlae-bmnist" in out


HELP_WITHOUT_TORCH = """
import contextlib, io, sys
from bbcodec.cli.main import main
for argv in ([], ["--help"], *([c, "--help"] for c in sys.argv[1:])):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
assert "torch" not in sys.modules, "--help imported torch"
"""


def test_help_needs_no_torch():
    """`bbcodec --help` and the commands' help (defaults included) never import torch."""
    commands = ["compress", "decompress", "models", "eval", "export-model", "bench"]
    result = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *commands],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_usage_errors(capsys, binary_model):
    code, _, err = run(capsys, "compress", _npy("x.npy", _bits()))
    assert code == 2 and "-o" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "compress", "x.npy", "-o", "x.bbc", "--max-batch", "70000")
    assert code == 2 and "at most 65536" in err
    assert not Path("x.bbc").exists()


# ----- round trips ----------------------------------------------------------------------


def test_png_folder_round_trip(capsys, binary_model):
    images = _bits(10)
    _png_folder("in", images, "1")
    out = _compress(capsys, "in", "-o", "x.bbc", "--model", str(binary_model))
    assert "compressed 10 binary 8×8 images" in out
    _decompress(capsys, "x.bbc", "-o", "out", "--model", str(binary_model))
    names = sorted(p.name for p in Path("out").iterdir())
    assert names == [f"{i:06d}.png" for i in range(10)]
    with Image.open("out/000000.png") as png:
        assert png.mode == "1"  # binary images stay 1-bit
    assert np.array_equal(load_images("out"), images)
    # and the decompressed folder compresses again to the same pixels
    _compress(capsys, "out", "-o", "y.bbc", "--model", str(binary_model))
    _decompress(capsys, "y.bbc", "-o", "y.npy", "--model", str(binary_model))
    assert np.array_equal(np.load("y.npy"), images)
    assert {p.name for p in Path.cwd().iterdir()} == {"in", "x.bbc", "out", "y.bbc", "y.npy"}


def test_npy_round_trip_over_several_chunks(capsys, binary_model):
    images = _bits(11)
    _compress(capsys, _npy("x.npy", images), "-o", "x.bbc", "--model", str(binary_model),
              "--chunk-images", "4", "--max-batch", "2")  # fmt: skip
    _decompress(capsys, "x.bbc", "-o", "y.npy", "--model", str(binary_model))
    decoded = np.load("y.npy")
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, images)


@pytest.mark.parametrize("config", [GREY, RGB, DELTA], ids=["grey", "rgb", "delta-vae"])
def test_other_kinds_round_trip_through_pngs(capsys, config):
    weights = _weights(config, "model")
    high = 2 if config.kind == "binary" else 256
    shape = (*config.image_hw, 3) if config.kind == "rgb" else config.image_hw
    images = np.random.default_rng(1).integers(0, high, (5, *shape), dtype=np.uint8)
    _compress(capsys, _npy("x.npy", images), "-o", "x.bbc", "--model", str(weights))
    _decompress(capsys, "x.bbc", "-o", "out", "--model", str(weights))
    with Image.open("out/000000.png") as png:
        assert png.mode == {"binary": "1", "grey": "L", "rgb": "RGB"}[config.kind]
    assert np.array_equal(load_images("out"), images)


def test_two_stage_pixels_are_recorded_and_decode(capsys):
    weights = _weights(RGB, "model")
    images = np.random.default_rng(2).integers(0, 256, (3, *RGB.image_hw, 3), dtype=np.uint8)
    _compress(capsys, _npy("x.npy", images), "-o", "x.bbc", "--model", str(weights),
              "--pixel-bins", "16")  # fmt: skip
    with open("x.bbc", "rb") as f:
        assert ContainerReader(f).header.settings == {"pixel_bins": 16}
    _decompress(capsys, "x.bbc", "-o", "y.npy", "--model", str(weights))
    assert np.array_equal(np.load("y.npy"), images)


def test_prior_mean_tile_latents_are_recorded_and_decode(capsys):
    weights = _weights(RGB, "model")
    photo = np.random.default_rng(3).integers(0, 256, (1, 13, 21, 3), dtype=np.uint8)
    out = _compress(capsys, _npy("x.npy", photo), "-o", "x.bbc", "--model", str(weights),
                    "--tile-latents", "prior-mean")  # fmt: skip
    assert "no latent coded, every tile's is the prior's mean" in out
    with open("x.bbc", "rb") as f:
        assert ContainerReader(f).header.settings["tile_latents"] == "prior-mean"
    _decompress(capsys, "x.bbc", "-o", "y.npy", "--model", str(weights))
    assert np.array_equal(np.load("y.npy"), photo)


def test_inputs_are_concatenated_in_argument_order(capsys, binary_model):
    a, b, c = _bits(3, seed=1), _bits(4, seed=2), _bits(2, seed=3)
    _png_folder("pngs", b, "1")
    np.savez("one.npz", anything=c)  # an .npz with one array: that array
    np.savez("split.npz", train=_bits(2, seed=9), test=a)  # split-keyed: --split test
    _compress(capsys, "split.npz", "pngs", "one.npz", "-o", "x.bbc", "--model", str(binary_model))
    _decompress(capsys, "x.bbc", "-o", "y.npy", "--model", str(binary_model))
    assert np.array_equal(np.load("y.npy"), np.concatenate([a, b, c]))


def test_default_model_by_kind_is_named_in_the_file(capsys):
    _register("vlae-bmnist", _weights(MNIST_LIKE, "mnist-like"))
    images = _bits(3, (28, 28))
    out = _compress(capsys, _npy("x.npy", images), "-o", "x.bbc")
    assert "model vlae-bmnist" in out
    with open("x.bbc", "rb") as f:
        assert ContainerReader(f).header.model_id == "vlae-bmnist"
    _decompress(capsys, "x.bbc", "-o", "y.npy")  # no --model: the file names it
    assert np.array_equal(np.load("y.npy"), images)


def test_custom_weights_need_the_model_to_decode(capsys, binary_model):
    out = _compress(capsys, _npy("x.npy", _bits(3)), "-o", "x.bbc", "--model", str(binary_model))
    assert "custom weights" in out
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy"], "--model")


# ----- the report -----------------------------------------------------------------------


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        for label in ("file (achieved)", "information", "initial bits", "−ELBO (estimate)"):
            if line.startswith(label):
                rows[label] = line[len(label) :].split()
    return rows


def test_summary_puts_rates_side_by_side(capsys, binary_model):
    images = _bits(12)
    out = _compress(capsys, _npy("x.npy", images), "-o", "x.bbc", "--model", str(binary_model))
    rows = _rows(out)
    assert set(rows) == {"file (achieved)", "information", "−ELBO (estimate)"}  # no seed
    dims = images.size
    file_bits = 8 * Path("x.bbc").stat().st_size
    assert float(rows["file (achieved)"][0]) == pytest.approx(file_bits / dims, abs=1e-4)
    info_bpd = float(rows["information"][0])
    # a random decoder on random bits: about one bit per pixel, coded close to the −ELBO
    assert 0.5 < info_bpd < 2 and info_bpd < float(rows["file (achieved)"][0])
    assert float(rows["−ELBO (estimate)"][0]) == pytest.approx(info_bpd, rel=0.05)
    assert "coded without bits back" in out  # each chunk's first images


def test_verbose_prints_one_line_per_image(capsys, binary_model):
    images = _bits(7)
    out = _compress(capsys, _npy("x.npy", images), "-o", "x.bbc", "--model", str(binary_model),
                    "-v")  # fmt: skip
    lines = [line.split() for line in out.splitlines() if "x.npy[" in line]
    assert [int(cells[0]) for cells in lines] == list(range(7))
    assert [cells[1] for cells in lines] == [f"x.npy[{i}]" for i in range(7)]
    model, written, diff = (np.array([float(c[k]) for c in lines]) for k in (2, 3, 4))
    assert np.allclose(written - model, diff, atol=0.11)
    information_bits = float(_rows(out)["information"][1].replace(",", ""))
    assert written.sum() == pytest.approx(information_bits, abs=1.0)
    assert "model bits" in out and "written bits" in out


def test_the_elbo_of_photos_is_computed_on_request(capsys, binary_model):
    """A photo's float −ELBO is a tiled pass of its own: left out unless --elbo asks."""
    _npy("photo.npy", _bits(1, (13, 30)))
    compress = ("photo.npy", "-o", "x.bbc", "--model", str(binary_model), "--force", "-v")
    out = _compress(capsys, *compress)
    assert set(_rows(out)) == {"file (achieved)", "information"}
    assert "--elbo adds it" in out
    (cells,) = [line.split() for line in out.splitlines() if line.split()[:1] == ["0"]]
    assert cells[2] == "n/a" and cells[4] == "n/a" and float(cells[3]) > 0
    out = _compress(capsys, *compress, "--elbo")
    rows = _rows(out)
    assert set(rows) == {"file (achieved)", "information", "−ELBO (estimate)"}
    assert float(rows["−ELBO (estimate)"][0]) == pytest.approx(
        float(rows["information"][0]), rel=0.1
    )


def test_per_image_bits_follow_each_image():
    """Images of one batch share a stack; each image's bits must still be its own. A
    decoder that says "almost surely 0" makes all-ones images cost ~7 bits a pixel and
    all-zeros images almost nothing, wherever they sit in the batches."""
    model = LatentVariableModel(BINARY).eval()
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.fill_(-5.0)
    ones = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1])
    images = np.broadcast_to(ones[:, None, None], (len(ones), 8, 8)).astype(np.uint8)
    report = api.compress_to(io.BytesIO(), images, model, CodingSettings(max_batch=4))
    assert max(report.chunk_batch_sizes[0]) > 1
    bits = np.array(report.image_information_bits)
    assert sum(bits) == pytest.approx(report.information_bits)
    assert bits[ones == 1].min() > 64 * 6 > 64 * 1 > bits[ones == 0].max()


def test_image_codec_reports_per_image_bits_for_every_kind():
    for config in (GREY, RGB, DELTA):
        codec = ImageCodec(LatentVariableModel(config).eval(), CodingSettings(max_batch=2))
        shape = (*config.image_hw, 3) if config.kind == "rgb" else config.image_hw
        high = 2 if config.kind == "binary" else 256
        images = np.random.default_rng(0).integers(0, high, (5, *shape), dtype=np.uint8)
        _, rate = codec.encode_chunk(images)
        assert len(rate.image_information_bits) == 5
        assert sum(rate.image_information_bits) == pytest.approx(rate.information_bits)


# ----- errors: nothing written ----------------------------------------------------------


@pytest.fixture
def compressed(capsys, binary_model) -> Path:
    _compress(capsys, _npy("x.npy", _bits(12)), "-o", "x.bbc", "--model", str(binary_model),
              "--chunk-images", "6")  # fmt: skip
    return Path("x.bbc")


@pytest.mark.parametrize("output", ["y.npy", "ydir"])
def test_truncated_file(capsys, binary_model, compressed, output):
    data = compressed.read_bytes()
    Path("cut.bbc").write_bytes(data[: len(data) - 40])  # the first chunk decodes, then stops
    _assert_fails_cleanly(capsys, ["decompress", "cut.bbc", "-o", output, "--model",
                                   str(binary_model)], "cut.bbc", "truncated")  # fmt: skip


@pytest.mark.parametrize("where", [0.1, 0.5, 0.95])
def test_flipped_byte(capsys, binary_model, compressed, where):
    data = bytearray(compressed.read_bytes())
    data[int(where * len(data))] ^= 0x10
    Path("bad.bbc").write_bytes(bytes(data))
    for output in ("y.npy", "ydir"):
        _assert_fails_cleanly(capsys, ["decompress", "bad.bbc", "-o", output, "--model",
                                       str(binary_model)], "bad.bbc")  # fmt: skip


def test_file_made_with_other_weights(capsys, compressed):
    other = _weights(BINARY, "other", seed=1)
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy", "--model", str(other)],
                          "other weights")  # fmt: skip
    # the same through a registered name whose weights changed since
    _register("tiny", _weights(BINARY, "first", seed=2))
    _compress(capsys, "x.npy", "-o", "named.bbc", "--model", "tiny")
    _register("tiny", _weights(BINARY, "second", seed=3))
    _assert_fails_cleanly(capsys, ["decompress", "named.bbc", "-o", "y.npy"], "other weights")


def test_png_of_the_wrong_size_names_what_works(capsys, binary_model):
    _register("vlae-bmnist", _weights(MNIST_LIKE, "mnist-like"))
    _png_folder("big", _bits(2, (12, 12)), "1")
    line = _assert_fails_cleanly(capsys, ["compress", "big", "-o", "x.bbc"], "12x12", "28x28",
                                 "vlae-bmnist", "--model")  # fmt: skip
    assert "no shipped model" in line
    # a δ-VAE (full causal past) codes its own size only
    delta = _weights(ModelConfig("delta-vae", "binary", (8, 8), n_steps=2, step_dim=2, **SMALL),
                     "delta")  # fmt: skip
    _assert_fails_cleanly(capsys, ["compress", "big", "-o", "x.bbc", "--model", str(delta)],
                          "(8, 8) only", "(12, 12)", "VLAE")  # fmt: skip
    # grey values for a binary model
    _png_folder("grey", np.full((2, 8, 8), 200, np.uint8), "L")
    _assert_fails_cleanly(capsys, ["compress", "grey", "-o", "x.bbc", "--model", str(binary_model)],
                          "binary")  # fmt: skip


def test_inputs_of_different_sizes_are_coded_tiled(capsys, binary_model):
    """A VLAE codes images of any size (tiled); one file holds them all, in order."""
    _npy("a.npy", _bits(2))
    _npy("b.npy", _bits(2, (9, 9)))
    out = _compress(capsys, "a.npy", "b.npy", "-o", "x.bbc", "--model", str(binary_model))
    assert "compressed 4 binary mixed-size images" in out
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy", "--model",
                                   str(binary_model)], "several shapes", "folder")  # fmt: skip
    _decompress(capsys, "x.bbc", "-o", "out", "--model", str(binary_model))
    assert [load_images(f"out/{i:06d}.png").shape[1:] for i in range(4)] == [(8, 8)] * 2 + [
        (9, 9)
    ] * 2
    Path("mixed").mkdir()
    Image.fromarray(np.zeros((8, 8), bool)).save("mixed/a.png")
    photo = _bits(1, (13, 30))[0]
    Image.fromarray(photo.astype(bool)).save("mixed/b.png")
    _compress(capsys, "mixed", "-o", "m.bbc", "--model", str(binary_model))
    _decompress(capsys, "m.bbc", "-o", "m", "--model", str(binary_model))
    np.testing.assert_array_equal(load_images("m/000001.png")[0], photo)
    # one image in, one PNG out
    _compress(capsys, "mixed/b.png", "-o", "b.bbc", "--model", str(binary_model))
    _decompress(capsys, "b.bbc", "-o", "b.png", "--model", str(binary_model))
    np.testing.assert_array_equal(load_images("b.png")[0], photo)


def test_non_image_inputs(capsys, binary_model):
    Path("notes.txt").write_text("not an image\n")
    _assert_fails_cleanly(capsys, ["compress", "notes.txt", "-o", "x.bbc"], "notes.txt",
                          "unknown format")  # fmt: skip
    _assert_fails_cleanly(capsys, ["compress", "missing.png", "-o", "x.bbc"], "missing.png")
    np.savez("two.npz", a=_bits(2), b=_bits(2))
    _assert_fails_cleanly(capsys, ["compress", "two.npz", "-o", "x.bbc"], "two.npz", "one array")
    np.save("floats.npy", np.zeros((2, 8, 8)))
    _assert_fails_cleanly(capsys, ["compress", "floats.npy", "-o", "x.bbc"], "uint8")
    _assert_fails_cleanly(capsys, ["decompress", "notes.txt", "-o", "y.npy", "--model",
                                   str(binary_model)], "not a .bbc file")  # fmt: skip


def test_existing_output_is_refused_before_any_work(capsys, binary_model, compressed, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output check")

    monkeypatch.setattr(codec_commands, "_load_inputs", no_work)
    monkeypatch.setattr(codec_commands, "_decompress", no_work)
    Path("y.npy").write_bytes(b"keep")
    _assert_fails_cleanly(capsys, ["compress", "x.npy", "-o", "x.bbc"], "x.bbc", "--force")
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy"], "y.npy", "--force")
    _assert_fails_cleanly(capsys, ["compress", "x.npy", "-o", "nowhere/x.bbc"], "nowhere")
    assert Path("y.npy").read_bytes() == b"keep"


def test_force_overwrites(capsys, binary_model, compressed):
    model = ("--model", str(binary_model))
    images = _bits(5, seed=7)
    _npy("new.npy", images)
    Path("y.npy").write_bytes(b"old")
    _compress(capsys, "new.npy", "-o", "x.bbc", *model, "--force")
    _decompress(capsys, "x.bbc", "-o", "y.npy", *model, "--force")
    assert np.array_equal(np.load("y.npy"), images)
    # a folder of decompressed images is replaced as a whole (no stale 000005.png ...)
    _png_folder("pngs", _bits(9), "1")
    for p in Path("pngs").iterdir():
        p.rename(Path("pngs") / f"{int(p.stem):06d}.png")
    _decompress(capsys, "x.bbc", "-o", "pngs", *model, "--force")
    assert sorted(p.name for p in Path("pngs").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert np.array_equal(load_images("pngs"), images)
    # ... but a folder holding anything else is never replaced, nor is one written over a .bbc
    Path("pngs/notes.txt").write_text("mine")
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "pngs", *model, "--force"],
                          "notes.txt")  # fmt: skip
    _assert_fails_cleanly(capsys, ["compress", "new.npy", "-o", "pngs", *model, "--force"],
                          "is a folder")  # fmt: skip
    assert Path("pngs/notes.txt").read_text() == "mine"


def test_full_disk_leaves_nothing(capsys, binary_model, monkeypatch):
    _npy("x.npy", _bits(4))

    def full(self, chunk):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ContainerWriter, "write_chunk", full)
    _assert_fails_cleanly(capsys, ["compress", "x.npy", "-o", "x.bbc", "--model",
                                   str(binary_model)], "x.bbc", "no space left")  # fmt: skip


def test_full_disk_while_writing_pngs(capsys, binary_model, compressed, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "out", "--model",
                                   str(binary_model)], "out", "no space left")  # fmt: skip


@pytest.mark.parametrize("output", ["y.npy", "ydir"])
def test_ctrl_c_while_decoding_leaves_nothing(capsys, binary_model, compressed, monkeypatch,
                                              output):  # fmt: skip
    decode = ImageCodec.decode_chunk

    def second_chunk_interrupted(self, chunk, progress=None, shape=None):
        if chunk.first > 0:  # the first chunk is already written by then
            raise KeyboardInterrupt
        return decode(self, chunk, progress, shape)

    monkeypatch.setattr(ImageCodec, "decode_chunk", second_chunk_interrupted)
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", output, "--model",
                                   str(binary_model)], "interrupted", code=130)  # fmt: skip


def test_ctrl_c_while_encoding_leaves_nothing(capsys, binary_model, monkeypatch):
    _npy("x.npy", _bits(4))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageCodec, "encode_chunk", interrupted)
    _assert_fails_cleanly(capsys, ["compress", "x.npy", "-o", "x.bbc", "--model",
                                   str(binary_model)], "interrupted", code=130)  # fmt: skip


def test_an_exact_file_decodes_on_the_device_asked_for(capsys, binary_model, compressed):
    """An exact file decodes on any device: here the one asked for is missing."""
    _assert_fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy", "--model",
                                   str(binary_model), "--device", "cuda"],
                          "device cuda: CUDA is not available")  # fmt: skip


FIXTURE_V2 = REPO / "tests" / "fixtures" / "readme-digits-v2.bbc"


def test_a_float_file_decodes_only_on_its_own_device(capsys):
    old = str(FIXTURE_V2)
    _assert_fails_cleanly(capsys, ["decompress", old, "-o", "y.npy", "--device", "cuda"],
                          "encoded on cpu with float arithmetic; it decodes only there")  # fmt: skip


def test_progress_counts_every_image(capsys, binary_model, monkeypatch):
    counts = []

    @contextlib.contextmanager
    def recording(total, what, quiet):
        class Bar:
            n = 0

            def update(self, k):
                self.n += k

        bar = Bar()
        yield bar
        counts.append((what, total, bar.n))

    monkeypatch.setattr(codec_commands, "_progress", recording)
    _compress(capsys, _npy("x.npy", _bits(9)), "-o", "x.bbc", "--model", str(binary_model),
              "--chunk-images", "4")  # fmt: skip
    _decompress(capsys, "x.bbc", "-o", "y.npy", "--model", str(binary_model))
    assert counts == [("compress", 9, 9), ("decompress", 9, 9)]
