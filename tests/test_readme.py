"""The README's promises, checked: its first commands, and its "Using it" session run for real."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    first = blocks(README)[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert README.index("```sh") < README.index("##")  # before anything else
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_using_it_session_works(tmp_path):
    section = README.split("## Using it", 1)[1].split("\n## ", 1)[0]
    script = blocks(section)[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_") and k != "DATABASE_URL"}
    env.update(HOTLINE_GENERAL_DATA_DIR=str(tmp_path / "data"), HOTLINE_API_PORT=str(port))
    bin_dir = str(Path(sys.executable).parent)
    # The session as written, on this test's port and with this interpreter's `hotline`.
    script = script.replace("export PATH=$PWD/.venv/bin:$PATH", f"export PATH={bin_dir}:$PATH")
    script = script.replace("localhost:8080", f"localhost:{port}")
    subprocess.run([sys.executable, "-m", "ivr.main", "migrate"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "ivr.main", "serve", "--api-only"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.1)
        result = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=60,
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert '"routingPhoneNumber":"+14155550100"' in result.stdout
        assert '"slug":"database-on-call"' in result.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
