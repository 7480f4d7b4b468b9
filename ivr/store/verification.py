"""Verification codes of users' incoming-call numbers.

A number (E.164 phone or SIP URI) starts unverified and is never rung until verified. Verifying it
proves that whoever holds the phone took part: a 6-digit code is delivered to the number by a phone
call that speaks it, and entered through the API (``POST /api/user-incoming-call-number/verify``).

Storage (table ``user_incoming_call_number_verification``, which no API resource maps):

* the code is checked only against ``codeHash``, a SHA-256 of a random per-code salt and the code,
  compared in constant time;
* the code itself is kept in ``undeliveredCode`` only until it has been delivered, like a message in
  an outbox: the notification service (ivr/shells/notify.py) calls the number, speaks the code and calls
  ``mark_delivered`` once it was heard in full. Until then (no controller running, the call not
  answered) an administrator with access to the server can read it with ``hotline number code
  NUMBER``. It is cleared as soon as the number is verified, the code is replaced, or the number is
  locked;
* the code works for ``CODE_LIFETIME``; wrong codes are counted, and after ``MAX_ATTEMPTS`` wrong
  codes the number is locked. Only a Project Owner or Admin re-sending a code unlocks it (and resets
  the count): neither a new code sent by someone else nor a change of the number does.

With a million possible codes a hash alone would not stop someone who can read the database; the
protection against guessing is the attempt limit, and the API never shows codes or hashes.

Plain synchronous peewee functions: run them through the database bridge.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from peewee import PostgresqlDatabase

from ivr.store import models as m

CODE_DIGITS = 6
MAX_ATTEMPTS = 5
CODE_LIFETIME = dt.timedelta(hours=24)


class Outcome(str, enum.Enum):
    VERIFIED = "verified"
    WRONG = "wrong"                   # attempts_left 0: the number is locked now
    LOCKED = "locked"                 # was locked already
    EXPIRED = "expired"
    NO_CODE = "no code"
    ALREADY_VERIFIED = "already verified"


@dataclass(frozen=True)
class Check:
    outcome: Outcome
    attempts_left: int = MAX_ATTEMPTS


class NumberLocked(Exception):
    """The number is locked after too many wrong codes: only an admin's re-send unlocks it."""


def new_code() -> str:
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def hash_code(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def _row(number_id, *, lock: bool = False) -> m.UserIncomingCallNumberVerification | None:
    V = m.UserIncomingCallNumberVerification
    query = V.select().where(V.userIncomingCallNumber == number_id)
    if lock and isinstance(V._meta.database.obj, PostgresqlDatabase):
        query = query.for_update()  # concurrent wrong codes are all counted
    return query.first()


def issue_code(number_id, *, unlock: bool = False, now: dt.datetime | None = None) -> str:
    """A new code for the number, replacing any earlier one, kept until delivered; returns it.

    ``unlock`` (an admin's re-send) lifts a lock and resets the count of wrong codes; otherwise a
    locked number raises ``NumberLocked`` and the count of wrong codes is kept.
    """
    now = now or m.utcnow()
    row = _row(number_id, lock=True)
    if row is not None and row.lockedAt is not None and not unlock:
        raise NumberLocked(str(number_id))
    code = new_code()
    salt = secrets.token_hex(16)
    values = dict(codeHash=hash_code(salt, code), codeSalt=salt, undeliveredCode=code,
                  expiresAt=now + CODE_LIFETIME, updatedAt=now)
    if row is None:
        m.UserIncomingCallNumberVerification.create(userIncomingCallNumber=number_id, attempts=0, **values)
    else:
        if unlock:
            values.update(attempts=0, lockedAt=None)
        m.UserIncomingCallNumberVerification.update(**values).where(
            m.UserIncomingCallNumberVerification.id == row.id).execute()
    return code


def check_code(number: m.UserIncomingCallNumber, code: str, now: dt.datetime | None = None) -> Check:
    """Checks ``code`` for ``number`` and records the outcome (verified, or one more wrong code)."""
    now = now or m.utcnow()
    if number.isVerified:
        return Check(Outcome.ALREADY_VERIFIED)
    row = _row(number.id, lock=True)
    if row is None:
        return Check(Outcome.NO_CODE)
    if row.lockedAt is not None:
        return Check(Outcome.LOCKED, 0)
    if row.expiresAt <= now:
        return Check(Outcome.EXPIRED, MAX_ATTEMPTS - row.attempts)
    if hmac.compare_digest(hash_code(row.codeSalt, code), row.codeHash):
        mark_verified(number.id)
        return Check(Outcome.VERIFIED)
    attempts = row.attempts + 1
    locked = attempts >= MAX_ATTEMPTS
    V = m.UserIncomingCallNumberVerification
    V.update(attempts=attempts, lockedAt=now if locked else None, updatedAt=now,
             **({"undeliveredCode": None} if locked else {})).where(V.id == row.id).execute()
    return Check(Outcome.WRONG, MAX_ATTEMPTS - attempts)


def mark_verified(number_id) -> None:
    """The number is verified (by its code, or by ``hotline sync``): its code is no longer needed."""
    Number = m.UserIncomingCallNumber
    Number.update(isVerified=True, updatedAt=m.utcnow()).where(Number.id == number_id).execute()
    m.UserIncomingCallNumberVerification.delete().where(
        m.UserIncomingCallNumberVerification.userIncomingCallNumber == number_id).execute()


def mark_delivered(number_id, code: str | None = None) -> None:
    """The code was spoken to the number: the plain code is no longer kept. With ``code``, only if
    it is still the number's code (a resend during the call made a new one, still to be delivered)."""
    V = m.UserIncomingCallNumberVerification
    where = [V.userIncomingCallNumber == number_id] + ([V.undeliveredCode == code] if code is not None else [])
    V.update(undeliveredCode=None, updatedAt=m.utcnow()).where(*where).execute()


def undelivered_codes() -> list[tuple[m.UserIncomingCallNumber, str]]:
    """The codes waiting to be delivered (for the calling side), oldest first."""
    V, Number = m.UserIncomingCallNumberVerification, m.UserIncomingCallNumber
    rows = (V.select(V, Number).join(Number).where(V.undeliveredCode.is_null(False), V.lockedAt.is_null(True),
                                                   V.expiresAt > m.utcnow()).order_by(V.updatedAt))
    return [(row.userIncomingCallNumber, row.undeliveredCode) for row in rows]


@dataclass(frozen=True)
class PendingCode:
    """What an administrator sees for a number (``hotline number code``)."""

    code: str | None
    reason: str = ""          # why there is no code to read, when there is none
    expires_at: dt.datetime | None = None
    attempts: int = 0


def pending_code(number: m.UserIncomingCallNumber, now: dt.datetime | None = None) -> PendingCode:
    now = now or m.utcnow()
    if number.isVerified:
        return PendingCode(None, "the number is already verified")
    row = _row(number.id)
    if row is None:
        return PendingCode(None, "no code was sent to it: re-send one (POST /api/user-incoming-call-number/"
                                 "resend-verification-code)")
    if row.lockedAt is not None:
        return PendingCode(None, f"it is locked after {MAX_ATTEMPTS} wrong codes: a Project Owner or Admin "
                                 "re-sending a code unlocks it", attempts=row.attempts)
    if row.expiresAt <= now:
        return PendingCode(None, "its code expired: re-send one", attempts=row.attempts)
    if row.undeliveredCode is None:
        return PendingCode(None, "its code was already delivered by a phone call: re-send one to see a new code",
                           attempts=row.attempts)
    return PendingCode(row.undeliveredCode, expires_at=row.expiresAt, attempts=row.attempts)
