"""`hotline serve` runs the REST API and the call services in two processes: no API request, however
slow, shares an event loop (or a GIL) with the calls. Run as a user runs it, without Asterisk (the
call services then keep retrying ARI and AMI, and say so in their readiness)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (OSError, ValueError):
        return None


def wait_for(predicate, timeout: float = 30.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a child belongs to the thread that forked it)."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(p) for p in fh.read().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return found


def nice_values(pid: int) -> list[int]:
    """The nice value of each thread of ``pid``."""
    values = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                values.append(int(fh.read().rsplit(")", 1)[1].split()[16]))
        except FileNotFoundError:
            pass
    return values


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


TWILIO_ACCOUNT, TWILIO_TOKEN, TWILIO_PUBLIC = "AC" + "3" * 32, "t" * 32, "https://hotline.example.test"


@pytest.fixture
def server(tmp_path):
    """`hotline serve` on free ports, stopped by its pid (and its call services with it)."""
    api, calls, agi = free_port(), free_port(), free_port()
    env = {**os.environ, "HOTLINE_GENERAL_DATA_DIR": str(tmp_path / "data"), "HOTLINE_API_PORT": str(api),
           "HOTLINE_CONTROLLER_PORT": str(calls), "HOTLINE_AGI_PORT": str(agi), "HOTLINE_ARI_URL": "http://127.0.0.1:9",
           "HOTLINE_AMI_PORT": "9", "HOTLINE_ARI_PASSWORD": "x", "HOTLINE_AMI_SECRET": "y", "HOTLINE_AGI_SECRET": "test-agi-secret-0123456789",
           "HOTLINE_TTS_CACHE_DIR": str(tmp_path / "sounds"), "HOTLINE_TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT,
           "HOTLINE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "HOTLINE_TWILIO_PUBLIC_URL": TWILIO_PUBLIC}
    env.pop("HOTLINE_CONFIG", None)
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "ivr.main", "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "ivr.main", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{api}/api/health"), what="the API answering")
        yield proc, api, calls, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_the_api_and_the_call_services_run_in_two_processes(server):
    proc, api, calls, _ = server
    [child] = wait_for(lambda: children(proc.pid), what="the call services starting")
    assert get(f"http://127.0.0.1:{calls}/api/health") == (200, {"status": "ok"})
    # A flood of API requests cannot take the CPU from the calls: the API runs api.nice (19) levels
    # below them; the spawner thread, which keeps the calls' priority for a restart, is the exception.
    api_threads = nice_values(proc.pid)
    assert api_threads.count(0) == 1 and set(api_threads) == {0, 19}, api_threads
    assert set(nice_values(child)) == {0}
    # The API's readiness includes the call services' own (here: no Asterisk to connect to).
    status, body = wait_for(lambda: (r := get(f"http://127.0.0.1:{api}/api/ready")) and "calls" in r[1]["checks"]
                            and r, what="the API reporting the call services")
    assert status == 503 and body["checks"]["database"] == {"ok": True}
    assert body["checks"]["calls"]["ok"] is False and "ari" in body["checks"]["calls"]["detail"]
    # The metrics live with the call services, on their own (loopback) port, not on the API's.
    with urllib.request.urlopen(f"http://127.0.0.1:{calls}/metrics", timeout=2) as resp:
        assert b"hotline_event_loop_lag_seconds" in resp.read()
    assert get(f"http://127.0.0.1:{api}/metrics")[0] == 404


def test_call_services_that_die_are_restarted_and_stop_with_serve(server):
    proc, api, calls, _ = server
    [child] = wait_for(lambda: children(proc.pid), what="the call services starting")
    wait_for(lambda: get(f"http://127.0.0.1:{calls}/api/health"), what="the call services answering")
    os.kill(child, signal.SIGKILL)
    [again] = wait_for(lambda: [p for p in children(proc.pid) if p != child and alive(p)], timeout=30,
                       what="the call services restarting")
    wait_for(lambda: get(f"http://127.0.0.1:{calls}/api/health"), what="the restarted call services answering")
    # Restarted by the API's process, whose priority is lowered: the new child still has the calls' own.
    assert set(nice_values(again)) == {0}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not alive(again), "the call services outlived `hotline serve`"
    assert "restarting them" in proc.stderr.read()


def test_the_data_directory_and_the_database_are_private(server):
    _, _, _, tmp_path = server
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("hotline.db", "secrets.json"):
        path = data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (data / "hotline.db").exists()


def twilio_post(port: int, path: str, params: dict, signed: bool) -> tuple[int, str]:
    from twilio.request_validator import RequestValidator

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_PUBLIC + path, params)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=urllib.parse.urlencode(params).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_twilio_webhooks_on_the_api_port_reach_the_call_services(server):
    """One public address: the API's process passes /twilio/* to the call services, which check the signature."""
    _, api, _, _ = server
    params = {"CallSid": "CA" + "0" * 32, "AccountSid": TWILIO_ACCOUNT, "From": "+14155550123", "To": "+12125550100"}
    status, body = twilio_post(api, "/twilio/voice", params, signed=True)
    assert status == 200 and "<Say" in body and "not in service" in body and "<Hangup" in body
    assert twilio_post(api, "/twilio/voice", params, signed=False)[0] == 403
