"""Scheduled calls of the calls API ("Voice Scheduled (API)"): firing them at their time, once.

The API stores a scheduled call with status ``scheduled`` and ``scheduledAt`` (naive UTC). The call
services (ivr/shells/scheduler.py, one in every process that runs them, perhaps on several machines
sharing one database) call :func:`fire_due` a few times a second. Firing a call is, in one write
transaction: status ``queued``, ``queuedAt`` now, and an outbox message :data:`INBOUND_CALL` (the
same as an inbound call of the API gets when it is created), so the message exists if and only if
the call left ``scheduled``.

Exactly once, whatever the number of schedulers:

* on PostgreSQL the due rows are selected ``FOR UPDATE SKIP LOCKED``: a scheduler skips the rows
  another is firing (it never waits for it), and after that one commits they are no longer
  ``scheduled``;
* on SQLite the transaction holds the database's write lock from its start (``BEGIN IMMEDIATE``),
  so schedulers fire one after the other;
* on both, the update is guarded (``WHERE status = 'scheduled'``): a call that is no longer
  scheduled is not touched and gets no message, even without locks.

A scheduler killed mid-transaction fires nothing: the transaction is rolled back (its locks with
it) and the next poll of any scheduler fires those calls.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from ivr.core.contact_center.vocabulary import CallStatus
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.contact_center import INBOUND_CALL
from ivr.store.db import Compiled, write_transaction

Call = m.ContactCenterCall


@dataclass(frozen=True)
class FiredCall:
    call_id: uuid.UUID
    number: int                  # numericId, for log lines
    project_id: uuid.UUID
    scheduled_at: dt.datetime    # naive UTC
    fired_at: dt.datetime        # naive UTC: its queuedAt

    @property
    def late_seconds(self) -> float:
        """How long after its time the call fired."""
        return (self.fired_at - self.scheduled_at).total_seconds()


def _due(now: dt.datetime, limit: int):
    return (Call.select(Call.id, Call.numericId, Call.project, Call.scheduledAt)
            .where(Call.status == CallStatus.SCHEDULED.value, Call.scheduledAt <= now)
            .order_by(Call.scheduledAt, Call.id).limit(limit))


# Looked for a few times a second by every process running the call services: compiled once.
_ANY_DUE = Compiled(lambda now: Call.select(Call.id).where(Call.status == CallStatus.SCHEDULED.value,
                                                         Call.scheduledAt <= now).limit(1), Call.scheduledAt)


def fire_due(now: dt.datetime | None = None, limit: int = 50) -> list[FiredCall]:
    """Fire the scheduled calls due at ``now`` (naive UTC; default: when the transaction has begun),
    at most ``limit`` of them, oldest first: each becomes ``queued`` with its :data:`INBOUND_CALL`
    message, in one write transaction. Returns the calls this caller fired (none another fired)."""
    check = now if now is not None else m.utcnow()
    if not _ANY_DUE.rows(check):  # nothing due: no write transaction (on SQLite, no write lock)
        return []
    fired: list[FiredCall] = []
    with write_transaction():
        when = now if now is not None else m.utcnow()  # SQLite: after the write lock was granted
        query = _due(when, limit)
        if m.database.obj.for_update:  # PostgreSQL: skip the rows another scheduler is firing
            query = query.for_update(skip_locked=True)
        for row in list(query):
            changed = (Call.update(status=CallStatus.QUEUED.value, queuedAt=when, updatedAt=m.utcnow())
                       .where(Call.id == row.id, Call.status == CallStatus.SCHEDULED.value).execute())
            if changed != 1:
                continue  # no longer scheduled (fired or cancelled meanwhile): no message
            outbox.put(INBOUND_CALL, {"call": str(row.id)})
            fired.append(FiredCall(row.id, row.numericId, row.projectId, row.scheduledAt, when))
    return fired


def next_due_at() -> dt.datetime | None:
    """When the next scheduled call is due (naive UTC; perhaps already past), None without one."""
    row = (Call.select(Call.scheduledAt).where(Call.status == CallStatus.SCHEDULED.value,
                                               Call.scheduledAt.is_null(False))
           .order_by(Call.scheduledAt).limit(1).first())
    return row.scheduledAt if row is not None else None
