"""`bbcodec train` overrides of a preset's model and recipe (`bbcodec.models.presets`):
they reach the model and the training loop, bad combinations are one-line errors, a run
records them (run.json) and keeps them when resumed, the model card lists them, and the
configs of the shipped weights load as they always did. Tiny presets and data only."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from paths import REPO
from safetensors import safe_open
from tiny import tiny_config

from bbcodec import zoo
from bbcodec.cli.main import build_parser, main
from bbcodec.cli.model_commands import _OVERRIDES
from bbcodec.errors import UsageError
from bbcodec.models import presets
from bbcodec.models.encoders import ConvEncoder
from bbcodec.models.presets import KNOBS, OBJECTIVES, Recipe, option, with_overrides
from bbcodec.models.train import RUN_RECORD, read_run_record, train
from bbcodec.models.vae import ENCODERS, LatentVariableModel, ModelConfig
from bbcodec.models.weights import load_weights

pytestmark = pytest.mark.usefixtures("isolated", "tiny_presets")

VLAE = tiny_config("vlae", "binary")
DELTA = dataclasses.replace(tiny_config("delta-vae", "binary"), delta_nats=1.0)


@pytest.fixture
def tiny_presets(monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "tiny", (VLAE, Recipe(batch_size=8, valid_split="test")))
    monkeypatch.setitem(
        presets.PRESETS,
        "tiny-delta",
        (DELTA, Recipe(batch_size=8, valid_split="test", aux_prior_steps=2)),
    )


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "bits.npy"
    np.save(path, np.random.default_rng(0).integers(0, 2, (24, 8, 8), dtype=np.uint8))
    return path


@pytest.fixture
def losses(monkeypatch) -> list[tuple[str, float, float]]:
    """The (objective, β, τ) of every training step's loss."""
    calls = []
    loss = LatentVariableModel.loss

    def spy(self, x, objective="elbo", beta=1.0, free_bits_nats=0.0):
        calls.append((objective, beta, free_bits_nats))
        return loss(self, x, objective, beta, free_bits_nats)

    monkeypatch.setattr(LatentVariableModel, "loss", spy)
    return calls


def _train(capsys, data: Path, run_dir: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["train", "--data", str(data), "--run-dir", str(run_dir), "--threads", "1", *extra]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("bbcodec: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----- with_overrides -------------------------------------------------------------------


def test_overrides_reach_the_config_and_the_recipe():
    config, recipe = with_overrides(
        "tiny-delta",
        {"encoder": "conv", "row_context": False, "delta_nats": 2.0, "kernel_size": 5,
         "n_steps": 2, "step_dim": 3, "objective": "beta", "beta": 0.5, "learning_rate": 2e-3,
         "batch_size": 4, "aux_prior_steps": 7},
    )  # fmt: skip
    assert config == dataclasses.replace(
        DELTA, encoder="conv", row_context=False, delta_nats=2.0, kernel_size=5, n_steps=2,
        step_dim=3,
    )  # fmt: skip
    assert (recipe.objective, recipe.beta, recipe.learning_rate) == ("beta", 0.5, 2e-3)
    assert (recipe.batch_size, recipe.aux_prior_steps, recipe.valid_split) == (4, 7, "test")
    model = LatentVariableModel(config)
    assert isinstance(model.encoder, ConvEncoder) and model.decoder.row is None
    assert model.encoder.fc[-1].out_features == 2 * 6
    vlae = LatentVariableModel(with_overrides("tiny", {"row_context": True, "latent_dim": 3})[0])
    assert vlae.decoder.receptive_field == "full causal past" and vlae.config.total_latent_dim == 3
    assert with_overrides("tiny", {}) == presets.PRESETS["tiny"]


@pytest.mark.parametrize(
    ("preset", "overrides", "fragment"),
    [
        ("tiny", {"beta": 2.0}, "β = 2.0 is for objective beta, not elbo"),
        ("tiny", {"objective": "beta"}, "objective beta needs a β other than 1"),
        ("tiny", {"free_bits_nats": 0.5}, "τ = 0.5 is for objective free-bits"),
        ("tiny", {"objective": "free-bits"}, "objective free-bits needs free bits τ > 0"),
        ("tiny", {"delta_nats": 3.0}, "--delta-nats does not apply to preset tiny, a vlae"),
        ("tiny", {"aux_prior_steps": 3}, "--aux-prior-steps does not apply"),
        ("tiny-delta", {"latent_dim": 8}, "--latent-dim does not apply to preset tiny-delta"),
        ("tiny", {"kernel_size": 4}, "kernel_size must be odd"),
        ("tiny", {"encoder": "anti-causal"}, "a VLAE has one latent vector"),
        ("tiny-delta", {"n_steps": 3}, "not divisible by 3 latent steps"),
        ("tiny-delta", {"n_steps": 1}, "at least 2 latent steps"),
        ("tiny", {"learning_rate": 1e-5}, "final learning rate 0.0001 is above the first"),
        ("tiny", {"colour": "red"}, "no such override 'colour'"),
        ("nope", {}, "unknown preset 'nope'"),
    ],
)
def test_bad_combinations_are_one_usage_error_each(preset, overrides, fragment):
    with pytest.raises(UsageError) as exc:
        with_overrides(preset, overrides)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_the_command_has_one_option_per_knob_with_its_help(capsys):
    dests = {flag[2:].replace("-", "_") for flag, _ in _OVERRIDES}
    assert dests == set(KNOBS)
    kwargs = dict(_OVERRIDES)
    assert set(kwargs["--objective"]["choices"]) == set(OBJECTIVES)
    assert set(kwargs["--encoder"]["choices"]) == set(ENCODERS)
    assert all(kwargs[option(knob)]["help"] for knob in KNOBS)
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for knob in KNOBS:
        assert option(knob) in out
    # Each preset's values, the overrides' defaults, are listed.
    assert "tiny-delta: delta-vae, binary 8x8" in out
    assert "--n-steps 4 --step-dim 2 --delta-nats 1.0 --kernel-size 3 --row-context" in out
    assert "--aux-prior-steps 2" in out
    parser = build_parser()
    train_args = parser.parse_args(["train", "--preset", "p", "--data", "d", "--epochs", "1"])
    assert all(getattr(train_args, knob) is None for knob in KNOBS)  # none unless given
    with_flags = parser.parse_args(
        ["train", "--preset", "p", "--data", "d", "--epochs", "1", "--no-row-context"]
    )
    assert with_flags.row_context is False


# ----- the command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--beta", "2"), "β = 2.0 is for objective beta"),
        (("--objective", "free-bits"), "needs free bits τ > 0"),
        (("--delta-nats", "3"), "--delta-nats does not apply to preset tiny"),
        (("--kernel-size", "4"), "kernel_size must be odd"),
        (("--encoder", "anti-causal"), "a VLAE has one latent vector"),
    ],
)
def test_bad_overrides_are_one_line_errors_before_any_work(capsys, tmp_path, data, extra, fragment):
    code, _, err = _train(
        capsys, data, tmp_path / "run", "--preset", "tiny", "--epochs", "1", *extra
    )
    _one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_overrides_reach_the_model_the_loop_the_run_and_the_card(capsys, tmp_path, data, losses):
    run_dir = tmp_path / "run"
    code, out, err = _train(
        capsys, data, run_dir, "--preset", "tiny", "--epochs", "1", "--objective", "beta",
        "--beta", "2", "--kernel-size", "5", "--row-context", "--export", "tiny-beta",
    )  # fmt: skip
    assert code == 0, err
    assert "trained tiny --kernel-size 5 --row-context --objective beta --beta 2.0" in out
    assert losses and set(losses) == {("beta", 2.0, 0.0)}
    model = load_weights(run_dir / "model.safetensors")
    assert model.config == dataclasses.replace(VLAE, kernel_size=5, row_context=True)
    record = json.loads((run_dir / RUN_RECORD).read_text())
    assert record == {
        "preset": "tiny",
        "overrides": {"kernel_size": 5, "row_context": True, "objective": "beta", "beta": 2.0},
    }
    card = zoo.list_models()[0].card_path.read_text()
    assert "| overrides | `--kernel-size 5 --row-context --objective beta --beta 2.0` |" in card
    assert "objective=beta, beta=2.0," in card and "| preset | tiny |" in card
    assert '"row_context": true' in card and "full causal past" in card


def test_a_delta_vae_with_a_conv_encoder_and_a_local_decoder_trains(capsys, tmp_path, data):
    run_dir = tmp_path / "run"
    code, _, err = _train(
        capsys, data, run_dir, "--preset", "tiny-delta", "--epochs", "1", "--encoder", "conv",
        "--no-row-context", "--delta-nats", "2",
    )  # fmt: skip
    assert code == 0, err
    model = load_weights(run_dir / "model.safetensors")
    assert isinstance(model.encoder, ConvEncoder) and model.decoder.row is None
    assert model.config.delta_nats == 2.0
    assert read_run_record(run_dir).overrides == {
        "delta_nats": 2.0, "row_context": False, "encoder": "conv",
    }  # fmt: skip


def test_a_resumed_run_keeps_its_overrides_and_refuses_conflicting_ones(
    capsys, tmp_path, data, losses
):
    run_dir = tmp_path / "run"
    first = ("--preset", "tiny", "--objective", "free-bits", "--free-bits-nats", "0.5")
    code, _, err = _train(capsys, data, run_dir, *first, "--epochs", "1")
    assert code == 0, err
    steps = len(losses)

    # Resumed without the overrides: it keeps them.
    code, out, err = _train(capsys, data, run_dir, "--preset", "tiny", "--epochs", "2")
    assert code == 0, err
    assert "resuming" in out and len(losses) > steps
    assert set(losses) == {("free-bits", 1.0, 0.5)}
    # Repeating them, or naming a knob at the run's own value, changes nothing: allowed.
    code, _, err = _train(capsys, data, run_dir, *first, "--kernel-size", "3", "--epochs", "2")
    assert code == 0, err
    assert read_run_record(run_dir).overrides == {"objective": "free-bits", "free_bits_nats": 0.5}

    # Conflicting overrides, of the recipe or of the model: one line, nothing trained.
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    for extra, run_has, asked in [
        (("--free-bits-nats", "1"), "--free-bits-nats 0.5", "not --free-bits-nats 1.0"),
        (("--objective", "elbo"), "--objective free-bits", "not --objective elbo"),
        (("--kernel-size", "5"), "--kernel-size 3", "not --kernel-size 5"),
    ]:
        code, _, err = _train(capsys, data, run_dir, "--preset", "tiny", "--epochs", "3", *extra)
        line = _one_line_error(code, err, f"trains with {run_has}", asked, "--run-dir")
        assert "Traceback" not in line
    code, _, err = _train(capsys, data, run_dir, "--preset", "tiny-delta", "--epochs", "3")
    _one_line_error(code, err, "is a run of preset tiny: resume it with --preset tiny")
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_a_run_without_a_record_is_its_plain_preset(capsys, tmp_path, data):
    """A run from before records (a checkpoint, no run.json) trained with its preset as is."""
    images = np.load(data)
    run_dir = tmp_path / "run"
    train(VLAE, Recipe(batch_size=8, valid_split="test"), images, images[:8], run_dir, epochs=1)
    assert not (run_dir / RUN_RECORD).exists()
    capsys.readouterr()
    code, _, err = _train(capsys, data, run_dir, "--preset", "tiny", "--epochs", "2", "--beta",
                          "2", "--objective", "beta")  # fmt: skip
    _one_line_error(
        code, err, "trains with --objective elbo --beta 1.0, not --objective beta --beta 2.0"
    )
    code, _, err = _train(capsys, data, run_dir, "--preset", "tiny", "--epochs", "2")
    assert code == 0, err
    assert read_run_record(run_dir).overrides == {}


def test_export_model_lists_the_run_overrides(capsys, tmp_path, data):
    run_dir = tmp_path / "run"
    code, _, err = _train(capsys, data, run_dir, "--preset", "tiny", "--epochs", "1",
                          "--latent-dim", "3", "--learning-rate", "0.002")  # fmt: skip
    assert code == 0, err
    code = main(["export-model", str(run_dir), "--name", "small-z", "--data", str(data), "-q"])
    assert code == 0, capsys.readouterr().err
    card = zoo.list_models()[0].card_path.read_text()
    assert "| preset | tiny |" in card
    assert "| overrides | `--latent-dim 3 --learning-rate 0.002` |" in card
    assert "learning_rate=0.002" in card and '"latent_dim": 3' in card
    capsys.readouterr()
    code = main(["export-model", str(run_dir), "--name", "x", "--data", str(data), "--preset",
                 "tiny-delta"])  # fmt: skip
    _one_line_error(code, capsys.readouterr().err, "is a run of preset tiny, not tiny-delta")


# ----- configs --------------------------------------------------------------------------

SHIPPED = sorted((REPO / "models" / "weights").glob("*.safetensors"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_configs_load_and_build_as_before(path):
    with safe_open(str(path), "pt") as f:
        text = f.metadata()["config"]
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not iterable)
    config = ModelConfig.from_json(text)
    # The JSON (and so the weights fingerprint `bbcodec.api` hashes) is as before the
    # encoder and row-context fields existed: the family's own are left out.
    fields = dataclasses.asdict(config)
    legacy = {k: v for k, v in fields.items() if k not in ("row_context", "encoder")}
    assert config.to_json() == json.dumps(legacy, sort_keys=True)
    assert ModelConfig.from_json(config.to_json()) == config
    assert (config.row_context, config.encoder) == (
        (True, "anti-causal") if config.family == "delta-vae" else (False, "conv")
    )
    model = LatentVariableModel(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_configs_with_swapped_parts_round_trip():
    default = ModelConfig("delta-vae", "binary", (8, 8), n_steps=4, row_context=True,
                          encoder="anti-causal")  # fmt: skip
    assert default == ModelConfig("delta-vae", "binary", (8, 8), n_steps=4)  # the family's own
    assert "row_context" not in default.to_json()
    swapped = dataclasses.replace(default, row_context=False, encoder="conv")
    assert json.loads(swapped.to_json())["encoder"] == "conv"
    assert ModelConfig.from_json(swapped.to_json()) == swapped
    with pytest.raises(ValueError, match="unknown encoder"):
        ModelConfig("vlae", "binary", (8, 8), encoder="rnn")
