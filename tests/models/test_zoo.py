"""The model zoo: registry, sha256-checked loading by name, loading by path, registration."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bbcodec import zoo
from bbcodec.errors import BbcodecError, UsageError, WeightsError
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights, sha256_file
from bbcodec.zoo import (
    ModelInfo,
    card_rows,
    list_models,
    load_model,
    record_tile_latents,
    register_model,
    registered_tile_latents,
)

TINY = ModelConfig(
    "vlae", "binary", (8, 8), latent_dim=4, channels=8, n_blocks=1, made_hidden=16, kernel_size=3
)


@pytest.fixture(autouse=True)
def _light(monkeypatch):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV, raising=False)


@pytest.fixture
def weights_file(tmp_path) -> Path:
    path = tmp_path / "run" / "model.safetensors"
    path.parent.mkdir()
    save_weights(LatentVariableModel(TINY), path)
    return path


def _register(weights_file: Path, folder: Path, name: str = "tiny") -> ModelInfo:
    return register_model(
        name, weights_file, dataset="random 8x8", test_neg_elbo_bpd=1.05, test_neg_elbo_nats=46.5,
        details={"recipe": "none"}, weights_dir=folder,
    )  # fmt: skip


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_empty_zoo_lists_nothing(tmp_path):
    assert list_models(weights_dir=tmp_path) == []
    assert list_models(weights_dir=tmp_path / "does-not-exist") == []


def test_the_shipped_registry_is_readable():
    for info in list_models():  # whatever is shipped: typed entries whose files exist
        assert isinstance(info, ModelInfo) and info.path.is_file() and info.card_path.is_file()


def test_register_then_list_and_load_by_name(tmp_path, weights_file):
    folder = tmp_path / "zoo"
    info = _register(weights_file, folder)
    assert info == list_models(weights_dir=folder)[0]
    assert (info.name, info.file, info.card, info.family) == (
        "tiny",
        "tiny.safetensors",
        "tiny.md",
        "vlae",
    )
    assert info.sha256 == sha256_file(folder / "tiny.safetensors")
    assert info.n_params == sum(p.numel() for p in LatentVariableModel(TINY).parameters())
    entry = json.loads((folder / "registry.json").read_text())["tiny"]
    assert {
        "file",
        "sha256",
        "dataset",
        "test_neg_elbo_bpd",
        "test_neg_elbo_nats",
        "card",
    } <= entry.keys()
    card = info.card_path.read_text()
    assert info.sha256 in card and "46.50 nats" in card and "random 8x8" in card
    model = load_model("tiny", weights_dir=folder)
    assert not model.training and model.config == TINY
    assert _same_weights(model, load_model(weights_file))
    assert sorted(p.name for p in folder.iterdir()) == [
        "registry.json",
        "tiny.md",
        "tiny.safetensors",
    ]


def test_register_updates_an_entry_and_keeps_the_others(tmp_path, weights_file):
    folder = tmp_path / "zoo"
    _register(weights_file, folder, "a")
    _register(weights_file, folder, "b")
    updated = register_model("a", weights_file, dataset="other", test_neg_elbo_bpd=0.5,
                             test_neg_elbo_nats=22.0, weights_dir=folder)  # fmt: skip
    assert [m.name for m in list_models(weights_dir=folder)] == ["a", "b"]
    assert updated.dataset == "other" and list_models(weights_dir=folder)[0] == updated


def test_environment_variable_moves_the_registry(tmp_path, weights_file, monkeypatch):
    folder = tmp_path / "zoo"
    _register(weights_file, folder)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(folder))
    assert [m.name for m in list_models()] == ["tiny"]
    assert load_model("tiny").config == TINY


def test_load_by_path_and_by_run_folder(weights_file):
    assert load_model(weights_file).config == TINY
    assert load_model(weights_file.parent).config == TINY


def test_tampered_weights_are_refused_by_name(tmp_path, weights_file):
    folder = tmp_path / "zoo"
    info = _register(weights_file, folder)
    data = bytearray(info.path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last tensor's bytes: still a loadable file
    info.path.write_bytes(bytes(data))
    assert load_model(info.path).config == TINY  # by path there is no recorded hash to check
    with pytest.raises(WeightsError, match="sha256"):
        load_model("tiny", weights_dir=folder)


def test_missing_registered_file_is_a_clear_error(tmp_path, weights_file):
    folder = tmp_path / "zoo"
    _register(weights_file, folder).path.unlink()
    with pytest.raises(WeightsError, match="registered but its weights"):
        load_model("tiny", weights_dir=folder)


def test_unknown_model_names_the_known_ones(tmp_path, weights_file):
    folder = tmp_path / "zoo"
    _register(weights_file, folder, "alpha")
    _register(weights_file, folder, "beta")
    with pytest.raises(WeightsError, match=r"known models: alpha, beta"):
        load_model("gamma", weights_dir=folder)
    with pytest.raises(WeightsError, match="none shipped yet"):
        load_model("gamma", weights_dir=tmp_path / "empty")


def test_a_file_that_is_not_weights_is_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a usable"):
        load_model(junk)
    with pytest.raises(WeightsError):
        register_model(
            "junk",
            junk,
            dataset="-",
            test_neg_elbo_bpd=1,
            test_neg_elbo_nats=1,
            weights_dir=tmp_path,
        )
    assert list_models(weights_dir=tmp_path) == []


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "Upper", "-x", ".hidden"])
def test_bad_names_are_refused(tmp_path, weights_file, name):
    with pytest.raises(UsageError, match="model name"):
        _register(weights_file, tmp_path / "zoo", name)
    assert issubclass(WeightsError, BbcodecError)  # what the CLI catches, by name


def _result(**changes) -> SimpleNamespace:
    """The fields of an `EvalResult` a card shows."""
    fields = {"n_images": 10, "kl_bpd": 0.25, "kl_nats": 12.0, "recon_bpd": 0.5,
              "recon_nats": 24.0, "active_units": 3, "latent_dim": 4, "delta_nats": None,
              "kl_train_prior_nats": None, "neg_elbo_bpd": 0.75, "neg_elbo_nats": 36.0}  # fmt: skip
    return SimpleNamespace(**{**fields, **changes})


def test_card_rows_in_order():
    metadata = {"train_seconds": "120.0", "train_images": "6000", "interim": "true"}
    rows = card_rows(_result(), "bits.npy", "test", {"preset": "tiny", "seed": 0}, metadata)
    assert list(rows) == [
        "preset", "seed", "training time", "training images", "status", "test data",
        "test KL (rate)", "test recon (distortion)", "active units",
    ]  # fmt: skip
    assert rows["training time"] == "2.0 min" and rows["training images"] == "6,000 (50 images/s)"
    assert rows["status"].startswith("interim") and rows["active units"] == "3 / 4"
    assert rows["test data"] == "bits.npy [test], 10 images"
    delta = card_rows(_result(delta_nats=1.0, kl_train_prior_nats=1.5), "d", "valid")
    assert next(iter(delta)) == "valid data" and delta["committed rate δ"] == "1.000 nats"
    assert delta["KL under the AR(1) training prior"] == "1.500 nats/image"


def test_register_evaluated_writes_the_card(tmp_path, weights_file):
    info = zoo.register_evaluated("tiny", weights_file, _result(), data="x/bits.npy", split="test",
                                  details={"seed": 3}, weights_dir=tmp_path)  # fmt: skip
    assert (info.dataset, info.test_neg_elbo_nats) == ("bits", 36.0)
    card = info.card_path.read_text()
    assert "| seed | 3 |" in card and "| test data | x/bits.npy [test], 10 images |" in card


def _entry(**changes) -> str:
    entry = {"file": "x.safetensors", "sha256": "0", "dataset": "d", "test_neg_elbo_bpd": 1,
             "test_neg_elbo_nats": 1, "card": "x.md", **changes}  # fmt: skip
    return json.dumps({"x": entry})


@pytest.mark.parametrize(
    "registry, message",
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "must map names"),
        ('{"x": {"file": "x.safetensors"}}', "lacks sha256"),
        (_entry(file="../x.safetensors"), "plain file name"),
        (_entry(card="/etc/x.md"), "plain file name"),
        (_entry(test_neg_elbo_bpd="fast"), "malformed"),
        (_entry(tile_latents="none"), "tile_latents 'none'; expected one of bits-back"),
    ],
)
def test_malformed_registries_are_clear_errors(tmp_path, weights_file, registry, message):
    (tmp_path / "registry.json").write_text(registry)
    with pytest.raises(WeightsError, match=message):
        list_models(weights_dir=tmp_path)
    with pytest.raises(WeightsError, match=message):
        load_model("x", weights_dir=tmp_path)
    assert load_model(weights_file, weights_dir=tmp_path).config == TINY  # paths still load


def test_the_tile_latents_of_a_registered_model(tmp_path, weights_file):
    """An entry without ``tile_latents`` codes photos' latents with bits back; one may say
    prior-mean; any other name (a path) is bits back."""
    _register(weights_file, tmp_path)
    assert list_models(weights_dir=tmp_path)[0].tile_latents == "bits-back"
    assert registered_tile_latents("tiny", weights_dir=tmp_path) == "bits-back"
    record_tile_latents("tiny", "prior-mean", weights_dir=tmp_path)
    assert list_models(weights_dir=tmp_path)[0].tile_latents == "prior-mean"
    assert registered_tile_latents("tiny", weights_dir=tmp_path) == "prior-mean"
    assert registered_tile_latents(str(weights_file), weights_dir=tmp_path) == "bits-back"
    record_tile_latents("tiny", "bits-back", weights_dir=tmp_path)
    assert "tile_latents" not in json.loads((tmp_path / "registry.json").read_text())["tiny"]
    with pytest.raises(UsageError, match="not a registered model"):
        record_tile_latents("other", "prior-mean", weights_dir=tmp_path)
    with pytest.raises(UsageError, match="tile_latents must be one of"):
        record_tile_latents("tiny", "none", weights_dir=tmp_path)


def test_docstring_examples():
    assert doctest.testmod(zoo, optionflags=doctest.ELLIPSIS).failed == 0
