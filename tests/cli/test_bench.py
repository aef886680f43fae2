"""Classic baselines (`bbcodec.baselines`), the bench's round trip and typed results
(`bbcodec.bench`), and `bbcodec bench` through `main(argv)`.

Real binarized / 8-bit MNIST test digits are used where ``../shared/data`` exists, synthetic
digit-like images otherwise; models are tiny and randomly initialised (the codec's rate
identity holds for any weights).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from paths import REPO, SHARED_DATA

import bbcodec.bench
from bbcodec import baselines
from bbcodec.baselines import BASELINES, BaselineError, run_baselines
from bbcodec.bench import PhotoBench, PhotoRow, RoundTrip, round_trip, stack_curve
from bbcodec.cli.main import main
from bbcodec.codec import ChunkRate, CodingSettings, CompressReport
from bbcodec.errors import ContainerError
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights

SHARED = SHARED_DATA
#: Records `bbcodec bench --json` wrote: the key order new records must keep.
RECORDS = REPO / "benchmarks" / "results"
TINY_28 = ModelConfig(
    "vlae", "binary", (28, 28), latent_dim=8, channels=8, n_blocks=1, made_hidden=16, kernel_size=3
)
TINY_8 = ModelConfig(
    "vlae", "binary", (8, 8), latent_dim=4, channels=8, n_blocks=1, made_hidden=16, kernel_size=3
)
REQUIRED = {
    "model", "data", "split", "n_images", "dims_per_image", "neg_elbo_bpd", "achieved_bpd",
    "net_bpd", "initial_bits", "gap_pct", "encode_img_per_s", "decode_img_per_s",
    "roundtrip_ok", "baselines", "information_bpd", "file_bytes", "threads", "device",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated")


def _synthetic_digits(n: int, grey: bool) -> np.ndarray:
    """Thick random strokes on 28×28, smoothed for grey: digit-like, not noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28))
    for i in range(n):
        for _ in range(3):
            (y0, x0), (y1, x1) = rng.uniform(6, 22, (2, 2))
            t = np.linspace(0, 1, 40)[:, None, None]
            d = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0))).min(0)
            out[i] = np.maximum(out[i], np.clip(2.5 - d, 0, 1))
    return (out * 255).round().astype(np.uint8) if grey else (out > 0.5).astype(np.uint8)


def _digits(n: int, grey: bool = False) -> np.ndarray:
    from bbcodec.models.data import load_images

    path = SHARED / ("mnist" if grey else "binarized_mnist.npz")
    if path.exists():
        return load_images(path, "test")[:n]
    return _synthetic_digits(n, grey)


# ----- baselines ------------------------------------------------------------------------


@pytest.mark.parametrize("grey", [False, True], ids=["binary", "grey"])
def test_baselines_round_trip_with_png_worst_and_jpegxl_best(grey):
    images = _digits(24, grey)
    results = run_baselines(images, workers=2, progress=False)
    assert list(results) == list(BASELINES)
    for r in results.values():
        assert r.n_images == 24 and r.dims_per_image == 784 and r.image_bits.shape == (24,)
        assert (r.image_bits > 0).all() and r.total_bits == int(r.image_bits.sum())
        assert math.isclose(r.bpd, r.total_bits / (24 * 784)) and r.seconds > 0
        assert r.settings and json.dumps(r.to_dict())
    bpd = {name: r.bpd for name, r in results.items()}
    assert bpd["png"] > bpd["jpegxl"] > 0 and bpd["png"] > bpd["webp"] > 0
    # the region of the full test sets (README results; a few digits scatter a little)
    low, high = (0.4, 2.0) if not grey else (1.5, 3.5)
    assert all(low < v < high for v in bpd.values()), bpd


def test_baselines_on_rgb_and_one_worker():
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.integers(-3, 4, (3, 16, 16, 3)), axis=2) + 128
    images = np.clip(smooth, 0, 255).astype(np.uint8)
    results = run_baselines(images, ("jpegxl", "png"), workers=1, progress=False)
    assert list(results) == ["jpegxl", "png"]
    assert all(0 < r.bpd < 12 for r in results.values())


def test_baselines_refuse_a_file_that_does_not_decode_back(monkeypatch):
    encode, decode = baselines._CODECS["png"]

    def flip_a_pixel(data, kind):
        pixels = decode(data, kind).copy()
        pixels[0, 0] ^= 1
        return pixels

    monkeypatch.setitem(baselines._CODECS, "png", (encode, flip_a_pixel))
    with pytest.raises(BaselineError, match="png"):
        run_baselines(_digits(2), ("png",), workers=1, progress=False)


def test_baselines_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        run_baselines(np.zeros((2, 8, 8), np.float32), progress=False)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baselines(np.zeros((2, 8, 8), np.uint8), ("gif",), progress=False)


# ----- bbcodec.bench --------------------------------------------------------------------


def _tiny(tmp_path: Path, config: ModelConfig) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_weights(LatentVariableModel(config), path)
    return path


def _record_keys(name: str, row: bool = False) -> list[str]:
    """The keys, in order, of a record in benchmarks/results (``row``: of its first photo)."""
    record = json.loads((RECORDS / name).read_text())
    return list(record["images"][0] if row else record)


def test_round_trip_codes_in_memory_and_reports_what_fails(monkeypatch):
    model = LatentVariableModel(TINY_8)
    images = np.random.default_rng(0).integers(0, 2, (6, 8, 8), dtype=np.uint8)
    settings = CodingSettings(max_batch=2, chunk_images=4)
    trip = round_trip(images, model, None, settings)
    assert trip.ok and trip.failure is None and trip.encode_seconds > 0 < trip.decode_seconds
    chunk_images = list(trip.report.chunk_images)
    assert trip.report.n_images == 6 and chunk_images == [4, 2]
    images_so_far, bits = stack_curve(trip.report)
    assert images_so_far[-1] == 6 and bits == sorted(bits) and bits[-1] <= trip.report.file_bits

    def damaged(*args, **kwargs):
        raise ContainerError("damaged")

    monkeypatch.setattr(bbcodec.bench, "decompress_from", damaged)
    trip = round_trip(images, model, None, settings)
    assert not trip.ok and trip.decode_seconds is None
    assert trip.failure == "the file does not decode: damaged"


def _photo_row(image: str, dims: int, file_bits: int, failure: str | None = None) -> PhotoRow:
    chunk = ChunkRate(file_bits / 2, file_bits - 96, 64, file_bits - 64, (1,), (file_bits - 64,))
    report = CompressReport(1, dims, file_bits, (chunk,))
    trip = RoundTrip(report, 2.0, None if failure else 1.0, failure)
    baselines_bpd = {name: 1.0 + i for i, name in enumerate(BASELINES)}
    return PhotoRow(image, (dims // 3, 1, 3), trip, 0.5 * dims, 0.25 * dims, baselines_bpd)


def test_photo_results_to_dict_keep_the_record_format():
    rows = (_photo_row("a.png", 300, 1200), _photo_row("b.png", 150, 600, "1 of 1 wrong"))
    bench = PhotoBench("m", "photos/", CodingSettings(seed=3, torch_threads=1), 2, rows)
    r = bench.to_dict()
    assert json.dumps(r, allow_nan=False) and list(r) == _record_keys(
        "bench-vlae-cifar10-kodak.json"
    )
    assert [list(row) for row in r["images"]] == 2 * [
        _record_keys("bench-vlae-cifar10-kodak.json", row=True)
    ]
    assert (r["n_images"], r["total_dims"], r["workers"], r["seed"]) == (2, 450, 2, 3)
    assert math.isclose(r["achieved_bpd"], 1800 / 450)
    assert math.isclose(r["neg_elbo_bpd"], 0.75 / math.log(2))
    assert r["baselines"] == {name: 1.0 + i for i, name in enumerate(BASELINES)}
    assert r["encode_seconds_per_image"] == {"mean": 2.0, "max": 2.0}
    assert r["decode_seconds_per_image"] == {"mean": 1.0, "max": 1.0}
    assert r["roundtrip_ok"] is False and bench.failure == "b.png: 1 of 1 wrong"
    assert r["images"][1]["decode_seconds"] is None and r["images"][0]["shape"] == [100, 1, 3]
    unknown = dataclasses.replace(rows[0], recon_nats=float("nan"))
    r = PhotoBench("m", "p", CodingSettings(), 1, (unknown,)).to_dict()  # NaN is not JSON
    assert r["neg_elbo_bpd"] is None and r["images"][0]["neg_elbo_bpd"] is None


# ----- bbcodec bench --------------------------------------------------------------------


def test_bench_writes_json_with_every_figure_and_a_plot(capsys, tmp_path):
    model = _tiny(tmp_path, TINY_28)
    data = tmp_path / "digits.npy"
    np.save(data, _digits(20))
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(model), "--data", str(data), "--json", str(out),
                 "--threads", "1", "--max-batch", "4", "--chunk-images", "12", "-q"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out.read_text())
    assert REQUIRED <= r.keys() and list(r) == _record_keys("bench-vlae-bmnist.json")
    assert (r["model"], r["data"], r["split"]) == (str(model), str(data), "test")
    assert r["n_images"] == 20 and r["dims_per_image"] == 784
    assert r["roundtrip_ok"] is True and r["threads"] == 1 and r["device"] == "cpu"
    assert r["achieved_bpd"] >= r["net_bpd"] > 0
    assert r["initial_bits"] >= 0  # 0: the chunks start from an empty stack, no seed
    assert r["file_bytes"] * 8 == round(r["achieved_bpd"] * 20 * 784)
    assert math.isclose(r["gap_pct"], 100 * (r["achieved_bpd"] / r["neg_elbo_bpd"] - 1))
    assert r["encode_img_per_s"] > 0 and r["decode_img_per_s"] > 0
    assert set(r["baselines"]) == {"png", "webp", "jpegxl"}
    assert all(v > 0 for v in r["baselines"].values())
    # two chunks (12 + 8 images), batches of at most 4: the curve covers every image
    assert len(r["chunk_batch_sizes"]) == 2
    assert max((b for s in r["chunk_batch_sizes"] for b in s), default=0) <= 4
    curve = r["stack_curve"]
    assert curve["images"][-1] == 20 and curve["images"] == sorted(curve["images"])
    assert 12 in curve["images"]  # the first chunk's end
    assert curve["bits"] == sorted(curve["bits"]) and curve["bits"][-1] <= 8 * r["file_bytes"]
    # the information content is what the model pays: close to the net stack growth
    assert abs(r["information_bpd"] - r["net_bpd"]) < 0.02
    plot = out.with_suffix(".png")  # default: beside the JSON
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bits/dim" in stdout and "roundtrip  ok" in stdout and "jpegxl" in stdout


def test_bench_codes_with_two_stage_pixels_when_asked(capsys, tmp_path):
    grey = dataclasses.replace(TINY_8, kind="grey")
    model = _tiny(tmp_path, grey)
    data = tmp_path / "grey.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8))
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(model), "--data", str(data), "--json", str(out),
                 "--pixel-bins", "16", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["roundtrip_ok"] is True and record["coding_settings"]["pixel_bins"] == 16


def test_bench_default_plot_name_and_explicit_plot(capsys, tmp_path):
    model = _tiny(tmp_path, TINY_8)
    data = tmp_path / "bits.npy"
    np.save(data, np.random.default_rng(0).integers(0, 2, (6, 8, 8), dtype=np.uint8))
    assert main(["bench", "--model", str(model), "--data", str(data), "-q"]) == 0
    assert (tmp_path / "bench-tiny.png").is_file()
    plot = tmp_path / "curve.png"
    assert main(["bench", "--model", str(model), "--data", str(data), "-n", "3", "-q",
                 "--plot", str(plot)]) == 0  # fmt: skip
    assert plot.is_file()
    capsys.readouterr()
    code = main(["bench", "--model", str(model), "--data", str(data), "--plot", "curve.pdf"])
    assert code == 1 and "bbcodec: error:" in capsys.readouterr().err


def test_bench_roundtrip_failure_exits_non_zero_and_still_writes_json(
    capsys, tmp_path, monkeypatch
):
    model = _tiny(tmp_path, TINY_8)
    data = tmp_path / "bits.npy"
    np.save(data, np.random.default_rng(0).integers(0, 2, (6, 8, 8), dtype=np.uint8))
    real = bbcodec.bench.decompress_from

    def corrupting(*args, **kwargs):
        for images in real(*args, **kwargs):
            images = images.copy()
            images[-1, 0, 0] ^= 1
            yield images

    monkeypatch.setattr(bbcodec.bench, "decompress_from", corrupting)
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(model), "--data", str(data), "--json", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 3
    assert "roundtrip failed" in err and "image 5" in err
    assert json.loads(out.read_text())["roundtrip_ok"] is False


def test_bench_errors_are_one_line(capsys, tmp_path):
    model = _tiny(tmp_path, TINY_28)
    data = tmp_path / "colour.npy"
    np.save(data, np.zeros((3, 8, 8, 3), np.uint8))  # RGB for a binary model
    code = main(["bench", "--model", str(model), "--data", str(data), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("bbcodec: error: ") and len(err.strip().splitlines()) == 1
    code = main(["bench", "--model", str(model), "--data", str(data), "--json", "no/such/x.json"])
    assert code == 1 and "no such folder" in capsys.readouterr().err
    assert main(["bench", "--help"]) == 0 and "example:" in capsys.readouterr().out


def test_bench_on_photos_codes_each_its_own_file(capsys, tmp_path):
    """Images of other sizes than the model's: one file each, per-photo rates and times,
    named by their files whatever their format (a PNG and a TIFF here)."""
    from PIL import Image

    model = tmp_path / "rgb.safetensors"
    config = ModelConfig(
        "vlae", "rgb", (8, 8), latent_dim=4, channels=8, n_blocks=1, made_hidden=16, kernel_size=3
    )
    save_weights(LatentVariableModel(config), model)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:19, :23]
    smooth = np.stack([rows * 6, cols * 5, (rows + cols) * 3], -1).astype(np.uint8)
    Image.fromarray(smooth).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(folder / "b.tif")
    out = tmp_path / "photos.json"
    code = main(["bench", "--model", str(model), "--data", str(folder), "--json", str(out),
                 "--threads", "1", "-q", "--workers", "2"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out.read_text())
    assert list(r) == _record_keys("bench-vlae-cifar10-kodak.json")
    assert [list(row) for row in r["images"]] == 2 * [
        _record_keys("bench-vlae-cifar10-kodak.json", row=True)
    ]
    assert r["n_images"] == 2 and r["roundtrip_ok"] is True
    assert [Path(row["image"]).name for row in r["images"]] == ["a.png", "b.tif"]
    assert [row["shape"] for row in r["images"]] == [[19, 23, 3], [12, 9, 3]]
    assert r["total_dims"] == 19 * 23 * 3 + 12 * 9 * 3
    for row in r["images"]:
        assert row["file_bytes"] * 8 == round(row["achieved_bpd"] * row["dims"])
        assert row["encode_seconds"] > 0 and row["decode_seconds"] > 0
        assert set(row["baselines"]) == {"png", "webp", "jpegxl"}
    total = sum(row["achieved_bpd"] * row["dims"] for row in r["images"]) / r["total_dims"]
    assert math.isclose(r["achieved_bpd"], total)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "a.png" in stdout and "each its own file" in stdout
    r_one = json.loads(out.read_text())
    code = main(["bench", "--model", str(model), "--data", str(folder), "--json", str(out),
                 "--threads", "1", "-q", "--workers", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    r_two = json.loads(out.read_text())
    assert (r_one["workers"], r_two["workers"]) == (2, 1)
    same = ("file_bytes", "neg_elbo_bpd", "baselines")  # photos spread over workers or not
    assert [[row[k] for k in same] for row in r_one["images"]] == [
        [row[k] for k in same] for row in r_two["images"]
    ]
    assert r_two["coding_settings"]["tile_latents"] == "bits-back"  # a weights file's default
    code = main(["bench", "--model", str(model), "--data", str(folder), "--json", str(out),
                 "--threads", "1", "-q", "--workers", "1", "--tile-latents", "prior-mean"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    r_mean = json.loads(out.read_text())
    assert r_mean["coding_settings"]["tile_latents"] == "prior-mean" and r_mean["roundtrip_ok"]
    assert [row["neg_elbo_bpd"] for row in r_mean["images"]] == [
        row["neg_elbo_bpd"] for row in r_two["images"]
    ]
