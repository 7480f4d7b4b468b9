"""The lab Asterisk: a real Asterisk 22 on any Debian machine, without Docker.

``hotline asterisk up`` builds (once, cached under ``asterisk.root``) a Debian root with
``debootstrap`` and installs Debian's ``asterisk`` package in it with apt, renders
``asterisk-conf/`` with this configuration's ports and credentials into an *instance*
directory inside that root, and runs Asterisk chrooted there as its own unprivileged
user, on loopback. Several instances (an operator's ``make run``, a test session) share
the root; each has its own configuration, run, log, spool and database directories
(``asterisk -C <instance>/etc/asterisk.conf``) and its own ports.

Processes are only ever stopped by the pid this module started (recorded with the
process start time, so a recycled pid is never signalled). Nothing is mounted: Asterisk
needs neither /proc nor a bind-mounted /dev in the root (debootstrap creates the few
device nodes it uses), so there is nothing to unmount or leak.

Python API (tests, ``make run``)::

    lab = Lab(config, instance="default")
    lab.up(test_routes=False)   # build if needed, (re)start if needed, wait for ARI/AMI/SIP
    lab.status()                # {"running": ..., "version": ..., "ari": {"ok": ...}, ...}
    lab.cli("core show channels")
    lab.down()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ivr.asterisk.dialplan import ari_address, find_moddir, ip_setting, package_default_files, render_config
from ivr import health
from ivr.config import Config, ConfigError, connect_host
from ivr.lab.processes import is_alive, port_free, read_state, start_time, stop_process
from ivr.lab.rootfs import (HOST_USER, RootBuilder, host_user, locked, passwd_entry, read_passwd, renumber_user,
                            fail, need_root)

log = logging.getLogger(__name__)

#: Where instances live, as Asterisk sees it (inside the root).
INSTANCES_IN_ROOT = "/var/lib/hotline/instances"

START_TIMEOUT = 60.0                     # seconds for ARI, AMI and SIP to answer
STOP_TIMEOUT = 15.0

_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


# ----------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------------- Lab

class Lab:
    """One lab Asterisk instance running from the shared cached root."""

    def __init__(self, config: Config, instance: str = "default",
                 progress: Callable[[str], None] | None = None):
        if not _INSTANCE_RE.match(instance):
            raise ConfigError(f"lab instance names are lower-case letters, digits, '-' and '_', got {instance!r}")
        self.config = config
        self.instance = instance
        self.root = Path(config.asterisk.root)
        self.progress = progress or (lambda message: log.info("%s", message))
        self.instance_in_root = f"{INSTANCES_IN_ROOT}/{instance}"
        self.instance_dir = self.root / self.instance_in_root.lstrip("/")
        self._proc: subprocess.Popen | None = None
        self.rootfs = RootBuilder(config, self.progress)

    # ---------------------------------------------------------------- paths and state
    @property
    def conf_in_root(self) -> str:
        return f"{self.instance_in_root}/etc/asterisk.conf"

    @property
    def log_dir(self) -> Path:
        return self.instance_dir / "log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def _state_path(self) -> Path:
        return self.instance_dir / "state.json"

    def _read_state(self) -> dict | None:
        return read_state(self._state_path)

    def root_ready(self) -> bool:
        return self.rootfs.root_ready()

    def root_info(self) -> dict:
        return self.rootfs.root_info()

    def ensure_root(self) -> bool:
        """Build the Debian root with Asterisk unless it is there. True if it was built."""
        return self.rootfs.ensure_root()

    def is_running(self) -> bool:
        return is_alive(self._read_state())

    @property
    def pid(self) -> int | None:
        state = self._read_state()
        return int(state["pid"]) if is_alive(state) else None

    # ------------------------------------------------------------------ preconditions
    # --------------------------------------------------------------------------- build
    # ---------------------------------------------------------------------------- up
    def up(self, test_routes: bool = False) -> dict:
        """Build the root if missing, start this instance (or keep it if already right), wait
        until ARI, AMI and SIP answer. Returns :meth:`status`."""
        need_root("starting the lab Asterisk")
        self.config = self.config.with_lab_secrets(create=True)
        self.ensure_root()
        uid, gid = self._ensure_user()
        with self._instance_lock():
            files = self._render(test_routes)
            digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
            state = self._read_state()
            if is_alive(state):
                if state.get("digest") == digest and self._answers_all():
                    self.progress(f"lab Asterisk {self.instance!r} is already running (pid {state['pid']})")
                    return self.status()
                self.progress(f"restarting lab Asterisk {self.instance!r} "
                              f"({'configuration changed' if state.get('digest') != digest else 'not answering'})")
                self._stop(state)
            elif state:
                self._state_path.unlink(missing_ok=True)
            self._check_ports()
            self._prepare_root(uid, gid)
            self._write_instance(files, uid, gid)
            self._start(uid, gid, digest, test_routes)
            self._wait_ready()
        return self.status()

    def _ensure_user(self) -> tuple[int, int]:
        """The uid/gid Asterisk runs as: the host's hotline-asterisk user, which the root's
        asterisk user is renumbered to (once)."""
        uid, gid = host_user()
        if passwd_entry(self.root, "asterisk") != (uid, gid):
            with locked(self.root.parent / f"{self.root.name}.lock"):
                if passwd_entry(self.root, "asterisk") != (uid, gid):
                    if any(Lab(self.config, inst.name).is_running()
                           for inst in (self.root / INSTANCES_IN_ROOT.lstrip("/")).glob("*")
                           if _INSTANCE_RE.match(inst.name)):
                        raise fail(f"the lab root's asterisk user must become {HOST_USER} (uid {uid}), "
                                   f"but lab instances are running: stop them with `hotline asterisk down`")
                    self.progress(f"the lab Asterisk runs as the system user {HOST_USER} (uid {uid})")
                    renumber_user(self.root, "asterisk", uid, gid)
        return uid, gid

    @contextlib.contextmanager
    def _instance_lock(self) -> Iterator[None]:
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.instance_dir / "lock", f"waiting for another command on instance {self.instance!r}",
                     self.progress):
            yield

    def _moddir(self) -> str:
        moddir = find_moddir(self.root)
        if moddir is None:
            raise fail(f"no Asterisk modules in {self.root}: the root is damaged; remove it and run "
                       f"`hotline asterisk up` again")
        return moddir

    def _render(self, test_routes: bool) -> dict[str, str]:
        files = render_config(self.config, test_routes=test_routes, instance_dir=self.instance_in_root,
                              moddir=self._moddir(), systemname=f"hotline-{self.instance}")
        files.update(package_default_files(self.root / "etc/asterisk"))
        return files

    def _check_ports(self) -> None:
        http_host, http_port = ari_address(self.config)
        checks = [
            ("tcp", http_host, http_port, "ari.url", "HOTLINE_ARI_URL"),
            ("tcp", ip_setting("ami.host", self.config.ami.host), int(self.config.ami.port), "ami.port", "HOTLINE_AMI_PORT"),
            ("udp", ip_setting("sip.bind", self.config.sip.bind), int(self.config.sip.port), "sip.port", "HOTLINE_SIP_PORT"),
        ]
        for proto, host, port, setting, env in checks:
            deadline = time.monotonic() + 3.0
            while not port_free(proto, host, port):
                if time.monotonic() > deadline:
                    raise fail(f"port {port}/{proto} on {host} is in use by another program, so the lab "
                               f"Asterisk cannot use it ({setting}); stop that program or set {env} "
                               f"to a free port")
                time.sleep(0.1)

    def _prepare_root(self, uid: int, gid: int) -> None:
        """Make the root independent of DNS, and create the prompts directory."""
        hostname = socket.gethostname()
        names = " ".join(dict.fromkeys(["localhost", hostname, hostname.split(".")[0]]))
        hosts = ("# Hotline lab: Asterisk must never need DNS. It looks up this machine's name when it\n"
                 "# picks its own address; an unresolvable name stalls every call setup.\n"
                 f"127.0.0.1\t{names}\n"
                 "::1\tlocalhost ip6-localhost ip6-loopback\n")
        resolv = ("# Hotline lab: no DNS server on purpose (see /etc/hosts); lookups fail fast.\n"
                  "options timeout:1 attempts:1\n")
        for rel, text in (("etc/hosts", hosts), ("etc/resolv.conf", resolv)):
            path = self.root / rel
            try:
                if path.is_file() and not path.is_symlink() and path.read_text() == text:
                    continue
            except OSError:
                pass
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            if path.is_symlink():
                path.unlink()
            os.replace(tmp, path)
        sounds = self.config.sounds_dir
        sounds.mkdir(parents=True, exist_ok=True)
        for parent in [sounds, *sounds.parents]:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            mode = parent.stat().st_mode & 0o777
            if mode & 0o005 != 0o005:
                os.chmod(parent, mode | 0o755)
        sudo_uid, sudo_gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
        if sudo_uid and sudo_gid and sounds.stat().st_uid == 0:
            # `sudo hotline asterisk up`: the operator's own controller writes the prompts.
            os.chown(sounds, int(sudo_uid), int(sudo_gid))
        if not sounds.is_relative_to(self.root) and not self.config.tts.asterisk_dir:
            log.warning("tts.cache_dir %s is outside the lab root %s: the lab Asterisk cannot read it",
                        sounds, self.root)

    def _write_instance(self, files: dict[str, str], uid: int, gid: int) -> None:
        inst = self.instance_dir
        # spool/recording: where ARI keeps recordings (contact-center calls) until Hotline fetches them.
        for sub in ("run", "log", "spool", "spool/recording", "db", "keys", "cache"):
            path = inst / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, 0o750)
        os.chmod(inst, 0o755)
        etc = inst / "etc"
        etc.mkdir(exist_ok=True)
        os.chown(etc, 0, gid)
        os.chmod(etc, 0o750)
        for stale in etc.iterdir():
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            path = etc / name
            tmp = etc / f".{name}.tmp"
            tmp.write_text(text)
            os.chown(tmp, 0, gid)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        # Stale runtime files of an instance that was killed.
        for leftover in ("asterisk.ctl", "asterisk.pid"):
            (inst / "run" / leftover).unlink(missing_ok=True)

    def _start(self, uid: int, gid: int, digest: str, test_routes: bool) -> None:
        console = open(self.console_log, "ab")
        os.chown(self.console_log, uid, gid)
        console.write(f"\n===== {time.strftime('%F %T')} hotline asterisk up "
                      f"(instance {self.instance}) =====\n".encode())
        console.flush()
        cmd = ["chroot", f"--userspec={uid}:{gid}", str(self.root),
               "/usr/sbin/asterisk", "-f", "-n", "-C", self.conf_in_root]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/asterisk", "LANG": "C.UTF-8",
               "TZ": os.environ.get("TZ", "UTC")}
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                    env=env, cwd="/", start_new_session=True, close_fds=True)
        finally:
            console.close()
        starttime = None
        for _ in range(100):
            starttime = start_time(proc.pid)
            if starttime is not None:
                break
            time.sleep(0.01)
        self._proc = proc
        state = {"pid": proc.pid, "starttime": starttime, "digest": digest, "test_routes": test_routes,
                 "started_at": time.time(), "instance": self.instance}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self._state_path)

    def _wait_ready(self) -> None:
        """Wait until ARI, SIP and AMI answer. Asterisk prints "Asterisk Ready." once every
        module is loaded: if something still does not answer a few seconds later, a module
        failed to load and waiting longer would not help."""
        deadline = time.monotonic() + START_TIMEOUT
        ready_at = None
        pending = {"ARI": self._check_ari, "SIP": self._check_sip, "AMI": self._check_ami}
        while pending:
            if self._proc is not None and self._proc.poll() is not None:
                raise fail(f"the lab Asterisk exited at startup (status {self._proc.returncode}). "
                           f"{self._log_tail()} (full log: {self.console_log})")
            for name, check in list(pending.items()):
                if check(timeout=0.5)["ok"]:
                    del pending[name]
            if not pending:
                break
            if ready_at is None and "Asterisk Ready." in self._startup_log():
                ready_at = time.monotonic()
            late = ready_at is not None and time.monotonic() - ready_at > 5.0
            if late or time.monotonic() > deadline:
                self._stop(self._read_state())
                raise fail(f"the lab Asterisk started but {', '.join(pending)} did not answer; it was "
                           f"stopped. {self._log_tail()} (full log: {self.console_log})")
            time.sleep(0.05)
        errors = [line for line in self._startup_log().splitlines() if "ERROR[" in line]
        if errors:
            log.warning("the lab Asterisk logged errors at startup (see %s): %s", self.console_log,
                        " | ".join(errors[-3:]))

    def _startup_log(self) -> str:
        """What Asterisk printed since the last start."""
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return text[text.rfind("===== "):]

    def _log_tail(self, lines: int = 4) -> str:
        text = self._startup_log().strip().splitlines()
        interesting = [line for line in text if "ERROR[" in line] or text
        return "Last lines: " + " | ".join(line.strip() for line in interesting[-lines:]) if text else "(no log)"

    # --------------------------------------------------------------------------- down
    def down(self) -> bool:
        """Stop this instance (only the process it started). True if one was running."""
        with self._instance_lock():
            state = self._read_state()
            if not state:
                return False
            was_running = is_alive(state)
            self._stop(state)
            return was_running

    def _stop(self, state: dict | None) -> None:
        if state and is_alive(state):
            self.progress(f"stopping lab Asterisk {self.instance!r} (pid {state['pid']})")
            stop_process(int(state["pid"]), state.get("starttime"), self._proc, STOP_TIMEOUT)
        self._proc = None
        self._state_path.unlink(missing_ok=True)
        for leftover in ("asterisk.ctl", "asterisk.pid"):
            with contextlib.suppress(OSError):
                (self.instance_dir / "run" / leftover).unlink()

    # ------------------------------------------------------------------------- status
    def status(self) -> dict:
        """What runs and what answers (never raises for a stopped lab)."""
        config = self.config.with_lab_secrets(create=False)
        state = self._read_state()
        running = is_alive(state)
        http_host, http_port = ari_address(config)
        ari = self._check_ari(config=config)
        ami, sip = self._check_ami(config=config), self._check_sip(config=config)
        if not running:
            for check in (ari, ami, sip):
                if check["ok"]:
                    check["detail"] += f", but not from instance {self.instance!r} (it is not running)"
        info = self.root_info()
        version = ari.pop("version", None) or info.get("version", "").replace("Asterisk ", "") or None
        return {
            "instance": self.instance,
            "root": str(self.root),
            "root_ready": self.root_ready(),
            "version": version,
            "running": running,
            "pid": int(state["pid"]) if running else None,
            "test_routes": bool(state and state.get("test_routes")) if running else None,
            "log_dir": str(self.log_dir),
            "ari": ari,
            "ami": ami,
            "sip": sip,
        }

    def _check_ari(self, timeout: float = 2.0, config: Config | None = None) -> dict:
        config = config or self.config
        host, port = ari_address(config)
        url = f"http://{connect_host(host)}:{port}"
        probe = health.ari_info(url, config.ari.username, config.ari.password, timeout)
        result: dict[str, Any] = {"url": url, "ok": probe.ok, "detail": probe.detail}
        if probe.ok:
            result["version"] = probe.extra.get("version")
        return result

    def _check_ami(self, timeout: float = 2.0, config: Config | None = None) -> dict:
        config = config or self.config
        host, port = connect_host(ip_setting("ami.host", config.ami.host)), int(config.ami.port)
        probe = health.ami_login(host, port, config.ami.username, config.ami.secret, timeout)
        return {"address": f"{host}:{port}", "ok": probe.ok, "detail": probe.detail}

    def _check_sip(self, timeout: float = 1.0, config: Config | None = None) -> dict:
        config = config or self.config
        host, port = connect_host(ip_setting("sip.bind", config.sip.bind)), int(config.sip.port)
        probe = health.sip_options(host, port, timeout)
        return {"address": f"udp {host}:{port}", "ok": probe.ok, "detail": probe.detail}

    def _answers_all(self) -> bool:
        return all(check(timeout=1.0)["ok"] for check in (self._check_ari, self._check_ami, self._check_sip))

    # ---------------------------------------------------------------------------- cli
    def cli(self, command: str, timeout: float = 30.0) -> str:
        """Run an Asterisk CLI command in this instance and return its output."""
        if not self.is_running():
            raise fail(f"the lab Asterisk (instance {self.instance!r}) is not running: run "
                       f"`hotline asterisk up`")
        need_root("the Asterisk CLI of the lab")
        uid, gid = read_passwd(self.root, "asterisk")
        cmd = ["chroot", f"--userspec={uid}:{gid}", str(self.root), "/usr/sbin/asterisk",
               "-C", self.conf_in_root, "-rx", command]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/asterisk"})
        except subprocess.TimeoutExpired:
            raise fail(f"the Asterisk CLI command {command!r} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise fail(f"the Asterisk CLI failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout


