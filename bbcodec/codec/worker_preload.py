"""What the workers' server (`bbcodec.worker_server`) imports before it forks a worker:
torch and the coding modules, once; and SIGINT ignored, which each forked worker inherits,
so a Ctrl-C meant for the parent cannot interrupt a worker while it starts
(`bbcodec.codec.workers`). The server itself starts with SIGINT blocked
(`bbcodec.worker_server.sigint_blocked`), so a Ctrl-C during these imports is not its.
Import it nowhere else: it changes the process's SIGINT handler.
"""

import signal

from bbcodec.codec import workers  # noqa: F401 — imported for the workers forked later

signal.signal(signal.SIGINT, signal.SIG_IGN)
