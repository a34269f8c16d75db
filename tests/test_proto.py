"""The gRPC contract: buf lint (STANDARD rules) and the checked-in stubs match the .proto files."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ciphergrad.wire import codegen

ROOT = Path(__file__).resolve().parent.parent


def _buf() -> str | None:
    local = Path(sys.executable).parent / "buf"
    return str(local) if local.exists() else shutil.which("buf")


def test_buf_lint_is_clean() -> None:
    buf = _buf()
    if buf is None:
        pytest.skip("buf is not installed (pip install buf-bin)")
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    fresh = tmp_path / "proto_gen"
    codegen.generate(fresh)
    names = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file())
    checked_in = sorted(
        str(p.relative_to(codegen.OUTPUT))
        for p in codegen.OUTPUT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert names == checked_in, "stale stubs: run `python -m ciphergrad.wire.codegen`"
    for name in names:
        assert filecmp.cmp(fresh / name, codegen.OUTPUT / name, shallow=False), (
            f"wire/proto_gen/{name} is stale: run `python -m ciphergrad.wire.codegen`"
        )


def test_every_service_has_health_and_reflection() -> None:
    from ciphergrad.server.app import SERVICE_NAMES

    assert SERVICE_NAMES == (
        "ciphergrad.v1.SessionService",
        "ciphergrad.v1.DatasetService",
        "ciphergrad.v1.TrainingService",
        "ciphergrad.v1.ModelService",
        "ciphergrad.v1.ComputeService",
        "ciphergrad.v1.PoolService",
        "ciphergrad.v1.ContributionService",
    )
