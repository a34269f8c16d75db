"""Docker packaging: the compose file and Dockerfile (no engine needed), the healthcheck probe, the
entrypoint's TLS by default (run on the host, no engine needed), and an end-to-end test that builds the
image, starts it with compose, waits for the gRPC health service to report healthy and trains through it
over TLS with the CA the container generated (marked docker + slow; skipped without an engine).
The compose "ray" profile is tested in tests/test_docker_ray.py; helpers are in tests/docker_support.py.

Run the end-to-end tests with ``make docker-test``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from docker_support import (
    BUILD_STAGE_LABEL,
    CA_DIR,
    COMPOSE,
    DATA_DIR,
    ENTRYPOINT,
    HEALTHCHECK,
    HOST_OVERRIDE,
    ROOT,
    TEST_IMAGE,
    ComposeProject,
    ames,
    build_test_image,
    compose_config,
    compose_env,
    compose_or_skip,
    docker_engine,
    fetch_model,
    run,
    train_from_host,
)
from grpc_health.v1 import health, health_pb2

from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2


@pytest.fixture(scope="module")
def compose() -> list[str]:
    return compose_or_skip()


# ---------------------------------------------------------------- compose file, no engine needed


def test_compose_config_validates_without_engine(compose: list[str]) -> None:
    for files in ([COMPOSE], [COMPOSE, HOST_OVERRIDE]):
        args = [*compose, "--project-directory", str(ROOT)]
        for f in files:
            args += ["-f", str(f)]
        for profile in ([], ["--profile", "demo"], ["--profile", "ray"]):
            # An engine that is absent (or unreachable) must not matter to `config`.
            env = compose_env(DOCKER_HOST="unix:///nonexistent/docker.sock")
            result = run([*args, *profile, "config", "--quiet"], env=env, cwd=ROOT)
            assert result.returncode == 0, f"{files} {profile}: {result.stderr}"


def test_compose_server_has_volume_port_and_grpc_healthcheck(compose: list[str]) -> None:
    config = compose_config(compose, COMPOSE)
    assert set(config["services"]) == {"server"}, "only the server starts on a plain `up`"
    server = config["services"]["server"]
    assert server["build"]["context"] == str(ROOT)
    assert server["build"]["target"] == "server", "the Dockerfile's last stage is the client image"
    assert server["environment"]["CIPHERGRAD_DATA_DIR"] == DATA_DIR
    assert server["environment"]["CIPHERGRAD_LISTEN"] == "0.0.0.0:50051"
    assert server["environment"]["CIPHERGRAD_PLAINTEXT"] == "0", "TLS unless plaintext is asked for"
    volumes = {volume["target"]: volume for volume in server["volumes"]}
    assert set(volumes) == {DATA_DIR, CA_DIR}
    for volume in volumes.values():
        assert volume["type"] == "volume" and volume["source"] in config["volumes"], "named volumes"
        assert not volume.get("read_only")
    assert volumes[DATA_DIR]["source"] != volumes[CA_DIR]["source"], "clients get the CA, not the data volume"
    plaintext = compose_config(compose, COMPOSE, CIPHERGRAD_PLAINTEXT="1")["services"]["server"]["environment"]
    assert plaintext["CIPHERGRAD_PLAINTEXT"] == "1", "the explicit opt-out reaches the entrypoint"
    (port,) = server["ports"]
    assert (int(port["target"]), str(port["published"])) == (50051, "50051")
    check = server["healthcheck"]
    assert check["test"] == ["CMD", "ciphergrad-healthcheck"]
    assert not check.get("disable")

    published = compose_config(compose, COMPOSE, CIPHERGRAD_PORT="50777")["services"]["server"]["ports"]
    assert str(published[0]["published"]) == "50777"


def test_compose_demo_profile_runs_the_client_against_the_server(compose: list[str]) -> None:
    config = compose_config(compose, COMPOSE, profile="demo")
    demo = config["services"]["demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["image"] == "ciphergrad-client:latest", "the demo needs the twins: the client image"
    assert demo["entrypoint"] == ["ciphergrad"]
    assert demo["command"] == ["demo", "--server", "server:50051", "--tls", f"{CA_DIR}/ca.pem"]
    (volume,) = demo["volumes"]
    assert volume["target"] == CA_DIR and volume["read_only"], "the client trusts the server's CA, read-only"
    server_ca = {v["target"]: v["source"] for v in config["services"]["server"]["volumes"]}[CA_DIR]
    assert volume["source"] == server_ca
    assert demo["depends_on"]["server"]["condition"] == "service_healthy"


def test_compose_host_network_override(compose: list[str]) -> None:
    config = compose_config(compose, COMPOSE, HOST_OVERRIDE, profile="demo", CIPHERGRAD_PORT="50888")
    server, demo = config["services"]["server"], config["services"]["demo"]
    assert server["network_mode"] == demo["network_mode"] == "host"
    assert not server.get("ports"), "published ports conflict with host networking"
    assert server["environment"]["CIPHERGRAD_LISTEN"] == "127.0.0.1:50888"
    assert demo["command"] == ["demo", "--server", "127.0.0.1:50888", "--tls", f"{CA_DIR}/ca.pem"]
    assert server["healthcheck"]["test"] == ["CMD", "ciphergrad-healthcheck"]


# ------------------------------------------------------------------ Dockerfile and build inputs


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _stages(dockerfile: str) -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (``FROM ... AS name``)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, arg in _instructions(dockerfile):
        if op == "FROM":
            current = stages.setdefault(arg.split()[-1] if " AS " in arg.upper() else arg, [])
        current.append((op, arg))
    return stages


def test_dockerfile_server_stage_is_hardened() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    ops = dict(stages["server"])
    assert ops["FROM"].startswith("${BASE_IMAGE}")
    assert ops["USER"] not in ("root", "0"), "the server runs as a non-root user"
    assert json.loads(ops["VOLUME"]) == [DATA_DIR]
    assert "CIPHERGRAD_DATA_DIR=" + DATA_DIR in ops["ENV"]
    assert "ciphergrad-healthcheck" in ops["HEALTHCHECK"]
    assert json.loads(ops["ENTRYPOINT"]) == ["ciphergrad-entrypoint"], "TLS set up before the server starts"
    env = " ".join(arg for op, arg in stages["server"] if op == "ENV")
    assert f"CIPHERGRAD_TLS_CERT={DATA_DIR}/tls/server.pem" in env and f"CIPHERGRAD_CA_EXPORT={CA_DIR}" in env
    assert f"CIPHERGRAD_HEALTH_CA={DATA_DIR}/tls/ca.pem" in env, "the healthcheck trusts the generated CA"
    assert "CIPHERGRAD_PLAINTEXT" not in env
    copies = [arg for op, arg in stages["server"] if op == "COPY"]
    assert "docker/entrypoint.sh /usr/local/bin/ciphergrad-entrypoint" in copies
    assert "openssl" in (ROOT / "docker" / "build-base.sh").read_text(), "the entrypoint generates with openssl"
    build = " ".join(arg for op, arg in stages["build"] if op in ("ENV", "RUN"))
    assert "PIP_NO_INDEX=1" in build, "the build installs from the wheelhouse only"


def test_build_stages_are_labelled_pruned_and_the_server_needs_no_torch() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    for name in ("build", "client-build"):
        assert ("LABEL", f"{BUILD_STAGE_LABEL}=build") in stages[name], "build-image.sh finds stages by this label"
    assert ("LABEL", f"{BUILD_STAGE_LABEL}=runtime") in stages["server"], "superseded images are pruned too"
    assert ("LABEL", f"{BUILD_STAGE_LABEL}=client") in stages["client"]
    script = (ROOT / "docker" / "build-image.sh").read_text()
    assert f"--filter label={BUILD_STAGE_LABEL} " in script
    assert "--target server" in script and "--target client" in script
    smoke = next(arg for op, arg in stages["build"] if op == "RUN" and "imports ok" in arg)
    assert "torch" not in smoke.split("-c", 1)[1], "the server image has no torch; its smoke check must not need it"


def test_client_image_is_the_server_plus_the_twins() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    client = dict(stages["client"])
    assert client["FROM"].split()[0] == "server", "the client image extends the server image"
    assert json.loads(client["ENTRYPOINT"]) == ["ciphergrad"]
    smoke = next(arg for op, arg in stages["client-build"] if op == "RUN" and "imports ok" in arg)
    assert "import torch" in smoke


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore is an allowlist"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = {"pyproject.toml", "core", "server", "client", "wire"}
    assert sources | {"build/wheelhouse", "build/wheelhouse-torch", "build/wheelhouse-ray"} <= allowed
    assert not allowed & {".venv", ".git", "var", "build"}


def test_fetch_wheels_pins_torch_exactly() -> None:
    script = (ROOT / "docker" / "fetch-wheels.sh").read_text()
    assert "torch==2.13.0" in script and "--only-binary=:all:" in script
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject


def _fetch_wheels_in(tmp_path: Path, pyproject: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run fetch-wheels.sh on a copy of the repo with ``pyproject``; a fake pip records what it was asked."""
    (tmp_path / "docker").mkdir()
    shutil.copy(ROOT / "docker" / "fetch-wheels.sh", tmp_path / "docker")
    (tmp_path / "pyproject.toml").write_text(pyproject)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python").symlink_to(sys.executable)
    record = tmp_path / "pip-args"
    (tools / "pip").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    (tools / "pip").chmod(0o755)
    result = run([str(tmp_path / "docker" / "fetch-wheels.sh")], env={**os.environ, "PIP": str(tools / "pip")})
    return result, record.read_text().splitlines() if record.exists() else []


def test_fetch_wheels_takes_torch_from_the_base_dependencies_only(tmp_path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    result, args = _fetch_wheels_in(tmp_path, pyproject)
    assert result.returncode == 0, result.stderr
    assert ("torch==2.13.0" in args) == ('"torch==2.13.0"' in pyproject.split("[project.optional-dependencies]")[0])
    assert "tenseal==0.3.18" in args and "--only-binary=:all:" in args


def test_fetch_wheels_accepts_torch_in_an_extra_and_leaves_it_out(tmp_path: Path) -> None:
    base, extras = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")
    base = base.replace('    "torch==2.13.0",\n', "")
    if 'torch = ["torch==2.13.0"]' not in extras:
        extras = extras.replace("dev = [", 'torch = ["torch==2.13.0"]\ndev = [', 1)
    result, args = _fetch_wheels_in(tmp_path, base + "[project.optional-dependencies]" + extras)
    assert result.returncode == 0, result.stderr
    assert not [a for a in args if a.startswith("torch")] and "grpcio==1.85.1" in args


@pytest.mark.parametrize("spec", ["torch>=2.13", "torch", "torch==2.12.0"])
def test_fetch_wheels_refuses_a_loose_torch_pin_anywhere(tmp_path: Path, spec: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text().replace('"torch==2.13.0"', f'"{spec}"')
    pyproject = pyproject.replace("dev = [", f'dev = [\n    "{spec}",')
    result, args = _fetch_wheels_in(tmp_path, pyproject)
    assert result.returncode != 0 and "must pin torch==2.13.0 exactly" in result.stderr
    assert not args, "nothing is downloaded after a failed check"


def test_no_shell_pipeline_ends_in_an_early_exit_reader() -> None:
    """Under `set -o pipefail`, `producer | grep -q` or `| head` fails now and then: the reader exits at its
    first match, the producer dies of SIGPIPE and the pipeline reports that failure."""
    scripts = [*ROOT.glob("docker/*.sh"), ROOT / ".ci" / "run", ROOT / "Makefile", ROOT / "Dockerfile"]
    early_exit = re.compile(r"\|\s*(grep\s+(-\w*[qm]|--quiet|--max-count)|head\b|sed\s+(-n\s+)?'?\d*q)")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in scripts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and early_exit.search(line)
    ]
    assert not offenders, "pipelines whose reader may exit early:\n" + "\n".join(offenders)


# ---------------------------------------------------------------------- the healthcheck probe


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    from grpc_health.v1 import health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def _probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(HEALTHCHECK), *args], env=compose_env(**env), timeout=30)


def test_healthcheck_reports_serving_and_not_serving(health_server) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = _probe(address)
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
    # A wildcard listen address is probed on loopback.
    port = address.rsplit(":", 1)[1]
    assert _probe(CIPHERGRAD_LISTEN=f"0.0.0.0:{port}").returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = _probe(address)
    assert bad.returncode == 1 and "NOT_SERVING" in bad.stdout


def test_healthcheck_speaks_tls_when_the_server_does(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl CLI to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    from grpc_health.v1 import health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        listen = f"0.0.0.0:{port}"
        tls = _probe(CIPHERGRAD_LISTEN=listen, CIPHERGRAD_TLS_CERT=str(cert))
        assert tls.returncode == 0 and "SERVING" in tls.stdout, tls.stderr
        assert _probe(CIPHERGRAD_LISTEN=listen, CIPHERGRAD_HEALTH_TIMEOUT="2").returncode == 1  # plaintext
    finally:
        server.stop(None)


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _probe(f"127.0.0.1:{port}", CIPHERGRAD_HEALTH_TIMEOUT="2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


# --------------------------------------------- the entrypoint's TLS by default, on the host (no engine)


def _entrypoint(tmp_path: Path, server: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """docker/entrypoint.sh as the image runs it (data dir, TLS paths and CA export as the Dockerfile sets
    them, under ``tmp_path``), with ``server`` standing in for ciphergrad-server: by default a script that
    prints the TLS settings it was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "ciphergrad-server"
    if server is None:
        stand_in.write_text('#!/bin/sh\necho "cert=${CIPHERGRAD_TLS_CERT:-} key=${CIPHERGRAD_TLS_KEY:-} args=$*"\n')
        stand_in.chmod(0o755)
    elif not stand_in.exists():
        stand_in.symlink_to(server)
    data = tmp_path / "data"
    settings = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIPHERGRAD_DATA_DIR": str(data),
        "CIPHERGRAD_TLS_DIR": str(data / "tls"),
        "CIPHERGRAD_TLS_CERT": str(data / "tls" / "server.pem"),
        "CIPHERGRAD_TLS_KEY": str(data / "tls" / "server.key"),
        "CIPHERGRAD_HEALTH_CA": str(data / "tls" / "ca.pem"),
        "CIPHERGRAD_CA_EXPORT": str(tmp_path / "ca-export"),
        **env,
    }
    return run(["sh", str(ENTRYPOINT), "--workers", "1"], env=compose_env(**settings), timeout=60)


@pytest.fixture
def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("no openssl CLI (the image has it: docker/build-base.sh)")
    return found


def test_entrypoint_generates_a_ca_and_certificate_once_and_reuses_them(tmp_path: Path, openssl: str) -> None:
    first = _entrypoint(tmp_path, CIPHERGRAD_TLS_NAMES="grpc.example.org, 10.0.0.5")
    assert first.returncode == 0, first.stderr
    tls = tmp_path / "data" / "tls"
    assert first.stdout.split() == [f"cert={tls / 'server.pem'}", f"key={tls / 'server.key'}", "args=--workers",
                                    "1"], "the server starts with TLS on"
    assert sorted(p.name for p in tls.iterdir()) == ["ca.pem", "server.key", "server.pem"], "no CA key is kept"
    assert (tls / "server.key").stat().st_mode & 0o077 == 0, "the server key is the owner's only"
    verified = run([openssl, "verify", "-CAfile", str(tls / "ca.pem"), str(tls / "server.pem")])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    names = run([openssl, "x509", "-in", str(tls / "server.pem"), "-noout", "-ext", "subjectAltName"]).stdout
    for name in ("DNS:server", "DNS:server-ray", "DNS:localhost", "IP Address:127.0.0.1", "DNS:grpc.example.org",
                 "IP Address:10.0.0.5"):
        assert name in names, names
    exported = tmp_path / "ca-export" / "ca.pem"
    assert exported.read_bytes() == (tls / "ca.pem").read_bytes() and exported.stat().st_mode & 0o777 == 0o644
    assert "SHA-256 fingerprint" in first.stderr

    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    again = _entrypoint(tmp_path)
    assert again.returncode == 0 and "generated" not in again.stderr, again.stderr
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before, "a restart keeps the certificate clients trust"


def test_entrypoint_serves_plaintext_only_when_asked(tmp_path: Path) -> None:
    plain = _entrypoint(tmp_path, CIPHERGRAD_PLAINTEXT="1")
    assert plain.returncode == 0 and plain.stdout.split()[:2] == ["cert=", "key="], plain.stdout
    assert "WITHOUT TLS" in plain.stderr
    assert not (tmp_path / "data" / "tls").exists(), "nothing generated when plaintext is asked for"
    vague = _entrypoint(tmp_path, CIPHERGRAD_PLAINTEXT="yes")
    assert vague.returncode == 2 and "use 1 (plaintext) or 0" in vague.stderr
    # A mounted certificate that is missing is an error naming it, never replaced by a generated one.
    mounted = _entrypoint(tmp_path, CIPHERGRAD_TLS_CERT=str(tmp_path / "mnt" / "cert.pem"),
                          CIPHERGRAD_TLS_KEY=str(tmp_path / "mnt" / "key.pem"))
    assert mounted.returncode == 2 and "cert.pem" in mounted.stderr and not mounted.stdout
    assert not (tmp_path / "data" / "tls").exists()


def test_entrypoint_serves_tls_the_sdk_and_the_healthcheck_trust(tmp_path: Path, openssl: str) -> None:
    """The real ciphergrad-server behind the entrypoint: the SDK and the healthcheck reach it over TLS with
    the generated CA; a plaintext client does not get through."""
    from ciphergrad.client import Client

    server = Path(sys.executable).with_name("ciphergrad-server")
    port_file = tmp_path / "port"
    settings = {"CIPHERGRAD_LISTEN": "127.0.0.1:0", "CIPHERGRAD_PORT_FILE": str(port_file)}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ciphergrad-server").symlink_to(server)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIPHERGRAD_DATA_DIR": str(tmp_path / "data"),
        "CIPHERGRAD_TLS_DIR": str(tmp_path / "data" / "tls"),
        "CIPHERGRAD_TLS_CERT": str(tmp_path / "data" / "tls" / "server.pem"),
        "CIPHERGRAD_TLS_KEY": str(tmp_path / "data" / "tls" / "server.key"),
        "CIPHERGRAD_HEALTH_CA": str(tmp_path / "data" / "tls" / "ca.pem"),
        **settings,
    }
    process = subprocess.Popen(["sh", str(ENTRYPOINT), "--workers", "1"], env=compose_env(**env),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.2)
        address = port_file.read_text().strip()
        ca = tmp_path / "data" / "tls" / "ca.pem"
        probe_env = {k: env[k] for k in ("CIPHERGRAD_TLS_CERT", "CIPHERGRAD_HEALTH_CA")}
        tls = _probe(address, **probe_env)
        assert tls.returncode == 0 and "SERVING" in tls.stdout, tls.stderr
        plain = _probe(address, CIPHERGRAD_PLAINTEXT="1", CIPHERGRAD_HEALTH_TIMEOUT="2", **probe_env)
        assert plain.returncode == 1, "a plaintext probe must not reach a TLS server"
        with Client(address, tls=ca) as client, pytest.raises(grpc.RpcError) as caught:
            client.datasets.ListDatasets(dataset_service_pb2.ListDatasetsRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, "TLS handshake done, then no token"
        with Client(address) as client, pytest.raises(grpc.RpcError) as caught:
            client.datasets.ListDatasets(dataset_service_pb2.ListDatasetsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        process.terminate()
        process.communicate(timeout=30)


# ------------------------------------------------------------------- end to end, needs an engine


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_image_builds_serves_and_trains(compose: list[str], tmp_path: Path) -> None:
    from ciphergrad.core.compare import compare_linear_regression
    from ciphergrad.core.linear import LinearRegressionConfig

    docker = docker_engine()
    build_seconds = build_test_image(docker)
    size_mb = int(run([docker, "image", "inspect", "-f", "{{.Size}}", TEST_IMAGE]).stdout) / 1e6
    print(f"\n[docker] built {TEST_IMAGE} in {build_seconds:.0f} s, {size_mb:.0f} MB")
    leftovers = run([docker, "images", "-q", "--filter", "dangling=true", "--filter", f"label={BUILD_STAGE_LABEL}"])
    assert not leftovers.stdout.split(), f"untagged build or superseded images left: {leftovers.stdout.split()}"

    project = ComposeProject(compose, docker, TEST_IMAGE)
    try:
        project("up", "-d", "--no-build", "server")
        waited = project.wait_healthy()
        mode = "host" if project.host_network else "bridge"
        print(f"[docker] server healthy after {waited:.1f} s on {project.address()} ({mode} network)")

        logs = project("logs", "--no-color", "server").stdout
        assert logs.count("listening on") == 1, f"one start line expected:\n{logs}"
        uid = project("exec", "-T", "server", "id", "-u").stdout.strip()
        assert uid != "0", "the server must not run as root"

        # TLS by default: the host trusts the CA the server generated at first start; plaintext gets nowhere.
        ca = project.ca(tmp_path)
        plain = _probe(project.address(), CIPHERGRAD_HEALTH_TIMEOUT="5")
        assert plain.returncode == 1, f"the container answered plaintext:\n{plain.stdout}"
        trained = train_from_host(project.address(), tls=ca)
        X, y = ames()
        local = compare_linear_regression(X, y, LinearRegressionConfig())
        gap_core = float(np.max(np.abs(trained["weights"] - local.encrypted_weights)))
        gap_torch = float(np.max(np.abs(trained["weights"] - local.torch_weights)))
        print(
            f"[docker] SDK trained Ames through the container in {trained['seconds']:.2f} s, "
            f"{trained['refreshes']} refreshes, final loss {trained['losses'][-1]:.6g}; "
            f"max |w - core| = {gap_core:.2e}, max |w - torch| = {gap_torch:.2e}"
        )
        assert len(trained["losses"]) == LinearRegressionConfig().epochs
        assert gap_core < 1e-4 and gap_torch < 1e-4

        # The compose `demo` service: the client CLI in a second container, against the server.
        demo = project("run", "--rm", "demo", timeout=900, check=False)
        print(f"[docker] `compose run demo` exit {demo.returncode}:\n{demo.stdout[-3000:]}")
        assert demo.returncode == 0, f"demo client in a container failed:\n{demo.stdout}\n{demo.stderr}"

        stored = project("exec", "-T", "server", "ls", "-A", DATA_DIR).stdout.split()
        assert stored, "the server stored nothing in its data volume"

        # The named volume outlives the container: recreate it; session and model are still there.
        project("down")
        project("up", "-d", "--no-build", "server")
        project.wait_healthy()
        assert project.ca(tmp_path).read_bytes() == ca.read_bytes(), "the certificate lives in the volume"
        fetched = fetch_model(project.address(), trained)
        assert float(np.max(np.abs(fetched - trained["weights"]))) < 1e-12
        status = run([docker, "inspect", "-f", "{{.State.Health.Status}}", project.container()]).stdout.strip()
        print(f"[docker] after down/up: {status}; model {trained['model_id']} fetched from the volume again")
    finally:
        project("down", "-v", "--remove-orphans", timeout=120, check=False)
