"""The server coding workers are forked from: one process that has imported torch and the
codec, and forks each worker ready to code.

A spawned worker starts a fresh Python and imports torch (1.5–2.5 s of CPU) before it can
code a chunk; a worker forked from this server is ready in milliseconds. The server is
multiprocessing's ``forkserver``, preloading `bbcodec.codec.worker_preload`. It never runs
a torch operation, so no thread pool has started when it forks (forking a process whose
torch has started its threads is unsafe). `start` returns at once: the command line calls
it before it imports torch itself, so the server's imports and the parent's run side by
side. Where ``forkserver`` does not exist (Windows) workers are spawned instead
(`bbcodec.codec.workers`).

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Iterator
from multiprocessing import resource_tracker

#: The module the server imports before it forks a worker.
PRELOAD = "bbcodec.codec.worker_preload"


def available() -> bool:
    """Whether this platform can fork workers from a server."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def start() -> None:
    """Start the server, preloading `PRELOAD`, unless it runs already (one per process;
    it ends with this process and its workers). Nothing where it is not `available`."""
    if not available():
        return
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload([PRELOAD])
    with sigint_blocked():  # the server imports torch: Ctrl-C then is the parent's alone
        forkserver.ensure_running()


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while the body starts a helper process, which inherits
    the mask: a Ctrl-C during the helper's start-up (importing torch) then cannot interrupt
    it, and the helper unblocks SIGINT once it ignores it. Starts multiprocessing's resource
    tracker first (starting it unblocks SIGINT)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
