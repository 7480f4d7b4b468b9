"""Outbound notification calls: "Incident 42 is critical. Press 1 to acknowledge."

``POST /api/call-log/send`` (or a verification code waiting for delivery) becomes a Call Log
row and a call:

1. The API creates the row, ``status`` null ("being placed") until the outcome is known, and queues
   the call in the outbox (ivr/store/outbox.py), in one transaction, and answers at once. The
   :class:`NotificationService` of whichever process runs the call services takes it (once) and
   places it in a task it owns. A verification code's call is created by the service itself.
2. AMI ``Originate`` (asynchronous, tracked by its ActionID, ``ChannelId`` chosen by Hotline)
   rings ``PJSIP/hotline-direct/<sip uri>`` or ``PJSIP/<E.164>@<sip.outbound_trunk>`` into the
   dialplan context ``hotline-notify`` with the variable ``HOTLINE_CALL_LOG``; that context runs
   ``AGI(agi://HOST:PORT/notification,<secret>,<call log id>)`` (the server checks and strips the
   secret). (A context, not ``Application=AGI``: Asterisk only lets AMI users holding the
   ``system`` write class originate into AGI, and Hotline's AMI user deliberately does not hold it.)
3. The FastAGI route ``notification`` speaks the message, then "Press 1 to acknowledge, press 9
   to hear this again", reads one key (``WAIT FOR DIGIT``), replays on 9, thanks and hangs up on
   1, and gives up after ``notify.max_prompts`` prompts without an answer.
4. The row then records what happened: ``Success`` (answered and the message heard; acknowledged
   or not, ``callData`` says), ``Missed Call`` (not answered, declined, or hung up before the
   message was heard in full), ``Busy``, or ``Error`` (with the reason: refused, congestion,
   AMI not connected, lost with Asterisk, ...). The hang-up cause comes from the channel's
   HangupRequest/Hangup events (OriginateResponse's Reason alone says 0 for "busy").
   ``callCostInUSDCents`` applies ``notify.rates`` to the answered time (whole minutes rounded
   up; the longest matching prefix; nothing answered costs 0).
5. An acknowledgement is POSTed to ``notify.webhook_url``, signed
   (``X-Hotline-Signature: sha256=<hex HMAC-SHA256 of the body>`` with ``notify.webhook_secret``),
   retried with exponential back-off by a task of the service, never holding up the call.

Verification codes (ivr/store/verification.py) are delivered the same way ("Your Hotline verification
code is 1, 2, 3, 4, 5, 6"), with a Call Log row that never shows the code; a code heard in full
is marked delivered. The code itself is said with ``SAY DIGITS`` (Asterisk's own recordings of
digits), never synthesized: a synthesized prompt is a file named after its text, and the code must
not be recoverable from the prompt directory. Only the texts around it are synthesized and cached.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ivr.asterisk.agi import AgiChannel, AgiError, AgiHangup
from ivr.asterisk.ami import (
    REASON_ANSWERED,
    REASON_BUSY,
    REASON_CONGESTION,
    REASON_RINGING,
    AmiClient,
    AmiConnectionLost,
    AmiError,
    AmiTimeout,
)
from ivr.asterisk.causes import BUSY as CAUSE_BUSY
from ivr.asterisk.causes import CALL_REJECTED, CONGESTION_CAUSES, NO_ANSWER_CAUSES, cause_text, int_or_none
from ivr.asterisk.dialstrings import NotDialable, endpoint_for
from ivr.core.notification import VERIFICATION_LOGGED, Notification, NotificationConversation, call_cost
from ivr.core.vocabulary import (
    AwaitDigit,
    DigitPressed,
    HangupCaller,
    Play,
    PlaybackFinished,
    SayDigits,
    TimerFired,
)
from ivr.metrics import Metrics
from ivr.runtime import Tasks, stopped_within
from ivr.store import models as m
from ivr.store import verification
from ivr.store import outbox
from ivr.store.calllogs import (NOTIFICATION_CALL, PHONE_COLUMN, create_call_log, finish_call_log,
                                 open_call_logs)
from ivr.store.db import run_and_release, run_write
from ivr.tts import Synthesizer, TTSError

log = logging.getLogger(__name__)

ROUTE = "notification"
CONTEXT = "hotline-notify"
MAX_CALL_SECONDS = 900         # a notification call longer than this is cut short
VERIFICATION_ATTEMPTS = 3      # calls per code before giving up on it
VERIFICATION_RETRY = 300.0     # seconds between two calls for the same code
WEBHOOK = outbox.WEBHOOK       # the outbox kind of a webhook delivery (an acknowledgement, a voicemail)
WEBHOOK_LEASE = 60.0           # seconds a worker has to deliver one before another may try
SUCCESS, ERROR, MISSED, BUSY = (m.CallLogStatus.SUCCESS.value, m.CallLogStatus.ERROR.value,
                                m.CallLogStatus.MISSED_CALL.value, m.CallLogStatus.BUSY.value)


#: How old a signed webhook may be when its receiver checks it (a replay later is refused).
SIGNATURE_TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Hotline-Signature`` header of a webhook body sent at ``timestamp`` (Unix seconds):
    ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``. Signing the time with the body
    lets a receiver refuse an old request replayed."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_is_valid(secret: str, body: bytes, header: str | None, now: float | None = None,
                       tolerance: float = SIGNATURE_TOLERANCE) -> bool:
    """What a receiver checks: the signature (constant-time) and that it is recent."""
    try:
        parts = dict(part.split("=", 1) for part in (header or "").split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header or "")


def heard_outcome(note: Notification, key: str | None, heard: bool) -> tuple[str, str] | None:
    """The Call Log status and message of an answered call whose callee heard the message (or pressed
    1); None if they did not (the caller then says why: hung up early, a fault). Both providers' calls."""
    if key == "1":
        return SUCCESS, "Answered; the message was heard and acknowledged (key 1)."
    if heard:
        if note.kind == "verification":
            return SUCCESS, "Answered; the verification code was read out."
        return SUCCESS, "Answered and the message was heard; not acknowledged."
    return None


def classify_unanswered(reason: int | None, cause: int | None, ring_timeout: float) -> tuple[str, str]:
    """The Call Log status and message of a call that was not answered.

    OriginateResponse's Reason is the last state Asterisk saw (3: still ringing at the timeout,
    5: busy, 8: congestion, 0/1: failed or hung up); the channel's Q.850 cause says more.
    """
    if cause == CAUSE_BUSY or reason == REASON_BUSY:
        return BUSY, "Line busy" + (f": {cause_text(cause)}" if cause is not None else "")
    if reason == REASON_RINGING:
        return MISSED, f"Not answered within {ring_timeout:g} s"
    if cause == CALL_REJECTED:
        return MISSED, f"Declined: {cause_text(cause)}"
    if cause in NO_ANSWER_CAUSES:
        return MISSED, f"Not answered: {cause_text(cause)}"
    if reason == REASON_CONGESTION or cause in CONGESTION_CAUSES:
        return ERROR, f"The network is congested: {cause_text(cause)}"
    if cause is None:
        return ERROR, f"The call could not be placed (Asterisk's OriginateResponse reason {reason})"
    return ERROR, f"The call could not be placed: {cause_text(cause)}"


# -- the running calls -----------------------------------------------------------------------


@dataclass
class AgiOutcome:
    """What the FastAGI route saw of an answered notification call."""

    answered_at: float
    ended_at: float | None = None
    heard: bool = False           # the message played to its end at least once (or a key answered it)
    key: str | None = None        # "1": acknowledged
    replays: int = 0
    lost: bool = False            # the connection to Asterisk closed without a hang-up notice
    error: str | None = None


@dataclass
class _Call:
    note: Notification
    channel_id: str
    agi_started: asyncio.Event = field(default_factory=asyncio.Event)
    agi_done: asyncio.Future | None = None
    hangup: asyncio.Future | None = None      # (cause, time) of the channel's Hangup event
    cause: int | None = None                  # from HangupRequest (before the Hangup event)
    media: dict[str, str] = field(default_factory=dict)  # what the call says, synthesized before dialing


class NotificationService:
    connect_wait = 10.0          # seconds a call waits for AMI to be connected
    verification_poll = 5.0      # seconds between two looks for codes to deliver
    webhook_base_delay = 1.0     # first retry after this many seconds, then doubling
    outbox_poll = 0.25           # seconds between two looks at the outbox (calls queued by the API)

    def __init__(self, config, db, ami: AmiClient, tts: Synthesizer, metrics: Metrics | None = None):
        self.config = config
        self.db = db
        self.ami = ami
        self.tts = tts
        self.metrics = metrics or Metrics()
        self.calls: dict[str, _Call] = {}
        self._by_channel: dict[str, _Call] = {}
        self.tasks = Tasks("notification service")
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self._verification: dict[Any, tuple[str, int, float]] = {}   # number id -> (code hash, calls, next)
        self._session: aiohttp.ClientSession | None = None
        #: Places a call through Twilio if its project uses Twilio (ivr.shells.twilio.notify), returning
        #: its outcome; None: the call is Asterisk's. Set by the composition root.
        self.through_twilio: Callable[[Notification], Awaitable[tuple[str, str, dict, float | None] | None]] | None \
            = None
        ami.add_listener(self._ami_event)

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    async def start(self) -> None:
        self._loops = [self.spawn(self._maintenance_loop()), self.spawn(self._outbox_loop())]

    async def close(self) -> None:
        self.ami.remove_listener(self._ami_event)
        # The polling loops end between two reads: a read cancelled inside the database bridge could
        # keep its pooled connection, and closing the pool would then wait for it forever.
        self._stopping.set()
        if self._loops:
            await asyncio.wait(self._loops, timeout=10)
        await self.tasks.close()
        if self._session is not None:
            await self._session.close()

    # -- placing calls -------------------------------------------------------------------

    def place(self, note: Notification) -> asyncio.Task:
        call = _Call(note, str(uuid.uuid4()))
        loop = asyncio.get_running_loop()
        call.agi_done, call.hangup = loop.create_future(), loop.create_future()
        self.calls[str(note.call_log_id)] = call
        self._by_channel[call.channel_id] = call
        return self.spawn(self._run(call))

    async def _run(self, call: _Call) -> None:
        note = call.note
        self.metrics.notifications_in_progress.inc()
        status, message, data, answered_seconds = ERROR, "Hotline hit an internal error (see the server log).", {}, None
        try:
            status, message, data, answered_seconds = await self._call(call)
        except asyncio.CancelledError:
            status, message = ERROR, "Hotline stopped before the call's outcome was known."
            raise
        except Exception:
            log.exception("notification call %s failed inside Hotline", note.call_log_id)
        finally:
            # Forget the call before recording it: a FastAGI session arriving now is hung up,
            # rather than talked to with nobody left to record what it hears.
            self.calls.pop(str(note.call_log_id), None)
            self._by_channel.pop(call.channel_id, None)
            cost = call_cost(note.to, answered_seconds, self.config.notify.rates)
            try:
                await asyncio.shield(run_and_release(self.db, finish_call_log, note.call_log_id, status, message,
                                                     cost, data))
            except Exception:  # noqa: BLE001
                log.exception("could not record the outcome of notification call %s", note.call_log_id)
            self.metrics.notifications_in_progress.dec()
            self.metrics.notifications.labels(status).inc()
            log.info("notification call %s to %s: %s (%s)", note.call_log_id, note.to, status, message)
        if data.get("acknowledged") and self.config.notify.webhook_url:
            try:
                # Delivered by the outbox's worker (retried across restarts), never holding up this call.
                await run_and_release(self.db, outbox.put, WEBHOOK, self.webhook_payload(note, data))
            except Exception:  # noqa: BLE001
                log.exception("could not queue the acknowledgement of call %s for the webhook", note.call_log_id)
        if note.kind == "verification" and status == SUCCESS and note.number_id is not None:
            try:
                await run_and_release(self.db, verification.mark_delivered, note.number_id, note.code)
            except Exception:  # noqa: BLE001
                log.exception("could not mark the verification code of number %s delivered", note.number_id)

    async def _call(self, call: _Call) -> tuple[str, str, dict, float | None]:
        note, cfg = call.note, self.config
        if self.through_twilio is not None:
            outcome = await self.through_twilio(note)  # None: not a Twilio project's call
            if outcome is not None:
                return outcome
        if not self.ami.connected.is_set():
            try:
                await asyncio.wait_for(self.ami.connected.wait(), self.connect_wait)
            except asyncio.TimeoutError:
                return ERROR, (f"Hotline is not connected to Asterisk's AMI at {self.ami.address} "
                               f"({self.ami.last_error or 'not connected'}): the call was not placed."), {}, None
        try:
            endpoint = endpoint_for(note.to, cfg.sip.outbound_trunk, cfg.sip.allowed_hosts)
        except NotDialable as exc:
            return ERROR, f"The call was not placed: {exc}.", {}, None
        try:
            # Before dialing: whoever answers hears the message at once, and speech that cannot be
            # synthesized places no call.
            call.media = await self.synthesize(note)
        except TTSError as exc:
            return ERROR, f"The message could not be synthesized ({exc}): the call was not placed.", {}, None
        caller_id = f'"Hotline" <{note.from_number}>' if note.from_number else None
        ring = float(cfg.notify.ring_timeout)
        try:
            originate = await self.ami.originate(
                channel=endpoint, context=CONTEXT, timeout=ring, caller_id=caller_id,
                variables={"HOTLINE_CALL_LOG": str(note.call_log_id)}, channel_id=call.channel_id)
        except AmiConnectionLost:
            return await self._after_ami_lost(
                call, "The AMI connection to Asterisk was lost before Asterisk accepted the Originate")
        except AmiTimeout as exc:  # Asterisk may still place it
            return await self._after_ami_lost(call, f"Asterisk did not acknowledge the Originate ({exc})")
        except AmiError as exc:
            return ERROR, f"Asterisk refused the call: {exc}", {}, None
        started = time.time()
        waiter = asyncio.ensure_future(call.agi_started.wait())
        try:
            done, _ = await asyncio.wait({originate.response, waiter}, timeout=ring + 15,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if call.agi_started.is_set():
            return await self._answered(call)
        if originate.response in done:
            try:
                response = originate.response.result()
            except AmiConnectionLost:
                return await self._after_ami_lost(
                    call, "The AMI connection to Asterisk was lost before Asterisk reported the call's outcome")
            reason = int_or_none(response.reason)
            if reason == REASON_ANSWERED:
                return await self._answered(call)
            cause = await self._cause(call, 1.0)
            status, message = classify_unanswered(reason, cause, ring)
            return status, message, {"hangupCause": cause}, None
        return ERROR, f"Asterisk reported no outcome within {time.time() - started:.0f} s.", {}, None

    async def _after_ami_lost(self, call: _Call, problem: str) -> tuple[str, str, dict, float | None]:
        """The Originate's fate is unknown (the AMI connection dropped, or its answer came too
        late): it is never sent again. If Asterisk did place it, its FastAGI session may still
        come; otherwise the row says what is known."""
        try:
            await asyncio.wait_for(call.agi_started.wait(), float(self.config.notify.ring_timeout) + 5)
        except asyncio.TimeoutError:
            return ERROR, f"{problem}; the outcome is unknown and the call was not placed again.", {}, None
        return await self._answered(call)

    def conversation(self, note: Notification) -> NotificationConversation:
        cfg = self.config.notify
        return NotificationConversation(note.parts(), verifying=note.kind == "verification",
                                        max_prompts=int(cfg.max_prompts), digit_timeout=float(cfg.digit_timeout))

    async def synthesize(self, note: Notification) -> dict[str, str]:
        """The files the call plays, by text (paths as Asterisk reads them); raises TTSError. A
        verification code is not among them: it is said with SAY DIGITS."""
        return {text: _path(await self.tts.media(text)) for text in self.conversation(note).texts()}

    async def _cause(self, call: _Call, wait: float) -> int | None:
        if call.hangup.done():
            return call.hangup.result()[0]
        try:
            return (await asyncio.wait_for(asyncio.shield(call.hangup), wait))[0]
        except asyncio.TimeoutError:
            return call.cause

    async def _answered(self, call: _Call) -> tuple[str, str, dict, float | None]:
        if not call.agi_started.is_set():
            # Answered: the FastAGI session follows at once, unless Asterisk cannot reach it.
            waiter = asyncio.ensure_future(call.agi_started.wait())
            try:
                await asyncio.wait({waiter, call.hangup}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                if not call.agi_started.is_set():
                    await asyncio.wait({waiter}, timeout=2)
            finally:
                waiter.cancel()
            if not call.agi_started.is_set() and call.hangup.done():
                return MISSED, "Answered, but hung up at once, before the message could start.", {"answered": True}, 0.0
            if not call.agi_started.is_set():
                return ERROR, ("Answered, but the message could not be played: Asterisk did not reach Hotline's "
                               f"FastAGI server (agi.host {self.config.agi.host}, agi.port {self.config.agi.port})."
                               ), {"answered": True}, 0.0
        try:
            outcome: AgiOutcome = await asyncio.wait_for(asyncio.shield(call.agi_done), MAX_CALL_SECONDS)
        except asyncio.TimeoutError:
            return ERROR, f"The call did not end within {MAX_CALL_SECONDS} s.", {"answered": True}, None
        ended = outcome.ended_at or time.time()
        seconds = max(0.0, ended - outcome.answered_at)
        data = {"answered": True, "keyPressed": outcome.key, "acknowledged": outcome.key == "1",
                "replays": outcome.replays, "durationInSeconds": round(seconds, 1),
                "answeredAt": _iso(outcome.answered_at)}
        # What the callee heard and did decides; a fault after that (a closing prompt that failed) does not.
        heard = heard_outcome(call.note, outcome.key, outcome.heard)
        if heard is not None:
            return (*heard, data, seconds)
        if outcome.error:
            return ERROR, f"Answered, but the message could not be played: {outcome.error}", data, seconds
        if outcome.lost:
            return ERROR, ("The call was lost: the connection to Asterisk closed during the call "
                           "(Asterisk stopped or restarted)."), data, seconds
        return MISSED, "Answered, but hung up before the message was heard in full.", data, seconds

    def _ami_event(self, event) -> None:
        call = self._by_channel.get(event.uniqueid)
        if call is None:
            return
        if event.event in ("HangupRequest", "SoftHangupRequest"):
            cause = int_or_none(event.cause)
            if cause:
                call.cause = call.cause or cause
        elif event.event == "Hangup" and not call.hangup.done():
            cause = int_or_none(event.cause)
            call.hangup.set_result((cause if cause else call.cause, time.time()))

    # -- the FastAGI route -------------------------------------------------------------------

    async def agi_route(self, chan: AgiChannel) -> None:
        call_id = chan.args[0] if chan.args else ""
        call = self.calls.get(call_id)
        if call is None or call.agi_started.is_set():
            log.warning("FastAGI notification for call log %r, which this server is not placing: hanging up",
                        call_id)
            await chan.hangup()
            return
        call.agi_started.set()
        outcome = AgiOutcome(answered_at=time.time())
        self.metrics.agi_sessions.labels(ROUTE).inc()
        try:
            await self._converse(chan, call, outcome)
        except AgiHangup:
            outcome.lost = not chan.hangup_notice
        except AgiError as exc:
            outcome.error = str(exc)
            log.error("notification call %s: %s", call_id, exc)
            await chan.hangup()
        finally:
            outcome.ended_at = time.time()
            self.metrics.agi_sessions.labels(ROUTE).dec()
            if not call.agi_done.done():
                call.agi_done.set_result(outcome)

    async def _converse(self, chan: AgiChannel, call: _Call, outcome: AgiOutcome) -> None:
        """Run the conversation (ivr.core.notification) on the answered channel, one command at a time."""
        talk = self.conversation(call.note)
        commands = talk.start()
        while commands:
            events = []
            for command in commands:
                if isinstance(command, Play):
                    key = await _play(chan, call.media[command.text], command.interrupt_digits)
                    events.append(DigitPressed(command.target, key) if key else PlaybackFinished(command.playback_id))
                elif isinstance(command, SayDigits):
                    key = await _say_digits(chan, command.digits, command.interrupt_digits)
                    events.append(DigitPressed(command.target, key) if key else PlaybackFinished(command.playback_id))
                elif isinstance(command, AwaitDigit):
                    key = await chan.wait_for_digit(command.seconds)
                    events.append(DigitPressed(command.target, key) if key else TimerFired(command.timer_id))
                elif isinstance(command, HangupCaller):
                    await chan.hangup()
            commands = [c for event in events for c in talk.handle(event)]
            outcome.heard, outcome.key, outcome.replays = talk.outcome.heard, talk.outcome.key, talk.outcome.replays

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_payload(self, note: Notification, data: dict) -> dict:
        return {"event": "call-log.acknowledged", "callLogId": str(note.call_log_id),
                "projectId": str(note.project_id), "toNumber": note.to, "keyPressed": data.get("keyPressed"),
                "acknowledgedAt": _iso(time.time()), "message": note.message, **note.links}

    async def deliver_webhooks(self) -> int:
        """One attempt for each acknowledgement due in the outbox; returns how many were delivered."""
        messages = await run_write(self.db, outbox.lease, WEBHOOK, WEBHOOK_LEASE)
        results = await asyncio.gather(*(self._deliver_webhook(message) for message in messages))
        return sum(results)

    async def _deliver_webhook(self, message) -> bool:
        cfg = self.config.notify
        payload = message.payload
        attempts = message.attempts + 1
        if not cfg.webhook_url or not cfg.webhook_secret:
            log.error("a webhook %s of call %s waits for delivery, but notify.webhook_url or "
                      "notify.webhook_secret is empty: webhooks are never sent unsigned; dropped",
                      payload.get("event"), _about(payload))
            self.metrics.webhook_deliveries.labels("failed").inc()
            await run_and_release(self.db, outbox.finish, message.id)
            return False
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Hotline",
                   "X-Hotline-Event": payload.get("event", ""), "X-Hotline-Delivery": str(message.id),
                   "X-Hotline-Signature": sign(cfg.webhook_secret, body, int(time.time()))}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        retriable = True
        try:
            async with self._session.post(cfg.webhook_url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    await run_and_release(self.db, outbox.finish, message.id)
                    self.metrics.webhook_deliveries.labels("delivered").inc()
                    log.info("webhook %s of call %s delivered", payload.get("event"), _about(payload))
                    return True
                problem = f"HTTP {resp.status}"
                # The receiver refuses it: retrying would not help.
                retriable = not (400 <= resp.status < 500 and resp.status not in (408, 425, 429))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            problem = str(exc) or type(exc).__name__
        if retriable and attempts <= max(0, int(cfg.webhook_retries)):
            delay = min(self.webhook_base_delay * 2 ** (attempts - 1), 300.0)
            await run_and_release(self.db, outbox.retry, message.id, delay + random.uniform(0, delay / 4), problem)
            return False
        await run_and_release(self.db, outbox.finish, message.id)
        self.metrics.webhook_deliveries.labels("failed").inc()
        log.error("could not deliver the webhook %s of call %s to %s (%s) after %d attempt(s)",
                  payload.get("event"), _about(payload), cfg.webhook_url, problem, attempts)
        return False

    async def _outbox_loop(self) -> None:
        """Calls the API queued, and acknowledgements due for the webhook, taken from the outbox."""
        while not self._stopping.is_set():
            try:
                for message in await run_write(self.db, outbox.take, NOTIFICATION_CALL):
                    self.place(Notification.from_payload(message.payload))
                await self.deliver_webhooks()
            except Exception:  # noqa: BLE001 - tried again at the next poll
                log.exception("reading the outbox failed")
            if await self._stopped_within(self.outbox_poll):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep ``seconds``; True as soon as the service is closing."""
        return await stopped_within(self._stopping, seconds)

    # -- verification codes ------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Every minute, rows left without an outcome; every few seconds, codes to deliver."""
        orphans_checked = float("-inf")
        while True:
            if time.monotonic() - orphans_checked >= 60:
                orphans_checked = time.monotonic()
                try:
                    await self.close_orphans()
                except Exception:  # noqa: BLE001 - tried again later
                    log.exception("closing the Call Log rows left without an outcome failed")
            if self.config.notify.verification_calls and self.ami.connected.is_set():
                try:
                    await self.deliver_codes()
                except Exception:  # noqa: BLE001 - tried again at the next poll
                    log.exception("delivering verification codes failed")
            if await self._stopped_within(self.verification_poll):
                return

    async def deliver_codes(self) -> int:
        """Call the numbers whose verification code waits for delivery; returns how many calls started."""
        pending = await run_and_release(self.db, verification.undelivered_codes)
        now = time.time()
        placed = 0
        busy = {call.note.number_id for call in self.calls.values() if call.note.number_id is not None}
        for number, code in pending:
            if number.id in busy:
                continue
            digest = hashlib.sha256(code.encode()).hexdigest()
            seen_digest, calls, next_at = self._verification.get(number.id, (digest, 0, 0.0))
            if seen_digest != digest:
                calls, next_at = 0, 0.0          # a new code: start over
            if calls >= VERIFICATION_ATTEMPTS or now < next_at:
                continue
            address = number.phoneNumber or number.sipUri
            if not address or len(address) > PHONE_COLUMN:
                continue
            self._verification[number.id] = (digest, calls + 1, now + VERIFICATION_RETRY)
            note = Notification(uuid.uuid4(), number.projectId, address, self.config.notify.from_number or None,
                                VERIFICATION_LOGGED, "verification", {}, number.userId, number.id, code)
            await run_and_release(self.db, create_call_log, note)
            self.place(note)
            placed += 1
        return placed

    async def close_orphans(self) -> int:
        """Rows left without an outcome for longer than any call lasts: the process placing them
        stopped. (Only old ones: another Hotline sharing the database may be placing the recent ones.)"""
        cutoff = m.utcnow() - dt.timedelta(seconds=MAX_CALL_SECONDS + float(self.config.notify.ring_timeout) + 60)
        orphans = await run_and_release(self.db, open_call_logs, cutoff)
        closed = 0
        for call_log_id in orphans:
            if str(call_log_id) in self.calls:
                continue
            await run_and_release(self.db, finish_call_log, call_log_id, ERROR,
                                  "Hotline stopped before the call's outcome was known.", 0, {})
            closed += 1
        return closed


def _path(media: str) -> str:
    return media.split(":", 1)[1] if media.startswith("sound:") else media


async def _play(chan: AgiChannel, path: str, keys: str = "") -> str | None:
    """Play a file; the key that stopped it. A file Asterisk cannot open is an error, not silence
    taken for a message heard."""
    result = await chan.stream_file(path, keys)
    if result.value == -1:
        raise AgiError(f"Asterisk could not play {path}: is Hotline's sounds directory readable by Asterisk "
                       "at the same path? (hotline doctor checks it)")
    return result.digit


async def _say_digits(chan: AgiChannel, digits: str, keys: str = "") -> str | None:
    """Say digits with Asterisk's recordings; the key that stopped them. The error never repeats the
    digits (a verification code)."""
    result = await chan.say_digits(digits, keys)
    if result.value == -1:
        raise AgiError("Asterisk could not say the digits: are its core sounds installed (digits/0 to "
                       "digits/9, Debian's asterisk-core-sounds-en-wav)?")
    return result.digit


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


__all__ = ["NotificationService", "classify_unanswered", "sign", "signature_is_valid"]


def _about(payload: dict) -> str:
    """Which call a webhook is about (a Call Log's id, a contact-center call's number, or an Incoming
    Call Log's id)."""
    return str(payload.get("callLogId") or payload.get("callId") or payload.get("incomingCallLogId") or "?")
