"""``ciphergrad compare`` / ``python -m ciphergrad.client.compare``: run the tasks and the optional scaling sweep
against a server and write the report. Bad input (an unknown task, an unreachable ``--server``) is one
line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

from ciphergrad.client.compare import privacy, scaling
from ciphergrad.client.compare.result import TaskResult
from ciphergrad.client.compare.server import ServerHandle, ServerUnreachable, running_server
from ciphergrad.client.compare.tasks import TASK_NAMES, Task, select

USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tasks", nargs="*", metavar="TASK", help=f"tasks to run (default: all): {', '.join(TASK_NAMES)}"
    )
    parser.add_argument("--server", metavar="HOST:PORT", help="a running ciphergrad server (default: start one)")
    parser.add_argument("--out", metavar="DIR", default="report", type=Path, help="report directory (default: report/)")
    parser.add_argument("--quick", action="store_true", help="every task on small data (about a minute)")
    parser.add_argument("--scaling", action="store_true", help="also the 1k-100k-row scaling sweep")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_tasks(tasks: list[Task], server: ServerHandle, quick: bool, bar: tqdm) -> list[TaskResult]:
    results = []
    for task in tasks:
        bar.set_description(task.name)
        start_mb = server.reset_peak()
        result = task.run(server.address, **{**task.options, **(task.quick if quick else {})})
        result.name, result.server_peak_mb, result.server_start_mb = task.name, server.peak_mb(), start_mb
        results.append(result)
        bar.update(1)
    return results


def measure(args: argparse.Namespace, tasks: list[Task]) -> tuple[list[TaskResult], dict | None, dict]:
    """Run the tasks (and the sweep) against the server; the results, the sweep and the run's description."""
    with running_server(args.server) as server:
        runs = scaling.run_count(args.quick) if args.scaling else 0
        with tqdm(total=len(tasks) + runs + 1, disable=args.no_progress or None, file=sys.stderr) as bar:
            start = time.perf_counter()
            results = run_tasks(tasks, server, args.quick, bar)
            task_seconds = time.perf_counter() - start

            def tick(label: str) -> None:
                bar.set_description(label)
                bar.update(1)

            sweep = scaling.sweep(args.server, args.quick, tick) if args.scaling else None
            scaling_seconds = time.perf_counter() - start - task_seconds
            # Pools' differential privacy: the release mechanism itself (core.release), no server needed.
            tick("privacy: utility against epsilon")
            dp = privacy.sweep(repeats=3 if args.quick else 20)
    meta = {
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "server": args.server or "a child-process server started for this run",
        "memory": "peak resident memory (VmHWM) of the child server process, reset before each task; "
        "each scaling size on a fresh server"
        if server.measured
        else f"not measured (the server at {args.server} is another process)"
        if args.server
        else "not measured (/proc/PID/clear_refs cannot be written here)",
        "task_seconds": task_seconds,
        "scaling_seconds": scaling_seconds,
        "privacy": dp,
    }
    return results, sweep, meta


def run(args: argparse.Namespace) -> int:
    try:
        tasks = select(args.tasks)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    # The twins work on a few hundred rows: one thread is fastest there, and torch's spinning worker
    # threads would otherwise time other processes' load (the server's included) instead of the twin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results, sweep, meta = measure(args, tasks)
    except ServerUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    finally:
        torch.set_num_threads(threads)
    from ciphergrad.client.compare import report  # matplotlib loads only when a report is written

    written = report.write(args.out, results, sweep, meta)
    seconds = meta["task_seconds"] + meta["scaling_seconds"]
    print(f"wrote {len(written)} files to {args.out}/ in {seconds:.0f} s; open {args.out / 'index.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ciphergrad compare", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
