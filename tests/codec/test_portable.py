"""Portable files: what one set of CPU kernels writes, another decodes.

Each file makes the trip between two processes that compute differently: one runs PyTorch's
plain kernels (``ATEN_CPU_CAPABILITY=default``) on one thread, the other the machine's own
(AVX2, AVX-512, …) on two. Files are encoded on either side with `bbcodec compress` and
decoded on the other with `bbcodec decompress`; every pixel must come back, and both
sides must write the same bytes. Each child pins its thread count (a file records the count
it was written with and the decoder normally runs with it; pinned, it cannot), so the
trip really crosses thread counts too.

A control makes the same trip with float arithmetic (`CodingSettings.arithmetic`): where the
two sets of kernels differ it does not decode, so the exact files' passing is not for lack
of a difference. Float files still round trip on one machine (tested in-process).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import SHARED_DATA
from tiny import random_images, random_model, tiny_config

from bbcodec import api, zoo
from bbcodec.codec import CodingSettings
from bbcodec.container import ContainerReader
from bbcodec.models.data import load_images
from bbcodec.models.weights import save_weights

#: A child process: pins torch's thread count to argv[1], runs each job of the JSON list
#: argv[2] (a `bbcodec` command line, or ``["float", images.npy, model, out.bbc]``: a file
#: of float arithmetic through the API) and prints one JSON line: its capability, threads
#: and the jobs' exit codes.
CHILD = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
torch.set_num_threads = lambda n: None  # pinned: the codec cannot set the file's count
import numpy as np
from bbcodec import api
from bbcodec.cli.main import main
from bbcodec.codec import CodingSettings
codes = []
for job in json.loads(sys.argv[2]):
    if job[0] != "float":
        codes.append(main(job))
        continue
    images, model, out = job[1:]
    settings = CodingSettings(arithmetic="float")
    with open(out, "wb") as f:
        f.write(api.compress(np.load(images), model=model, settings=settings))
    codes.append(0)
capability = torch.backends.cpu.get_cpu_capability()
print(json.dumps({"capability": capability, "threads": torch.get_num_threads(), "codes": codes}))
"""

#: The two ways of computing: (ATEN_CPU_CAPABILITY or None for the machine's own, threads).
PLAIN, NATIVE = ("default", 1), (None, 2)

#: Test cases: (family, kind) of a tiny random model, and the image shape if not the
#: model's (a crop larger than the model, coded tiled).
CASES = {
    "binary": ("vlae", "binary", None),
    "grey": ("vlae", "grey", None),
    "rgb": ("vlae", "rgb", None),
    "tiled-rgb": ("vlae", "rgb", (12, 20, 3)),
    "tiled-grey-prior-mean": ("vlae", "grey", (12, 20)),
    "delta-vae-binary": ("delta-vae", "binary", None),
    "delta-vae-rgb": ("delta-vae", "rgb", None),
}
N_IMAGES = 4
#: More `bbcodec compress` arguments of a case.
COMPRESS_ARGS = {"tiled-grey-prior-mean": ["--tile-latents", "prior-mean"]}


def run_child(cwd: Path, how: tuple[str | None, int], jobs: list[list[str]], zoo_dir=None) -> dict:
    """Runs `CHILD` in ``cwd`` computing ``how``; returns its JSON line and its stderr."""
    capability, threads = how
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    env.pop(zoo.WEIGHTS_DIR_ENV, None)  # None: the shipped zoo
    if zoo_dir is not None:
        env[zoo.WEIGHTS_DIR_ENV] = str(zoo_dir)
    command = [sys.executable, "-c", CHILD, str(threads), json.dumps(jobs)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def compress_jobs(cases: dict[str, str], side: str) -> list[list[str]]:
    """``bbcodec compress`` of each case's images.npy to SIDE/NAME.bbc (one worker)."""
    return [
        ["compress", "-q", f"{name}.npy", "-o", f"{side}/{name}.bbc", "--model", model,
         "--threads", "1", "--workers", "1", *COMPRESS_ARGS.get(name, [])]
        for name, model in cases.items()
    ]  # fmt: skip


def decompress_jobs(cases: dict[str, str], side: str) -> list[list[str]]:
    """``bbcodec decompress`` of SIDE/NAME.bbc to SIDE/NAME.npy."""
    return [
        ["decompress", "-q", f"{side}/{name}.bbc", "-o", f"{side}/{name}.npy", "--model", model,
         "--threads", "2", "--workers", "1"]
        for name, model in cases.items()
    ]  # fmt: skip


def cross_trip(work: Path, cases: dict[str, str], zoo_dir=None, plain_extra=(), native_extra=()):
    """Encodes every case (images ``work/NAME.npy``, model ``cases[NAME]``) both ways and
    decodes each file the other way: plain/ holds what the plain kernels wrote (and the
    native ones decoded), native/ the reverse. ``*_extra``: more jobs for the first plain
    and the native child.

    Returns:
        The three children's results, each with ``codes`` cut to its own jobs (a dict of
        case → exit code per step) and ``extra`` (the extra jobs' exit codes).
    """
    for side in ("plain", "native"):
        (work / side).mkdir()
    n = len(cases)

    def steps(result: dict, *names: str) -> dict:
        codes = result["codes"]
        result["steps"] = {
            step: dict(zip(cases, codes[k * n : (k + 1) * n], strict=True))
            for k, step in enumerate(names)
        }
        result["extra"] = codes[len(names) * n :]
        return result

    jobs = compress_jobs(cases, "plain") + list(plain_extra)
    plain_writes = steps(run_child(work, PLAIN, jobs, zoo_dir), "encode")
    jobs = compress_jobs(cases, "native") + decompress_jobs(cases, "plain") + list(native_extra)
    native = steps(run_child(work, NATIVE, jobs, zoo_dir), "encode", "decode")
    jobs = decompress_jobs(cases, "native")
    plain_reads = steps(run_child(work, PLAIN, jobs, zoo_dir), "decode")
    return plain_writes, native, plain_reads


def check_trip(work: Path, name: str, results) -> None:
    """Case ``name`` encoded and decoded both ways with every pixel back, and the same
    bytes written by both sides."""
    plain_writes, native, plain_reads = results
    codes = {
        "plain encode": plain_writes["steps"]["encode"][name],
        "native encode": native["steps"]["encode"][name],
        "native decode": native["steps"]["decode"][name],
        "plain decode": plain_reads["steps"]["decode"][name],
    }
    errors = "\n".join(r["stderr"] for r in results)
    assert set(codes.values()) == {0}, f"{codes}\n{errors}"
    images = np.load(work / f"{name}.npy")
    for side in ("plain", "native"):
        np.testing.assert_array_equal(np.load(work / side / f"{name}.npy"), images, err_msg=side)
    written = [(work / side / f"{name}.bbc").read_bytes() for side in ("plain", "native")]
    assert written[0] == written[1], "the two sides wrote different files"


@pytest.fixture(scope="module")
def tiny_trip(tmp_path_factory):
    """Tiny random models and images, after the trip (one set of children for all cases)."""
    work = tmp_path_factory.mktemp("portable")
    cases = {}
    for name, (family, kind, shape) in CASES.items():
        config = tiny_config(family, kind)
        model = random_model(config, seed=len(name))
        save_weights(model, work / f"{name}.safetensors")
        if shape is None:
            images = random_images(config, N_IMAGES, seed=len(name))
        else:
            images = np.random.default_rng(1).integers(0, 256, (1, *shape), dtype=np.uint8)
        np.save(work / f"{name}.npy", images)
        cases[name] = str(work / f"{name}.safetensors")
    control = ["float", "rgb.npy", cases["rgb"], "plain/float-rgb.bbc"]
    read_control = decompress_jobs({"float-rgb": cases["rgb"]}, "plain")
    return work, cross_trip(work, cases, work / "zoo", [control], read_control)


def test_the_children_compute_as_asked(tiny_trip):
    plain_writes, native, plain_reads = tiny_trip[1]
    assert plain_writes["capability"] == plain_reads["capability"] == "DEFAULT"
    assert plain_writes["threads"] == plain_reads["threads"] == 1
    assert native["threads"] == 2
    assert native["capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("name", list(CASES))
def test_files_decode_with_other_kernels_and_threads(tiny_trip, name):
    work, results = tiny_trip
    check_trip(work, name, results)


def test_control_float_files_do_not_make_the_trip(tiny_trip):
    """The harness would catch a coder that is not portable: a float-arithmetic file
    written with the plain kernels does not decode with the native ones (where they differ:
    the float path's result there is not a requirement, so a machine on which both compute
    the same floats skips)."""
    work, (_, native, _) = tiny_trip
    if native["capability"] == "DEFAULT":
        pytest.skip("this machine's own kernels are the plain ones")
    if native["extra"] == [0]:
        np.testing.assert_array_equal(
            np.load(work / "plain/float-rgb.npy"), np.load(work / "rgb.npy")
        )
        pytest.skip("the float path computed the same floats with both sets of kernels here")
    assert "does not decode" in native["stderr"], native["stderr"]


@pytest.mark.parametrize("name", ["binary", "rgb", "tiled-rgb", "delta-vae-binary"])
def test_float_arithmetic_still_round_trips_on_one_machine(tiny_trip, name):
    work, _ = tiny_trip
    model, images = str(work / f"{name}.safetensors"), np.load(work / f"{name}.npy")
    data = api.compress(images, model=model, settings=CodingSettings(arithmetic="float"))
    header = ContainerReader(io.BytesIO(data)).header
    assert CodingSettings.from_header(header).arithmetic == "float"
    np.testing.assert_array_equal(api.decompress(data, model=model), images)
    exact = ContainerReader(io.BytesIO(api.compress(images, model=model))).header
    assert CodingSettings.from_header(exact).arithmetic == "exact"  # the default


# ----- the shipped models on real images ----------------------------------------------------

SHIPPED = {
    "vlae-bmnist": ("binarized_mnist.npz", "test"),
    "delta-vae-bmnist": ("binarized_mnist.npz", "test"),
    "vlae-mnist": ("mnist", "test"),
    "vlae-cifar10": ("cifar10.npz", "test"),
}
N_REAL = 20


@pytest.mark.slow
def test_shipped_models_files_decode_with_other_kernels_and_threads(monkeypatch, tmp_path):
    """The same trip with the shipped models, on the first test images of their data."""
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV, raising=False)  # the shipped zoo
    shipped = {info.name for info in zoo.list_models()}
    cases = {}
    for name, (path, split) in SHIPPED.items():
        if name in shipped and (SHARED_DATA / path).exists():
            np.save(tmp_path / f"{name}.npy", load_images(SHARED_DATA / path, split)[:N_REAL])
            cases[name] = name
    if not cases:
        pytest.skip(f"no shipped model with its test images in {SHARED_DATA}")
    results = cross_trip(tmp_path, cases)
    for name in cases:
        check_trip(tmp_path, name, results)
