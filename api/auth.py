"""API keys, roles, permissions and the per-key rate limit.

A key is shown once and stored as its SHA-256. Each request carries it in the
``ApiKey`` header; the key's project is then forced into every query and every
create by the resource layer (tenant isolation does not depend on handlers
remembering to filter).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

from api.errors import Forbidden, TooManyRequests, Unauthorized
from ivr.store.apikeys import KEY_PREFIX, ROLE_NAMES, hash_key, new_key  # noqa: F401 - the API's keys
from ivr.store.db import on_reader
from ivr.store.models import ApiKey, Role, utcnow

READ_ALL = "Read All Project Resources"
WRITER_ROLES = (Role.OWNER, Role.ADMIN, Role.MEMBER)
VERBS = {"read": "Read", "create": "Create", "update": "Edit", "delete": "Delete"}


def permission_name(verb: str, title: str) -> str:
    return f"{VERBS[verb]} {title}"


def allowed_by(verb: str, title: str) -> list[str]:
    """Everything that grants ``verb`` on a resource, in the seeds' words and order."""
    granted = [r.value for r in WRITER_ROLES]
    if verb == "read":
        granted += [Role.VIEWER.value]
    granted.append(permission_name(verb, title))
    if verb == "read":
        granted.append(READ_ALL)
    return granted


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    project_id: uuid.UUID
    role: Role | None
    permissions: frozenset[str]
    expires_at: dt.datetime | None

    def grants(self, verb: str, title: str) -> bool:
        if self.role in WRITER_ROLES:
            return True
        if verb == "read" and (self.role == Role.VIEWER or READ_ALL in self.permissions):
            return True
        return permission_name(verb, title) in self.permissions

    def require(self, verb: str, title: str, through: str | None = None) -> None:
        """``through``: the part of the request that reaches ``title`` (a selected relation)."""
        if not self.grants(verb, title):
            action = {"read": "read", "create": "create", "update": "update", "delete": "delete"}[verb]
            via = f" (through {through})" if through else ""
            raise Forbidden(
                f"Permission denied: to {action} {title}{via} this API key needs one of: "
                f"{', '.join(allowed_by(verb, title))}")

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.OWNER, Role.ADMIN)


class KeyCache:
    """Recently authenticated keys, so a request costs no key lookup (a few seconds' staleness)."""

    def __init__(self, ttl: float = 5.0):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        self._entries.pop(key_hash, None)
        return None

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._entries) > 10000:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, principal)


def load_principal(key: str) -> Principal:
    """Synchronous lookup of a key (run through the database bridge)."""
    return load_principal_by_hash(hash_key(key))


def load_principal_by_hash(key_hash: str) -> Principal:
    """The key whose SHA-256 is ``key_hash`` (the dashboard's session keeps the hash, never the key)."""
    row = on_reader(ApiKey.select().where(ApiKey.keyHash == key_hash)).get_or_none()
    if row is None:
        raise Unauthorized("Invalid API key.")
    role = Role(row.role) if row.role else None
    return Principal(row.id, row.projectId, role, frozenset(row.permissions or ()), row.expiresAt)


def check_not_expired(principal: Principal) -> None:
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise Unauthorized(f"This API key expired at {principal.expires_at.isoformat(timespec='seconds')}Z.")


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to that many."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}

    def check(self, key_id: uuid.UUID) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(key_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            retry = max(1, int((1.0 - tokens) / rate + 0.999))
            self._buckets[key_id] = (tokens, now)
            raise TooManyRequests(
                f"Rate limit exceeded: {self.per_minute} requests per minute per API key. "
                f"Retry in {retry} s.", headers={"Retry-After": str(retry)})
        self._buckets[key_id] = (tokens - 1.0, now)
