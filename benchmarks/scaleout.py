"""Scale-out: a full-batch per-row ("gd") epoch on 100k rows x 10 features in this process and on Ray with
1 and 2 shard workers, plus the one-pass Gram statistics on 1 and 2 workers, all in one run.

The key holder encrypts synthetic data (as ``scaling.py``: 10 features min-max scaled, an intercept, 256 rows
per ciphertext) and the bytes go to a blob directory like the server's; the executors read them from there
(``server.execution``: the local one loads the table in this process, Ray's pool workers each load their own
row blocks once). One Ray on this machine (``num_cpus=2``) serves both Ray runs; "1 worker" is a pool of one
worker, "2 workers" a pool of two. Every run trains the same epochs from the same start, refreshing through
the key holder's masked refresh; ``max_abs_weight_diff_vs_local`` compares the decrypted weights (every run also against
float64 gradient descent; ``--noise-floor`` adds a second local run: two runs differ by the fresh encryptions
of their refreshes, amplified by 1 / weight_scale = 79 at 100k rows). ``peak_rss_mb_per_worker`` is the
largest VmHWM of a pool worker's process with 2 workers (each holds half the table and its pre-scaled copies);
``worker_cpu_s_per_epoch_ray_N`` the busiest worker's CPU seconds per epoch, which other load does not inflate.
Figures are medians of ``--epochs`` epochs; the machine's
1-minute load average at the start and end is reported beside them.

Concurrency (``clients``, ``wall_1_client_s``, ``wall_n_clients_s``, ``concurrency_ratio``): a child
``ciphergrad-server --executor ray`` (a local Ray on this machine's cores, ``--workers`` = clients, so every job
runs at once) and ``--clients`` sessions, each with Ames uploaded beforehand. One client's 10-epoch training
alone (after a warm-up run; the median of 3 runs, CPU figures per run), then all of them at once from threads
of this process; the ratio is the concurrent wall time over the single one. The clients' own work
(decrypting and re-encrypting each refresh) shares this process's GIL and is counted in the walls.
``server_cpu_s_*`` is the server process's CPU time in each phase (the drivers of the jobs),
``server_tree_cpu_s_*`` that of the server with its local Ray (the pool's workers included),
``clients_cpu_s_*`` this process's (the clients' encryptions and decryptions, gRPC).
``concurrency_max_abs_weight_diff`` is the largest difference of any concurrent job's weights from the single
run's.

Blocks (issue 20): the Ray runs send blocks through Ray's object store (the default ``--ray-blocks``);
``object_store_peak_bytes`` is the most block bytes held there at once (budget ``object_store_budget_bytes``,
past which the blocks stream in pieces). ``gram_pass_1m_object_store_s`` and ``gram_pass_1m_path_s``: the Gram
pass over ``--million-rows`` x 10 on 2 workers, by object store and by path, in the same run with the contexts
loaded ahead (``gram_pass_1m_object_store_vs_path`` their ratio; ``gram_pass_1m_object_store_peak_bytes``).

Lifecycles (issue 20): ``--clients`` whole client lifecycles (fresh keys, session, Ames upload,
``EncryptedLinearRegression(server=..., epochs=10).fit``), each a process of its own, against one child server
on Ray; ``server_cpu_s_per_lifecycle`` (the server process alone) and ``lifecycle_concurrency_ratio`` (all at
once over one alone); see ``lifecycles``. Targets (``TARGETS``, in one place): the process exits 1 when a
measured one is missed, after printing everything.

    .venv/bin/python benchmarks/scaleout.py --json
    .venv/bin/python benchmarks/scaleout.py --only-lifecycle --json   # or --only-million, --only-concurrency
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from processes import cpu_seconds, tree_cpu_seconds, wait_until_quiet
from targets import finish

from ciphergrad.client.local import ServerProcess
from ciphergrad.core import Engine, KeyHolder, flat
from ciphergrad.core import gram as core_gram
from ciphergrad.core.data import synthetic_regression
from ciphergrad.core.layout import choose_tile, rotation_steps
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer, decode_weights
from ciphergrad.core.params import plan
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import StoredTable
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.execution.ray_shards import RayExecutor

ROOT = Path(__file__).resolve().parents[1]
SINGLE_RUNS = 3  # one client alone: the median of this many runs (one run's wall varies by 50% under load)
# Every target of this benchmark, in one place: (relation, bound); report() exits 1 when a measured one misses.
TARGETS = {
    "speedup_2_vs_1": (">=", 1.7),  # object-store mode (the default)
    "max_abs_weight_diff_vs_local": ("<=", 1e-6),
    "concurrency_ratio": ("<=", 4.5),
    "server_cpu_s_per_lifecycle": ("<=", 1.0),
    "lifecycle_concurrency_ratio": ("<=", 4.5),
    "gram_pass_1m_object_store_vs_path": ("<=", 1.3),
}


def train(executor, table, engine, config, refresh, holder) -> tuple[list[float], np.ndarray, dict[str, float]]:
    """Epoch times, decoded weights and (Ray) the largest worker's peak RSS and CPU seconds per epoch."""
    with executor.shards(table, engine) as shards:
        trainer = LinearTrainer(engine, None, None, config, refresh, shards=shards)
        before = shards.usage() if hasattr(shards, "usage") else []
        seconds = []
        while not trainer.done:
            seconds.append(trainer.run_epoch().seconds)
        usage = {}
        if before:
            after = shards.usage()
            usage = {"peak_rss_mb": max(u["peak_rss_mb"] for u in after),
                     "cpu_s_per_epoch": max(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True))
                     / len(seconds)}
        return seconds, decode_weights(holder.decrypt(trainer.weights), trainer.weight_scale), usage


def concurrency(clients: int, epochs: int, workers: int | None = None) -> dict:
    """``clients`` Ames trainings at once through one child server on the Ray executor, against one alone."""
    from ciphergrad.client.sdk import Client, default_parameters
    from ciphergrad.core.data import load_ames

    data = load_ames()
    X, y = np.hstack([np.ones((len(data.X), 1)), data.X]), data.y
    config = LinearRegressionConfig(epochs=epochs)
    params = default_parameters()
    with tempfile.TemporaryDirectory(prefix="scaleout-server-") as directory:
        root = Path(directory)
        server = ServerProcess(root / "data", "--executor", "ray", "--ray-num-cpus", str(os.cpu_count()),
                               "--workers", str(workers or clients), startup_seconds=180)
        try:
            address = server.address
            sessions = []
            for _ in range(clients):
                client = Client(address)
                client.create_session(params, tiles=[choose_tile(X.shape, params.slots, "rows")])
                sessions.append((client, client.upload(X, y).dataset_id))

            def run(index: int) -> tuple[float, np.ndarray]:
                client, dataset = sessions[index]
                start = time.perf_counter()
                model = client.train(dataset, config).model
                return time.perf_counter() - start, client.weights(model)

            run(0)  # warm-up: the first job also starts Ray's worker processes
            wait_until_quiet()
            readings = [(cpu_seconds(server.pid), tree_cpu_seconds(server.pid), time.process_time())]
            singles = [run(0) for _ in range(SINGLE_RUNS)]
            wall_1, alone = float(np.median([wall for wall, _ in singles])), singles[0][1]
            wait_until_quiet()
            readings.append((cpu_seconds(server.pid), tree_cpu_seconds(server.pid), time.process_time()))
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                together = list(pool.map(run, range(clients)))
            wall_n = time.perf_counter() - start
            readings.append((cpu_seconds(server.pid), tree_cpu_seconds(server.pid), time.process_time()))
            (cpu_1, tree_1, own_1), (cpu_n, tree_n, own_n) = (
                tuple((b - a) / runs for a, b in zip(readings[k], readings[k + 1], strict=True))
                for k, runs in ((0, SINGLE_RUNS), (1, 1)))
            for client, _ in sessions:
                client.close()
        finally:
            server.stop()
    return {"clients": clients, "concurrency_epochs": epochs, "server_workers": workers or clients,
            "wall_1_client_s": wall_1, "wall_n_clients_s": wall_n, "server_cpu_s_1_client": cpu_1,
            "server_cpu_s_n_clients": cpu_n, "server_tree_cpu_s_1_client": tree_1,
            "server_tree_cpu_s_n_clients": tree_n, "clients_cpu_s_1_client": own_1, "clients_cpu_s_n_clients": own_n,
            "concurrency_ratio": wall_n / wall_1,
            "concurrency_max_abs_weight_diff": max(float(np.max(np.abs(w - alone))) for _, w in together)}


def lifecycle_client(address: str, go: Path, epochs: int) -> None:
    """One new user's whole lifecycle in this (child) process, once ``go`` exists: CKKS keys, a session, the
    upload and training (``EncryptedLinearRegression(server=..., epochs=...).fit`` on Ames); one JSON line.
    The process then waits for ``go.done`` before it exits: its interpreter's teardown (~0.3 CPU s with
    torch, TenSEAL and gRPC loaded) is no part of a lifecycle, and a lone client's falls after the timed
    window anyway, as every client's imports fall before it."""
    from ciphergrad import EncryptedLinearRegression
    from ciphergrad.core.data import load_ames

    data = load_ames()
    Path(f"{go}.ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    start, cpu = time.time(), time.process_time()
    model = EncryptedLinearRegression(server=address, epochs=epochs, progress=False).fit(data.X, data.y)
    print(json.dumps({"start": start, "end": time.time(), "cpu_s": time.process_time() - cpu,
                      "coef": [float(c) for c in model.coef_]}), flush=True)
    done = Path(f"{go}.done")
    while not done.exists():
        time.sleep(0.05)


def lifecycles(clients: int, epochs: int, blocks: str) -> dict:
    """Whole client lifecycles (fresh keys, session, upload, training) as separate processes against one child
    ``ciphergrad-server --executor ray``: one alone (the median of ``SINGLE_RUNS``), then ``clients`` at once.
    ``server_cpu_s_per_lifecycle``: the server process's CPU seconds per lifecycle (its Ray workers apart);
    ``server_tree_cpu_s_per_lifecycle`` with its local Ray (workers, raylet); ``lifecycle_cpu_floor_ratio``:
    the ratio an otherwise idle machine allows at best, ``clients`` x (that + the client's CPU) / cores / the
    single wall (other engineers' load stretches the measured ratio past it)."""
    with tempfile.TemporaryDirectory(prefix="scaleout-lifecycle-") as directory:
        root = Path(directory)
        server = ServerProcess(root / "data", "--executor", "ray", "--ray-num-cpus", str(os.cpu_count()),
                               "--ray-blocks", blocks, "--workers", str(clients), startup_seconds=180)
        busy: dict[str, float] = {}
        try:
            address = server.address

            def run(count: int, tag: str) -> list[dict]:
                go = root / f"go-{tag}"
                children = [subprocess.Popen([sys.executable, __file__, "--lifecycle-client", address, "--go", str(go),
                                              "--concurrency-epochs", str(epochs)], cwd=ROOT,
                                             stdout=subprocess.PIPE, text=True) for _ in range(count)]
                deadline = time.monotonic() + 300
                while len(list(root.glob(f"go-{tag}.ready-*"))) < count:  # imports done: then the clock starts
                    if time.monotonic() > deadline or any(child.poll() is not None for child in children):
                        raise RuntimeError("lifecycle clients did not get ready:\n" + server.log)
                    time.sleep(0.05)
                busy[tag] = wait_until_quiet()  # the children's imports, an earlier server's Ray: settled first
                go.touch()
                lines = [_result_line(child) for child in children]
                Path(f"{go}.done").touch()  # every lifecycle is over: now the processes may exit
                rest = [child.communicate(timeout=900)[0] for child in children]
                if any(child.returncode for child in children) or not all(lines):
                    raise RuntimeError(f"a lifecycle client failed:\n{lines}\n{rest}\n" + server.log)
                return [json.loads(line) for line in lines]

            run(1, "warm")  # the pool's first context load and the server's imports
            before, tree_before = cpu_seconds(server.pid), tree_cpu_seconds(server.pid)
            singles = [run(1, f"single-{k}")[0] for k in range(SINGLE_RUNS)]
            cpu_single = (cpu_seconds(server.pid) - before) / SINGLE_RUNS
            tree_single = (tree_cpu_seconds(server.pid) - tree_before) / SINGLE_RUNS
            wall_1 = float(np.median([r["end"] - r["start"] for r in singles]))
            before = cpu_seconds(server.pid)
            together = run(clients, "together")
            cpu_n = (cpu_seconds(server.pid) - before) / clients
            wall_n = max(r["end"] for r in together) - min(r["start"] for r in together)
        finally:
            server.stop()
    alone = np.array(singles[0]["coef"])
    return {"lifecycle_clients": clients, "lifecycle_epochs": epochs, "lifecycle_blocks": blocks,
            "lifecycle_wall_1_s": wall_1, "lifecycle_wall_n_s": wall_n,
            "server_cpu_s_per_lifecycle": cpu_single, "server_cpu_s_per_lifecycle_concurrent": cpu_n,
            "lifecycle_concurrency_ratio": wall_n / wall_1,
            "client_cpu_s_per_lifecycle": float(np.median([r["cpu_s"] for r in singles])),
            "server_tree_cpu_s_per_lifecycle": tree_single,
            # What the cores alone allow: all the lifecycles' CPU spread over every core, over one's wall.
            "lifecycle_cpu_floor_ratio": clients * (tree_single + float(np.median([r["cpu_s"] for r in singles])))
            / (os.cpu_count() or 1) / wall_1,
            "client_cpu_s_per_lifecycle_concurrent": float(np.mean([r["cpu_s"] for r in together])),
            "lifecycle_busy_before": max(busy.values()),  # the machine's busy share as the clocks started
            "lifecycle_max_abs_coef_diff": max(float(np.max(np.abs(np.array(r["coef"]) - alone))) for r in together)}


def _result_line(child: subprocess.Popen) -> str:
    """A lifecycle client's JSON line, read as soon as it is printed ("" if the child ended without one)."""
    for line in child.stdout:  # type: ignore[union-attr]
        if line.startswith("{"):
            return line
    return ""


def plaintext_weights(X: np.ndarray, y: np.ndarray, config: LinearRegressionConfig) -> np.ndarray:
    """The same epochs in float64 from the same start (heavy-ball and l2 are off in this benchmark)."""
    w = np.random.default_rng(config.init_seed).normal(size=X.shape[1])
    for _ in range(config.epochs):
        w = w - config.learning_rate * X.T @ (X @ w - y[:, 0]) / len(X)
    return w


def write_encrypted(holder: KeyHolder, array: np.ndarray, tile, path: Path, chunk_blocks: int = 64) -> None:
    """``holder.encrypt(array, tile=tile).to_bytes()`` written ``chunk_blocks`` row blocks at a time (a
    million-row table never whole in memory): the last chunk's header (it holds the partial block) with the
    whole table's shape and grid, then every chunk's ciphertexts."""
    step = chunk_blocks * tile.rows
    starts = range(0, len(array), step)
    last = holder.encrypt(array[starts[-1]:], tile=tile)
    header = last.header() | {"shape": [len(array), array.shape[1]],
                              "grid": [-(-len(array) // tile.rows), last.grid[1]]}
    with open(path, "wb") as out:
        out.write(next(flat.pieces(header, [])))
        for start in starts:
            part = last if start == starts[-1] else holder.encrypt(array[start:start + step], tile=tile)
            for piece in itertools.islice(flat.pieces({}, part.blobs()), 1, None):
                out.write(piece)


def million_gram(rows: int, features: int) -> dict:
    """The one-pass Gram statistics of ``rows`` x ``features`` on 2 workers, blocks by object store and by
    path in the same run (the same Ray, the same pool, the contexts loaded ahead)."""
    X, y = synthetic_regression(rows, features, 0)
    params = plan(3, slots=1)
    tile = choose_tile(X.shape, params.slots, "rows")
    holder = KeyHolder(params, rotations=sorted({*rotation_steps(tile),
                                                 *core_gram.rotation_steps(tile.cols, params.slots)}))
    context = holder.public_context()
    engine = Engine.from_public_context(context)
    result: dict = {"million_rows": rows}
    with tempfile.TemporaryDirectory(prefix="scaleout-million-") as directory:
        root = Path(directory)
        (root / "context.bin").write_bytes(context)
        start = time.perf_counter()
        write_encrypted(holder, X, tile, root / "0.bin")
        write_encrypted(holder, y, tile, root / "1.bin")
        result["million_encrypt_s"] = time.perf_counter() - start
        result["million_table_bytes"] = (root / "0.bin").stat().st_size + (root / "1.bin").stat().st_size
        del X, y
        table = StoredTable(root / "context.bin", root / "0.bin", root / "1.bin", rows, tile.rows)
        executor = RayExecutor(num_cpus=2, shards=2, timeout=3600)
        try:
            executor.warm(table.context)
            executor.get([w.usage.remote() for w in executor.pool.workers], "warming")
            for mode in ("path", "object-store"):
                executor.set_blocks(mode)
                start = time.perf_counter()
                partial = executor.gram_partial(table, engine)
                result[f"gram_pass_1m_{mode.replace('-', '_')}_s"] = time.perf_counter() - start
                assert partial.rows == rows
                print(f"gram pass, {rows} rows, {mode}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            result["gram_pass_1m_object_store_peak_bytes"] = executor.feeder.peak_bytes
            result["object_store_budget_bytes"] = executor.feeder.budget
        finally:
            executor.close()
    result["gram_pass_1m_object_store_vs_path"] = result["gram_pass_1m_object_store_s"] / result["gram_pass_1m_path_s"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-gram", action="store_true")
    parser.add_argument("--noise-floor", action="store_true", help="a second local run, for the refresh noise")
    parser.add_argument("--clients", type=int, default=8, help="concurrent Ames trainings through one server")
    parser.add_argument("--concurrency-epochs", type=int, default=10)
    parser.add_argument("--server-workers", type=int, help="the server's --workers (default: --clients)")
    parser.add_argument("--only-concurrency", action="store_true", help="skip the 100k-row epochs")
    parser.add_argument("--only-lifecycle", action="store_true", help="only the whole-lifecycle clients")
    parser.add_argument("--only-million", action="store_true", help="only the 1M-row Gram passes")
    parser.add_argument("--million-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--lifecycle-blocks", default="object-store", choices=("object-store", "path"))
    parser.add_argument("--lifecycle-client", help=argparse.SUPPRESS)  # a child: one lifecycle at this address
    parser.add_argument("--go", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.lifecycle_client:
        lifecycle_client(args.lifecycle_client, Path(args.go), args.concurrency_epochs)
        return {}
    load_start = os.getloadavg()[0]
    if args.only_concurrency:
        return report(concurrency(args.clients, args.concurrency_epochs, args.server_workers), load_start, args.json)
    if args.only_lifecycle:
        return report(lifecycles(args.clients, args.concurrency_epochs, args.lifecycle_blocks), load_start, args.json)
    if args.only_million:
        return report(million_gram(args.million_rows, args.features), load_start, args.json)

    X, y = synthetic_regression(args.rows, args.features, 0)
    params = plan(3, slots=1)
    tile = choose_tile(X.shape, params.slots, "rows")
    steps = sorted({*rotation_steps(tile), *core_gram.rotation_steps(tile.cols, params.slots)})
    holder = KeyHolder(params, rotations=steps)
    context = holder.public_context()
    engine = Engine.from_public_context(context)

    def refresh(matrix: EncryptedMatrix) -> EncryptedMatrix:
        answer = holder.refresh(EncryptedMatrix.from_bytes(holder.engine, matrix.to_bytes())).to_bytes()
        return EncryptedMatrix.from_bytes(engine, answer)

    config = LinearRegressionConfig(learning_rate=0.5, epochs=args.epochs, init_seed=0)
    result: dict = {"rows": args.rows, "features": args.features, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="scaleout-") as directory:
        root = Path(directory)
        (root / "context.bin").write_bytes(context)
        (root / "0.bin").write_bytes(holder.encrypt(X, tile=tile).to_bytes())
        (root / "1.bin").write_bytes(holder.encrypt(y, tile=tile).to_bytes())
        table = StoredTable(root / "context.bin", root / "0.bin", root / "1.bin", args.rows, tile.rows)

        seconds, local_weights, _ = train(LocalExecutor(), table, engine, config, refresh, holder)
        result["epoch_s_local"] = float(np.median(seconds))
        print(f"local: {seconds}", file=sys.stderr)
        plain = plaintext_weights(X, y, config)
        result["max_abs_weight_diff_local_vs_plaintext"] = float(np.max(np.abs(local_weights - plain)))
        if args.noise_floor:  # a second local run: how far two runs differ by their refreshes' fresh noise alone
            _, again, _ = train(LocalExecutor(), table, engine, config, refresh, holder)
            result["max_abs_weight_diff_local_rerun"] = float(np.max(np.abs(again - local_weights)))
        rays = {count: RayExecutor(num_cpus=2, shards=count, timeout=1800) for count in (1, 2)}
        diffs = []
        for count, executor in rays.items():
            seconds, weights, worker_rss = train(executor, table, engine, config, refresh, holder)
            result[f"epoch_s_ray_{count}"] = float(np.median(seconds))
            diffs.append(float(np.max(np.abs(weights - local_weights))))
            result[f"max_abs_weight_diff_ray_{count}_vs_plaintext"] = float(np.max(np.abs(weights - plain)))
            result[f"peak_rss_mb_per_worker_ray_{count}"] = round(worker_rss["peak_rss_mb"], 1)
            result[f"worker_cpu_s_per_epoch_ray_{count}"] = worker_rss["cpu_s_per_epoch"]
            print(f"ray {count}: {seconds}", file=sys.stderr)
        result["speedup_2_vs_1"] = result["epoch_s_ray_1"] / result["epoch_s_ray_2"]
        result["max_abs_weight_diff_vs_local"] = max(diffs)
        result["peak_rss_mb_per_worker"] = result["peak_rss_mb_per_worker_ray_2"]
        if not args.skip_gram:
            for count, executor in rays.items():
                start = time.perf_counter()
                partial = executor.gram_partial(table, engine)
                result[f"gram_pass_s_ray_{count}"] = time.perf_counter() - start
                assert partial.rows == args.rows
            result["gram_speedup_2_vs_1"] = result["gram_pass_s_ray_1"] / result["gram_pass_s_ray_2"]
        result["object_store_peak_bytes"] = max(executor.feeder.peak_bytes for executor in rays.values())
        result["ray_blocks"] = rays[2].blocks
        rays[1].close()
    if not args.skip_million:
        result |= million_gram(args.million_rows, args.features)
    # After this process's Ray is shut down: each server starts its own.
    result |= concurrency(args.clients, args.concurrency_epochs, args.server_workers)
    result |= lifecycles(args.clients, args.concurrency_epochs, args.lifecycle_blocks)
    return report(result, load_start, args.json)




def report(result: dict, load_start: float, as_json: bool) -> dict:
    result["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = round(value, 4) if "diff" not in key else float(f"{value:.3g}")
    # A partial run (--skip-*, --only-*) is held to the targets it measured.
    if finish(result, {key: target for key, target in TARGETS.items() if key in result}, as_json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
