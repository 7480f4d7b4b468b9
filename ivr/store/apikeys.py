"""API keys as stored: shown once at creation, kept as their SHA-256 (``keyHash``) and a short prefix
to recognize them by. The API authenticates requests with them (api.auth); the CLI creates them."""

from __future__ import annotations

import hashlib
import secrets

from ivr.store.models import Role

KEY_PREFIX = "hl_"
ROLE_NAMES = {"owner": Role.OWNER, "admin": Role.ADMIN, "member": Role.MEMBER, "viewer": Role.VIEWER}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
