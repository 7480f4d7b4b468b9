"""The dashboard's session: one encrypted, HttpOnly, SameSite=Strict cookie, and its CSRF token.

The cookie is a Fernet token (AES-CBC and HMAC-SHA256, with its issue time) under a key kept in
``<data_dir>/dashboard-secret.key`` (0600, created on first use). It holds the SHA-256 of the API key
signed in with (never the key itself) and a random CSRF token. A visitor who has not signed in gets a
cookie with a CSRF token only, so the sign-in form is protected like every other form. Every POST
must carry that token (form field ``csrf``), compared in constant time; and a POST whose ``Origin``
header names another site is refused.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from ivr.config import private_dir

COOKIE = "hotline_dashboard"
PATH = "/dashboard"
#: A session lasts this long after signing in (then the key is asked for again).
MAX_AGE = 12 * 3600
SECRET_FILE = "dashboard-secret.key"


def load_secret(data_dir: Path) -> Fernet:
    """The session key of this data directory, created (0600) when missing."""
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        private_dir(path.parent)
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
        try:
            os.link(tmp, path)  # never replaces a key another process wrote first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return Fernet(path.read_bytes().strip())


@dataclass(frozen=True)
class Session:
    csrf: str
    key_hash: str | None = None   # None: not signed in


class Sessions:
    def __init__(self, fernet: Fernet):
        self.fernet = fernet

    def read(self, request: web.Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > 4096:
            return None
        try:
            data = json.loads(self.fernet.decrypt(raw.encode("ascii"), ttl=MAX_AGE))
        except (InvalidToken, ValueError, UnicodeEncodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        key_hash = data.get("k")
        return Session(data["c"], key_hash if isinstance(key_hash, str) else None)

    def write(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        payload = {"c": session.csrf, **({"k": session.key_hash} if session.key_hash else {})}
        token = self.fernet.encrypt(json.dumps(payload).encode()).decode("ascii")
        response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="Strict", secure=request.secure,
                            max_age=MAX_AGE)

    @staticmethod
    def clear(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path=PATH)


def new_session(key_hash: str | None = None) -> Session:
    return Session(secrets.token_urlsafe(32), key_hash)


def same_origin(request: web.Request) -> bool:
    """A POST from a page of this server (or a client that sends no Origin)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def csrf_ok(session: Session | None, sent: object) -> bool:
    return (session is not None and isinstance(sent, str) and len(sent) < 200
            and hmac.compare_digest(session.csrf.encode(), sent.encode()))
