"""Independent chunks coded side by side in worker processes.

A ``.bbc`` file is a sequence of chunks, each its own seeded ANS stack, so chunks can be
coded anywhere in any order: `code_chunks` runs one job per chunk — `encode_chunk_at` or
`decode_chunk_checked`, or their band forms `encode_band_at` and `decode_band_checked`
(one band of a photo cut into bands is a chunk too, so the workers code one photo side by
side) — either in this process (``workers=1``) or in a pool of worker processes, and
yields the results **in chunk order** either way. Both ways call the same
job functions on an `ImageCodec` built from the same model and settings, so the bytes of
a chunk do not depend on where it was coded.

The pool::

    parent                                   worker k (forked, one torch thread)
    ──────                                   ────────
    tasks ──submit (≤ 2 × workers in flight)─▶ job(codec, *task, progress)
    results, in order ◀──────────────────────  (Chunk, ChunkRate) | images | exception
    progress(n) ◀── drained while waiting ───  after each batch: queue.put(n)

- **Forked from a server**, never from the parent: forking a process whose torch has
  started its thread pools is unsafe. Workers fork from `bbcodec.worker_server`, a process
  that has imported torch and this module but never ran torch (spawned where there is no
  fork server: each then imports torch itself, seconds). Each worker unpickles the model
  once (`_init_worker`), builds one `ImageCodec` and runs torch with
  ``settings.torch_threads`` threads (the count the file records).
- **Bounded memory**: at most ``2 × workers`` chunks are submitted and not yet handed to
  the caller; the next task is read only when the oldest result is taken.
- **Progress**: workers put the images each batch finished on a `SimpleQueue`, whose
  ``put`` has written the message before the job returns, so once a chunk's result is in,
  every count it reported can be drained; the parent drains while it waits.
- **Errors**: an exception in a job (`DecodeError`, `ChecksumError`, …) is pickled back
  and re-raised in the parent with its type and message. On any exception in the parent
  (a job's, ``KeyboardInterrupt``, the caller abandoning the iterator) the pool is torn
  down: queued jobs are cancelled, the workers terminated and joined.
- **Ctrl-C is the parent's**: workers start with SIGINT ignored (the server's,
  `bbcodec.codec.worker_preload`; a spawned worker starts with it blocked, then ignores
  it), so one Ctrl-C gives one ``KeyboardInterrupt`` (in the parent), which stops the
  workers. Workers also exit on their own if the parent process disappears.
- **The main module**: a worker imports the caller's main module before it runs
  anything. A script that calls bbcodec outside ``if __name__ == "__main__":`` would run
  that call again in each worker; there `ChunkPool` exits the worker quietly with
  `UNGUARDED_MAIN_EXIT`, and the parent turns the broken pool into one `UsageError`
  (`UNGUARDED_MAIN`) instead of multiprocessing's traceback in every worker.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import context as mp_context
from typing import Any, Self

import numpy as np
import torch

from bbcodec import worker_server
from bbcodec.codec.chunks import ImageCodec, Progress
from bbcodec.codec.report import ChunkRate
from bbcodec.codec.settings import CodingSettings
from bbcodec.container import Chunk
from bbcodec.errors import UsageError
from bbcodec.plan import chunk_shape

#: Chunks submitted to the pool and not yet handed to the caller, per worker.
IN_FLIGHT_PER_WORKER = 2
#: Seconds between progress drains while waiting for a result.
_POLL_SECONDS = 0.05
#: Seconds to wait for terminated workers and the pool's manager thread.
_JOIN_SECONDS = 10.0
#: Name prefix of the worker processes (how a starting worker knows it is one).
_WORKER_NAME = "bbcodec-worker"
#: Exit status of a worker whose import of the main module tried to start workers itself.
UNGUARDED_MAIN_EXIT = 86
#: The error for a script that starts workers without the ``__main__`` guard.
UNGUARDED_MAIN = (
    "workers>1 start new Python processes that import your main module: put the code that "
    'calls bbcodec under `if __name__ == "__main__":` (see the README)'
)


# ----- the jobs (the same functions in-process and in a worker) ---------------------------


def encode_chunk_at(
    codec: ImageCodec, images: np.ndarray, first: int, progress: Progress
) -> tuple[Chunk, ChunkRate]:
    """Encode ``images`` as the chunk that starts at image ``first`` of the file."""
    return codec.encode_chunk(images, progress, first)


def decode_chunk_checked(
    codec: ImageCodec, chunk: Chunk, shapes: frozenset, progress: Progress
) -> np.ndarray:
    """Decode a chunk whose images the header gives ``shapes``, verified (see
    `ImageCodec.decode_chunk`): the model's shape, or one image of another (tiled)."""
    return decode_band_checked(codec, chunk, shapes, True, progress)


def encode_band_at(
    codec: ImageCodec, images: np.ndarray, first: int, band: int, last: bool, progress: Progress
) -> tuple[Chunk, ChunkRate]:
    """Encode ``images`` (1, rows, W[, 3]), band ``band`` of image ``first``, as an image of
    its own (a chunk of whole images: band 0, ``last``). The image counts as done for
    ``progress`` with its ``last`` band."""
    return codec.encode_chunk(images, progress if last else None, first, band)


def decode_band_checked(
    codec: ImageCodec, chunk: Chunk, shapes: frozenset, last: bool, progress: Progress
) -> np.ndarray:
    """Decode a chunk, or one band of an image (its ``shapes``: the band's), verified; the
    image counts as done for ``progress`` with its ``last`` band."""
    shape, _ = chunk_shape(shapes, chunk.count, codec.image_shape)
    return codec.decode_chunk(chunk, progress if last else None, shape)


# ----- the worker side --------------------------------------------------------------------

_worker_codec: ImageCodec | None = None
_worker_queue = None


def _exit_with_parent() -> None:
    """Ends this worker once the process that started it is gone (a killed parent cannot
    tear the pool down; a forked worker's parent process is the server, which outlives it)."""
    multiprocessing.parent_process().join()
    os._exit(1)


def _init_worker(model, settings: CodingSettings, queue) -> None:
    global _worker_codec, _worker_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked if spawned
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    torch.set_num_threads(settings.torch_threads)
    _worker_codec = ImageCodec(model, settings)
    _worker_queue = queue


def _report(n: int) -> None:
    _worker_queue.put(n)


def _run_job(job: Callable, args: tuple) -> Any:
    return job(_worker_codec, *args, _report)


class _NamedProcess:
    """A worker process named ``bbcodec-worker-N`` (how a starting worker knows it is one)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("name") is None:
            self.name = f"{_WORKER_NAME}-{':'.join(str(i) for i in self._identity)}"


class _ServedProcess(_NamedProcess, mp_context.ForkServerProcess):
    """A worker forked from `bbcodec.worker_server` (SIGINT ignored from the start)."""


class _QuietProcess(_NamedProcess, mp_context.SpawnProcess):
    """A spawned worker that starts with SIGINT blocked (it inherits the mask), so Ctrl-C
    during its start-up (importing torch) cannot interrupt it; `_init_worker` then ignores
    SIGINT for good."""

    def start(self) -> None:
        with worker_server.sigint_blocked():
            super().start()


class _ServedContext(mp_context.ForkServerContext):
    Process = _ServedProcess


class _QuietSpawnContext(mp_context.SpawnContext):
    Process = _QuietProcess


def _worker_context() -> mp_context.BaseContext:
    """Where workers come from: the fork server (started if need be), else spawning."""
    if worker_server.available():
        worker_server.start()
        return _ServedContext()
    return _QuietSpawnContext()


# ----- the parent side --------------------------------------------------------------------


class ChunkPool:
    """Worker processes that each hold one `ImageCodec` for ``model`` and ``settings``.

    Use as a context manager: a clean exit shuts the pool down in order; an exception
    (``KeyboardInterrupt`` and ``GeneratorExit`` included) terminates the workers.

    Args:
        model: a `LatentVariableModel` on the CPU (pickled to each worker once).
        settings: the coding settings; the workers run torch with ``torch_threads``.
        workers: number of processes, ≥ 1.
    """

    def __init__(self, model, settings: CodingSettings, workers: int):
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        _check_not_starting_up()
        if any(t.device.type != "cpu" for t in model.state_dict().values()):
            model = copy.deepcopy(model).cpu()  # workers get CPU tensors; the caller's stay
        context = _worker_context()
        self.workers = workers
        self._queue = context.SimpleQueue()
        self._executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker,
            initargs=(model, settings, self._queue),
        )  # fmt: skip

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._executor.shutdown(wait=True)
        else:
            self.terminate()
        self._queue.close()

    def terminate(self) -> None:
        """Cancel queued jobs, terminate the workers and wait until they are gone."""
        executor = self._executor
        processes = list((getattr(executor, "_processes", None) or {}).values())
        manager = getattr(executor, "_executor_manager_thread", None)
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        if manager is not None:
            manager.join(_JOIN_SECONDS)
        for process in processes:
            process.join(_JOIN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()

    def _drain(self, progress: Progress) -> None:
        while not self._queue.empty():
            n = self._queue.get()
            if progress is not None:
                progress(n)

    def _result(self, future: concurrent.futures.Future, progress: Progress) -> Any:
        while not future.done():
            self._drain(progress)
            concurrent.futures.wait([future], timeout=_POLL_SECONDS)
        self._drain(progress)  # every count the job reported is in the queue by now
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool:
            self._raise_broken()

    def _raise_broken(self) -> None:
        """Why the pool broke: a worker that found the main module unguarded, or another
        death (killed, out of memory)."""
        executor = self._executor
        manager = getattr(executor, "_executor_manager_thread", None)
        if manager is not None:  # it joins the dead workers, so their exit codes are known
            manager.join(_JOIN_SECONDS)
        processes = list((getattr(executor, "_processes", None) or {}).values())
        if any(process.exitcode == UNGUARDED_MAIN_EXIT for process in processes):
            raise UsageError(UNGUARDED_MAIN) from None
        raise RuntimeError("a coding worker process died unexpectedly (out of memory?)")

    def map(self, job: Callable, tasks: Iterable[tuple], progress: Progress = None) -> Iterator:
        """``job(codec, *task, progress)`` for each task, run in the workers; results in order.

        An exception raised while reading ``tasks`` is raised after the results of the
        tasks read before it, as it would be in-process.
        """
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        tasks = iter(tasks)
        more = True
        while True:
            while more and len(pending) < IN_FLIGHT_PER_WORKER * self.workers:
                try:
                    args = next(tasks)
                except StopIteration:
                    more = False
                    break
                except Exception as exc:  # noqa: BLE001 — re-raised in order, below
                    failed: concurrent.futures.Future = concurrent.futures.Future()
                    failed.set_exception(exc)
                    pending.append(failed)
                    more = False
                    break
                try:
                    pending.append(self._executor.submit(_run_job, job, args))
                except concurrent.futures.process.BrokenProcessPool:
                    self._raise_broken()
            if not pending:
                return
            yield self._result(pending.popleft(), progress)


def _check_not_starting_up() -> None:
    """Refuse to start workers from a process that is itself still starting: one whose
    import of the main module (a script without the ``__main__`` guard) reached bbcodec.
    One of our own workers exits quietly (the parent explains); any other spawned process
    gets the error."""
    process = multiprocessing.current_process()
    if getattr(process, "_inheriting", False):
        if process.name.startswith(_WORKER_NAME):
            os._exit(UNGUARDED_MAIN_EXIT)  # a forked worker turns SystemExit into status 1
        raise UsageError(UNGUARDED_MAIN)


def code_chunks(
    model, settings: CodingSettings, workers: int, job: Callable, tasks: Iterable[tuple],
    progress: Progress = None,
) -> Iterator:  # fmt: skip
    """``job(codec, *task, progress)`` for each task, in order: in this process when
    ``workers`` is 1, else in a `ChunkPool` of ``workers`` processes.

    Close the iterator (``contextlib.closing``) if you may stop before its end: that is
    what tears the pool down at once.
    """
    if workers <= 1:
        codec = ImageCodec(model, settings)
        for args in tasks:
            yield job(codec, *args, progress)
        return
    with ChunkPool(model, settings, workers) as pool:
        yield from pool.map(job, tasks, progress)
