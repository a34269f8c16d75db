"""What the benchmarks read about other processes from /proc: peak memory, CPU time, a process's tree, and
whether the machine is quiet before a timed window.

A server's local Ray (GCS, raylet, agents, the pool's workers) runs in processes under the server's, so
``descendants`` finds them; RSS counts the object store's shared pages in every process that maps them, so
sums over a tree are upper bounds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    """Every live process under ``root``, ``root`` not included."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live process under it. Ray's workers are long-lived, so differences
    between two readings are their work."""
    total = 0.0
    for pid in {root, *descendants(root)}:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):  # ended between the listing and the reading
            continue
    return total


def busy_fraction(seconds: float = 0.5) -> float:
    """The share of the machine's CPU time (every core) spent busy over the next ``seconds``: /proc/stat."""

    def reading() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields) - idle, sum(fields)

    (busy_a, total_a), _ = reading(), time.sleep(seconds)
    busy_b, total_b = reading()
    return (busy_b - busy_a) / max(1, total_b - total_a)


def wait_until_quiet(below: float = 0.15, timeout: float = 60.0) -> float:
    """Wait until the machine is at most ``below`` busy over half a second (what a previous measurement left
    running, a Ray shutting down, has ended), at most ``timeout`` seconds; the last busy share read. A ratio
    taken while leftovers still run measures them too."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy > below and time.monotonic() < deadline:
        busy = busy_fraction()
    return busy
