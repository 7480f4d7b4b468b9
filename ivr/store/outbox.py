"""The outbox: work one Hotline process hands to another through the database.

The REST API queues a notification call; the call services (another process, perhaps another
machine) place it. An acknowledgement for the webhook is queued by the call that heard the key
and delivered by a worker, with retries that survive a restart. The database is the contract:
neither side needs to know where the other runs.

Two ways to take a message, both safe with several workers on one database (SQLite or PostgreSQL):

* :func:`take` removes it (``DELETE`` of one row answers to one worker only): at most once. A
  notification call is taken so: a call cut short by a crash is never placed a second time (its
  Call Log row is closed as unknown by the orphan sweep instead).
* :func:`lease` keeps it, invisible to other workers until the lease ends: at least once. The
  worker then :func:`finish`-es it or :func:`retry`-s it later; a worker that dies mid-way lets the
  lease run out and another takes over. Webhook deliveries are leased.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ivr.store import models as m
from ivr.store.db import Compiled

Message = m.OutboxMessage
#: The kind of a signed webhook delivery (leased, retried: ivr/shells/notify.py delivers them); its
#: payload's "event" names what happened.
WEBHOOK = "webhook"


def put(kind: str, payload: dict[str, Any], *, delay: float = 0.0) -> m.OutboxMessage:
    """Queue a message (inside the caller's transaction, if any)."""
    now = m.utcnow()
    return Message.create(kind=kind, payload=payload, availableAt=now + dt.timedelta(seconds=delay),
                          createdAt=now, updatedAt=now)


# Several services look for their messages a few times a second, and almost always find none:
# that look is compiled once (ivr.store.db.Compiled) and runs before any write transaction.
_ANY_DUE = Compiled(
    lambda kind, now: (Message.select(Message.id)
                       .where(Message.kind == kind, Message.availableAt <= now,
                              Message.leaseUntil.is_null(True) | (Message.leaseUntil < now))
                       .limit(1)),
    Message.kind, Message.availableAt)


def any_due(kind: str) -> bool:
    """Whether a message of ``kind`` is due now (a cheap look before taking or leasing)."""
    return bool(_ANY_DUE.rows(kind, m.utcnow()))


def _due(kind: str, limit: int):
    now = m.utcnow()
    return (Message.select(Message.id)
            .where(Message.kind == kind, Message.availableAt <= now,
                   Message.leaseUntil.is_null(True) | (Message.leaseUntil < now))
            .order_by(Message.availableAt, Message.id).limit(limit))


def take(kind: str, limit: int = 20) -> list[m.OutboxMessage]:
    """Remove and return up to ``limit`` due messages of ``kind``: each is given to one worker only."""
    taken = []
    if not any_due(kind):
        return taken
    for (message_id,) in _due(kind, limit).tuples():
        message = Message.get_or_none(Message.id == message_id)
        if message is not None and Message.delete().where(Message.id == message_id).execute() == 1:
            taken.append(message)
    return taken


def lease(kind: str, seconds: float, limit: int = 20) -> list[m.OutboxMessage]:
    """Lease up to ``limit`` due messages of ``kind`` for ``seconds``; each to one worker only."""
    now = m.utcnow()
    until = now + dt.timedelta(seconds=seconds)
    leased = []
    if not any_due(kind):
        return leased
    for (message_id,) in _due(kind, limit).tuples():
        claimed = (Message.update(leaseUntil=until, updatedAt=now)
                   .where(Message.id == message_id,
                          Message.leaseUntil.is_null(True) | (Message.leaseUntil < now))
                   .execute())
        if claimed == 1:
            leased.append(Message.get_by_id(message_id))
    return leased


def finish(message_id) -> None:
    Message.delete().where(Message.id == message_id).execute()


def retry(message_id, delay: float, error: str) -> None:
    """Give a leased message back, to be taken again in ``delay`` seconds."""
    now = m.utcnow()
    Message.update(attempts=Message.attempts + 1, availableAt=now + dt.timedelta(seconds=delay),
                   leaseUntil=None, lastError=error[:2000], updatedAt=now).where(Message.id == message_id).execute()


def pending(kind: str) -> int:
    return Message.select().where(Message.kind == kind).count()
