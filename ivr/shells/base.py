"""What both call shells (the ARI controller and the FastAGI server) do alike around the escalation
engine: a call's log set-up, the engine step, timers, prompt warm-up, and the ordered log writer.

Each shell subclasses :class:`CallActorBase` and adds how it talks to Asterisk. Its owner (the
Controller, or AgiCalls) provides ``config``, ``db``, ``reads``, ``tts`` and ``metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from ivr.store import callstore
from ivr.store.db import run_write
from ivr.core.engine import (TERMINAL_STATUSES, CallSetup, EscalationCall, IllegalEvent, TimerFired, UpdateItem,
                              UpdateLog, confirmation_prompt)
from ivr.core.texts import VOICEMAIL_PROMPT
from ivr.tts import TTSError

log = logging.getLogger(__name__)


async def write_in_order(db, writes: asyncio.Queue, what: str) -> None:
    """Run the queued ``(fn, *args)`` writes one after another until a ``None``; a failed write is
    logged (``what`` names the call) and the call goes on. What is queued together (a call's writes
    come in bursts: its log, its first ring attempt and its status at once) runs in one go, in the
    database's writer (``run_write``)."""
    while True:
        jobs = [await writes.get()]
        while jobs[-1] is not None and not writes.empty():
            jobs.append(writes.get_nowait())
        done = jobs[-1] is None
        if done:
            jobs.pop()
        if jobs:
            try:
                await run_write(db, _run_jobs, jobs, what)
            except Exception:
                log.exception("%s: %d write(s) could not run; the call goes on", what, len(jobs))
        if done:
            return


def _run_jobs(jobs: list, what: str) -> None:
    for fn, *args in jobs:
        try:
            fn(*args)
        except Exception:
            log.exception("%s: a write failed (%s); the call goes on", what, fn.__name__)

NOT_IN_SERVICE = "The number you have dialed is not in service. Please check the number and try again."
SORRY = "We are sorry, an error occurred. Please try again later."

class CallActorBase:
    """One incoming call's engine, timers and ordered log writes."""

    shell = ""  # how log lines name the shell (" over FastAGI")
    dial_enforces_timeout = False  # the shell's dial ends unanswered legs at the rule's time itself
    #: The shell records a caller (RecordCaller) and keeps the recording (SaveVoicemail): a policy's
    #: voicemail after NoAnswer is offered only then (elsewhere the call hangs up after the message).
    records_voicemail = False

    def __init__(self, owner, caller_channel: str, dialed: str, caller: str):
        self.c = owner
        self.caller_channel = caller_channel
        self.dialed = dialed
        self.caller = caller
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writes: asyncio.Queue = asyncio.Queue()
        self.engine: EscalationCall | None = None
        self.log_id = None
        self.project_id = None
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.timer_due: dict[str, float] = {}
        self.final_status: str | None = None
        self.answered_by: str | None = None
        self.writer: asyncio.Task | None = None
        # A contact-center menu's leaf hands its caller to a policy: which, and the log id it links.
        self.policy_id: str | None = None
        self.preset_log_id = None

    def post(self, event) -> None:
        self.queue.put_nowait(event)

    async def _announce_and_hang_up(self, text: str) -> None:
        raise NotImplementedError

    async def _route_elsewhere(self) -> bool:
        """No policy has the dialed number: may another service take the call? (ARI: the contact
        center's menus.)"""
        return False

    async def _open(self) -> CallSetup | None:
        """The policy of the dialed number, and the call's log (queued: nothing waits for it)."""
        cfg = self.c.config
        started = time.time()
        incoming = await self.c.reads(callstore.prepare_call, self.dialed, self.caller, cfg.sip.default_region,
                                      cfg.controller.confirm_timeout, self.policy_id, self.preset_log_id)
        if incoming is None and self.policy_id is None and await self._route_elsewhere():
            return None  # another service took the call (a contact-center menu's number)
        if incoming is None:
            log.warning("call from %s to %s: no Incoming Call Policy has this routing number; "
                        "playing the not-in-service message", self.caller or "unknown", self.dialed)
            await self._announce_and_hang_up(NOT_IN_SERVICE)
            return None
        self.log_id, self.project_id = incoming.log_id, incoming.project_id
        setup = self._shell_setup(incoming.setup)
        # Written by the call's writer, in order before its first update.
        self.writes.put_nowait((callstore.open_log, incoming, self.caller_channel, started))
        log.info("call %s from %s to %s%s: policy %r with %d rule(s)", self.log_id, self.caller or "unknown",
                 self.dialed, self.shell, setup.policy_name, len(setup.rules))
        return setup

    def _shell_setup(self, setup: CallSetup) -> CallSetup:
        """What this shell can do, said in the set-up (the engine decides with it)."""
        return replace(setup, dial_enforces_timeout=self.dial_enforces_timeout,
                       voicemail_on_no_answer=setup.voicemail_on_no_answer and self.records_voicemail,
                       voicemail_max_silence=float(self.c.config.contact_center.voicemail_max_silence))

    def _step(self, event) -> tuple[list, float] | None:
        """Feed the engine one event: its commands, and when what the event reports happened (a
        timer's due time, else now); None for an event the engine refuses."""
        origin = time.time()
        if isinstance(event, TimerFired) and event.timer_id in self.timer_due:
            origin = self.timer_due.pop(event.timer_id)
            self.c.metrics.observe_timer_error(max(0.0, time.time() - origin))
        try:
            return self.engine.handle(event, time.time()), origin
        except IllegalEvent as exc:
            log.warning("call %s: ignoring an impossible event %r: %s", self.log_id, event, exc)
            return None

    # -- what the engine records ---------------------------------------------------------

    def _record_log(self, update: UpdateLog) -> None:
        if update.status in TERMINAL_STATUSES:
            self.final_status = str(update.status)
        if update.answered_by_user_id:
            self.answered_by = update.answered_by_user_id
        self.writes.put_nowait((callstore.update_log, self.log_id, update))

    def _record_item(self, update: UpdateItem) -> None:
        if update.status in TERMINAL_STATUSES:
            self.c.metrics.ring_attempts.labels(str(update.status)).inc()
        self.writes.put_nowait((callstore.update_item, self.log_id, update))

    # -- timers ---------------------------------------------------------------------------

    def _start_timer(self, timer_id: str, at: float) -> None:
        self._cancel_timer(timer_id)
        loop = asyncio.get_running_loop()
        self.timer_due[timer_id] = at
        self.timers[timer_id] = loop.call_at(loop.time() + max(0.0, at - time.time()), self._timer_fired, timer_id)

    def _timer_fired(self, timer_id: str) -> None:
        self.timers.pop(timer_id, None)
        self.post(TimerFired(timer_id))

    def _cancel_timer(self, timer_id: str) -> None:
        self.timer_due.pop(timer_id, None)
        handle = self.timers.pop(timer_id, None)
        if handle:
            handle.cancel()

    # -- the end --------------------------------------------------------------------------

    async def _warm_prompts(self, setup: CallSetup) -> None:
        """Synthesize what this call may say while the greeting plays (a cache hit later)."""
        texts = [setup.greeting, setup.no_answer_message, setup.no_one_available_message]
        if setup.voicemail_on_no_answer:
            texts.append(VOICEMAIL_PROMPT)
        if setup.require_confirmation:
            texts.append(confirmation_prompt(setup))
        for text in texts:
            if text:
                try:
                    await self.c.tts.media(text)
                except TTSError as exc:
                    log.error("speech synthesis failed: %s", exc)

    def _count_end(self) -> None:
        """The call's metrics, and no timer left to fire."""
        self.c.metrics.calls_in_progress.dec()
        if self.final_status:
            self.c.metrics.calls.labels(self.final_status).inc()
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    async def _flush_writes(self) -> None:
        """Let the writer finish every queued write, then stop it."""
        self.writes.put_nowait(None)
        self._start_writer()
        await asyncio.shield(self.writer)

    def _start_writer(self) -> None:
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(
                write_in_order(self.c.db, self.writes, f"call {self.log_id}"))
