"""Careless and hostile input to the Python API: one typed error each, never a traceback
from deep inside, never a path opened because a file named it.

- `CodingSettings` checks every field (`UsageError`); a file's bad settings stay a
  `DecodeError`; a CUDA device on a machine without one is a `UsageError` up front.
- ``model=`` takes a registered name, a ``str`` or `os.PathLike` path, or a model.
- A file's model id is looked up in the registry only (`bbcodec.api.model_for_file`).
- Read-only image arrays reach torch as writable ones (no "not writable" warning).
- ``workers>1`` from a script without the ``__main__`` guard: one clear `UsageError`.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

import bbcodec
from bbcodec import zoo
from bbcodec.api import _as_runs, compress_to, model_for_file
from bbcodec.codec import CodingSettings
from bbcodec.codec.workers import UNGUARDED_MAIN
from bbcodec.container import dumps, loads
from bbcodec.errors import DecodeError, UsageError
from bbcodec.models.weights import save_weights

pytestmark = pytest.mark.usefixtures("isolated")  # a private zoo, tmp_path as the cwd

CONFIG = tiny_config("vlae", "binary")


# ----- coding settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"torch_threads": 0}, "torch_threads must be between 1 and 1024, got 0"),
        ({"torch_threads": 10**6}, "torch_threads must be between 1 and 1024"),
        ({"torch_threads": 1.5}, "torch_threads must be an integer, got 1.5"),
        ({"max_batch": 0}, "max_batch must be between 1 and 65536, got 0"),
        ({"max_batch": True}, "max_batch must be an integer, got True"),
        ({"chunk_images": 0}, "chunk_images must be at least 1, got 0"),
        ({"chunk_images": "4"}, "chunk_images must be an integer, got '4'"),
        ({"seed": -1}, "seed must be between 0 and"),
        ({"grid_step_log2": 10**6}, "grid_step_log2 must be between -30 and 30"),
        ({"grid_bound": float("nan")}, "grid_bound must be a positive number, got nan"),
        ({"grid_bound": 0.0}, "grid_bound must be a positive number"),
        ({"grid_step_log2": -30, "arithmetic": "float"}, "latent grid: n_half must be in"),
        ({"grid_step_log2": -13}, "grid_step_log2 must be at least −12 with exact arithmetic"),
        ({"arithmetic": "fast"}, "arithmetic must be one of exact, float, got 'fast'"),
        ({"grid_step_log2": 0, "grid_bound": 7}, "the latent grid needs at least 8 points"),
        ({"device": "gpu"}, "device must be cpu, cuda or cuda:N, got 'gpu'"),
        ({"device": None}, "device must be cpu, cuda or cuda:N, got None"),
        ({"pixel_bins": 8}, "pixel_bins must be one of 1, 16, got 8"),
        ({"pixel_bins": True}, "pixel_bins must be one of 1, 16, got True"),
        ({"pixel_bins": 16, "arithmetic": "float"}, "pixel_bins other than 1 needs exact"),
        ({"tile_latents": "none"}, "tile_latents must be one of bits-back, prior-mean, got"),
        ({"tile_latents": 1}, "tile_latents must be one of bits-back, prior-mean, got 1"),
    ],
)
def test_bad_settings_are_usage_errors_and_bad_file_settings_decode_errors(values, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        CodingSettings(**values)
    file_values = {**CodingSettings(chunk_images=4).to_dict(), **values}
    with pytest.raises(DecodeError, match="invalid coding settings in file") as exc:
        CodingSettings.from_dict(file_values, 3, 10)
    assert not isinstance(exc.value, UsageError)


def test_good_settings_and_the_file_forms_still_work():
    for values in ({}, {"device": "cuda:1", "chunk_images": 1, "max_batch": 65536},
                   {"grid_step_log2": -4, "grid_bound": 8, "seed": 2**63 - 1},
                   {"pixel_bins": 16}, {"tile_latents": "prior-mean"},
                   {"tile_latents": "bits-back"}):  # fmt: skip
        settings = CodingSettings(**values)
        for n_images in (1, 10):
            recorded = settings.file_dict(n_images)  # what a format-3 file holds
            read = CodingSettings.from_dict(recorded, 3, n_images)
            chunk_images = n_images if (settings.chunk_images or n_images) >= n_images else 1
            # band_rows: recorded only where it cut an image (none here), else read as 0;
            # pixel_bins: recorded unless 1, and None (the plan's choice) is written as 1;
            # tile_latents likewise unless bits-back (a file without it used bits back)
            resolved = {"band_rows": 0, "pixel_bins": settings.pixel_bins or 1,
                        "tile_latents": settings.tile_latents or "bits-back"}  # fmt: skip
            assert read == dataclasses.replace(settings, chunk_images=chunk_images, **resolved)
    assert CodingSettings().file_dict(5) == {}  # the defaults cost nothing
    assert CodingSettings(tile_latents="bits-back").file_dict(5) == {}
    assert CodingSettings(tile_latents="prior-mean").file_dict(5) == {"tile_latents": "prior-mean"}
    # Format 2 recorded every setting but those added since; the chunk size was required.
    format_2 = {**CodingSettings(chunk_images=7).to_dict()}
    for added in ("posterior_window_stds", "initial_bits", "direct_latent_stds"):
        format_2.pop(added)
    read = CodingSettings.from_dict(format_2, 2, 10)
    assert (read.posterior_window_stds, read.initial_bits, read.chunk_images) == (None, "seed", 7)
    with pytest.raises(DecodeError, match="no chunk size"):
        CodingSettings.from_dict({}, 2, 10)
    with pytest.raises(DecodeError, match="unknown coding settings"):
        CodingSettings.from_dict({"turbo": True}, 3, 1)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_usage_error(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = io.BytesIO()
    model = random_model(CONFIG)
    with pytest.raises(UsageError, match=f"^device {device}: CUDA is not available on this"):
        compress_to(out, random_images(CONFIG, 2), model, CodingSettings(device=device))
    assert out.getvalue() == b""  # nothing written


def test_a_float_file_encoded_on_cuda_is_a_decode_error_without_cuda(monkeypatch):
    model, images = random_model(CONFIG), random_images(CONFIG, 2)
    header, chunks = loads(bbcodec.compress(images, model, CodingSettings(arithmetic="float")))
    on_cuda = dataclasses.replace(header, settings={**header.settings, "device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = (
        r"^this file was encoded on cuda with float arithmetic; decoding needs that device "
        r"\(device cuda: CUDA is not available on this machine\)$"
    )
    with pytest.raises(DecodeError, match=message):
        bbcodec.decompress(dumps(on_cuda, chunks), model)


def test_an_exact_file_encoded_on_cuda_decodes_on_the_cpu(monkeypatch):
    model, images = random_model(CONFIG), random_images(CONFIG, 2)
    header, chunks = loads(bbcodec.compress(images, model))
    on_cuda = dataclasses.replace(header, settings={**header.settings, "device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_array_equal(bbcodec.decompress(dumps(on_cuda, chunks), model), images)


def test_a_missing_cuda_index_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match="^device cuda:1: this machine has 1 CUDA devices"):
        bbcodec.compress(
            random_images(CONFIG, 2), random_model(CONFIG), CodingSettings(device="cuda:1")
        )


def test_other_arguments_of_the_wrong_type():
    bad_workers = r"^workers must be an integer, at least 1 \(or None\), got "
    images, model = random_images(CONFIG, 2), random_model(CONFIG)
    with pytest.raises(UsageError, match="^settings must be CodingSettings, got dict"):
        bbcodec.compress(images, model, settings={"max_batch": 4})
    for workers in (0, 1.5, "2"):
        with pytest.raises(UsageError, match=bad_workers):
            bbcodec.compress(images, model, workers=workers)
    data = bbcodec.compress(images, model)
    with pytest.raises(UsageError, match=bad_workers):
        bbcodec.decompress(data, model, workers=0)


# ----- model= ---------------------------------------------------------------------------


def test_a_path_object_is_a_weights_path(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_weights(random_model(CONFIG), path)
    images = random_images(CONFIG, 3)
    data = bbcodec.compress(images, model=path)
    assert data == bbcodec.compress(images, model=str(path))
    assert loads(data)[0].model_id == "custom"  # a path is not a registered name
    np.testing.assert_array_equal(bbcodec.decompress(data, model=path), images)


@pytest.mark.parametrize("model", [42, b"tiny.safetensors", object(), np.zeros(3)])
def test_a_model_of_another_type_is_a_usage_error(model):
    images = random_images(CONFIG, 2)
    with pytest.raises(UsageError, match=r"^model must be a registered name, a weights path "
                       r"\(str or os.PathLike\) or a LatentVariableModel, or \"auto\"; got "):  # fmt: skip
        bbcodec.compress(images, model=model)
    data = bbcodec.compress(images, model=random_model(CONFIG))
    with pytest.raises(UsageError, match="^model must be a registered name"):
        bbcodec.decompress(data, model=model)


# ----- a file names a registered model, never a path --------------------------------------


def _naming(data: bytes, model_id: str) -> bytes:
    header, chunks = loads(data)
    return dumps(dataclasses.replace(header, model_id=model_id), chunks)


@pytest.mark.parametrize(
    "model_id", ["x.safetensors", "../x.safetensors", "ABSOLUTE", "/etc/passwd", "zoo"]
)
def test_a_model_id_that_is_not_registered_is_never_opened(tmp_path, monkeypatch, model_id):
    """A file whose model id is a path to weights that would decode it: refused."""
    weights = tmp_path / "x.safetensors"
    model = random_model(CONFIG)
    save_weights(model, weights)
    work = tmp_path / "work"
    work.mkdir()
    save_weights(model, work / "x.safetensors")
    monkeypatch.chdir(work)
    model_id = str(weights) if model_id == "ABSOLUTE" else model_id
    data = _naming(bbcodec.compress(random_images(CONFIG, 2), model=model), model_id)
    message = (
        f"^the file names model {model_id!r}, which is not a registered model; pass the "
        "weights with model=…$"
    )
    with pytest.raises(DecodeError, match=message.replace(".", r"\.")):
        bbcodec.decompress(data)
    with pytest.raises(DecodeError, match="not a registered model; pass the weights with --model"):
        model_for_file(loads(data)[0], pass_as="--model PATH")
    # The caller's weights decode it, whatever the file calls them.
    np.testing.assert_array_equal(bbcodec.decompress(data, model=weights), random_images(CONFIG, 2))


def test_model_for_file_loads_the_registered_model_and_checks_its_weights(tmp_path):
    model = random_model(CONFIG)
    save_weights(model, tmp_path / "run.safetensors")
    zoo.register_model("tiny", tmp_path / "run.safetensors", dataset="random",
                       test_neg_elbo_bpd=1.0, test_neg_elbo_nats=1.0)  # fmt: skip
    header = loads(bbcodec.compress(random_images(CONFIG, 2), model="tiny"))[0]
    assert header.model_id == "tiny"
    assert model_for_file(header).state_dict().keys() == model.state_dict().keys()
    assert model_for_file(header, model) is model
    with pytest.raises(DecodeError, match="other weights than the given model"):
        model_for_file(header, random_model(CONFIG, seed=1))
    custom = dataclasses.replace(header, model_id="custom")
    with pytest.raises(DecodeError, match=r"unregistered weights: pass the model to decode it \("):
        model_for_file(custom)


# ----- read-only arrays -----------------------------------------------------------------


def test_read_only_images_give_no_warning_and_are_copied_only_when_needed(monkeypatch):
    writable_seen = []
    from_numpy = torch.from_numpy

    def spy(array):  # torch warns only once per process: check what reaches it instead
        writable_seen.append(array.flags.writeable)
        return from_numpy(array)

    model = random_model(tiny_config("vlae", "grey"))
    images = random_images(model.config, 3)
    photo = np.random.default_rng(1).integers(0, 256, (11, 13), dtype=np.uint8)
    images.flags.writeable = photo.flags.writeable = False
    monkeypatch.setattr(torch, "from_numpy", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for given in (images, [photo], photo):
            data = bbcodec.compress(given, model=model)
            decoded = bbcodec.decompress(data, model=model)
            np.testing.assert_array_equal(np.reshape(decoded, np.shape(given)), given)
    assert [str(w.message) for w in caught] == []
    assert writable_seen and all(writable_seen)
    # A writable contiguous array is used as it is; a read-only one is copied.
    writable = random_images(model.config, 3)
    assert np.shares_memory(_as_runs(writable)[0], writable)
    (run,) = _as_runs(images)
    assert run.flags.writeable and not np.shares_memory(run, images)


# ----- workers>1 without the __main__ guard -----------------------------------------------

SCRIPT = """\
import numpy as np
import bbcodec
from bbcodec.codec import CodingSettings

data = bbcodec.compress(np.zeros((4, 8, 8), np.uint8), model={weights!r},
                        settings=CodingSettings(chunk_images=2), workers=2)
print("compressed", len(data))
"""


def test_workers_from_a_script_without_the_main_guard_is_one_clear_error(tmp_path):
    weights = tmp_path / "tiny.safetensors"
    save_weights(random_model(CONFIG), weights)
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(weights=str(weights)))
    command = [sys.executable, str(script)]
    result = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert result.stderr.count(UNGUARDED_MAIN) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"bbcodec.errors.UsageError: {UNGUARDED_MAIN}"
    assert "bootstrapping" not in result.stderr and "compressed" not in result.stdout
