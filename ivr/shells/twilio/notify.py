"""Notification calls through Twilio: the REST API places the call, the TwiML webhooks run the
conversation (ivr.core.notification: the message, "Press 1 to acknowledge, press 9 to hear this
again", the key), and the call's status callback says how it ended.

A project's notification calls (``POST /api/call-log/send``, verification codes) go through Twilio
when the project has a project-level Twilio configuration, or, for every project, when
``notify.provider`` is ``twilio`` (the global account). :class:`NotificationService` decides and
hands the call to :meth:`TwilioNotifier.call`, which returns the outcome the Call Log records.

==========================  ==================================================================
conversation command        TwiML
==========================  ==================================================================
Play / SayDigits            ``<Gather numDigits=1 timeout=1 action=.../key>`` around ``<Say>``
                            (a key interrupts it), then ``<Redirect>`` to ``.../played/<id>``
AwaitDigit                  an empty ``<Gather numDigits=1 timeout=<seconds>>``, then
                            ``<Redirect>`` to ``.../timeout/<timer>``
HangupCaller                ``<Hangup/>``
==========================  ==================================================================

A verification code is said by ``<Say>`` digit by digit: it appears in the TwiML Twilio receives
(Twilio's request log), never in Hotline's files or logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from twilio.twiml.voice_response import VoiceResponse

from ivr.core.notification import Notification, NotificationConversation
from ivr.core.vocabulary import (
    CALLER,
    AwaitDigit,
    CallerHungUp,
    DigitPressed,
    HangupCaller,
    IllegalEvent,
    Play,
    PlaybackFinished,
    SayDigits,
    TimerFired,
)
from ivr.shells.notify import heard_outcome
from ivr.shells.twilio.clients import TwilioClients
from ivr.store import models as m
from ivr.store import twilio_accounts
from ivr.store.db import run_and_release
from ivr.twilio.webhooks import WebhookAuth, twiml

log = logging.getLogger(__name__)

ERROR, MISSED, BUSY = (m.CallLogStatus.ERROR.value, m.CallLogStatus.MISSED_CALL.value,
                       m.CallLogStatus.BUSY.value)
MAX_CALL_SECONDS = 900
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


@dataclass
class _NotifyCall:
    note: Notification
    account_sid: str
    talk: NotificationConversation
    sid: str = ""
    answered_at: float | None = None
    ended: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TwilioNotifier:
    """The routes ``/twilio/notify/...`` and the notification calls placed through Twilio."""

    def __init__(self, config, auth: WebhookAuth, clients: TwilioClients):
        self.config = config
        self.auth = auth
        self.clients = clients
        self.db = None
        self.public_url = config.twilio.public_url.rstrip("/")
        self.calls: dict[str, _NotifyCall] = {}

    def bind(self, db) -> None:
        self.db = db

    async def place_if_twilio(self, note: Notification) -> tuple[str, str, dict, float | None] | None:
        """The outcome of ``note`` placed through Twilio if its project uses Twilio, else None (the
        NotificationService places it on Asterisk)."""
        try:
            account = await run_and_release(self.db, twilio_accounts.notify_account_for, note.project_id,
                                            self.config)
        except twilio_accounts.TokenKeyError as exc:
            return ERROR, f"The project's Twilio account cannot be used: {exc}", {}, None
        if account is None:
            return None
        client = self.clients.client(account.account_sid, account.auth_token)
        return await self.call(note, client, account.account_sid, account.from_number)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twilio/notify/{call}/answered", self.answered),
            web.post("/twilio/notify/{call}/played/{playback}", self.played),
            web.post("/twilio/notify/{call}/key", self.key),
            web.post("/twilio/notify/{call}/timeout/{timer}", self.timeout),
            web.post("/twilio/notify/{call}/status", self.status),
        ]

    # -- placing a call --------------------------------------------------------------------------

    async def call(self, note: Notification, client: Any, account_sid: str, from_number: str | None
                   ) -> tuple[str, str, dict, float | None]:
        """Place ``note`` through Twilio with ``client`` (ivr.twilio.rest) and wait for its outcome:
        (Call Log status, message, callData, answered seconds)."""
        if not self.public_url:
            return ERROR, "twilio.public_url is not set: Twilio could not reach the call's instructions.", {}, None
        caller_id = note.from_number or from_number
        if not caller_id:
            return ERROR, ("No caller ID for a call through Twilio: set the project configuration's primary "
                           "number or twilio.from_number."), {}, None
        cfg = self.config.notify
        talk = NotificationConversation(note.parts(), verifying=note.kind == "verification",
                                        max_prompts=int(cfg.max_prompts), digit_timeout=float(cfg.digit_timeout))
        call = _NotifyCall(note, account_sid, talk)
        key = str(note.call_log_id)
        self.calls[key] = call
        ring = float(cfg.ring_timeout)
        try:
            try:
                call.sid = await client.create_call(
                    to=note.to, from_=caller_id, url=self._url(key, "answered"),
                    status_callback=self._url(key, "status"), status_callback_event=CALL_EVENTS,
                    timeout=max(5, math.ceil(ring)))
            except Exception as exc:  # noqa: BLE001 - Twilio's refusal is the outcome
                return ERROR, f"Twilio refused the call: {exc}", {}, None
            try:
                async with asyncio.timeout(ring + MAX_CALL_SECONDS):
                    params = await asyncio.shield(call.ended)
            except TimeoutError:
                return ERROR, "Twilio reported no outcome for the call.", {"callSid": call.sid}, None
            return self._outcome(call, params, ring)
        finally:
            self.calls.pop(key, None)

    def _outcome(self, call: _NotifyCall, params: dict[str, str], ring: float) -> tuple[str, str, dict, float | None]:
        status = params.get("CallStatus", "")
        data: dict[str, Any] = {"callSid": call.sid}
        if call.answered_at is None:
            if status == "busy":
                return BUSY, "Line busy", data, None
            if status in ("no-answer", "canceled"):
                return MISSED, f"Not answered within {ring:g} s", data, None
            code = params.get("ErrorCode") or params.get("SipResponseCode")
            return ERROR, "Twilio could not place the call" + (f" (code {code})" if code else ""), data, None
        outcome = call.talk.outcome
        try:
            seconds = float(params.get("CallDuration") or 0)
        except ValueError:
            seconds = 0.0
        data.update({"answered": True, "keyPressed": outcome.key, "acknowledged": outcome.key == "1",
                     "replays": outcome.replays, "durationInSeconds": round(seconds, 1)})
        heard = heard_outcome(call.note, outcome.key, outcome.heard)
        if heard is not None:
            return (*heard, data, seconds)
        return MISSED, "Answered, but hung up before the message was heard in full.", data, seconds

    # -- the webhooks ----------------------------------------------------------------------------

    async def answered(self, request: web.Request) -> web.Response:
        call = await self._call_of(request)
        if call is None:
            return _hang_up()
        call.answered_at = time.time()
        return self._document(call, call.talk.start())

    async def played(self, request: web.Request) -> web.Response:
        return await self._step(request, lambda call: PlaybackFinished(request.match_info["playback"]))

    async def key(self, request: web.Request) -> web.Response:
        params: dict[str, str] = {}

        def event(call):
            digit = params.get("Digits", "")[:1]
            return DigitPressed(CALLER, digit) if digit else None
        return await self._step(request, event, params)

    async def timeout(self, request: web.Request) -> web.Response:
        return await self._step(request, lambda call: TimerFired(request.match_info["timer"]))

    async def status(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        call = self.calls.get(request.match_info["call"])
        if call is not None and params.get("CallSid") == call.sid:
            if params.get("CallStatus") == "in-progress" and call.answered_at is None:
                call.answered_at = time.time()
            if params.get("CallStatus") in ("completed", "busy", "failed", "no-answer", "canceled"):
                call.talk.handle(CallerHungUp())
                if not call.ended.done():
                    call.ended.set_result(params)
        return web.Response(status=204)

    async def _call_of(self, request: web.Request, params: dict | None = None) -> _NotifyCall | None:
        got = await self.auth.check(request)
        if params is not None:
            params.update(got)
        call = self.calls.get(request.match_info["call"])
        if call is None or got.get("CallSid") != call.sid:
            log.warning("Twilio asked about notification call %s (%s), which this process is not placing",
                        request.match_info["call"], got.get("CallSid"))
            return None
        return call

    async def _step(self, request: web.Request, make_event, params: dict | None = None) -> web.Response:
        call = await self._call_of(request, params if params is not None else {})
        if call is None:
            return _hang_up()
        event = make_event(call)
        try:
            commands = call.talk.handle(event) if event is not None else []
        except IllegalEvent as exc:
            # A late or repeated request (Twilio retried it): the conversation has moved on.
            log.warning("notification call %s: ignoring %r: %s", call.note.call_log_id, event, exc)
            commands = []
        return self._document(call, commands)  # nothing left to say: a hang-up

    def _url(self, call: str, path: str) -> str:
        return f"{self.public_url}/twilio/notify/{call}/{path}"

    def _document(self, call: _NotifyCall, commands: list) -> web.Response:
        key = str(call.note.call_log_id)
        cfg = self.config.twilio
        response = VoiceResponse()
        for command in commands:
            if isinstance(command, (Play, SayDigits)):
                text = command.text if isinstance(command, Play) else ", ".join(command.digits)
                if command.interrupt_digits:
                    gather = response.gather(num_digits=1, timeout=1, action=self._url(key, "key"), method="POST",
                                             action_on_empty_result=False, language=cfg.language)
                    gather.say(text, voice=cfg.voice, language=cfg.language)
                else:
                    response.say(text, voice=cfg.voice, language=cfg.language)
                response.redirect(self._url(key, f"played/{command.playback_id}"), method="POST")
            elif isinstance(command, AwaitDigit):
                response.gather(num_digits=1, timeout=max(1, math.ceil(command.seconds)),
                                action=self._url(key, "key"), method="POST", action_on_empty_result=False)
                response.redirect(self._url(key, f"timeout/{command.timer_id}"), method="POST")
            elif isinstance(command, HangupCaller):
                response.hangup()
        if not commands:
            response.hangup()
        return twiml(response)


def _hang_up() -> web.Response:
    response = VoiceResponse()
    response.hangup()
    return twiml(response)
