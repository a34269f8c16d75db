"""The compose "ray" profile: a Ray head, a Ray worker and `server-ray` (--executor ray) from the server image,
on bridge networks (service names) or, with docker/compose.host.yml, on the host's network (three Ray nodes on
one IP, each with its own ports). Only server-ray mounts the data volume: the Ray nodes get blocks through the
object store. `docker compose config` checks need no engine; the end-to-end test (marked
docker + slow) starts the profile, trains Ames from the host through server-ray and checks where the shards ran.

Run the end-to-end test with ``make docker-test`` (or ``python -m pytest -m docker -s tests/test_docker_ray.py``).
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import numpy as np
import pytest
from docker_support import (
    CA_DIR,
    COMPOSE,
    DATA_DIR,
    HOST_OVERRIDE,
    TEST_IMAGE,
    ComposeProject,
    ames,
    build_test_image,
    compose_config,
    compose_or_skip,
    docker_engine,
    host_network,
    train_from_host,
)

RAY_NODES = ("ray-head", "ray-worker", "server-ray")
# Ray's options that name a port (or the first/last of a range) a node binds on its IP.
PORT_FLAGS = ("--port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port",
              "--dashboard-agent-listen-port")
# Without these a node binds a fixed default (52365) or a shared range (10002-19999): on one IP they collide.
PER_NODE_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                  "--min-worker-port", "--max-worker-port")


@pytest.fixture(scope="module")
def compose() -> list[str]:
    return compose_or_skip()


def ray_start_flags(service: dict) -> dict[str, str]:
    """The ``--flag=value`` options of the service's ``ray start`` (its command, or inside server-ray's shell
    entrypoint)."""
    argv = [*service["entrypoint"], *(service.get("command") or [])]
    if argv[0] == "sh":
        argv = shlex.split(argv[2].split("&&")[0])
    assert argv[0] == "ray" and argv[1] == "start", f"not a `ray start`: {argv}"
    return dict(arg.split("=", 1) for arg in argv[2:] if arg.startswith("--") and "=" in arg)


def node_ports(flags: dict[str, str]) -> set[int]:
    ports = {int(flags[name]) for name in PORT_FLAGS if name in flags}
    if "--min-worker-port" in flags:
        ports |= set(range(int(flags["--min-worker-port"]), int(flags["--max-worker-port"]) + 1))
    return ports


# ---------------------------------------------------------------- compose file, no engine needed


def test_compose_ray_profile_is_a_head_a_worker_and_a_server_on_them(compose: list[str]) -> None:
    config = compose_config(compose, COMPOSE, profile="ray")
    services = config["services"]
    assert {"ray-head", "ray-worker", "server-ray"} <= set(services)
    head, worker, server = services["ray-head"], services["ray-worker"], services["server-ray"]
    for name in RAY_NODES:
        service = services[name]
        assert service["profiles"] == ["ray"]
        assert service["image"] == "ciphergrad:latest", "every node runs the server image (it carries ray)"
    (volume,) = [v for v in server["volumes"] if v["target"] == DATA_DIR]
    assert volume["source"] == services["server"]["volumes"][0]["source"]
    for name in ("ray-head", "ray-worker"):
        assert not services[name].get("volumes"), f"{name}: blocks come through the object store, not a disk"
    assert "--ray-blocks" not in server["command"], "the default, object-store mode"
    assert head["entrypoint"] == ["ray"] and "--head" in head["command"] and "--port=6379" in head["command"]
    assert worker["entrypoint"] == ["ray"] and "--address=ray-head:6379" in worker["command"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert server["command"] == ["--executor", "ray", "--ray-address", "ray-head:6379"]
    assert ray_start_flags(server)["--address"] == "ray-head:6379"
    assert ray_start_flags(server)["--num-cpus"] == "0", "the server's node runs no shards"
    # TLS by default like the plain server: the entrypoint generates (or reuses, on the shared volume) the
    # certificate and publishes the CA where client containers read it.
    assert "exec ciphergrad-entrypoint" in " ".join(server["entrypoint"])
    assert server["environment"]["CIPHERGRAD_PLAINTEXT"] == "0"
    assert {(v["source"], v["target"]) for v in server["volumes"]} == {
        (v["source"], v["target"]) for v in services["server"]["volumes"]} and \
        any(v["target"] == CA_DIR for v in server["volumes"])
    assert server["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert server["environment"]["CIPHERGRAD_DATA_DIR"] == DATA_DIR
    assert server["healthcheck"]["test"] == ["CMD", "ciphergrad-healthcheck"]
    (port,) = server["ports"]
    assert (int(port["target"]), str(port["published"])) == (50051, "50052"), "beside the plain server's 50051"


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, HOST_OVERRIDE)], ids=["bridge", "host"])
def test_ray_object_store_fits_in_shared_memory(compose: list[str], files: tuple) -> None:
    """Ray's default object store is 30% of the host's RAM; bigger than /dev/shm, it moves to disk (/tmp)."""
    services = compose_config(compose, *files, profile="ray")["services"]
    for name in RAY_NODES:
        store = int(ray_start_flags(services[name])["--object-store-memory"])
        assert 75 * 2**20 <= store < int(services[name]["shm_size"]), f"{name}: object store vs shm_size"


def test_ray_profile_on_the_host_network(compose: list[str]) -> None:
    config = compose_config(compose, COMPOSE, HOST_OVERRIDE, profile="ray", CIPHERGRAD_RAY_PORT="50999")
    services = config["services"]
    plain = compose_config(compose, COMPOSE, profile="ray")["services"]
    flags = {name: ray_start_flags(services[name]) for name in RAY_NODES}
    for name in RAY_NODES:
        assert services[name]["network_mode"] == "host"
        assert not services[name].get("ports"), "published ports conflict with host networking"
        assert services[name].get("volumes") == plain[name].get("volumes"), "the same volumes as on bridges"
        missing = [flag for flag in PER_NODE_FLAGS if flag not in flags[name]]
        assert not missing, f"{name}: several nodes on one IP need their own {missing}"
    head, server = services["ray-head"], services["server-ray"]
    assert head["healthcheck"]["test"] == ["CMD", "ray", "health-check", "--address", "127.0.0.1:6379"]
    assert flags["ray-head"]["--port"] == "6379"
    assert flags["ray-worker"]["--address"] == flags["server-ray"]["--address"] == "127.0.0.1:6379"
    assert flags["server-ray"]["--num-cpus"] == "0"
    assert server["command"] == ["--executor", "ray", "--ray-address", "127.0.0.1:6379"]
    assert server["environment"]["CIPHERGRAD_LISTEN"] == "127.0.0.1:50999"
    assert server["healthcheck"]["test"] == ["CMD", "ciphergrad-healthcheck"]
    ports = {name: node_ports(flags[name]) for name in RAY_NODES}
    for a, b in ((0, 1), (0, 2), (1, 2)):
        shared = ports[RAY_NODES[a]] & ports[RAY_NODES[b]]
        assert not shared, f"{RAY_NODES[a]} and {RAY_NODES[b]} both bind {sorted(shared)[:5]}"
    assert 50999 not in set().union(*ports.values())


# ------------------------------------------------------------------- end to end, needs an engine

# Summed user+system CPU seconds of this container's pool workers (Ray titles them ray::BlockWorker).
WORKER_CPU_PROBE = """
import os
count, seconds = 0, 0.0
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        if not open(f'/proc/{pid}/cmdline', 'rb').read().startswith(b'ray::BlockWorker'):
            continue
        fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except OSError:
        continue
    count, seconds = count + 1, seconds + (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
print(count, seconds)
"""

DATA_FILES_PROBE = f"import os; print(sum(len(files) for _, _, files in os.walk({DATA_DIR!r})))"


def worker_cpu(project: ComposeProject) -> dict[str, tuple[int, float]]:
    """Per Ray node container: how many pool workers it runs and their CPU seconds so far."""
    usage = {}
    for name in RAY_NODES:
        count, seconds = project("exec", "-T", name, "python", "-c", WORKER_CPU_PROBE).stdout.split()
        usage[name] = (int(count), float(seconds))
    return usage


def ports_in_use(ports: set[int]) -> list[int]:
    busy = []
    for port in sorted(ports):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                busy.append(port)
    return busy


def train_and_place(project: ComposeProject, X: np.ndarray, y: np.ndarray, ca: Path) -> tuple[dict, dict[str, float]]:
    """Train through server-ray (TLS, trusting ``ca``); the CPU seconds each node's pool workers spent meanwhile."""
    before = worker_cpu(project)
    trained = train_from_host(f"127.0.0.1:{project.ray_port}", X, y, tls=ca)
    after = worker_cpu(project)
    return trained, {name: after[name][1] - before[name][1] for name in RAY_NODES}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_ray_profile_trains_ames_on_the_worker_nodes(compose: list[str], tmp_path: Path) -> None:
    from ciphergrad.core.compare import compare_linear_regression
    from ciphergrad.core.linear import LinearRegressionConfig

    docker = docker_engine()
    if host_network(docker):
        config = compose_config(compose, COMPOSE, HOST_OVERRIDE, profile="ray")["services"]
        fixed = set().union(*(node_ports(ray_start_flags(config[name])) for name in RAY_NODES))
        if busy := ports_in_use(fixed):
            pytest.skip(f"host network: Ray's ports {busy[:5]} are taken (another ray profile running?)")
    build_test_image(docker)
    project = ComposeProject(compose, docker, TEST_IMAGE, profile="ray")
    try:
        project("up", "-d", "--no-build", "server-ray")
        waited = project.wait_healthy("server-ray")
        status = project("exec", "-T", "ray-head", "ray", "status").stdout
        active = status.split("Active:", 1)[1].split("Pending:", 1)[0]
        mode = "host" if project.host_network else "bridge"
        print(f"\n[docker-ray] server-ray healthy after {waited:.1f} s ({mode} network); ray status:\n{status}")
        assert active.count("node_") == 3, "head, worker and server-ray's node"
        assert "/2.0 CPU" in status, "one CPU each on the head and the worker, none on server-ray"
        placed = worker_cpu(project)
        assert (placed["ray-head"][0], placed["ray-worker"][0], placed["server-ray"][0]) == (1, 1, 0), \
            f"one pool worker per CPU, on the head and the worker: {placed}"

        # Ames (510 rows) is one shard; five copies (2,550 rows) split in two (min_shard_rows 1,024).
        X, y = ames()
        config = LinearRegressionConfig()
        ca = project.ca(tmp_path, "server-ray")  # server-ray serves TLS by default, like server
        for copies in (1, 5):
            Xc, yc = np.vstack([X] * copies), np.concatenate([y] * copies)
            trained, cpu = train_and_place(project, Xc, yc, ca)
            local = compare_linear_regression(Xc, yc, config)
            gap_local = float(np.max(np.abs(trained["weights"] - local.encrypted_weights)))
            gap_torch = float(np.max(np.abs(trained["weights"] - local.torch_weights)))
            print(f"[docker-ray] {len(Xc)} rows: job {trained['seconds']:.2f} s; pool worker CPU s "
                  + ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
                  + f"; max |w - local| {gap_local:.2e}, |w - torch| {gap_torch:.2e}")
            assert len(trained["losses"]) == config.epochs
            assert gap_local < 1e-5 and gap_torch < 1e-5
            assert cpu["ray-head"] + cpu["ray-worker"] > 1.0, "the epochs ran in the pool workers"
            if copies > 1:
                assert min(cpu["ray-head"], cpu["ray-worker"]) > 1.0, f"two shards, one per node: {cpu}"
        for name in ("ray-head", "ray-worker"):  # no data volume: nothing of the jobs' tables on their disks
            files = project("exec", "-T", name, "python", "-c", DATA_FILES_PROBE).stdout.strip()
            assert files == "0", f"{name} holds {files} files under {DATA_DIR}"
    finally:
        project("down", "-v", "--remove-orphans", timeout=120, check=False)
