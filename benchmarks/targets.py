"""The tail every benchmark shares: check its targets, print one JSON line (``--json``) or one line per key,
and exit 1 when a target is missed, so ``make bench`` fails honestly.

A benchmark states its targets in one place, ``TARGETS = {key: (">=" or "<=", bound)}``, where ``key`` is a
top-level key of its result or a dotted path into it (``"rows_1m.total_s"``).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def value_at(result: dict[str, Any], key: str) -> Any:
    found: Any = result
    for part in key.split("."):
        found = found[part]
    return found


def missed(result: dict[str, Any], targets: dict[str, tuple[str, float]]) -> list[str]:
    """The targets ``result`` misses, as sentences."""
    failures = []
    for key, (relation, bound) in targets.items():
        value = value_at(result, key)
        ok = value >= bound if relation == ">=" else value <= bound
        if not ok:
            failures.append(f"{key} = {value} misses its target {relation} {bound}")
    return failures


def finish(result: dict[str, Any], targets: dict[str, tuple[str, float]], as_json: bool) -> int:
    """Print ``result`` (with ``targets_missed``) and return the exit code: 1 if a target was missed."""
    failures = missed(result, targets)
    result["targets_missed"] = failures
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    for failure in failures:
        print(f"target missed: {failure}", file=sys.stderr)
    return 1 if failures else 0
