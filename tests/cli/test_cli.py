"""The `bbcodec` command through `main(argv)`, on tiny random models and data in tmp_path."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bbcodec import zoo
from bbcodec.cli.main import main
from bbcodec.models import evaluate as evaluate_module
from bbcodec.models import presets
from bbcodec.models.data import DataError
from bbcodec.models.evaluate import evaluate
from bbcodec.models.presets import Recipe
from bbcodec.models.train import train
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import WeightsError, load_weights, save_weights

TINY = ModelConfig(
    "vlae", "binary", (8, 8), latent_dim=4, channels=8, n_blocks=1, made_hidden=16, kernel_size=3
)
TINY_DELTA = ModelConfig(
    "delta-vae", "binary", (8, 8), n_steps=4, step_dim=2, delta_nats=1.0, channels=8, n_blocks=1,
    made_hidden=16, kernel_size=3,
)  # fmt: skip
REQUIRED = {
    "model", "data", "split", "n_images", "neg_elbo_bpd", "neg_elbo_nats", "kl_bpd", "recon_bpd",
    "active_units", "latent_dim", "receptive_field", "images_per_s",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated")


def _save(config: ModelConfig, path: Path) -> Path:
    save_weights(LatentVariableModel(config), path)
    return path


@pytest.fixture
def tiny(tmp_path) -> Path:
    return _save(TINY, tmp_path / "tiny.safetensors")


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "bits.npy"
    np.save(path, np.random.default_rng(0).integers(0, 2, (24, 8, 8), dtype=np.uint8))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _eval_json(capsys, tmp_path, model, data, *extra: str) -> dict:
    out_json = tmp_path / "eval.json"
    code, out, err = run(capsys, "eval", "--model", str(model), "--data", str(data), "--json", str(out_json),
                         "--threads", "1", "-q", *extra)  # fmt: skip
    assert code == 0, err
    assert "−ELBO" in out
    return json.loads(out_json.read_text())


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bbcodec: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# ----- help -----------------------------------------------------------------------------


def test_help_runs(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "usage: bbcodec" in out
    for command in ("models", "eval", "train", "export-model"):
        assert command in out
        code, out_sub, _ = run(capsys, command, "--help")
        assert code == 0 and "example:" in out_sub and f"bbcodec {command}" in out_sub
    assert run(capsys)[0] == 0  # no command: the help


def test_usage_errors_are_one_line_and_exit_2(capsys, tiny, data):
    code, _, err = run(capsys, "eval", "--data", str(data))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--model" in err
    code, _, err = run(
        capsys, "eval", "--model", str(tiny), "--data", str(data), "--batch-size", "0"
    )
    assert code == 2 and "positive integer" in err
    code, _, err = run(capsys, "eval", "--model", str(tiny), "--data", str(data), "--device", "tpu")
    assert code == 2 and "cpu, cuda" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2


# ----- eval -----------------------------------------------------------------------------


def test_eval_writes_json_with_sane_values(capsys, tmp_path, tiny, data):
    r = _eval_json(capsys, tmp_path, tiny, data)
    assert REQUIRED <= r.keys()
    assert (r["model"], r["data"], r["split"], r["n_images"]) == (str(tiny), str(data), "test", 24)
    assert r["latent_dim"] == 4 and r["dims_per_image"] == 64 and r["elbo_z_samples"] == 1
    assert r["receptive_field"].startswith("local 3x3")
    assert math.isclose(r["recon_bpd"] + r["kl_bpd"], r["neg_elbo_bpd"], rel_tol=1e-9)
    assert math.isclose(r["recon_nats"] + r["kl_nats"], r["neg_elbo_nats"], rel_tol=1e-9)
    assert math.isclose(r["neg_elbo_bpd"], r["neg_elbo_nats"] / (64 * math.log(2)), rel_tol=1e-9)
    # a random decoder on random bits: about 1 bit per pixel; a KL is never negative on average
    assert 0.5 < r["neg_elbo_bpd"] < 2.0 and r["kl_nats"] > -1e-3
    assert 0 <= r["active_units"] <= 4 and r["images_per_s"] > 0
    assert r["iw_nll_nats"] is None and r["delta_nats"] is None


def test_eval_repeats_with_the_seed_and_n_limits_images(capsys, tmp_path, tiny, data):
    a = _eval_json(capsys, tmp_path, tiny, data, "--seed", "3")
    b = _eval_json(capsys, tmp_path, tiny, data, "--seed", "3")
    assert a["neg_elbo_nats"] == b["neg_elbo_nats"] and a["kl_nats"] == b["kl_nats"]
    c = _eval_json(capsys, tmp_path, tiny, data, "-n", "5", "--batch-size", "2")
    assert c["n_images"] == 5 and c["batch_size"] == 2


def test_importance_weighted_bound_is_below_the_elbo(capsys, tmp_path, tiny, data):
    r = _eval_json(capsys, tmp_path, tiny, data, "--iw-samples", "32")
    assert r["iw_samples"] == 32
    assert math.isclose(r["iw_nll_bpd"], r["iw_nll_nats"] / (64 * math.log(2)), rel_tol=1e-9)
    # IW bound ≤ −ELBO, up to the Monte Carlo noise of the one-sample −ELBO (≪ 0.5 nat here)
    assert r["iw_nll_nats"] <= r["neg_elbo_nats"] + 0.5


def test_iw_bound_tightens_on_a_model_with_a_real_gap():
    """Make z matter to the decoder, so that q's mismatch with the true posterior costs nats:
    with k = 64 the bound must then sit clearly below the −ELBO and the k = 1 bound."""
    torch.manual_seed(1)
    model = LatentVariableModel(TINY)
    with torch.no_grad():
        model.to_features.fc.weight.mul_(300.0)
    x = np.random.default_rng(1).integers(0, 2, (16, 8, 8), dtype=np.uint8)
    r64 = evaluate(model, x, iw_samples=64, progress=False, batch_size=8)
    r1 = evaluate(model, x, iw_samples=1, progress=False, batch_size=8)
    assert r64.iw_nll_nats < r64.neg_elbo_nats - 0.5  # measured gap ≈ 2–4 nats
    assert r64.iw_nll_nats < r1.iw_nll_nats - 0.5


def test_eval_delta_vae_reports_kl_against_delta(capsys, tmp_path, data):
    model = _save(TINY_DELTA, tmp_path / "delta.safetensors")
    r = _eval_json(capsys, tmp_path, model, data)
    assert r["receptive_field"] == "full causal past" and r["latent_dim"] == 8
    assert r["delta_nats"] == pytest.approx(1.0, rel=1e-4)
    assert r["kl_train_prior_min_nats"] >= r["delta_nats"] * (1 - 1e-5) and r["kl_ge_delta"] is True
    assert r["kl_train_prior_nats"] >= r["kl_train_prior_min_nats"]
    assert math.isclose(
        r["kl_train_prior_bpd"], r["kl_train_prior_nats"] / (64 * math.log(2)), rel_tol=1e-9
    )


def test_eval_by_registered_name(capsys, tmp_path, tiny, data):
    zoo.register_model("tiny", tiny, dataset="bits", test_neg_elbo_bpd=1.0, test_neg_elbo_nats=44.0)
    r = _eval_json(capsys, tmp_path, "tiny", data)
    assert r["model"] == "tiny" and r["n_images"] == 24


@pytest.mark.parametrize("which", ["data", "model", "json-folder"])
def test_eval_bad_paths_are_one_line_errors(capsys, tmp_path, tiny, data, which):
    args = {"--model": str(tiny), "--data": str(data), "--json": str(tmp_path / "r.json")}
    missing = str(tmp_path / "nowhere" / "thing")
    args["--json" if which == "json-folder" else f"--{which}"] = missing
    code, _, err = run(capsys, "eval", *[s for kv in args.items() for s in kv], "-q")
    _assert_one_line_error(code, err, str(tmp_path / "nowhere"))


def test_eval_unknown_model_names_known_models(capsys, tiny, data):
    zoo.register_model("tiny", tiny, dataset="bits", test_neg_elbo_bpd=1.0, test_neg_elbo_nats=44.0)
    code, _, err = run(capsys, "eval", "--model", "tinny", "--data", str(data))
    _assert_one_line_error(code, err, "known models: tiny")


def test_eval_tampered_registered_model_is_refused(capsys, tiny, data):
    info = zoo.register_model(
        "tiny", tiny, dataset="bits", test_neg_elbo_bpd=1.0, test_neg_elbo_nats=44.0
    )
    raw = bytearray(info.path.read_bytes())
    raw[-2] ^= 0x10
    info.path.write_bytes(bytes(raw))
    code, _, err = run(capsys, "eval", "--model", "tiny", "--data", str(data))
    _assert_one_line_error(code, err, "sha256")
    with pytest.raises(WeightsError):  # --debug: the exception itself, with its traceback
        main(["--debug", "eval", "--model", "tiny", "--data", str(data)])
    with pytest.raises(WeightsError):
        main(["eval", "--model", "tiny", "--data", str(data), "--debug"])


def test_eval_data_that_does_not_fit_the_model(capsys, tmp_path, tiny):
    grey = tmp_path / "grey.npy"
    np.save(grey, np.full((3, 8, 8), 200, np.uint8))
    code, _, err = run(capsys, "eval", "--model", str(tiny), "--data", str(grey))
    _assert_one_line_error(code, err, "binary")
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((3, 8, 12), np.uint8))
    code, _, err = run(capsys, "eval", "--model", str(tiny), "--data", str(wide))
    _assert_one_line_error(code, err, "(8, 12)", "(8, 8)")
    with pytest.raises(DataError):
        main(["--debug", "eval", "--model", str(tiny), "--data", str(wide)])


def test_evaluate_docstring_example():
    assert doctest.testmod(evaluate_module).failed == 0


# ----- models ---------------------------------------------------------------------------


def test_models_lists_registered_models(capsys, tiny):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "no models shipped yet" in out
    zoo.register_model(
        "tiny", tiny, dataset="bits", test_neg_elbo_bpd=1.0567, test_neg_elbo_nats=46.87
    )
    code, out, _ = run(capsys, "models")
    n_params = sum(p.numel() for p in LatentVariableModel(TINY).parameters())
    assert (
        code == 0
        and "tiny" in out
        and "1.0567" in out
        and "46.87" in out
        and f"{n_params:,}" in out
    )
    code, out, _ = run(capsys, "models", "--json")
    (entry,) = json.loads(out)
    assert entry["name"] == "tiny" and entry["n_params"] == n_params and entry["dataset"] == "bits"


def test_models_with_a_broken_registry_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "registry.json").write_text("{oops")
    code, _, err = run(capsys, "models")
    _assert_one_line_error(code, err, "registry")


# ----- train and export -----------------------------------------------------------------


def test_train_function_on_a_tiny_config(tmp_path, data):
    images = np.load(data)
    run_dir = tmp_path / "run"
    recipe = Recipe(batch_size=8)
    model = train(TINY, recipe, images, images[:8], run_dir, epochs=1, log_every=1)
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "checkpoint.pt").is_file()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1]["final_valid_neg_elbo_bpd"] > 0
    assert load_weights(run_dir / "model.safetensors").config == model.config == TINY


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "tiny", (TINY, Recipe(batch_size=8, valid_split="test")))


def test_train_cli_trains_resumes_and_exports(capsys, tmp_path, data, tiny_preset):
    argv = ["train", "--preset", "tiny", "--data", str(data), "--run-dir", str(tmp_path / "run"),
            "--epochs", "1", "--threads", "1"]  # fmt: skip
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").is_file()
    code, out, err = run(capsys, *argv, "--export", "tiny-bits", "--dataset", "random bits")
    assert code == 0, err
    assert "resuming" in out and "registered tiny-bits" in out
    (info,) = zoo.list_models()
    assert (info.name, info.dataset, info.family) == ("tiny-bits", "random bits", "vlae")
    assert "preset | tiny" in info.card_path.read_text()
    r = _eval_json(capsys, tmp_path, "tiny-bits", data)
    assert r["neg_elbo_bpd"] == pytest.approx(
        info.test_neg_elbo_bpd, rel=1e-9
    )  # same seed, same images


def test_export_model_command(capsys, tmp_path, data):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _save(TINY, run_dir / "model.safetensors")
    code, _, err = run(
        capsys, "export-model", str(run_dir), "--name", "exported", "--data", str(data), "-q"
    )
    assert code == 0, err
    (info,) = zoo.list_models()
    assert info.name == "exported" and info.dataset == "bits"
    code, _, err = run(
        capsys, "export-model", str(tmp_path / "empty-run"), "--name", "x", "--data", str(data)
    )
    _assert_one_line_error(code, err, "has the training run finished")


def test_export_an_unfinished_run_as_interim(capsys, tmp_path, data):
    images = np.load(data)
    run_dir = tmp_path / "run"
    train(TINY, Recipe(batch_size=8), images, images[:8], run_dir, epochs=1)
    (run_dir / "model.safetensors").unlink()  # as if the run were still going
    code, out, err = run(capsys, "export-model", str(run_dir), "--name", "early", "--data",
                         str(data), "--interim", "-q")  # fmt: skip
    assert code == 0, err
    assert "interim weights from step" in out
    (info,) = zoo.list_models()
    assert info.name == "early" and "interim" in info.card_path.read_text()
    code, _, err = run(capsys, "export-model", str(tmp_path), "--name", "x", "--data", str(data),
                       "--interim")  # fmt: skip
    _assert_one_line_error(code, err, "no checkpoint.pt")


def test_train_cli_argument_errors(capsys, tmp_path, data, tiny_preset):
    base = ["train", "--data", str(data), "--run-dir", str(tmp_path / "run")]
    code, _, err = run(capsys, *base, "--preset", "tiny", "--minutes", "1", "--epochs", "1")
    assert code == 2 and "not allowed with" in err
    code, _, err = run(capsys, *base, "--preset", "tiny")
    assert code == 2 and "--minutes" in err
    code, _, err = run(capsys, *base, "--preset", "tiny", "--minutes", "-1")
    assert code == 2 and "positive number" in err
    code, _, err = run(capsys, *base, "--preset", "tiny", "--epochs", "1", "--export", "Bad/Name")
    assert code == 2 and "model name" in err
    code, _, err = run(capsys, *base, "--preset", "nope", "--epochs", "1")
    _assert_one_line_error(code, err, "unknown preset", "tiny", "vlae-bmnist")
    code, _, err = run(
        capsys, "train", "--preset", "tiny", "--data", str(tmp_path / "none.npy"), "--epochs", "1"
    )
    _assert_one_line_error(code, err, "none.npy")
    assert not (tmp_path / "run").exists()


def test_train_cli_refuses_data_of_the_wrong_shape(capsys, tmp_path, tiny_preset):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((4, 28, 28), np.uint8))
    code, _, err = run(capsys, "train", "--preset", "tiny", "--data", str(wide), "--epochs", "1")
    _assert_one_line_error(code, err, "(28, 28)")


def test_keyboard_interrupt_is_one_line(capsys, tiny, data, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "evaluate", interrupted)
    code, _, err = run(capsys, "eval", "--model", str(tiny), "--data", str(data))
    assert code == 130
    _assert_one_line_error(code, err, "interrupted")


def test_train_cli_grows_a_trained_model(capsys, tmp_path, data, monkeypatch):
    small = _save(TINY, tmp_path / "small.safetensors")
    grown = dataclasses.replace(TINY, kernel_size=5, n_blocks=2)
    monkeypatch.setitem(presets.PRESETS, "grown", (grown, Recipe(batch_size=8, valid_split="test")))
    argv = ["train", "--preset", "grown", "--data", str(data), "--run-dir", str(tmp_path / "run"),
            "--epochs", "1", "--threads", "1", "--init-from"]  # fmt: skip

    code, _, err = run(capsys, *argv, str(small))

    assert code == 0, err
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert ModelConfig.from_json(first["grown_from_config"]) == TINY
    assert load_weights(tmp_path / "run" / "model.safetensors").config == grown
    wider = _save(dataclasses.replace(TINY, channels=16), tmp_path / "wider.safetensors")
    code, _, err = run(capsys, *argv, str(wider), "--run-dir", str(tmp_path / "run2"))
    _assert_one_line_error(code, err, "differs in channels")
