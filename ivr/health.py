"""Health probes of the Asterisk side: does ARI answer (and accept the credentials), does AMI accept
the login, does the SIP transport answer an OPTIONS, does Hotline's FastAGI server answer.

One set, used by ``hotline doctor`` and by the lab (``hotline asterisk up|status``). Each probe is
plain blocking I/O bounded by ``timeout`` and never raises for an unreachable peer: it returns a
:class:`Probe` saying what it saw. Async callers run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Probe:
    ok: bool
    detail: str
    data: Any = None                       # what the peer answered (ARI: the JSON body)
    status: int | None = None              # ARI: the HTTP status
    extra: dict = field(default_factory=dict)


def ari_get(base_url: str, username: str, password: str, path: str, timeout: float = 2.0) -> Probe:
    """``GET <base_url>/ari<path>`` with the ARI credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(base_url.rstrip("/") + "/ari" + path, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            return Probe(True, "answers", body, resp.status)
    except urllib.error.HTTPError as exc:
        detail = "answers, but refuses the credentials" if exc.code == 401 else f"answers HTTP {exc.code}"
        return Probe(False, detail, None, exc.code)
    except (OSError, ValueError) as exc:
        return Probe(False, f"no answer ({getattr(exc, 'reason', exc)})")


def ari_info(base_url: str, username: str, password: str, timeout: float = 2.0) -> Probe:
    """ARI answers with Asterisk's info; ``extra["version"]`` is Asterisk's version."""
    probe = ari_get(base_url, username, password, "/asterisk/info", timeout)
    if probe.ok:
        probe.extra["version"] = ((probe.data or {}).get("system") or {}).get("version")
    return probe


def ami_login(host: str, port: int, username: str, secret: str, timeout: float = 2.0) -> Probe:
    """Log in to AMI (events off) and log off."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe(False, f"cannot connect ({exc})")
    try:
        with sock:
            sock.settimeout(timeout)
            banner = sock.recv(256).decode(errors="replace").strip()
            if not banner.startswith("Asterisk Call Manager"):
                return Probe(False, f"unexpected banner {banner[:40]!r}")
            action_id = uuid.uuid4().hex
            sock.sendall((f"Action: Login\r\nActionID: {action_id}\r\nUsername: {username}\r\n"
                          f"Secret: {secret}\r\nEvents: off\r\n\r\n").encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if b"Response: Success" not in reply:
                return Probe(False, "answers, but refuses the credentials")
            with contextlib.suppress(OSError):
                sock.sendall(b"Action: Logoff\r\n\r\n")
            return Probe(True, "answers (login accepted)")
    except OSError as exc:
        return Probe(False, f"no answer ({exc})")


def sip_options(host: str, port: int, timeout: float = 1.0) -> Probe:
    """Send a SIP OPTIONS over UDP; ``data`` is the answer's status line ("200 OK")."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))  # so that "port unreachable" is reported at once
        lhost, lport = sock.getsockname()[:2]
        call_id = uuid.uuid4().hex
        sock.send((f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{call_id[:16]};rport\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:hotline-probe@{lhost}>;tag={call_id[:8]}\r\n"
                   f"To: <sip:{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                   f"Content-Length: 0\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65535)
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if first.startswith("SIP/2.0 ") and call_id.encode() in data:
                return Probe(True, f"answers ({first[8:]})", first[8:])
        return Probe(False, "no answer")
    except OSError as exc:
        return Probe(False, f"no answer ({exc})")
    finally:
        sock.close()


def fastagi_hello(host: str, port: int, secret: str, timeout: float = 3.0) -> Probe:
    """Open a FastAGI session on the route ``health`` with the install's secret (the first AGI
    argument, as the dialplan passes it): Hotline's server answers ``NOOP "hotline"``."""
    address = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe(False, f"{address}: nothing listens ({exc})")
    try:
        sock.settimeout(timeout)
        sock.sendall(f"agi_network: yes\nagi_network_script: health\nagi_request: agi://{address}/health\n"
                     f"agi_channel: probe\nagi_uniqueid: probe-{uuid.uuid4().hex[:8]}\n"
                     f"agi_arg_1: {secret}\n\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            line += chunk
        if not line:
            # Hotline's server closes a request it refuses without a word.
            return Probe(False, f"{address}: the FastAGI server closed the connection without answering: it "
                                f"refuses this address (agi.allowed_peers) or the secret (agi.secret)",
                         extra={"refused": True})
        if line.strip() != b'NOOP "hotline"':
            return Probe(False, f"{address}: something that is not Hotline's FastAGI server listens there "
                                f"(it said {line[:40]!r})")
        sock.sendall(b"200 result=0\n")
        return Probe(True, f"{address}: Hotline's FastAGI server answers")
    except OSError as exc:
        return Probe(False, f"{address}: no FastAGI answer ({exc})")
    finally:
        sock.close()
