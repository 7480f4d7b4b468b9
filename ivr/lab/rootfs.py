"""The lab's Debian root: built once with debootstrap and apt (Debian's ``asterisk`` package), cached
under ``asterisk.root`` and shared by every lab instance. Building needs root; a half-built root is
removed, never used; file systems mounted inside a root are never crossed when removing one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

from ivr.config import Config
from ivr.errors import CommandError

log = logging.getLogger(__name__)

#: Debian packages installed in the root.
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav")
ROOT_MARKER = ".hotline-root.json"
#: The system user the lab Asterisk runs as on this machine (the root's asterisk user gets its ids).
HOST_USER = "hotline-asterisk"
MIN_FREE_BYTES = 1_500_000_000          # the root takes about 700 MB, apt needs room too
BUILD_TIMEOUT = 1800                     # seconds, each of debootstrap and apt-get


def fail(message: str) -> CommandError:
    """A user-actionable failure: ``raise fail("...")`` (printed by ``hotline`` as one line)."""
    return CommandError(message)


def need_root(action: str) -> None:
    if os.geteuid() != 0:
        raise fail(f"{action} needs root (debootstrap and chroot): run it with sudo, "
                   f"e.g. `sudo hotline asterisk up`")


@contextlib.contextmanager
def locked(path: Path, waiting_message: str | None = None,
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


def safe_rmtree(path: Path) -> None:
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


def passwd_entry(root: Path, user: str) -> tuple[int, int] | None:
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                return int(parts[2]), int(parts[3])
    except OSError:
        pass
    return None


def read_passwd(root: Path, user: str) -> tuple[int, int]:
    entry = passwd_entry(root, user)
    if entry is None:
        raise fail(f"the lab root {root} has no user {user!r}: it is damaged; remove {root} and run "
                   f"`hotline asterisk up` again")
    return entry


def host_user() -> tuple[int, int]:
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


def renumber_user(root: Path, user: str, uid: int, gid: int) -> None:
    """Give the root's ``user`` (and its group) the ids ``uid``/``gid``, files included."""
    old = read_passwd(root, user)
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


class RootBuilder:
    """The cached Debian root with Asterisk, built on first use."""

    def __init__(self, config: Config, progress: Callable[[str], None] | None = None):
        self.config = config
        self.root = Path(config.asterisk.root)
        self.progress = progress or (lambda message: log.info("%s", message))

    def root_ready(self) -> bool:
        return (self.root / ROOT_MARKER).is_file()

    def root_info(self) -> dict:
        try:
            return json.loads((self.root / ROOT_MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def _check_disk(self) -> None:
        parent = self.root.parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if free < MIN_FREE_BYTES:
            raise fail(f"not enough disk space in {parent} to build the lab Asterisk: "
                       f"{free // 1_000_000} MB free, about {MIN_FREE_BYTES // 1_000_000} MB needed; "
                       f"free some space or set asterisk.root (HOTLINE_ASTERISK_ROOT) to another disk")

    def ensure_root(self) -> bool:
        """Build the Debian root with Asterisk unless it is there. True if it was built."""
        if self.root_ready():
            return False
        need_root("building the lab Asterisk")
        lock = self.root.parent / f"{self.root.name}.lock"
        with locked(lock, f"waiting for another `hotline asterisk up` building {self.root}", self.progress):
            if self.root_ready():
                return False
            if self.root.exists():
                if not self._holds_only_hotline_cache():
                    raise fail(f"{self.root} exists but is not a finished lab root (no {ROOT_MARKER}); "
                               f"remove it and run `hotline asterisk up` again")
                # Only the prompt cache Hotline writes there (a synthesizer ran before the root was
                # built): it is regenerated on demand, and the finished root takes its place.
                safe_rmtree(self.root)
            self._build()
        return True

    def _holds_only_hotline_cache(self) -> bool:
        """The unfinished root holds nothing but directories and files under var/lib/hotline (the
        prompt cache, tts.cache_dir's default), never anything a build left."""
        own = self.root / "var/lib/hotline"
        for path in self.root.rglob("*"):
            if path.is_symlink() or not (path == own or own in path.parents or path in own.parents):
                return False
        return True

    def _build(self) -> None:
        self._check_disk()
        if not shutil.which("debootstrap"):
            raise fail("debootstrap is not installed: run `apt-get install debootstrap` "
                       "(or `make system-deps`)")
        tmp = self.root.parent / f"{self.root.name}.building"
        safe_rmtree(tmp)
        try:
            self._build_in(tmp)
        except BaseException:
            with contextlib.suppress(Exception):
                safe_rmtree(tmp)  # a half-built root is worth nothing; the log stays
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
            renumber_user(tmp, "asterisk", *host_user())
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
