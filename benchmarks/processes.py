"""What the benchmarks read about other processes from /proc: peak memory, CPU time, a process's tree.

A server's local Ray (GCS, raylet, agents, the pool's workers) runs in processes under the server's, so
``descendants`` finds them; RSS counts the object store's shared pages in every process that maps them, so
sums over a tree are upper bounds.
"""

from __future__ import annotations

import os
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
