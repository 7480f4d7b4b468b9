"""The `hotline` command, run as a user runs it (a subprocess), on a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest


@pytest.fixture
def env(tmp_path):
    environment = dict(os.environ)
    environment.pop("HOTLINE_CONFIG", None)
    environment.pop("DATABASE_URL", None)
    environment["HOTLINE_GENERAL_DATA_DIR"] = str(tmp_path / "data")
    return environment


def hotline(env, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ivr.main", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_migrate_is_idempotent_and_reports_status(env):
    assert "applied: 0001_initial" in hotline(env, "migrate").stdout
    assert hotline(env, "migrate").stdout.strip() == "the database is up to date"
    status = hotline(env, "migrate", "--status")
    assert status.stdout.startswith("[x] 0001_initial")


def test_commands_refuse_an_unmigrated_database(env):
    result = hotline(env, "project", "create", "Acme", check=False)
    assert result.returncode == 1 and "run `hotline migrate`" in result.stderr


def test_project_and_key_then_serve(env):
    hotline(env, "migrate")
    project_id = hotline(env, "project", "create", "Acme").stdout.strip()
    uuid.UUID(project_id)
    assert project_id in hotline(env, "project", "list").stdout
    key = hotline(env, "apikey", "create", "--project", project_id, "--role", "owner").stdout.strip()
    assert key.startswith("hl_") and len(key) > 30
    # The key is stored hashed: it appears nowhere in the database file.
    db_bytes = b"".join(p.read_bytes() for p in (env_dir(env)).glob("hotline.db*"))
    assert key.encode() not in db_bytes

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ivr.main", "serve", "--api-only"],
                              env={**env, "HOTLINE_API_PORT": str(port)}, stderr=subprocess.PIPE, text=True)
    try:
        body = wait_for_json(f"http://127.0.0.1:{port}/api/incoming-call-policy/count", key, {"query": {}})
        assert body == {"count": 0}
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0, server.stderr.read()


def env_dir(env):
    from pathlib import Path

    return Path(env["HOTLINE_GENERAL_DATA_DIR"])


def wait_for_json(url: str, key: str, body: dict, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"ApiKey": key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return json.loads(resp.read())
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_apikey_errors(env):
    hotline(env, "migrate")
    project_id = hotline(env, "project", "create", "Acme").stdout.strip()
    bad = hotline(env, "apikey", "create", "--project", project_id, "--role", "owner", "--expires", "soon",
                  check=False)
    assert bad.returncode == 1 and "not an ISO 8601 date-time" in bad.stderr
    unknown = hotline(env, "apikey", "create", "--project", str(uuid.uuid4()), "--role", "viewer", check=False)
    assert unknown.returncode == 1 and "no project with id" in unknown.stderr
    neither = hotline(env, "apikey", "create", "--project", project_id, check=False)
    assert neither.returncode == 1 and "--role" in neither.stderr
    scoped = hotline(env, "apikey", "create", "--project", project_id, "--permission", "Read Incoming Call Log",
                     "--expires", "2030-01-01T00:00:00Z")
    assert scoped.stdout.startswith("hl_")


def test_configuration_errors_exit_2(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  port: nope\n")
    result = hotline(env, "--config", str(bad), "migrate", check=False)
    assert result.returncode == 2 and "api.port must be of type int" in result.stderr
    result = hotline({**env, "DATABASE_URL": "mysql://x/y"}, "migrate", check=False)
    assert result.returncode == 1 and "unsupported database URL scheme" in result.stderr


def test_config_prints_settings_with_secrets_masked(env):
    result = hotline({**env, "HOTLINE_ARI_PASSWORD": "hunter2"}, "config")
    printed = json.loads(result.stdout)
    assert printed["ari"]["password"] == "********" and "hunter2" not in result.stdout


def test_serve_refuses_to_start_without_speech_synthesis(env, tmp_path):
    """A controller that could only take silent calls must not start."""
    hotline(env, "migrate")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    result = subprocess.run([sys.executable, "-m", "ivr.main", "serve"], capture_output=True, text=True, timeout=60,
                            env={**env, "PATH": str(bin_dir), "HOTLINE_ARI_PASSWORD": "x",
                                 "HOTLINE_API_PORT": str(free_port()), "HOTLINE_CONTROLLER_PORT": str(free_port())})
    assert result.returncode == 1
    assert "the TTS engine needs `espeak-ng`, which is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_the_fastagi_server_without_its_secret(env):
    """Like a missing ARI password: FastAGI without agi.secret would let anybody who can connect run its
    routes (forge calls' logs, read the on-call numbers of a Dial, fake answers)."""
    hotline(env, "migrate")
    calls = {**env, "HOTLINE_CONTROLLER_ARI": "false", "HOTLINE_AMI_SECRET": "x", "HOTLINE_AMI_PORT": str(free_port()),
             "HOTLINE_AGI_PORT": str(free_port()), "HOTLINE_API_PORT": str(free_port()),
             "HOTLINE_CONTROLLER_PORT": str(free_port())}
    result = hotline(calls, "serve", check=False)
    assert result.returncode == 1, result.stderr
    assert "no FastAGI secret: set agi.secret (HOTLINE_AGI_SECRET)" in result.stderr
    assert "Traceback" not in result.stderr
    weak = hotline({**calls, "HOTLINE_AGI_SECRET": "secret"}, "serve", check=False)
    assert weak.returncode == 2 and "agi.secret must be 16 to 128" in weak.stderr, weak.stderr
    peers = hotline({**calls, "HOTLINE_AGI_SECRET": "cli-agi-secret-0123456789",
                     "HOTLINE_AGI_ALLOWED_PEERS": "asterisk"}, "serve", check=False)
    assert peers.returncode == 2 and "agi.allowed_peers: 'asterisk' is not an IP address" in peers.stderr, peers.stderr


def test_twilio_key_prints_a_fresh_fernet_key(env):
    from cryptography.fernet import Fernet

    first, second = (hotline(env, "twilio", "key").stdout.strip() for _ in range(2))
    assert first != second
    token = Fernet(first).encrypt(b"auth-token")
    assert Fernet(first).decrypt(token) == b"auth-token"


def test_asterisk_render_for_an_asterisk_run_elsewhere(env, tmp_path):
    """`hotline asterisk render`, and the same command alone (`python -m ivr.cli.asterisk`, what the
    docker-compose Asterisk image runs): secrets from the environment only when required."""
    out = tmp_path / "etc"
    missing = hotline(env, "asterisk", "render", str(out), "--require-secrets", check=False)
    assert missing.returncode == 2
    assert "HOTLINE_ARI_PASSWORD, HOTLINE_AMI_SECRET, HOTLINE_AGI_SECRET" in missing.stderr
    assert not out.exists() and not (tmp_path / "data" / "secrets.json").exists()

    package = tmp_path / "package-etc"
    package.mkdir()
    (package / "indications.conf").write_text("[general]\ncountry = us\n")
    env = dict(env, HOTLINE_ARI_PASSWORD="ari-pw-1", HOTLINE_AMI_SECRET="ami-pw-2",
               HOTLINE_AGI_SECRET="agi-secret-0123456789abcdef", HOTLINE_SIP_BIND="0.0.0.0")
    result = subprocess.run([sys.executable, "-m", "ivr.cli.asterisk", "render", str(out), "--require-secrets",
                             "--package-conf", str(package)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (out / "indications.conf").read_text() == "[general]\ncountry = us\n"
    assert "secret = ami-pw-2" in (out / "manager.conf").read_text()
    assert "bind = 0.0.0.0:5060" in (out / "pjsip.conf").read_text()
    assert oct((out / "ari.conf").stat().st_mode & 0o777) == "0o640"
    assert not (tmp_path / "data" / "secrets.json").exists()


def test_asterisk_ping_fails_when_nothing_answers(env):
    port = free_port()
    env = dict(env, HOTLINE_ARI_URL=f"http://127.0.0.1:{port}", HOTLINE_AMI_PORT=str(free_port()),
               HOTLINE_ARI_PASSWORD="x", HOTLINE_AMI_SECRET="y")
    result = subprocess.run([sys.executable, "-m", "ivr.cli.asterisk", "ping", "--timeout", "0.5"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"ARI  127.0.0.1:{port}  FAILING" in result.stdout and "AMI" in result.stdout
