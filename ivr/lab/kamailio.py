"""Kamailio as the SIP entry point of several Asterisk nodes: its configuration, rendered from
``kamailio-conf/kamailio.cfg``, and the process, started and stopped by its pid.

Kamailio runs unprivileged (started by root, it drops to the lab's ``hotline-asterisk`` user with
``-u``/``-g`` once its configuration is read and its port bound; else it runs as the caller), in the foreground of its own session (``-DD``), with its own configuration (``-f``),
pid file (``-P``), runtime directory (``-Y``) and log (stderr to ``kamailio.log``), all under one
run directory: nothing in /etc, no systemd. It is stopped only by the pid it was started with,
checked against the process start time, so a recycled pid is never signalled.

    kam = Kamailio(run_dir, listen=("127.0.0.1", 5060), nodes=[("node1", "127.0.0.1", 5070), ...])
    kam.start()      # renders, checks the configuration (kamailio -c), starts, waits for OPTIONS
    kam.status()     # {"running": ..., "pid": ..., "sip": {...}, "nodes": [{"uri", "flags", "active"}]}
    kam.stop()
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ivr import health
from ivr.config import ConfigError
from ivr.lab.processes import is_alive, port_free, read_state, start_time, stop_process
from ivr.lab.rootfs import fail

#: Where the template lives (the repository's kamailio-conf/).
CONF_DIR = Path(os.environ.get("HOTLINE_KAMAILIO_CONF_DIR")
                or Path(__file__).resolve().parents[2] / "kamailio-conf")
PACKAGE_HINT = "install the Debian package kamailio (scripts/install-system-deps installs it)"
#: dispatcher's algorithms Hotline offers: name -> ds_select_dst's number.
ALGORITHMS = {"round-robin": "4", "hash-callid": "0"}
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Node:
    """An Asterisk node behind Kamailio: its name and SIP address."""

    name: str
    host: str
    port: int

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or ("/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None)
    if not path:
        raise fail(f"kamailio is not installed: {PACKAGE_HINT}")
    return path


def kamcmd_binary() -> str | None:
    return shutil.which("kamcmd") or ("/usr/sbin/kamcmd" if os.access("/usr/sbin/kamcmd", os.X_OK) else None)


def _ip(name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address("127.0.0.1" if value == "localhost" else value))
    except ValueError:
        raise ConfigError(f"{name} must be an IP address (Kamailio never uses DNS here), got {value!r}") from None


def _port(name: str, value) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number (1-65535), got {value!r}")
    return port


def render_kamailio(*, listen: tuple[str, int], nodes: list[Node], run_dir: Path, ping_interval: int = 1,
                    probing_threshold: int = 1, inactive_threshold: int = 1, invite_timeout: float = 2.0,
                    algorithm: str = "round-robin", children: int = 4, log_level: int = 1) -> dict[str, str]:
    """``kamailio.cfg`` and ``dispatcher.list`` for these nodes: {file name: text}."""
    if not nodes:
        raise ConfigError("Kamailio needs at least one Asterisk node to dispatch to")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown dispatching algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")
    if int(ping_interval) < 1:
        raise ConfigError("the OPTIONS probe interval is at least 1 s (dispatcher's ds_ping_interval)")
    host, port = _ip("the Kamailio listen address", listen[0]), _port("the Kamailio port", listen[1])
    lines = ["# Hotline's Asterisk nodes: set 1, one line per node (rendered by ivr/lab/kamailio.py).",
             "# setid destination flags priority attributes"]
    for node in nodes:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", node.name):
            raise ConfigError(f"a node name must be a simple name, got {node.name!r}")
        lines.append(f"1 sip:{_ip('a node address', node.host)}:{_port('a node port', node.port)} 0 0 "
                     f"duid={node.name}")
        if (_ip("a node address", node.host), node.port) == (host, port):
            raise ConfigError(f"node {node.name} and Kamailio cannot share {host}:{port}")
    values = {
        "listen_address": host,
        "listen_port": str(port),
        "dispatcher_list": str(run_dir / "dispatcher.list"),
        "ctl_socket": str(run_dir / "kamailio_ctl"),
        "ping_interval": str(int(ping_interval)),
        "probing_threshold": str(int(probing_threshold)),
        "inactive_threshold": str(int(inactive_threshold)),
        "fr_timer_ms": str(max(100, int(invite_timeout * 1000))),
        "max_attempts": str(len(nodes)),
        "algorithm": ALGORITHMS[algorithm],
        "algorithm_name": algorithm,
        "children": str(int(children)),
        "log_level": str(int(log_level)),
    }
    for name, value in values.items():
        if any(ch in value for ch in '"\r\n'):
            raise ConfigError(f"{name} must not contain quotes or line breaks: {value!r}")
    try:
        template = (CONF_DIR / "kamailio.cfg").read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the Kamailio template {CONF_DIR / 'kamailio.cfg'}: {exc.strerror} "
                          f"(set HOTLINE_KAMAILIO_CONF_DIR to the repository's kamailio-conf/)") from None

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"kamailio.cfg: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return {"kamailio.cfg": re.sub(r"\{\{\s*([a-z_]+)\s*\}\}", sub, template),
            "dispatcher.list": "\n".join(lines) + "\n"}


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) Kamailio drops to (``-u``/``-g``) once it has read its configuration and bound its
    port, when started by root: the lab's unprivileged system user. Its files stay root's, in the
    private data directory."""
    if os.geteuid() != 0:
        return None
    from ivr.lab.rootfs import host_user
    return host_user()


class Kamailio:
    """One Kamailio process in ``run_dir``, in front of ``nodes``."""

    def __init__(self, run_dir: Path, *, listen: tuple[str, int], nodes: list[Node], **options):
        self.run_dir = Path(run_dir)
        self.listen = (_ip("the Kamailio listen address", listen[0]), _port("the Kamailio port", listen[1]))
        self.nodes = nodes
        self.options = options
        self._proc: subprocess.Popen | None = None

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "kamailio.log"

    @property
    def ctl_socket(self) -> Path:
        return self.run_dir / "kamailio_ctl"

    def read_state(self) -> dict | None:
        return read_state(self.state_path)

    def is_running(self) -> bool:
        return is_alive(self.read_state())

    @property
    def pid(self) -> int | None:
        state = self.read_state()
        return int(state["pid"]) if is_alive(state) else None

    def render(self) -> dict[str, str]:
        return render_kamailio(listen=self.listen, nodes=self.nodes, run_dir=self.run_dir, **self.options)

    # ------------------------------------------------------------------------ start
    def start(self) -> dict:
        """Start Kamailio unless it already runs with this configuration (then keep it). Returns
        :meth:`status`."""
        binary = kamailio_binary()
        files = self.render()
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        state = self.read_state()
        if is_alive(state):
            if state.get("digest") == digest and self._answers():
                return self.status()
            self.stop()
        elif state:
            self.state_path.unlink(missing_ok=True)
        host, port = self.listen
        deadline = time.monotonic() + 3.0
        while not port_free("udp", host, port):
            if time.monotonic() > deadline:
                raise fail(f"port {port}/udp on {host} is in use by another program, so Kamailio cannot "
                           f"listen there; stop it or choose another port (--sip-port)")
            time.sleep(0.1)
        user = _run_as()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o750)
        for name, text in files.items():
            path = self.run_dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        for leftover in ("kamailio.pid", "kamailio_ctl"):
            (self.run_dir / leftover).unlink(missing_ok=True)
        cfg = self.run_dir / "kamailio.cfg"
        check = subprocess.run([binary, "-c", "-f", str(cfg), "-L", self._moddir()], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            errors = [line for line in (check.stderr + check.stdout).splitlines() if "ERROR" in line or "error" in line]
            raise fail(f"Kamailio refused its configuration {cfg}: {' | '.join(errors[-4:]) or check.stderr[-500:]}")
        cmd = [binary, "-DD", "-E", "-f", str(cfg), "-P", str(self.run_dir / "kamailio.pid"),
               "-Y", str(self.run_dir), "-w", str(self.run_dir), "-L", self._moddir(), "-m", "64", "-M", "8",
               *(["-u", str(user[0]), "-g", str(user[1])] if user else [])]
        log = open(self.log_path, "ab")
        try:
            log.write(f"\n===== {time.strftime('%F %T')} hotline: kamailio {' '.join(cmd[1:])} =====\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=str(self.run_dir), start_new_session=True, close_fds=True,
                                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        finally:
            log.close()
        starttime = None
        for _ in range(100):
            starttime = start_time(proc.pid)
            if starttime is not None:
                break
            time.sleep(0.01)
        self._proc = proc
        state = {"pid": proc.pid, "starttime": starttime, "digest": digest, "listen": list(self.listen),
                 "started_at": time.time()}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if proc.poll() is not None:
                self.state_path.unlink(missing_ok=True)
                raise fail(f"Kamailio exited at startup (status {proc.returncode}): {self._log_tail()} "
                           f"(full log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise fail(f"Kamailio started but did not answer OPTIONS on {host}:{port}; it was stopped. "
                           f"{self._log_tail()} (full log: {self.log_path})")
            time.sleep(0.05)
        return self.status()

    @staticmethod
    def _moddir() -> str:
        found = sorted(Path("/usr/lib").glob("*/kamailio/modules")) or sorted(Path("/usr/lib").glob("kamailio/modules"))
        if not found:
            raise fail(f"Kamailio's modules are missing (no /usr/lib/*/kamailio/modules): {PACKAGE_HINT}")
        return str(found[0])

    def _answers(self, timeout: float = 0.5) -> bool:
        return health.sip_options(*self.listen, timeout).ok

    def _log_tail(self, lines: int = 4) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = text[text.rfind("===== "):].strip().splitlines()[1:]
        interesting = [line for line in text if "ERROR" in line or "CRITICAL" in line] or text
        return "Last lines: " + " | ".join(line.strip() for line in interesting[-lines:]) if text else "(no log)"

    # ------------------------------------------------------------------------- stop
    def stop(self) -> bool:
        """Stop the Kamailio this object (or an earlier ``start``) started, by its pid. True if it ran."""
        state = self.read_state()
        running = is_alive(state)
        if running:
            stop_process(int(state["pid"]), state.get("starttime"), self._proc, STOP_TIMEOUT)
        self._proc = None
        self.state_path.unlink(missing_ok=True)
        for leftover in ("kamailio.pid", "kamailio_ctl"):
            with contextlib.suppress(OSError):
                (self.run_dir / leftover).unlink()
        return running

    # ----------------------------------------------------------------------- status
    def status(self) -> dict:
        state = self.read_state()
        running = is_alive(state)
        sip = health.sip_options(*self.listen, 1.0)
        return {"running": running, "pid": int(state["pid"]) if running else None,
                "address": f"udp {self.listen[0]}:{self.listen[1]}",
                "sip": {"ok": sip.ok, "detail": sip.detail}, "log": str(self.log_path),
                "nodes": self.dispatcher_view() if running else []}

    def dispatcher_view(self) -> list[dict]:
        """What Kamailio thinks of each node (``kamcmd dispatcher.list``): uri, flags, active."""
        kamcmd = kamcmd_binary()
        if not kamcmd or not self.ctl_socket.exists():
            return []
        try:
            out = subprocess.run([kamcmd, "-s", f"unix:{self.ctl_socket}", "dispatcher.list"], capture_output=True,
                                 text=True, timeout=3).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        nodes = []
        for uri, flags in re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out):
            nodes.append({"uri": uri, "flags": flags, "active": flags.startswith("A")})
        return nodes
