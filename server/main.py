"""``ciphergrad-server``: run the gRPC server until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ciphergrad.server.app import CipherGradServer
from ciphergrad.server.config import parse_args
from ciphergrad.server.execution import ExecutionError
from ciphergrad.server.rpc.observability import JsonFormatter


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # One start line: the server logs "ciphergrad server listening on ADDRESS, data in DIR" itself, so main()
    # prints nothing of its own; wrappers learn a port chosen with --listen HOST:0 from --port-file.
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())  # one JSON object per line, with the call's request id
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        server = CipherGradServer(config)
    except ExecutionError as exc:  # e.g. no Ray cluster at --ray-address: one line, exit non-zero
        print(f"ciphergrad-server: {exc}", file=sys.stderr)
        return 2
    server.start()
    if config.port_file:
        _write_atomically(Path(config.port_file), server.address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    logging.getLogger("ciphergrad.server").info("stopping: pausing jobs and draining calls")
    server.stop()
    return 0


def _write_atomically(path: Path, text: str) -> None:
    # A reader polling for the file sees nothing or the whole address, never half of it.
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text)
    os.replace(staged, path)


if __name__ == "__main__":
    sys.exit(main())
