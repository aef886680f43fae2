"""Dataset mode on a two-worker Dask ``LocalCluster`` against two in-process workers.

Codes the first N images of CIFAR-10's test split (``--data``, ``x_test``) as a dataset of
shards (`bbcodec.dataset`) three times, each into a fresh folder:

1. **in-process**: ``run_dataset(plan, workers=2)``, bbcodec's own pool of two worker
   processes (what ``bbcodec compress DATA -o OUT/ --workers 2`` runs);
2. **local cluster**: a ``LocalCluster`` of two worker processes (one thread each), as
   ``--scheduler local --workers 2`` starts it; timed with and without its start-up;
3. **killed worker**: the same on a fresh cluster, where one worker process kills itself
   (SIGKILL) once it has coded a shard for half a shard's time; Dask runs that shard
   again. The retry's cost is this run's time less run 2's.

Runs 2 and 3 must write the same bytes as run 1, shard for shard; run 3's shards are then
decoded (two processes) and compared with the source, image for image. Throughput is
images per second of wall time (worker start-up and imports included: a user waits for
them). Results go to ``--json``.

    .venv/bin/python benchmarks/dataset_cluster.py                 # 10,000 images, slow
    .venv/bin/python benchmarks/dataset_cluster.py -n 40 --shard-images 10 --json /tmp/d.json

With ``--rounds R`` runs 1 and 2 take turns over R equal parts of the images (ABBA order,
one cluster started once) and run 3 is skipped: on a machine whose other load drifts, both
then see the same load (how ``benchmarks/results/dataset-cluster-10k.json`` was made).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bbcodec.dataset import dask_client, decode_dataset, plan_dataset, read_dataset, run_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "dataset-cluster.json"


def _arm_killer(marker: str, after_s: float, dask_worker) -> None:
    """In a worker: once it has run one shard task for ``after_s`` seconds, the first
    worker to get there creates ``marker`` and kills its own process (SIGKILL)."""

    def watch() -> None:
        started: dict[str, float] = {}
        while not os.path.exists(marker):
            now = time.monotonic()
            for task in list(dask_worker.state.executing):
                key = str(task.key)
                if key.startswith("bbcodec-shard"):
                    started.setdefault(key, now)
                    if now - started[key] >= after_s:
                        try:
                            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                        except FileExistsError:
                            return
                        os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.bbc"))}


def _timed_run(plan, **how) -> tuple[float, object]:
    started = time.perf_counter()
    report = run_dataset(plan, **how)
    return time.perf_counter() - started, report


def _interleaved(args, images: np.ndarray, tmp: str) -> dict:
    """Runs 1 and 2 in ``args.rounds`` rounds over equal parts of the images, in-process
    and cluster taking turns to go first (ABBA), on one cluster started once: a machine
    whose load drifts (other work on the cores) slows both alike."""
    parts = np.array_split(np.arange(len(images)), args.rounds)
    seconds = {"in_process": 0.0, "cluster_coding": 0.0}
    shard_bytes, bits = 0, 0.0
    same = True
    started = time.perf_counter()
    with dask_client("local", args.workers) as client:
        startup_s = time.perf_counter() - started
        for r, part in enumerate(parts):
            source = Path(tmp, f"part-{r}.npy")
            np.save(source, images[part])
            order = ("in_process", "cluster") if r % 2 == 0 else ("cluster", "in_process")
            for name in order:
                plan = plan_dataset(source, Path(tmp, f"{name}-{r}"), args.model,
                                    shard_images=args.shard_images)  # fmt: skip
                how = {"workers": args.workers} if name == "in_process" else {"client": client}
                run_s, report = _timed_run(plan, **how)
                seconds["in_process" if name == "in_process" else "cluster_coding"] += run_s
            same &= _shards(Path(tmp, f"cluster-{r}")) == _shards(Path(tmp, f"in_process-{r}"))
            shard_bytes += report.shard_bytes
            bits += report.bits_per_dim * images[part].size
            print(f"round {r + 1}/{len(parts)}: in-process {seconds['in_process']:.1f} s, "
                  f"cluster {seconds['cluster_coding']:.1f} s so far, same bytes: {same}")  # fmt: skip
    cluster_s = seconds["cluster_coding"] + startup_s
    n = len(images)
    return {
        "rounds": len(parts), "shard_bytes": shard_bytes, "bits_per_dim": bits / images.size,
        "in_process": {"seconds": seconds["in_process"], "images_per_s": n / seconds["in_process"]},
        "local_cluster": {
            "seconds": cluster_s, "startup_seconds": startup_s,
            "coding_seconds": seconds["cluster_coding"], "images_per_s": n / cluster_s,
            "coding_images_per_s": n / seconds["cluster_coding"],
        },
        "cluster_over_in_process_throughput": seconds["in_process"] / cluster_s,
        "bytes_identical": same,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/cifar10.npz")
    parser.add_argument("--model", default="vlae-cifar10")
    parser.add_argument("-n", type=int, default=10_000, help="first N test images")
    parser.add_argument("--shard-images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleave runs 1 and 2 in "
        "this many rounds (ABBA) and skip run 3: fair on a loaded machine",
    )
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args()

    images = np.load(args.data)["x_test"][: args.n]
    n_workers = args.workers
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    common = {"data": args.data, "split": "test", "model": args.model, "images": len(images),
              "shard_images": args.shard_images, "workers": n_workers}  # fmt: skip
    if args.rounds > 1:
        with tempfile.TemporaryDirectory(prefix="dataset-cluster-") as tmp:
            result = {**common, **_interleaved(args, images, tmp)}
        result["machine"] = {**machine, "load_average_1min": os.getloadavg()[0]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
        return
    with tempfile.TemporaryDirectory(prefix="dataset-cluster-") as tmp:
        source = Path(tmp, "images.npy")
        np.save(source, images)

        def plan(name: str):
            return plan_dataset(source, Path(tmp, name), args.model,
                                shard_images=args.shard_images)  # fmt: skip

        in_process_s, report = _timed_run(plan("in-process"), workers=n_workers)
        reference = _shards(Path(tmp, "in-process"))
        print(f"in-process, {n_workers} workers: {in_process_s:.1f} s")

        started = time.perf_counter()
        with dask_client("local", n_workers) as client:
            startup_s = time.perf_counter() - started
            coding_s, _ = _timed_run(plan("cluster"), client=client)
        cluster_s = time.perf_counter() - started
        same = _shards(Path(tmp, "cluster")) == reference
        print(f"local cluster: {cluster_s:.1f} s ({startup_s:.1f} s start-up), same bytes: {same}")

        shard_s = coding_s * n_workers / report.n_shards  # one shard's time on one worker
        marker = Path(tmp, "killed")
        started = time.perf_counter()
        with dask_client("local", n_workers) as client:
            client.run(_arm_killer, str(marker), shard_s / 2)
            _timed_run(plan("killed"), client=client)
        killed_s = time.perf_counter() - started
        killed = marker.exists()
        killed_same = _shards(Path(tmp, "killed")) == reference
        decode_started = time.perf_counter()
        decoded = np.concatenate(list(decode_dataset(read_dataset(Path(tmp, "killed")),
                                                     n_workers)))  # fmt: skip
        decode_s = time.perf_counter() - decode_started
        exact = bool(np.array_equal(decoded, images))
        print(f"killed worker ({killed}): {killed_s:.1f} s, same bytes: {killed_same}, "
              f"every image exact: {exact}")  # fmt: skip

    result = {
        **common, "shards": report.n_shards,
        "machine": {**machine, "load_average_1min": os.getloadavg()[0]},
        "shard_bytes": report.shard_bytes, "bits_per_dim": report.bits_per_dim,
        "in_process": {"seconds": in_process_s, "images_per_s": len(images) / in_process_s},
        "local_cluster": {
            "seconds": cluster_s, "startup_seconds": startup_s, "coding_seconds": coding_s,
            "images_per_s": len(images) / cluster_s,
            "coding_images_per_s": len(images) / coding_s,
        },
        "cluster_over_in_process_throughput": in_process_s / cluster_s,
        "bytes_identical": same,
        "killed_worker": {
            "killed": killed, "killed_after_shard_seconds": shard_s / 2,
            "seconds": killed_s, "retry_cost_seconds": killed_s - cluster_s,
            "bytes_identical": killed_same, "every_image_exact": exact,
            "decode_seconds": decode_s,
        },
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
