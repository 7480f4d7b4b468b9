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

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from ivr.errors import CommandError
from ivr.config import Config, ConfigError

log = logging.getLogger(__name__)

#: Where the templates live (the repository's asterisk-conf/).
CONF_DIR = Path(os.environ.get("HOTLINE_ASTERISK_CONF_DIR")
                or Path(__file__).resolve().parents[2] / "asterisk-conf")

#: Debian packages installed in the root.
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav")

#: Test sessions only: the loopback address whose calls reach the plain test routes
#: (asterisk-conf/lab/extensions_lab.conf) instead of the controller.
LAB_CALLER_ADDRESS = "127.0.0.3"

#: Where instances live, as Asterisk sees it (inside the root).
INSTANCES_IN_ROOT = "/var/lib/hotline/instances"

ROOT_MARKER = ".hotline-root.json"
#: The host's system user the lab Asterisk runs as (the root's `asterisk` user gets its
#: uid): a uid of its own, so that Asterisk shares no identity with a host service.
HOST_USER = "hotline-asterisk"
MIN_FREE_BYTES = 1_500_000_000          # the root takes about 700 MB, apt needs room too
BUILD_TIMEOUT = 1800                     # seconds, each of debootstrap and apt-get
START_TIMEOUT = 60.0                     # seconds for ARI, AMI and SIP to answer
STOP_TIMEOUT = 15.0
FALLBACK_DIAL_TIMEOUT = 30               # seconds the fallback number rings

_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_E164_RE = re.compile(r"^\+?[0-9]{3,15}$")
_SIP_URI_RE = re.compile(r"^sips?:[A-Za-z0-9_.!~*'()&=+$,;?/%:@\[\]-]+$")


def fail(message: str) -> CommandError:
    """A user-actionable failure: ``raise fail("...")`` (printed by ``hotline`` as one line)."""
    return CommandError(message)


# --------------------------------------------------------------------------- rendering

def _conf_value(name: str, value: Any) -> str:
    """A value safe to write after ``key =`` in an Asterisk configuration file."""
    text = str(value)
    if any(ch in text for ch in "\r\n;") or text != text.strip():
        raise ConfigError(f"{name} must not contain ';', line breaks or surrounding spaces "
                          f"(it is written into Asterisk's configuration)")
    return text


def _conf_name(name: str, value: str) -> str:
    if not _NAME_RE.match(value or ""):
        raise ConfigError(f"{name} must be a simple name (letters, digits, '_', '.', '-'), got {value!r}")
    return value


def _ip(name: str, value: str, allow_any: bool = True) -> str:
    if value == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address (the lab never uses DNS), got {value!r}") from None
    if addr.is_unspecified and not allow_any:
        raise ConfigError(f"{name} must be a concrete address, got {value!r}")
    return str(addr)


def connect_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def ari_address(config: Config) -> tuple[str, int]:
    url = urlsplit(config.ari.url)
    if url.scheme != "http":
        raise ConfigError(f"ari.url must be http://HOST:PORT for the lab Asterisk, got {config.ari.url!r}")
    host = _ip("ari.url host", url.hostname or "127.0.0.1")
    try:
        port = url.port or 80
    except ValueError:
        raise ConfigError(f"ari.url has an invalid port: {config.ari.url!r}") from None
    return host, port


def fallback_dial_string(config: Config) -> str:
    """The Dial() target of sip.fallback_number ('' when none)."""
    number = (config.sip.fallback_number or "").strip()
    if not number:
        return ""
    if number.startswith(("sip:", "sips:")):
        if not _SIP_URI_RE.match(number) or "," in number or ")" in number:
            raise ConfigError(f"sip.fallback_number is not a usable SIP URI: {number!r}")
        return f"PJSIP/hotline-direct/{number}"
    compact = re.sub(r"[\s().-]", "", number)
    if not _E164_RE.match(compact):
        raise ConfigError(f"sip.fallback_number must be an E.164 number or a sip: URI, got {number!r}")
    if not config.sip.outbound_trunk:
        raise ConfigError("sip.fallback_number is a phone number but sip.outbound_trunk is empty: "
                          "set the PJSIP endpoint of the carrier that dials it, or use a sip: URI")
    trunk = _conf_name("sip.outbound_trunk", config.sip.outbound_trunk)
    return f"PJSIP/{compact}@{trunk}"


def _template(name: str) -> str:
    path = CONF_DIR / name
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the Asterisk configuration template {path}: {exc.strerror} "
                          f"(set HOTLINE_ASTERISK_CONF_DIR to the repository's asterisk-conf/)") from None


def _fill(name: str, text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"{name}: unknown placeholder {{{{{key}}}}}")
        return values[key]
    return re.sub(r"\{\{\s*([a-z_]+)\s*\}\}", sub, text)


#: Core settings Hotline does not change: the Debian package's files, copied as they are
#: (tones by country, Stasis task pools, ...); without them Asterisk logs errors at startup.
PACKAGE_DEFAULT_FILES = ("indications.conf", "stasis.conf", "features.conf", "acl.conf", "udptl.conf",
                         "pjproject.conf", "ccss.conf", "cel.conf", "websocket_client.conf")

MAIN_FILES = ("http.conf", "ari.conf", "manager.conf", "pjsip.conf", "extensions.conf",
              "modules.conf", "rtp.conf", "logger.conf", "cdr.conf")
LAB_FILES = ("pjsip_lab.conf", "extensions_lab.conf")


def render_config(config: Config, *, test_routes: bool = False, instance_dir: str | None = None,
                  moddir: str = "/usr/lib/x86_64-linux-gnu/asterisk/modules",
                  systemname: str = "hotline") -> dict[str, str]:
    """Asterisk's configuration files for ``config``: {file name: text}.

    ``config`` must carry its secrets (``config.with_lab_secrets(create=True)``).
    ``instance_dir`` (the instance directory as Asterisk sees it) adds the lab's
    asterisk.conf; ``test_routes`` adds the lab's test-only routes.
    """
    if not config.ari.password or not config.ami.secret:
        raise ConfigError("ari.password and ami.secret are empty: use config.with_lab_secrets(create=True) "
                          "or set HOTLINE_ARI_PASSWORD / HOTLINE_AMI_SECRET")
    http_host, http_port = ari_address(config)
    trunk_lines = []
    for address in config.sip.trunk_addresses:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(f"sip.trunk_addresses: {address!r} is not an IP address or network "
                              f"(the trunk is identified by address; names would need DNS)") from None
        trunk_lines.append(f"match = {network}")
    if not trunk_lines:
        trunk_lines.append("; (sip.trunk_addresses is empty: no inbound call is accepted)")
        trunk_lines.append("match = 192.0.2.1/32")

    outbound = "; sip.outbound_trunk is empty: only SIP URIs can be rung."
    if config.sip.outbound_trunk:
        trunk = _conf_name("sip.outbound_trunk", config.sip.outbound_trunk)
        contact = (config.sip.outbound_trunk_contact or "").strip()
        if contact:
            if not _SIP_URI_RE.match(contact):
                raise ConfigError(f"sip.outbound_trunk_contact must be a sip: URI, got {contact!r}")
            outbound = "\n".join([
                f"; The outbound trunk {trunk!r} (sip.outbound_trunk), towards",
                "; sip.outbound_trunk_contact.",
                f"[{trunk}](hotline-outbound-trunk)",
                f"aors = {trunk}",
                "",
                f"[{trunk}]",
                "type = aor",
                f"contact = {contact}",
            ])
        else:
            outbound = (f"; sip.outbound_trunk = {trunk}: define the endpoint {trunk!r} from the template\n"
                        f"; above (sip.outbound_trunk_contact defines it in the lab).")

    ami_bind = _ip("ami.host", config.ami.host)
    values = {
        "http_bind": http_host,
        "http_port": str(http_port),
        "ari_username": _conf_name("ari.username", config.ari.username),
        "ari_password": _conf_value("ari.password", config.ari.password),
        "ari_app": _conf_name("ari.app", config.ari.app),
        "ami_bind": ami_bind,
        "ami_port": str(int(config.ami.port)),
        "ami_username": _conf_name("ami.username", config.ami.username),
        "ami_secret": _conf_value("ami.secret", config.ami.secret),
        "agi_host": connect_host(_ip("agi.host", config.agi.host)),
        "agi_port": str(int(config.agi.port)),
        "sip_bind": _ip("sip.bind", config.sip.bind),
        "sip_port": str(int(config.sip.port)),
        "trunk_matches": "\n".join(trunk_lines),
        "outbound_trunk": outbound,
        "rtp_start": str(int(config.sip.rtp_start)),
        "rtp_end": str(int(config.sip.rtp_end)),
        "fallback_dial": fallback_dial_string(config),
        "fallback_timeout": str(FALLBACK_DIAL_TIMEOUT),
        "lab_caller_address": LAB_CALLER_ADDRESS,
        "inst": instance_dir or "",
        "moddir": moddir,
        "systemname": _conf_name("instance", systemname),
    }
    files: dict[str, str] = {}
    for name in MAIN_FILES:
        text = _template(name)
        include = ""
        if test_routes and name in ("pjsip.conf", "extensions.conf"):
            lab_file = name.replace(".conf", "_lab.conf")
            include = f"; Test sessions only (Lab.up(test_routes=True)):\n#include {lab_file}"
        values["lab_include"] = include
        files[name] = _fill(name, text, values)
    if test_routes:
        for name in LAB_FILES:
            files[name] = _fill(name, _template(f"lab/{name}"), values)
    if instance_dir:
        files["asterisk.conf"] = _fill("asterisk.conf", _template("lab/asterisk.conf"), values)
    return files


# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _locked(path: Path, waiting_message: str | None = None,
            progress: Callable[[str], None] | None = None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting_message and progress:
                progress(waiting_message)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _safe_rmtree(path: Path) -> None:
    """Remove a directory tree without ever crossing into a mounted file system."""
    if not path.exists():
        return
    top_dev = os.lstat(path).st_dev
    with open("/proc/mounts") as fh:
        mounts = [line.split()[1].replace("\\040", " ") for line in fh]
    prefix = str(path.resolve()).rstrip("/") + "/"
    inside = [m for m in mounts if m.startswith(prefix)]
    if inside:
        raise fail(f"cannot remove {path}: file systems are mounted inside it ({', '.join(inside)}); "
                   f"unmount them first")

    for dirpath, dirnames, _files in os.walk(path):
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            st = os.lstat(full)
            if st.st_dev != top_dev:
                raise fail(f"cannot remove {path}: {full} is another file system")
    shutil.rmtree(path)


def _proc_start_time(pid: int) -> int | None:
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


def _port_free(proto: str, host: str, port: int) -> bool:
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


def _passwd_entry(root: Path, user: str) -> tuple[int, int] | None:
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                return int(parts[2]), int(parts[3])
    except OSError:
        pass
    return None


def _read_passwd(root: Path, user: str) -> tuple[int, int]:
    entry = _passwd_entry(root, user)
    if entry is None:
        raise fail(f"the lab root {root} has no user {user!r}: it is damaged; remove {root} and run "
                   f"`hotline asterisk up` again")
    return entry


def _host_user() -> tuple[int, int]:
    """The host's ``hotline-asterisk`` system user (created when missing): (uid, gid)."""
    import pwd
    try:
        entry = pwd.getpwnam(HOST_USER)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
           "--shell", "/usr/sbin/nologin", "--comment", "Hotline lab Asterisk", HOST_USER]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise fail(f"cannot create the system user {HOST_USER} the lab Asterisk runs as ({exc}); "
                   f"create it yourself: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise fail(f"cannot create the system user {HOST_USER} the lab Asterisk runs as "
                   f"({proc.stderr.strip()}); create it yourself: {' '.join(cmd)}")
    entry = pwd.getpwnam(HOST_USER)
    return entry.pw_uid, entry.pw_gid


def _renumber_user(root: Path, user: str, uid: int, gid: int) -> None:
    """Give the root's ``user`` (and its group) the ids ``uid``/``gid``, files included."""
    old = _read_passwd(root, user)
    if old == (uid, gid):
        return
    for rel, new_id, field in (("etc/passwd", uid, 2), ("etc/group", gid, 2)):
        path = root / rel
        lines = path.read_text().splitlines()
        for line in lines:
            parts = line.split(":")
            if parts[0] != user and parts[field] == str(new_id):
                raise fail(f"cannot give the lab's {user} user id {new_id}: {rel} in {root} already "
                           f"uses it for {parts[0]!r}")
        out = []
        for line in lines:
            parts = line.split(":")
            if parts[0] == user:
                parts[field] = str(new_id)
                if rel == "etc/passwd":
                    parts[3] = str(gid)
            out.append(":".join(parts))
        path.write_text("\n".join(out) + "\n")
    old_uid, old_gid = old
    top_dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == top_dev]
        for name in [*dirnames, *filenames, "."]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if st.st_uid == old_uid or st.st_gid == old_gid:
                mode = st.st_mode
                os.lchown(full, uid if st.st_uid == old_uid else -1, gid if st.st_gid == old_gid else -1)
                if not os.path.islink(full) and mode & 0o6000:
                    os.chmod(full, mode & 0o7777)  # chown clears setuid/setgid bits


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
        try:
            return json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, state: dict | None) -> bool:
        if not state:
            return False
        return _proc_start_time(int(state["pid"])) == state.get("starttime")

    def root_ready(self) -> bool:
        return (self.root / ROOT_MARKER).is_file()

    def root_info(self) -> dict:
        try:
            return json.loads((self.root / ROOT_MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def is_running(self) -> bool:
        return self._alive(self._read_state())

    @property
    def pid(self) -> int | None:
        state = self._read_state()
        return int(state["pid"]) if self._alive(state) else None

    # ------------------------------------------------------------------ preconditions
    @staticmethod
    def _need_root(action: str) -> None:
        if os.geteuid() != 0:
            raise fail(f"{action} needs root (debootstrap and chroot): run it with sudo, "
                       f"e.g. `sudo hotline asterisk up`")

    def _check_disk(self) -> None:
        parent = self.root.parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if free < MIN_FREE_BYTES:
            raise fail(f"not enough disk space in {parent} to build the lab Asterisk: "
                       f"{free // 1_000_000} MB free, about {MIN_FREE_BYTES // 1_000_000} MB needed; "
                       f"free some space or set asterisk.root (HOTLINE_ASTERISK_ROOT) to another disk")

    # --------------------------------------------------------------------------- build
    def ensure_root(self) -> bool:
        """Build the Debian root with Asterisk unless it is there. True if it was built."""
        if self.root_ready():
            return False
        self._need_root("building the lab Asterisk")
        lock = self.root.parent / f"{self.root.name}.lock"
        with _locked(lock, f"waiting for another `hotline asterisk up` building {self.root}", self.progress):
            if self.root_ready():
                return False
            if self.root.exists():
                raise fail(f"{self.root} exists but is not a finished lab root (no {ROOT_MARKER}); "
                           f"remove it and run `hotline asterisk up` again")
            self._build()
        return True

    def _build(self) -> None:
        self._check_disk()
        if not shutil.which("debootstrap"):
            raise fail("debootstrap is not installed: run `apt-get install debootstrap` "
                       "(or `make system-deps`)")
        tmp = self.root.parent / f"{self.root.name}.building"
        _safe_rmtree(tmp)
        try:
            self._build_in(tmp)
        except BaseException:
            with contextlib.suppress(Exception):
                _safe_rmtree(tmp)  # a half-built root is worth nothing; the log stays
            raise

    def _build_in(self, tmp: Path) -> None:
        build_log = self.root.parent / f"{self.root.name}.build.log"
        suite = self.config.asterisk.suite
        mirror = self.config.asterisk.mirror
        started = time.monotonic()
        with open(build_log, "w") as logfh:
            self.progress(f"building the lab Asterisk root in {self.root} "
                          f"(debootstrap {suite}, then apt-get install asterisk; about a minute)")
            cmd = ["debootstrap", "--variant=minbase", suite, str(tmp)]
            if mirror:
                cmd.append(mirror)
            self._run_build_step(cmd, logfh, build_log, "debootstrap")
            (tmp / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\n# Hotline lab: never start services.\nexit 101\n")
            os.chmod(tmp / "usr/sbin/policy-rc.d", 0o755)
            apt = ["apt-get", "-q", "-o", "Acquire::Check-Valid-Until=false", "-o", "Dpkg::Use-Pty=0"]
            self._run_build_step(["chroot", str(tmp), *apt, "update"], logfh, build_log, "apt-get update")
            self._run_build_step(["chroot", str(tmp), *apt, "install", "-y", "--no-install-recommends",
                                  *PACKAGES], logfh, build_log, "apt-get install")
            self._run_build_step(["chroot", str(tmp), "apt-get", "clean"], logfh, build_log, "apt-get clean")
            for lists in (tmp / "var/lib/apt/lists").glob("*_*"):
                lists.unlink()
            version = subprocess.run(["chroot", str(tmp), "/usr/sbin/asterisk", "-V"], capture_output=True,
                                     text=True, timeout=30).stdout.strip()
            if not version.startswith("Asterisk"):
                raise fail(f"Asterisk was installed in {tmp} but does not run (`asterisk -V` said "
                           f"{version!r}); see {build_log}")
            # Asterisk runs as a uid of its own on this machine (see HOST_USER).
            _renumber_user(tmp, "asterisk", *_host_user())
            info = {"suite": suite, "mirror": mirror or "default", "packages": list(PACKAGES),
                    "version": version, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "build_seconds": round(time.monotonic() - started, 1)}
            (tmp / ROOT_MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.rename(tmp, self.root)
        self.progress(f"built {version} in {time.monotonic() - started:.0f} s")

    def _run_build_step(self, cmd: list[str], logfh, build_log: Path, what: str) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root",
               "DEBIAN_FRONTEND": "noninteractive"}
        for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
            if key in os.environ:
                env[key] = os.environ[key]
        logfh.write(f"$ {' '.join(cmd)}\n")
        logfh.flush()
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise fail(f"{what} did not finish within {BUILD_TIMEOUT} s (slow network?); see {build_log}") from None
        elapsed = time.monotonic() - started
        logfh.write(proc.stdout)
        logfh.write(f"# {what}: exit {proc.returncode} after {elapsed:.1f} s\n")
        logfh.flush()
        log.info("%s took %.1f s", what, elapsed)
        if proc.returncode == 0:
            return
        out = proc.stdout
        tail = " | ".join(line.strip() for line in out.strip().splitlines()[-3:])
        mirror = self.config.asterisk.mirror or "deb.debian.org"
        network = ("Failed getting release file", "Couldn't download", "Failed to fetch",
                   "Temporary failure resolving", "Could not resolve", "Connection failed",
                   "Unable to connect", "Network is unreachable", "Could not connect")
        if any(marker in out for marker in network):
            raise fail(f"{what} cannot download Debian packages from {mirror} ({tail}). Check this "
                       f"machine's network and proxy (http_proxy), or set asterisk.mirror "
                       f"(HOTLINE_ASTERISK_MIRROR) to a reachable Debian mirror. Log: {build_log}")
        if "No space left on device" in out:
            raise fail(f"{what} ran out of disk space in {self.root.parent}; free some space or set "
                       f"asterisk.root (HOTLINE_ASTERISK_ROOT). Log: {build_log}")
        raise fail(f"{what} failed ({tail}); log: {build_log}")

    # ---------------------------------------------------------------------------- up
    def up(self, test_routes: bool = False) -> dict:
        """Build the root if missing, start this instance (or keep it if already right), wait
        until ARI, AMI and SIP answer. Returns :meth:`status`."""
        self._need_root("starting the lab Asterisk")
        self.config = self.config.with_lab_secrets(create=True)
        self.ensure_root()
        uid, gid = self._ensure_user()
        with self._instance_lock():
            files = self._render(test_routes)
            digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
            state = self._read_state()
            if self._alive(state):
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
        uid, gid = _host_user()
        if _passwd_entry(self.root, "asterisk") != (uid, gid):
            with _locked(self.root.parent / f"{self.root.name}.lock"):
                if _passwd_entry(self.root, "asterisk") != (uid, gid):
                    if any(Lab(self.config, inst.name)._alive(Lab(self.config, inst.name)._read_state())
                           for inst in (self.root / INSTANCES_IN_ROOT.lstrip("/")).glob("*")
                           if _INSTANCE_RE.match(inst.name)):
                        raise fail(f"the lab root's asterisk user must become {HOST_USER} (uid {uid}), "
                                   f"but lab instances are running: stop them with `hotline asterisk down`")
                    self.progress(f"the lab Asterisk runs as the system user {HOST_USER} (uid {uid})")
                    _renumber_user(self.root, "asterisk", uid, gid)
        return uid, gid

    @contextlib.contextmanager
    def _instance_lock(self) -> Iterator[None]:
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.instance_dir / "lock", f"waiting for another command on instance {self.instance!r}",
                     self.progress):
            yield

    def _moddir(self) -> str:
        found = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if not found:
            raise fail(f"no Asterisk modules in {self.root}: the root is damaged; remove it and run "
                       f"`hotline asterisk up` again")
        return "/" + str(found[0].relative_to(self.root))

    def _render(self, test_routes: bool) -> dict[str, str]:
        files = render_config(self.config, test_routes=test_routes, instance_dir=self.instance_in_root,
                              moddir=self._moddir(), systemname=f"hotline-{self.instance}")
        for name in PACKAGE_DEFAULT_FILES:
            path = self.root / "etc/asterisk" / name
            if path.is_file():
                files[name] = path.read_text()
        return files

    def _check_ports(self) -> None:
        http_host, http_port = ari_address(self.config)
        checks = [
            ("tcp", http_host, http_port, "ari.url", "HOTLINE_ARI_URL"),
            ("tcp", _ip("ami.host", self.config.ami.host), int(self.config.ami.port), "ami.port", "HOTLINE_AMI_PORT"),
            ("udp", _ip("sip.bind", self.config.sip.bind), int(self.config.sip.port), "sip.port", "HOTLINE_SIP_PORT"),
        ]
        for proto, host, port, setting, env in checks:
            deadline = time.monotonic() + 3.0
            while not _port_free(proto, host, port):
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
        for sub in ("run", "log", "spool", "db", "keys", "cache"):
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
            starttime = _proc_start_time(proc.pid)
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
            was_running = self._alive(state)
            self._stop(state)
            return was_running

    def _stop(self, state: dict | None) -> None:
        if state and self._alive(state):
            pid = int(state["pid"])
            self.progress(f"stopping lab Asterisk {self.instance!r} (pid {pid})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(state, STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(state, 5.0)
        self._state_path.unlink(missing_ok=True)
        for leftover in ("asterisk.ctl", "asterisk.pid"):
            with contextlib.suppress(OSError):
                (self.instance_dir / "run" / leftover).unlink()

    def _wait_gone(self, state: dict, timeout: float) -> bool:
        pid = int(state["pid"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.05)
                    self._proc = None
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not self._alive(state):
                return True
            time.sleep(0.05)
        return not self._alive(state)

    # ------------------------------------------------------------------------- status
    def status(self) -> dict:
        """What runs and what answers (never raises for a stopped lab)."""
        config = self.config.with_lab_secrets(create=False)
        state = self._read_state()
        running = self._alive(state)
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
        url = f"http://{connect_host(host)}:{port}/ari/asterisk/info"
        result: dict[str, Any] = {"url": f"http://{connect_host(host)}:{port}", "ok": False}
        token = base64.b64encode(f"{config.ari.username}:{config.ari.password}".encode()).decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body = json.loads(resp.read() or b"{}")
            result.update(ok=True, detail="answers")
            result["version"] = body.get("system", {}).get("version")
        except urllib.error.HTTPError as exc:
            result["detail"] = ("answers, but refuses the credentials" if exc.code == 401
                                else f"answers HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            result["detail"] = f"no answer ({getattr(exc, 'reason', exc)})"
        return result

    def _check_ami(self, timeout: float = 2.0, config: Config | None = None) -> dict:
        config = config or self.config
        host, port = connect_host(_ip("ami.host", config.ami.host)), int(config.ami.port)
        result: dict[str, Any] = {"address": f"{host}:{port}", "ok": False}
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                banner = sock.recv(256).decode(errors="replace").strip()
                if not banner.startswith("Asterisk Call Manager"):
                    result["detail"] = f"unexpected banner {banner[:40]!r}"
                    return result
                action_id = uuid.uuid4().hex
                sock.sendall((f"Action: Login\r\nActionID: {action_id}\r\nUsername: {config.ami.username}\r\n"
                              f"Secret: {config.ami.secret}\r\nEvents: off\r\n\r\n").encode())
                reply = b""
                while b"\r\n\r\n" not in reply:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                if b"Response: Success" in reply:
                    result.update(ok=True, detail="answers (login accepted)")
                    with contextlib.suppress(OSError):
                        sock.sendall(b"Action: Logoff\r\n\r\n")
                else:
                    result["detail"] = "answers, but refuses the credentials"
        except OSError as exc:
            result["detail"] = f"no answer ({exc})"
        return result

    def _check_sip(self, timeout: float = 1.0, config: Config | None = None) -> dict:
        config = config or self.config
        host, port = connect_host(_ip("sip.bind", config.sip.bind)), int(config.sip.port)
        result: dict[str, Any] = {"address": f"udp {host}:{port}", "ok": False}
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(timeout)
            lport = sock.getsockname()[1]
            branch = "z9hG4bK" + uuid.uuid4().hex[:16]
            call_id = uuid.uuid4().hex
            msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:status@127.0.0.1>;tag={call_id[:8]}\r\n"
                   f"To: <sip:{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                   f"Content-Length: 0\r\n\r\n")
            sock.connect((host, port))  # so that "port unreachable" is reported at once
            sock.send(msg.encode())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(65535)
                first = data.split(b"\r\n", 1)[0].decode(errors="replace")
                if first.startswith("SIP/2.0 ") and call_id.encode() in data:
                    result.update(ok=True, detail=f"answers ({first[8:]})")
                    return result
            result["detail"] = "no answer"
        except OSError as exc:
            result["detail"] = f"no answer ({exc})"
        finally:
            sock.close()
        return result

    def _answers_all(self) -> bool:
        return all(check(timeout=1.0)["ok"] for check in (self._check_ari, self._check_ami, self._check_sip))

    # ---------------------------------------------------------------------------- cli
    def cli(self, command: str, timeout: float = 30.0) -> str:
        """Run an Asterisk CLI command in this instance and return its output."""
        if not self.is_running():
            raise fail(f"the lab Asterisk (instance {self.instance!r}) is not running: run "
                       f"`hotline asterisk up`")
        self._need_root("the Asterisk CLI of the lab")
        uid, gid = _read_passwd(self.root, "asterisk")
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


# -------------------------------------------------------------------------------- CLI

def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "asterisk", help="the lab Asterisk: up, down, status, cli",
        description="A real Asterisk for development and tests, in a cached Debian root "
                    "(built with debootstrap on first use; needs root).")
    sub = parser.add_subparsers(dest="asterisk_command", metavar="ACTION")
    sub.required = True

    def instance_arg(p):
        p.add_argument("--instance", default="default", metavar="NAME",
                       help="lab instance (several can run side by side on different ports); default: default")

    p = sub.add_parser("up", help="build if needed, start, wait until ARI answers (idempotent)")
    instance_arg(p)
    p.add_argument("--test-routes", action="store_true",
                   help="also load the plain test routes used by the test harness and benchmarks")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop the Asterisk this command started")
    instance_arg(p)
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="version, and whether ARI, AMI and SIP answer")
    instance_arg(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("cli", help='run an Asterisk CLI command, e.g. "core show channels"')
    instance_arg(p)
    p.add_argument("cli_command", metavar="COMMAND", help="the command, quoted")
    p.set_defaults(func=_cmd_cli)

    p = sub.add_parser("render", help="write the rendered Asterisk configuration to a directory "
                                      "(for an Asterisk you run yourself)")
    p.add_argument("directory", help="where to write the .conf files")
    p.set_defaults(func=_cmd_render)


def _progress(message: str) -> None:
    print(f"hotline: {message}", file=sys.stderr, flush=True)


def _print_status(status: dict) -> None:
    state = (f"running, pid {status['pid']}" if status["running"] else "not running")
    version = status["version"] or "unknown version"
    print(f"Asterisk {version} - lab instance {status['instance']!r}: {state}")
    print(f"  root  {status['root']}{'' if status['root_ready'] else ' (not built yet)'}")
    print(f"  ARI   {status['ari']['url']:<28} {status['ari'].get('detail', '')}")
    print(f"  AMI   {status['ami']['address']:<28} {status['ami'].get('detail', '')}")
    print(f"  SIP   {status['sip']['address']:<28} {status['sip'].get('detail', '')}")
    print(f"  logs  {status['log_dir']}")


def _cmd_up(config: Config, args) -> int:
    started = time.monotonic()
    status = Lab(config, args.instance, progress=_progress).up(test_routes=args.test_routes)
    _print_status(status)
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


def _cmd_down(config: Config, args) -> int:
    stopped = Lab(config, args.instance, progress=_progress).down()
    print(f"lab Asterisk {args.instance!r} {'stopped' if stopped else 'was not running'}")
    return 0


def _cmd_status(config: Config, args) -> int:
    status = Lab(config, args.instance).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    ok = status["running"] and all(status[k]["ok"] for k in ("ari", "ami", "sip"))
    return 0 if ok else 1


def _cmd_cli(config: Config, args) -> int:
    sys.stdout.write(Lab(config, args.instance).cli(args.cli_command))
    return 0


def _cmd_render(config: Config, args) -> int:
    files = render_config(config.with_lab_secrets(create=True))
    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    print(f"wrote {', '.join(sorted(files))} to {out}")
    return 0
