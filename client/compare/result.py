"""``TaskResult``: what one comparison task measured, encrypted and in plaintext (compare.json's rows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TaskResult:
    """What one task measured. ``encrypted_*`` went through the server; ``plain_*`` is the plaintext twin."""

    name: str = ""
    title: str = ""
    dataset: str = ""
    rows: int = 0
    features: int = 0
    metric: str = ""  # what encrypted_metric / plain_metric are, e.g. "R²" or "test accuracy"
    encrypted_metric: float = 0.0
    plain_metric: float = 0.0
    optimum: float | None = None  # the best the metric can be on this data, when known (least-squares R²)
    max_abs_diff: float = 0.0  # largest |encrypted - plaintext| of the quantity named by diff_of
    diff_of: str = ""
    encrypted_seconds: float = 0.0  # client wall time: keys, encryption, upload, server compute, decryption
    plain_seconds: float = 0.0
    operations: dict[str, int] | None = None  # HE operations as the server reports them (training jobs)
    bytes_up: int = 0
    bytes_down: int = 0
    server_peak_mb: float | None = None  # VmHWM while the task ran (None: server not ours to measure)
    server_start_mb: float | None = None  # resident memory when the task started (what earlier tasks left)
    losses: dict[str, list[float]] = field(default_factory=dict)  # "encrypted" / "torch", per epoch
    loss_name: str = ""
    loss_optimum: float | None = None  # the lowest training loss possible (least-squares MSE), when known
    epoch_seconds: dict[str, float] = field(default_factory=dict)  # medians, "encrypted" / "torch"
    peer: dict[str, Any] | None = None  # a published method timed in the same run
    notes: str = ""

    @property
    def time_ratio(self) -> float:
        return self.encrypted_seconds / self.plain_seconds if self.plain_seconds else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time_ratio": self.time_ratio}
