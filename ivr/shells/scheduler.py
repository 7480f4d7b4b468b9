"""Scheduled calls of the calls API fire at their time: every process running the call services
looks for the due ones every ``contact_center.scheduler_poll`` seconds (0.25 by default) and fires
them (ivr/store/scheduled.py: ``queued``, and an inbound outbox message, once per call however many
processes look). It needs only the database: it runs whether Asterisk is connected or not (the
message waits in the outbox until the call services can place the call).

Calls that came due while no call services ran fire at the next start, and the log says how late.
A poll that fails (the database is unreachable, a lock wait ran out) is logged and tried again.
"""

from __future__ import annotations

import asyncio
import logging

from ivr.runtime import Tasks, stopped_within
from ivr.store import scheduled
from ivr.store.db import run_write

log = logging.getLogger(__name__)


class ScheduledCallsService:
    """Fires the due scheduled calls; one per call-services process."""

    batch = 50            # calls fired per transaction; a full batch is followed by another at once
    retry_after = 1.0     # seconds before polling again after a failed poll

    def __init__(self, config, db, *, poll: float | None = None):
        self.db = db
        self.poll = poll if poll is not None else config.contact_center.scheduler_poll
        self.tasks = Tasks("scheduled calls")
        self.fired = 0
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        self._loop_task = self.tasks.spawn(self._loop())
        log.info("scheduled calls: looking for due calls every %.2f s", self.poll)

    async def close(self) -> None:
        # The loop ends between two polls (ivr.runtime.stopped_within says why it is not cancelled).
        self._stopping.set()
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task], timeout=10)
        await self.tasks.close()

    async def poll_once(self) -> list[scheduled.FiredCall]:
        fired = await run_write(self.db, scheduled.fire_due, None, self.batch)
        for call in fired:
            late = call.late_seconds
            if late > 60:
                log.info("scheduled call %s fired %.1f s after its time (%s UTC): the call services were not "
                         "running when it came due", call.number, late, call.scheduled_at.isoformat(" "))
            else:
                log.info("scheduled call %s fired %.3f s after its time", call.number, late)
        self.fired += len(fired)
        return fired

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                fired = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduled calls: could not fire the due calls; trying again in %.0f s",
                              self.retry_after)
                if await stopped_within(self._stopping, self.retry_after):
                    return
                continue
            # A full batch: more may be due, fire them without waiting.
            if len(fired) < self.batch and await stopped_within(self._stopping, self.poll):
                return
