"""`make demo`: the Ames reference training through a real gRPC server on loopback, next to its torch twin.

Starts a local server process on 127.0.0.1 (the computing party: public keys only), then the client SDK
creates keys, encrypts, uploads, trains over the bidirectional stream answering masked refreshes, and
prints the encrypted-vs-torch comparison. `ciphergrad demo --server HOST:PORT` runs it against any server.
"""

from __future__ import annotations

import sys

from client.cli import main as cli_main


def main() -> int:
    return cli_main(["demo", "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())
