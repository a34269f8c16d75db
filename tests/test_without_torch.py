"""The server and the client SDK run without torch: torch only serves the plaintext twins (the `torch`
extra). A child process whose imports of torch fail starts a server, creates a session, uploads Ames and
trains two epochs through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked: this process must run without torch")
            return None

    sys.meta_path.insert(0, NoTorch())

    import numpy as np
    from ciphergrad.client.sdk import Client, default_parameters
    from ciphergrad.core.data import load_ames, with_intercept
    from ciphergrad.core.layout import choose_tile
    from ciphergrad.core.linear import LinearRegressionConfig
    from ciphergrad.server.app import CipherGradServer
    from ciphergrad.server.config import ServerConfig

    data = load_ames()
    X = with_intercept(data.X)
    with tempfile.TemporaryDirectory() as data_dir:
        server = CipherGradServer(ServerConfig(listen="127.0.0.1:0", data_dir=data_dir)).start()
        try:
            params = default_parameters()
            with Client(server.address) as client:
                client.create_session(params, tiles=[choose_tile(X.shape, params.slots, "rows")])
                dataset = client.upload(X, data.y)
                run = client.train(dataset.dataset_id, LinearRegressionConfig(epochs=2))
                weights = client.weights(run.model)
        finally:
            server.stop(grace=1.0)
    assert len(run.losses) == 2 and weights.shape == (X.shape[1],), (run.losses, weights.shape)
    assert "torch" not in sys.modules
    print("trained without torch", run.losses)
    """
)


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_server_and_client_train_without_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trained without torch" in result.stdout
