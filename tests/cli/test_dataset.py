"""Dataset mode (`bbcodec.dataset`, `bbcodec.cli.dataset_commands`): a folder tree of tiny
PNGs coded into shards in this process and on a two-process Dask ``LocalCluster``
(loopback only), byte for byte the same; decompressed back to its names and pixels;
resumed after an interruption, a damaged shard and a killed worker; refused with one
error line where it must be. One cluster serves the whole module."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import distributed
import numpy as np
import pytest
import torch
from cli_runs import listing, run
from PIL import Image

from bbcodec import zoo
from bbcodec.dataset import MANIFEST_NAME, plan_dataset, run_dataset
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights

SMALL = {"channels": 8, "n_blocks": 1, "made_hidden": 16, "kernel_size": 3}
GREY = ModelConfig("vlae", "grey", (8, 8), latent_dim=4, **SMALL)
#: The tree: 12 grey 8×8 images in two sub-folders, 3 shards of 4 (one spans both).
NAMES = [f"a/{i:02d}.png" for i in range(5)] + [f"b/c/{i:02d}.png" for i in range(7)]
SHARD = ("--shard-images", "4")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Two tiny random models (weights files), the tree and its pixels, outside any work
    folder."""
    root = tmp_path_factory.mktemp("inputs")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(root / f"grey{seed}.safetensors")
        save_weights(LatentVariableModel(GREY), models[-1])
    pixels = np.random.default_rng(0).integers(0, 256, (len(NAMES), 8, 8), dtype=np.uint8)
    for name, image in zip(NAMES, pixels, strict=True):
        (root / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "tree" / name)
    (root / "tree" / "notes.txt").write_text("not an image")
    return {"model": ("--model", str(models[0])), "other": ("--model", str(models[1])),
            "tree": str(root / "tree"), "pixels": pixels}  # fmt: skip


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two worker processes (one thread each) and a client to it."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        yield client


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))  # never touch the real zoo
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> dict[str, bytes]:
    """The shards coded in this process, one after another (`code_shard` in this process)."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    plan = plan_dataset(files["tree"], out, files["model"][1], shard_images=4)
    run_dataset(plan, workers=1)
    return _shards(out)


def _shards(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("shard-*.bbc"))}


def _ok(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def _no_part_files() -> None:
    assert not [p for p in listing() if ".part" in p], listing()


def _tree_pixels(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(Path(folder, name))) for name in NAMES])


def _fails(capsys, argv, *fragments: str) -> str:
    """``argv`` exits 1 with one error line holding ``fragments``; the work folder is
    unchanged."""
    before = listing()
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("bbcodec: error: "), err
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert listing() == before
    return lines[0]


def test_a_tree_round_trips_with_its_names(capsys, files, reference):
    """In this process with --workers 1 and in two worker processes, the shards are the
    reference's bytes; the manifest records them; decompress restores the tree (and a
    .npy); one shard alone decompresses as any .bbc file."""
    for workers in ("1", "2"):
        out = f"shards{workers}"
        summary = _ok(capsys, "compress", "-q", files["tree"], "-o", f"{out}/", *SHARD,
                      "--workers", workers, *files["model"])  # fmt: skip
        assert _shards(out) == reference
        assert f"12 images in 3 shards, {sum(map(len, reference.values())):,} bytes" in summary
        assert "bits/dim" in summary and "note: 1 file under" in summary
    manifest = json.loads(Path("shards1", MANIFEST_NAME).read_text())
    assert (manifest["format"], manifest["version"], manifest["complete"]) == (
        "bbcodec-dataset", 1, True,
    )  # fmt: skip
    assert [name for shard in manifest["shards"] for name in shard["names"]] == NAMES
    assert [(s["first"], s["count"]) for s in manifest["shards"]] == [(0, 4), (4, 4), (8, 4)]
    assert [s["size_bytes"] for s in manifest["shards"]] == list(map(len, reference.values()))

    out = _ok(capsys, "decompress", "-q", "shards2", "-o", "back", *files["model"])
    assert "every shard's sha256 matched" in out
    assert sorted(str(p.relative_to("back")) for p in Path("back").rglob("*.png")) == NAMES
    np.testing.assert_array_equal(_tree_pixels("back"), files["pixels"])
    _ok(capsys, "decompress", "-q", "shards2", "-o", "back.npy", *files["model"])
    np.testing.assert_array_equal(np.load("back.npy"), files["pixels"])
    _ok(capsys, "decompress", "-q", "shards2/shard-000001.bbc", "-o", "one.npy",
        *files["model"])  # fmt: skip
    np.testing.assert_array_equal(np.load("one.npy"), files["pixels"][4:8])
    _no_part_files()


def test_an_array_round_trips(capsys, files):
    """An array source: shards of index ranges; numbered PNGs or the array come back."""
    np.save("images.npy", files["pixels"][:10])
    _ok(capsys, "compress", "-q", "images.npy", "-o", "arr/", *SHARD, *files["model"])
    manifest = json.loads(Path("arr", MANIFEST_NAME).read_text())
    assert [(s["first"], s["count"], s["names"]) for s in manifest["shards"]] == [
        (0, 4, []), (4, 4, []), (8, 2, []),
    ]  # fmt: skip
    _ok(capsys, "decompress", "-q", "arr", "-o", "arr.npy", *files["model"])
    np.testing.assert_array_equal(np.load("arr.npy"), files["pixels"][:10])
    _ok(capsys, "decompress", "-q", "arr", "-o", "pngs", *files["model"])
    assert sorted(os.listdir("pngs")) == [f"{i:06d}.png" for i in range(10)]


def test_on_a_local_cluster_the_shards_are_the_same_bytes(capsys, files, reference, client):
    """Two worker processes of a running scheduler (``--scheduler tcp://…``) write the
    reference's shards, whichever worker codes which."""
    address = client.scheduler.address
    summary = _ok(capsys, "compress", "-q", files["tree"], "-o", "dask/", *SHARD,
                  "--scheduler", address, *files["model"])  # fmt: skip
    assert f"on the Dask cluster at {address}" in summary
    assert _shards("dask") == reference
    _no_part_files()


def test_an_interrupted_run_resumes_and_a_damaged_shard_is_coded_again(capsys, files, reference):
    """Ctrl-C after the first shard: that shard stays recorded, nothing partial is left,
    and the same command codes only the rest; then a damaged and a missing shard are
    coded again and the intact one kept (its file untouched)."""

    def interrupt(images: int, shards: int) -> None:
        if shards:
            raise KeyboardInterrupt

    plan = plan_dataset(files["tree"], "out", files["model"][1], shard_images=4)
    with pytest.raises(KeyboardInterrupt):
        run_dataset(plan, workers=1, progress=interrupt)
    manifest = json.loads(Path("out", MANIFEST_NAME).read_text())
    assert manifest["complete"] is False and [s["file"] for s in manifest["shards"]] == [
        "shard-000000.bbc"
    ]
    _no_part_files()
    first = Path("out/shard-000000.bbc").stat().st_mtime_ns

    argv = ("compress", "-q", files["tree"], "-o", "out", *SHARD, "--workers", "1",
            *files["model"])  # fmt: skip
    assert "coded 2 shards (8 images)" in _ok(capsys, *argv)
    assert Path("out/shard-000000.bbc").stat().st_mtime_ns == first
    assert _shards("out") == reference

    data = bytearray(reference["shard-000001.bbc"])
    data[len(data) // 2] ^= 1
    Path("out/shard-000001.bbc").write_bytes(data)
    Path("out/shard-000002.bbc").unlink()
    summary = _ok(capsys, *argv)
    assert "coded 2 shards (8 images)" in summary and "1 shard already done" in summary
    assert Path("out/shard-000000.bbc").stat().st_mtime_ns == first
    assert _shards("out") == reference
    assert "nothing left to code" in _ok(capsys, *argv)


def test_errors_are_one_line_and_leave_nothing(capsys, files, monkeypatch):
    tree, model, other = files["tree"], files["model"], files["other"]
    _ok(capsys, "compress", "-q", tree, "-o", "out/", *SHARD, *model)
    _fails(capsys, ["compress", tree, "-o", "out/", *SHARD, *other],
           "out: holds a dataset coded with other weights", "--force")  # fmt: skip
    _fails(capsys, ["compress", tree, tree, "-o", "two/", *model], "one DATASET", "got 2 inputs")
    _fails(capsys, ["compress", tree, "-o", "x/", "--scheduler", "tcp://127.0.0.1:9",
                    "--workers", "2", *model], "--workers starts a local cluster")  # fmt: skip
    Path("busy").mkdir()
    Path("busy/mine.txt").write_text("keep me")
    _fails(capsys, ["compress", tree, "-o", "busy", *model], "holding other files", "mine.txt")
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    import dask

    dask.config.refresh()
    try:
        _fails(capsys, ["compress", tree, "-o", "nowhere/", "--scheduler", "tcp://127.0.0.1:9",
                        *model], "no Dask scheduler answered at tcp://127.0.0.1:9")  # fmt: skip
    finally:
        monkeypatch.delenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT")
        dask.config.refresh()

    _fails(capsys, ["decompress", "out", "-o", "back", *other], "made with other weights")
    _fails(capsys, ["decompress", "out", "-o", "back"], "custom weights", "--model PATH")
    shard = Path("out/shard-000002.bbc")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 1
    shard.write_bytes(data)
    _fails(capsys, ["decompress", "out", "-o", "back", *model], "shard-000002.bbc", "sha256")
    manifest = Path("out", MANIFEST_NAME)
    manifest.write_text(manifest.read_text().replace('"a/00.png"', '"../00.png"'))
    _fails(capsys, ["decompress", "out", "-o", "back", *model], "malformed manifest")


def test_a_killed_worker_has_its_shard_coded_again(capsys, files, reference, client, tmp_path):
    """One worker process kills itself (SIGKILL) as soon as it starts a shard: Dask runs
    the shard again, the run completes with the reference's bytes, every image counted
    once by the progress, no ``.part`` left, and the pixels decode exactly."""
    marker = tmp_path / "killed"

    def arm(path: str, dask_worker) -> None:  # runs in each worker; the first one fires
        import os
        import signal
        import threading
        import time

        def watch() -> None:
            while not os.path.exists(path):
                if any(str(t.key).startswith("bbcodec-shard") for t in dask_worker.state.executing):
                    try:
                        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
                    except FileExistsError:
                        return
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.001)

        threading.Thread(target=watch, daemon=True).start()

    before = set(client.run(os.getpid).values())
    client.run(arm, str(marker))
    counted = [0, 0]

    def progress(images: int, shards: int) -> None:
        counted[0] += images
        counted[1] += shards

    plan = plan_dataset(files["tree"], "killed", files["model"][1], shard_images=4)
    run_dataset(plan, client=client, progress=progress)
    assert marker.exists() and counted == [12, 3]
    assert _shards("killed") == reference
    _no_part_files()
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != before  # the nanny restarted the dead one
    _ok(capsys, "decompress", "-q", "killed", "-o", "back", *files["model"])
    np.testing.assert_array_equal(_tree_pixels("back"), files["pixels"])
