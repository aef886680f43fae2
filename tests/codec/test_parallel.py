"""Chunks coded in worker processes (`bbcodec.codec.workers`, ``workers=`` in `bbcodec.api`).

Spawned workers take a few seconds each to start (they import torch), so only four tests
start a pool: the bytes and images of a two-worker round trip against one worker, an
error in a worker, and Ctrl-C in the parent. The rest (chunk planning, argument checks, the
CLI's plumbing) run in-process.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

import bbcodec
from bbcodec import api, plan, zoo
from bbcodec.api import compress_to, decompress_from
from bbcodec.codec import CodingSettings, ImageCodec
from bbcodec.codec.workers import encode_chunk_at
from bbcodec.container import dumps, loads
from bbcodec.errors import BbcFileError, DecodeError
from bbcodec.plan import plan_chunks

#: Four chunks of four images, batches of at most four.
SETTINGS = CodingSettings(chunk_images=4, max_batch=4, torch_threads=1)


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))


def _no_workers_left() -> bool:
    return multiprocessing.active_children() == []


# ----- in worker processes ------------------------------------------------------------------


def test_two_workers_write_the_same_bytes_and_decode_the_same_images():
    model = random_model(tiny_config("vlae", "binary"))
    images = random_images(model.config, 15)  # chunks of 4, 4, 4, 3
    counts = {1: [], 2: []}
    files = {}
    for workers in (1, 2):
        out = io.BytesIO()
        report = compress_to(out, images, model, SETTINGS, counts[workers].append, workers)
        files[workers] = out.getvalue()
        assert report.chunk_images == (4, 4, 4, 3)
    assert files[2] == files[1]
    assert sum(counts[1]) == sum(counts[2]) == 15
    decoded = []
    parts = list(decompress_from(io.BytesIO(files[1]), model, decoded.append, workers=2))
    assert [len(p) for p in parts] == [4, 4, 4, 3]  # chunk by chunk, in file order
    np.testing.assert_array_equal(np.concatenate(parts), images)
    assert sum(decoded) == 15
    assert _no_workers_left()


def test_an_error_in_a_worker_reaches_the_caller_as_itself():
    config = tiny_config("vlae", "grey")
    model = random_model(config)
    images = random_images(config, 16)
    header, chunks = loads(bbcodec.compress(images, model=model, settings=SETTINGS))
    # The third chunk made with other weights, in a file whose CRCs are all valid.
    other = ImageCodec(random_model(config, seed=1), SETTINGS)
    chunks[2], _ = encode_chunk_at(other, images[8:12], 8, None)
    damaged = dumps(header, chunks)

    def decode(workers: int):
        parts = []
        with pytest.raises(BbcFileError) as error:
            parts.extend(decompress_from(io.BytesIO(damaged), model, workers=workers))
        return parts, error.value

    in_process, expected = decode(1)
    parts, error = decode(2)
    assert type(error) is type(expected) and str(error) == str(expected)
    assert "images 8..11" in str(error)
    # The chunks before the damaged one came out first, as they do in-process.
    assert len(parts) == len(in_process) == 2
    np.testing.assert_array_equal(np.concatenate(parts), images[:8])
    assert _no_workers_left()


def test_ctrl_c_in_the_parent_stops_the_workers():
    model = random_model(tiny_config("vlae", "rgb"))
    images = random_images(model.config, 64)
    settings = CodingSettings(chunk_images=4, max_batch=2, torch_threads=1)

    def interrupted(n: int) -> None:
        raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        compress_to(io.BytesIO(), images, model, settings, interrupted, workers=2)
    assert _no_workers_left()
    assert time.perf_counter() - start < 60  # no hang waiting for queued chunks


# ----- in this process ----------------------------------------------------------------------


def test_chunk_plan_keeps_every_worker_busy():
    assert plan_chunks(2000, None, 2) == (1000, 2)
    assert plan_chunks(10_000, None, 2) == (2500, 2)  # four chunks of at most 4096
    assert plan_chunks(10_000, None, 1) == (3334, 1)
    assert plan_chunks(9000, None, 3) == (3000, 3)
    assert plan_chunks(5, None, 8) == (1, 5)  # workers ≤ chunks ≤ images
    assert plan_chunks(11, 4, 8) == (4, 3)  # explicit chunks kept
    assert plan_chunks(11, 4, 1) == (4, 1)
    assert plan_chunks(2000, None, 2, "cuda") == (2000, 1)  # workers are CPU processes
    with pytest.raises(ValueError, match="at least 1"):
        plan_chunks(10, None, 0)
    for n in (1, 255, 256, 4097, 8193, 50_000):
        for workers in (1, 2, 3, 8):
            chunk, used = plan_chunks(n, None, workers)
            n_chunks = -(-n // chunk)
            assert chunk <= plan.MAX_AUTO_CHUNK_IMAGES and used == min(workers, n)
            assert n_chunks == used * -(-n_chunks // used)  # a multiple of the workers
            assert chunk * (n_chunks - 1) < n  # even: no chunk is left empty
    # The CLI starts one worker per core, but not for fewer images than make it pay.
    assert plan.default_workers(10) == 1
    assert plan.default_workers(10**6) == (os.cpu_count() or 1)


def test_the_file_records_the_chunk_size_used():
    model = random_model(tiny_config("vlae", "binary"))
    header, chunks = loads(bbcodec.compress(random_images(model.config, 5), model=model))
    assert "chunk_images" not in header.settings and len(chunks) == 1  # one chunk: implied
    assert CodingSettings.from_header(header).chunk_images == 5
    settings = CodingSettings(chunk_images=2, torch_threads=1)
    header, chunks = loads(bbcodec.compress(random_images(model.config, 5), model, settings))
    assert header.settings["chunk_images"] == 2 and len(chunks) == 3
    with pytest.raises(DecodeError, match="chunk size"):
        CodingSettings.from_dict(dict(header.settings, chunk_images=None), 3, 5)


def test_several_workers_need_one_torch_thread():
    model = random_model(tiny_config("vlae", "binary"))
    images = random_images(model.config, 8)
    two_threads = CodingSettings(chunk_images=4, torch_threads=2)
    with pytest.raises(ValueError, match="torch_threads=1"):
        compress_to(io.BytesIO(), images, model, two_threads, workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        compress_to(io.BytesIO(), images, model, workers=0)
    # One chunk leaves one worker, in-process: any thread count is fine.
    one_chunk = CodingSettings(chunk_images=8, torch_threads=2)
    data = bbcodec.compress(images, model=model, settings=one_chunk, workers=2)
    assert loads(data)[0].settings["torch_threads"] == 2


def test_the_cli_passes_workers_through(monkeypatch, tmp_path, capsys):
    from bbcodec.cli.main import main
    from bbcodec.models.weights import save_weights

    model = random_model(tiny_config("vlae", "binary"))
    weights = tmp_path / "tiny.safetensors"
    save_weights(model, weights)
    np.save(tmp_path / "x.npy", random_images(model.config, 10))
    seen = []
    real_compress, real_decompress = api.compress_to, api.decompress_from

    def compress_to_(out, images, model, settings, progress, workers):
        seen.append(("compress", workers, settings.chunk_images, settings.torch_threads))
        return real_compress(out, images, model, settings, progress, workers=1)

    def decompress_from_(f, model, progress, workers, **options):
        seen.append(("decompress", workers))
        return real_decompress(f, model, progress, workers=1, **options)

    monkeypatch.setattr(api, "compress_to", compress_to_)
    monkeypatch.setattr(api, "decompress_from", decompress_from_)
    monkeypatch.chdir(tmp_path)
    common = ["--model", str(weights), "-q"]
    assert main(["compress", "x.npy", "-o", "a.bbc", *common]) == 0  # 10 images: 1 worker
    assert main(["compress", "x.npy", "-o", "b.bbc", "--workers", "4", "--chunk-images", "3",
                 *common]) == 0  # fmt: skip
    assert main(["decompress", "b.bbc", "-o", "b.npy", "--workers", "3", *common]) == 0
    assert main(["decompress", "a.bbc", "-o", "a.npy", *common]) == 0
    capsys.readouterr()
    assert seen == [
        ("compress", 1, 10, torch.get_num_threads()),  # in-process, one chunk
        ("compress", 4, 3, 1),  # four chunks of ≤ 3: four workers, one thread each
        ("decompress", 3),
        ("decompress", 1),
    ]
    assert np.array_equal(np.load("b.npy"), np.load("x.npy"))
    code = main(["decompress", "b.bbc", "-o", "c.npy", "--workers", "0", *common])
    assert code == 2 and "positive integer" in capsys.readouterr().err
