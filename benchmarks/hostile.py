"""B13: health latency under 64 stalled streams (issue 9), on a ``ciphergrad-server`` child process with its
default limits.

Three attacker sessions open 64 streams that then stay silent: 24 ``CreateSession`` streams that sent a
manifest (no token needed), 20 ``Train`` streams whose key holder never answers its refresh request (7, 7 and
6 per session: within --max-jobs-per-session), 20 ``UploadDataset`` streams stalled mid-chunk. A probe thread
sends a health Check every 50 ms (1 s deadline) in three phases:

  idle_*      no stalled stream, no other load;
  stalled_*   the 64 stalled streams open;
  training_*  the 64 stalled streams open while a normal client uploads Ames and trains it (10 epochs).

Each phase reports max and median latency in ms; ``normal_train_s`` is the normal client's Train wall time
and ``timeouts`` the health checks that missed their deadline (all phases).

    .venv/bin/python benchmarks/hostile.py --json
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hostile_clients import (
    MANIFEST,
    TINY_X,
    TINY_Y,
    HealthProbe,
    StalledStreams,
    session_client,
    streams_in_flight,
    wait_until,
)
from targets import finish

from ciphergrad.client.local import ServerProcess
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.linear import LinearRegressionConfig

# Exit 1 when one is missed (benchmarks/targets.py): no health check may time out (1 s deadline), and a normal
# client's 10 Ames epochs finish while 64 streams stall.
TARGETS = {"timeouts": ("<=", 0), "normal_train_s": ("<=", 10.0)}

def _phase(address: str, seconds: float = 0.0, work=None) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    with HealthProbe(address) as probe:
        if work is not None:
            work()
        time.sleep(seconds)
    return probe.latencies, len(probe.failures)


def _summary(name: str, latencies: list[float]) -> dict[str, float]:
    middle = float(np.median(latencies))
    return {f"{name}_max_ms": round(max(latencies) * 1000, 1), f"{name}_median_ms": round(middle * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ciphergrad-hostile-") as scratch:
        server = ServerProcess(Path(scratch), "--metrics-port", "0")
        try:
            result = _run(server)
        finally:
            server.stop(signal.SIGTERM)
    if finish({"benchmark": "hostile", **result}, TARGETS, args.json):
        sys.exit(1)


def _run(server: ServerProcess) -> dict[str, float]:
    idle, timeouts = _phase(server.address, seconds=2.0)
    attackers = [session_client(server.address, TINY_X.shape) for _ in range(3)]
    datasets = [attacker.upload(TINY_X, TINY_Y).dataset_id for attacker in attackers]
    data = load_ames()
    X, y, names = with_intercept(data.X), data.y, ["intercept", *data.feature_names]
    normal = session_client(server.address, X.shape)
    stalled = StalledStreams(server.address)
    try:
        for _ in range(24):
            stalled.create_session(MANIFEST)
        for k in range(20):
            stalled.train(attackers[k % 3].metadata, datasets[k % 3], {"epochs": 3})
        for k in range(20):
            stalled.upload(attackers[k % 3].metadata)
        trains = stalled.events[24:44]
        wait_until(
            lambda: streams_in_flight(server) >= 64
            and all(any(e.WhichOneof("event") == "refresh_request" for e in list(t)) for t in trains),
            120,
            "64 open streams with 20 refresh requests pending",
        )
        assert stalled.outcomes() == [], stalled.outcomes()
        quiet, missed = _phase(server.address, seconds=2.0)
        timeouts += missed
        seconds: list[float] = []

        def train() -> None:
            dataset = normal.upload(X, y, column_names=names)
            start = time.perf_counter()
            run = normal.train(dataset.dataset_id, LinearRegressionConfig(epochs=10))
            seconds.append(time.perf_counter() - start)
            assert len(run.losses) == 10

        busy, missed = _phase(server.address, work=train)
        timeouts += missed
    finally:
        stalled.cancel()
    return {
        "stalled_streams": 64,
        **_summary("idle", idle),
        **_summary("stalled", quiet),
        **_summary("training", busy),
        "normal_train_s": round(seconds[0], 2),
        "timeouts": timeouts,
    }


if __name__ == "__main__":
    main()
