"""Verification codes of users' incoming-call numbers.

A number (E.164 phone or SIP URI) starts unverified and is never rung until verified. Verifying it
proves that whoever holds the phone took part: a 6-digit code is delivered to the number by a phone
call that speaks it, and entered through the API (``POST /api/user-incoming-call-number/verify``).

Storage (tables which no API resource maps):

* ``user_incoming_call_number_verification``, one row per number waiting for verification: the code
  is checked only against ``codeHash``, a SHA-256 of a random per-code salt and the code, compared
  in constant time; the code itself is kept in ``undeliveredCode`` only until it has been
  delivered, like a message in an outbox: the notification service (ivr/shells/notify.py) calls the
  number, speaks the code (Asterisk's own digit recordings: the code is never synthesized into a
  file) and calls ``mark_delivered`` once it was heard in full. Until then (no controller running,
  the call not answered) an administrator with access to the server can read it with ``hotline
  number code NUMBER``. It is cleared as soon as the number is verified, the code is replaced, or
  the destination is locked;
* ``verification_guard``, one row per destination of a project (the number's E.164 or SIP URI, as
  :func:`ivr.core.phone.destination_key` writes it): wrong codes, the lock, and when the latest codes
  were sent. It is not tied to a number row: deleting and re-creating the number (or writing the same
  SIP URI another way) neither unlocks it nor resets its counts.

The code works for ``CODE_LIFETIME``; wrong codes are counted per destination, and after
``MAX_ATTEMPTS`` wrong codes the destination is locked. Only a Project Owner or Admin re-sending a
code unlocks it (and resets the count): neither a new code sent by someone else nor a new number row
does; the right code resets the count. At most ``codes_per_day`` codes (``notify.
verification_codes_per_day``) are sent to one destination in any 24 hours (``RATE_WINDOW``), whoever
asks: :class:`TooManyCodes` says when the next one may be sent.

With a million possible codes a hash alone would not stop someone who can read the database; the
protection against guessing is the attempt limit, and the API never shows codes or hashes.

Plain synchronous peewee functions: run them through the database bridge.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from peewee import PostgresqlDatabase

from ivr.core.phone import destination_key
from ivr.store import models as m

class _HideCodes(logging.Filter):
    """peewee logs every query with its parameters at DEBUG (``general.log_level: DEBUG``): the
    parameters of queries on the codes' table (a code, its hash and salt) are never written out."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if (isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[0], str)
                and CODES_TABLE in msg[0] and msg[1]):
            record.msg = (msg[0], ["(hidden)"] * len(msg[1]))
        return True


CODES_TABLE = m.UserIncomingCallNumberVerification._meta.table_name
logging.getLogger("peewee").addFilter(_HideCodes())

CODE_DIGITS = 6
MAX_ATTEMPTS = 5
CODE_LIFETIME = dt.timedelta(hours=24)
CODES_PER_DAY = 5                      # the default of notify.verification_codes_per_day
RATE_WINDOW = dt.timedelta(hours=24)
_KEPT_SENDINGS = 100                   # times of codes sent kept per destination when there is no limit


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
    """The number's destination is locked after too many wrong codes: only an admin's re-send unlocks it."""


class TooManyCodes(Exception):
    """``limit`` codes were sent to the destination in the last ``RATE_WINDOW``: none before ``retry_at``."""

    def __init__(self, destination: str, limit: int, retry_at: dt.datetime):
        super().__init__(f"{limit} codes sent to {destination} within {RATE_WINDOW}; next at {retry_at}")
        self.destination = destination
        self.limit = limit
        self.retry_at = retry_at      # naive UTC


def new_code() -> str:
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def hash_code(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def destination_of(number: m.UserIncomingCallNumber) -> str:
    """The key of the number's guard: its E.164 number or its SIP URI, canonical."""
    return destination_key(number.phoneNumber or number.sipUri or "")


def _for_update(query):
    if isinstance(m.UserIncomingCallNumberVerification._meta.database.obj, PostgresqlDatabase):
        return query.for_update()  # concurrent wrong codes (and sendings) are all counted
    return query


def _row(number_id, *, lock: bool = False) -> m.UserIncomingCallNumberVerification | None:
    V = m.UserIncomingCallNumberVerification
    query = V.select().where(V.userIncomingCallNumber == number_id)
    return (_for_update(query) if lock else query).first()


def _guard(number: m.UserIncomingCallNumber, *, create: bool = True) -> m.VerificationGuard | None:
    """The guard of the number's destination (created when missing, and locked on PostgreSQL)."""
    G = m.VerificationGuard
    destination = destination_of(number)
    where = (G.project == number.projectId) & (G.destination == destination)
    if not create:
        return G.select().where(where).first()
    # Two requests creating the same guard at once: one insert wins, both then read (and lock) it.
    G.insert(project=number.projectId, destination=destination, attempts=0, codesSentAt=[]).on_conflict_ignore(
        ).execute()
    return _for_update(G.select().where(where)).get()


def _recent_sendings(guard: m.VerificationGuard, now: dt.datetime) -> list[dt.datetime]:
    sent = sorted(dt.datetime.fromisoformat(text) for text in guard.codesSentAt or [])
    return [at for at in sent if now - RATE_WINDOW < at <= now]


def issue_code(number: m.UserIncomingCallNumber, *, unlock: bool = False, codes_per_day: int = CODES_PER_DAY,
               now: dt.datetime | None = None) -> str:
    """A new code for the number, replacing any earlier one, kept until delivered; returns it.

    ``unlock`` (an admin's re-send) lifts the destination's lock and resets its count of wrong
    codes; otherwise a locked destination raises ``NumberLocked`` and the count is kept. More than
    ``codes_per_day`` codes to the destination in ``RATE_WINDOW`` (0: no limit) raise
    ``TooManyCodes``, and change nothing.
    """
    now = now or m.utcnow()
    guard = _guard(number)
    if guard.lockedAt is not None and not unlock:
        raise NumberLocked(str(number.id))
    sent = _recent_sendings(guard, now)
    if codes_per_day > 0 and len(sent) >= codes_per_day:
        raise TooManyCodes(guard.destination, codes_per_day, sent[-codes_per_day] + RATE_WINDOW)
    sent = [*sent, now][-(codes_per_day if codes_per_day > 0 else _KEPT_SENDINGS):]
    G = m.VerificationGuard
    changes = dict(codesSentAt=[at.isoformat() for at in sent], updatedAt=now)
    if unlock:
        changes.update(attempts=0, lockedAt=None)
    G.update(**changes).where(G.id == guard.id).execute()
    code = new_code()
    salt = secrets.token_hex(16)
    values = dict(codeHash=hash_code(salt, code), codeSalt=salt, undeliveredCode=code,
                  expiresAt=now + CODE_LIFETIME, updatedAt=now)
    V = m.UserIncomingCallNumberVerification
    row = _row(number.id, lock=True)
    if row is None:
        V.create(userIncomingCallNumber=number.id, **values)
    else:
        V.update(**values).where(V.id == row.id).execute()
    return code


def check_code(number: m.UserIncomingCallNumber, code: str, now: dt.datetime | None = None) -> Check:
    """Checks ``code`` for ``number`` and records the outcome (verified, or one more wrong code)."""
    now = now or m.utcnow()
    if number.isVerified:
        return Check(Outcome.ALREADY_VERIFIED)
    guard = _guard(number)
    if guard.lockedAt is not None:
        return Check(Outcome.LOCKED, 0)
    row = _row(number.id, lock=True)
    if row is None:
        return Check(Outcome.NO_CODE, MAX_ATTEMPTS - guard.attempts)
    if row.expiresAt <= now:
        return Check(Outcome.EXPIRED, MAX_ATTEMPTS - guard.attempts)
    G, V = m.VerificationGuard, m.UserIncomingCallNumberVerification
    if hmac.compare_digest(hash_code(row.codeSalt, code), row.codeHash):
        mark_verified(number.id)
        G.update(attempts=0, updatedAt=now).where(G.id == guard.id).execute()  # whoever holds it proved it
        return Check(Outcome.VERIFIED)
    attempts = guard.attempts + 1
    locked = attempts >= MAX_ATTEMPTS
    G.update(attempts=attempts, lockedAt=now if locked else None, updatedAt=now).where(G.id == guard.id).execute()
    if locked:
        V.update(undeliveredCode=None, updatedAt=now).where(V.id == row.id).execute()
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
    """The codes waiting to be delivered (for the calling side), oldest first; none to a locked destination."""
    V, Number, G = m.UserIncomingCallNumberVerification, m.UserIncomingCallNumber, m.VerificationGuard
    rows = list(V.select(V, Number).join(Number).where(V.undeliveredCode.is_null(False), V.expiresAt > m.utcnow())
                .order_by(V.updatedAt))
    if not rows:
        return []
    keys = {(row.userIncomingCallNumber.projectId, destination_of(row.userIncomingCallNumber)) for row in rows}
    locked = {(guard.projectId, guard.destination) for guard in
              G.select(G.project, G.destination).where(G.lockedAt.is_null(False),
                                                       G.destination.in_(sorted({d for _, d in keys})))}
    return [(row.userIncomingCallNumber, row.undeliveredCode) for row in rows
            if (row.userIncomingCallNumber.projectId, destination_of(row.userIncomingCallNumber)) not in locked]


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
    guard = _guard(number, create=False)
    attempts = guard.attempts if guard is not None else 0
    if guard is not None and guard.lockedAt is not None:
        return PendingCode(None, f"it is locked after {MAX_ATTEMPTS} wrong codes: a Project Owner or Admin "
                                 "re-sending a code unlocks it", attempts=attempts)
    row = _row(number.id)
    if row is None:
        return PendingCode(None, "no code was sent to it: re-send one (POST /api/user-incoming-call-number/"
                                 "resend-verification-code)", attempts=attempts)
    if row.expiresAt <= now:
        return PendingCode(None, "its code expired: re-send one", attempts=attempts)
    if row.undeliveredCode is None:
        return PendingCode(None, "its code was already delivered by a phone call: re-send one to see a new code",
                           attempts=attempts)
    return PendingCode(row.undeliveredCode, expires_at=row.expiresAt, attempts=attempts)
