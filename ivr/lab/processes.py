"""The processes the lab starts (Asterisk, Kamailio, a cluster's controllers), known by pid *and* start
time: a recycled pid is never taken for one of them, nor signalled. Their records are small JSON
state files ``{"pid": ..., "starttime": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, from /proc/PID/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(record: dict | None) -> bool:
    """The process a record names still runs (the same one: its start time matches)."""
    return bool(record) and start_time(int(record["pid"])) == record.get("starttime")


def read_state(path: Path) -> dict | None:
    """A JSON state file, None if missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def stop_process(pid: int, starttime: int | None, proc: subprocess.Popen | None = None,
                 timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``, the process ``pid`` if it is still the one that started at
    ``starttime`` (never a recycled pid); reaps it when it is this process's child. True if it was alive."""
    def alive() -> bool:
        if proc is not None and proc.pid == pid and proc.poll() is not None:
            return False
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return start_time(pid) == starttime

    if starttime is None or not alive():
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return True
            time.sleep(0.05)
    return not alive()


def port_free(proto: str, host: str, port: int) -> bool:
    """Nothing listens on ``proto`` (tcp or udp) ``host:port``."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()
