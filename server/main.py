"""``ciphergrad-server``: run the gRPC server until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from server.app import CipherGradServer
from server.config import parse_args


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # One start line: the server logs "ciphergrad server listening on ADDRESS, data in DIR" itself
    # (wrappers read the port from it when --listen ends in :0), so main() prints nothing of its own.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = CipherGradServer(config).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    logging.getLogger("ciphergrad.server").info("stopping: pausing jobs and draining calls")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
