"""Server settings from flags and environment variables, and TLS on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from service_support import local_server

from ciphergrad.client.sdk import Client
from ciphergrad.core.layout import Tile
from ciphergrad.server.config import ServerConfig, parse_args


def test_defaults_flags_and_environment() -> None:
    assert parse_args([], env={}) == ServerConfig()
    env = {
        "CIPHERGRAD_LISTEN": "0.0.0.0:6000",
        "CIPHERGRAD_DATA_DIR": "/d",
        "CIPHERGRAD_WORKERS": "3",
        "CIPHERGRAD_MAX_UPLOAD_MB": "50",
    }
    config = parse_args([], env=env)
    assert (config.listen, config.data_dir, config.workers, config.max_upload_mb) == ("0.0.0.0:6000", "/d", 3, 50)
    # A flag wins over its environment variable.
    assert parse_args(["--workers", "5", "--listen", "127.0.0.1:1"], env=env).workers == 5
    with pytest.raises(SystemExit):
        parse_args(["--tls-cert", "cert.pem"], env={})
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"], env={})


def test_limits_and_timeouts_from_flags_and_environment() -> None:
    env = {
        "CIPHERGRAD_REFRESH_TIMEOUT": "30",
        "CIPHERGRAD_STREAM_IDLE_TIMEOUT": "5.5",
        "CIPHERGRAD_MAX_STREAMS_PER_SESSION": "3",
        "CIPHERGRAD_MAX_JOBS_PER_SESSION": "2",
        "CIPHERGRAD_MAX_ANONYMOUS_STREAMS": "7",
        "CIPHERGRAD_MAX_INFLIGHT_MB": "256",
        "CIPHERGRAD_KEEPALIVE_SECONDS": "15",
    }
    config = parse_args([], env=env)
    assert (config.refresh_timeout, config.stream_idle_timeout, config.keepalive_seconds) == (30.0, 5.5, 15.0)
    assert (config.max_streams_per_session, config.max_jobs_per_session) == (3, 2)
    assert (config.max_anonymous_streams, config.max_inflight_mb) == (7, 256)
    assert parse_args(["--refresh-timeout", "2"], env=env).refresh_timeout == 2.0
    for bad in (["--refresh-timeout", "0"], ["--stream-idle-timeout", "nan"], ["--keepalive-seconds", "-1"],
                ["--max-streams-per-session", "0"], ["--max-inflight-mb", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad, env={})


def test_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # The certificate names localhost; the client trusts it as its CA.
    with (
        local_server(tmp_path / "data", tls_cert=str(cert), tls_key=str(key)) as server,
        Client(f"localhost:{server.port}", tls=str(cert)) as client,
    ):
        client.create_session(tiles=[Tile(4, 2)])
        assert client.get_session().session_id == client.session_id
