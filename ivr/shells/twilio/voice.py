"""The Twilio shell of the escalation engine: Incoming Call Policies over TwiML webhooks.

The same engine as the ARI and FastAGI shells decides; this file turns Twilio's webhooks into its
events and its commands into TwiML. Twilio asks "what next?" only at certain moments, so every
TwiML document given to the caller ends with a verb that asks again:

==========================  ==================================================================
engine command              over Twilio
==========================  ==================================================================
Answer                      nothing (returning TwiML answers the call)
Play(caller)                ``<Say>``, then ``<Redirect>`` to ``.../played/<playback>``, which
                            reports ``PlaybackFinished`` and gets what follows
Dial (all legs of a rule)   one ``<Dial action=.../dial/<n> timeout=<rule's seconds>
                            answerOnBridge=true>`` with a ``<Number url=... statusCallback=...>``
                            per leg: Twilio rings them at once, connects the first to pick up
                            and hangs up the others (reported ``cut_off``), and its ``action``
                            reports how the Dial ended
StartRingback/StopRingback  nothing: ``answerOnBridge`` keeps the caller hearing ringback
Play(leg) / Bridge(leg)     the answering leg's ``<Number url>`` (``.../answered``): a ``<Gather
                            numDigits=1>`` around ``<Say>`` (the whisper; its key goes to
                            ``.../key``); Bridge = an empty document (Twilio then connects the
                            parties); anything else = ``<Hangup/>`` (not connected)
HangupLeg(leg)              a leg in its whisper: hung up through the REST API (the Gather's own
                            timeout and its ``<Hangup/>`` end it anyway); a ringing leg: nothing
                            (the Dial ends it)
HangupCaller                ``<Hangup/>``
StartTimer                  a timer on the event loop (the confirmation window); the engine arms
                            no rule timer: the Dial's ``timeout`` ends the rule's legs
==========================  ==================================================================

Acceptance is the whisper's key ``1``, never inferred from Twilio's ``completed``: a carrier
voicemail that answers hears the whisper, presses nothing and is hung up, so it is never the answer.

A call lives in the process that took its voice webhook (its engine is in memory, like the FastAGI
shell's): every webhook of a call must reach that process. A webhook for a call this process does
not run (it restarted) is answered with an apology and ``<Hangup/>``, and the call's log is closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from aiohttp import web
from twilio.twiml.voice_response import VoiceResponse

from ivr.core.engine import (
    CALLER,
    DTMF_DIGITS,
    Answer,
    Bridge,
    CallerHungUp,
    CallSetup,
    CallStarted,
    CancelTimer,
    Dial,
    DigitPressed,
    EscalationCall,
    HangupCaller,
    HangupLeg,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackFinished,
    StartRingback,
    StartTimer,
    StopPlayback,
    StopRingback,
    UpdateItem,
    UpdateLog,
)
from ivr.metrics import Metrics
from ivr.runtime import Tasks
from ivr.shells.base import NOT_IN_SERVICE, SORRY, CallActorBase
from ivr.store import callstore
from ivr.store.db import run_and_release
from ivr.twilio.webhooks import WebhookAuth, twiml

log = logging.getLogger(__name__)

#: How long a webhook waits for the engine's answer (Twilio gives up after 15 s).
ANSWER_WITHIN = 10.0
#: How long a finished call still answers its late webhooks (a Dial's action, status callbacks).
KEEP_FINISHED = 120.0
#: Twilio dials at most this many numbers at once.
MAX_NUMBERS = 10
LEG_EVENTS = "initiated ringing answered completed"
LOST_MESSAGE = ("The call was lost: Twilio asked about it after Hotline had restarted (a Twilio call's "
                "state lives in the process that answered it)")
CUT_OFF_MESSAGE = "Stopped ringing: another number of this rule answered first (Twilio's Dial connects the first)"
TERMINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass
class TwilioLeg:
    leg_id: str
    dial: int                   # which Dial of the call rings it
    child_sid: str = ""         # Twilio's CallSid of this leg, once a webhook named it
    answered: bool = False      # its whisper was requested (it picked up)
    canceled: bool = False      # Twilio canceled it; why is told by another webhook
    bridged: bool = False
    ended: bool = False         # reported to the engine


@dataclass
class _Webhook:
    """A webhook's event, and the future its handler awaits (the TwiML of the caller or of a leg)."""

    event: Any
    reply: asyncio.Future
    leg_id: str | None = None   # None: the caller's document
    params: dict = field(default_factory=dict)


class TwilioCallActor(CallActorBase):
    """One incoming Twilio call: its engine, its TwiML, its legs, its writes."""

    shell = " over Twilio"
    dial_enforces_timeout = True

    def __init__(self, calls: TwilioCalls, params: dict[str, str]):
        super().__init__(calls, callstore.TWILIO_CALL_PREFIX + params["CallSid"],
                         dialed=params.get("To", ""), caller=_caller_of(params.get("From", "")))
        self.call_sid = params["CallSid"]
        self.account_sid = params.get("AccountSid", "")
        self.caller_verbs: list[tuple] = []
        self.caller_reply: asyncio.Future | None = None
        self.leg_verbs: dict[str, list[tuple]] = {}
        self.legs: dict[str, TwilioLeg] = {}
        self.dials = 0
        self.caller_gone = False
        self.call_id = ""
        self.done = False  # the engine is finished: late webhooks are answered at once

    # -- the call ----------------------------------------------------------------------------

    async def run(self) -> None:
        self.c.metrics.calls_in_progress.inc()
        try:
            setup = await self._open()
            if setup is None:
                return
            self.engine = EscalationCall(setup)
            self.call_id = setup.call_id
            self.c.by_call[self.call_id] = self
            await self._feed(CallStarted())
            self._start_writer()
            while not self.engine.is_finished:
                item = await self.queue.get()
                await self._handle(item)
        except asyncio.CancelledError:
            if self.log_id is not None and self.final_status is None:
                self.writes.put_nowait((callstore.close_lost_call, self.log_id,
                                        "The call was lost: Hotline stopped during the call", time.time()))
            raise
        except Exception:
            log.exception("Twilio call %s failed inside Hotline", self.call_sid)
            self._say_and_hang_up(SORRY)
            if self.log_id is not None and self.final_status is None:
                self.writes.put_nowait((callstore.close_lost_call, self.log_id,
                                        "Hotline failed during the call (an internal error)", time.time()))
        finally:
            self.done = True
            self._answer_the_rest()
            await self._finish()

    async def _finish(self) -> None:
        self._count_end()
        if self.writer is not None or not self.writes.empty():
            await self._flush_writes()
        self.c.retire(self)
        if self.log_id is not None and not self.c.closing:
            self.c.spawn(self.c.record_costs(self))

    def _shell_setup(self, setup: CallSetup) -> CallSetup:
        return super()._shell_setup(setup)  # records_voicemail stays False: no recording over Twilio yet

    async def _warm_prompts(self, setup: CallSetup) -> None:
        return None  # Twilio speaks <Say> itself

    async def _announce_and_hang_up(self, text: str) -> None:
        self._say_and_hang_up(text)

    def _say_and_hang_up(self, text: str) -> None:
        self.caller_verbs += [("say", text), ("hangup",)]
        self._deliver_caller()

    # -- webhooks in ---------------------------------------------------------------------------

    def ask(self, event, leg_id: str | None = None, params: dict | None = None) -> asyncio.Future:
        """Post a webhook's event; the future gives the TwiML to answer it with."""
        reply = asyncio.get_running_loop().create_future()
        if self.done:
            reply.set_result(self._last_caller_document() if leg_id is None else _hang_up_document())
            return reply
        if leg_id is None:
            if self.caller_reply is not None and not self.caller_reply.done():
                # Twilio asks one thing at a time: an older request was given up (retried).
                self.caller_reply.set_result(None)
            self.caller_reply = reply
        self.post(_Webhook(event, reply, leg_id, params or {}))
        return reply

    async def _handle(self, item) -> None:
        if not isinstance(item, _Webhook):
            await self._feed(item)  # a timer
            return
        events = item.event if isinstance(item.event, list) else [item.event]
        for event in events:
            if event is not None:
                await self._feed(event)
        if item.leg_id is not None and not item.reply.done():
            item.reply.set_result(self._leg_document(item.leg_id))
        self._deliver_caller()

    async def _feed(self, event) -> None:
        if self.engine is None or self.engine.is_finished:
            return
        if isinstance(event, CallerHungUp):
            self.caller_gone = True
            self.caller_verbs.clear()
        step = self._step(event)
        if step is None:
            return
        commands, _ = step
        dials = [c for c in commands if isinstance(c, Dial)]
        for command in commands:
            self._execute(command)
        if dials:
            self._dial(dials)

    def _execute(self, command) -> None:
        if isinstance(command, UpdateLog):
            self._record_log(command)
        elif isinstance(command, UpdateItem):
            self._record_item(command)
        elif isinstance(command, StartTimer):
            self._start_timer(command.timer_id, command.at)
        elif isinstance(command, CancelTimer):
            self._cancel_timer(command.timer_id)
        elif isinstance(command, Play):
            if command.target == CALLER:
                self.caller_verbs += [("say", command.text), ("played", command.playback_id)]
            else:
                self.leg_verbs.setdefault(command.target, []).append(("whisper", command.text))
        elif isinstance(command, Bridge):
            leg = self.legs.get(command.leg_id)
            if leg is not None:
                leg.bridged = True
            self.leg_verbs.setdefault(command.leg_id, []).append(("bridge",))
        elif isinstance(command, HangupLeg):
            self._hang_up_leg(command.leg_id)
        elif isinstance(command, HangupCaller):
            if not self.caller_gone:
                self.caller_verbs.append(("hangup",))
        elif isinstance(command, (Answer, StartRingback, StopRingback, StopPlayback, Dial)):
            pass  # answering is returning TwiML; Dial rings back (answerOnBridge); Dial: below
        else:
            log.error("call %s: %r cannot be done over Twilio", self.log_id, command)

    def _hang_up_leg(self, leg_id: str) -> None:
        self.leg_verbs[leg_id] = [("hangup",)]
        leg = self.legs.get(leg_id)
        if leg is not None and leg.answered and not leg.ended and leg.child_sid:
            # In its whisper: Twilio runs the <Gather> and asks nothing until it ends.
            self.c.spawn(self.c.hang_up(self.account_sid, leg.child_sid, f"call {self.log_id}"))

    # -- TwiML out -----------------------------------------------------------------------------

    def _dial(self, dials: list[Dial]) -> None:
        self.dials += 1
        n = self.dials
        now = time.time()
        numbers: list[tuple[str, str]] = []
        for command in dials:
            self.legs[command.leg_id] = TwilioLeg(command.leg_id, n)
            self.writes.put_nowait((callstore.create_item, self.log_id, self.project_id, command.leg_id,
                                    command.contact, command.rule_id, command.rule_order, now))
            number = _e164(command.contact.address)
            if number is None:
                self._leg_failed(command.leg_id, f"{command.contact.address} is not a phone number Twilio can dial")
            elif any(number == known for known, _ in numbers):
                self._leg_failed(command.leg_id, f"{number} is already rung by this Dial")
            elif len(numbers) >= MAX_NUMBERS:
                self._leg_failed(command.leg_id, f"Twilio rings at most {MAX_NUMBERS} numbers at once")
            else:
                numbers.append((number, command.leg_id))
        if numbers:
            timeout = max(1, math.ceil(max(d.timeout for d in dials)))
            self.caller_verbs.append(("dial", n, timeout, numbers))

    def _leg_failed(self, leg_id: str, why: str) -> None:
        log.error("call %s: cannot ring %s", self.log_id, why)
        self.legs[leg_id].ended = True
        self.post(LegEnded(leg_id, "failed", why))

    def _url(self, path: str) -> str:
        return f"{self.c.public_url}/twilio/calls/{self.call_id}/{path}"

    def _deliver_caller(self) -> None:
        """Answer the caller's waiting webhook once the TwiML asks Twilio for what comes next."""
        reply = self.caller_reply
        if reply is None or reply.done() or not self.caller_verbs:
            return
        if self.caller_verbs[-1][0] not in ("played", "dial", "hangup"):
            return  # not yet a document that asks again
        reply.set_result(self._caller_document())

    def _last_caller_document(self) -> VoiceResponse:
        """The call is over: what is left to say, then a hang-up."""
        if not self.caller_verbs or self.caller_verbs[-1] != ("hangup",):
            self.caller_verbs = [v for v in self.caller_verbs if v[0] == "say"] + [("hangup",)]
        return self._caller_document()

    def _answer_the_rest(self) -> None:
        """The engine is done: answer the caller's waiting webhook and every one still queued."""
        if self.caller_reply is not None and not self.caller_reply.done():
            self.caller_reply.set_result(self._last_caller_document())
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _Webhook) and not item.reply.done():
                item.reply.set_result(_hang_up_document() if item.leg_id else self._last_caller_document())

    def _caller_document(self) -> VoiceResponse:
        response = VoiceResponse()
        cfg = self.c.config.twilio
        for verb in self.caller_verbs:
            if verb[0] == "say":
                response.say(verb[1], voice=cfg.voice, language=cfg.language)
            elif verb[0] == "played":
                response.redirect(self._url(f"played/{verb[1]}"), method="POST")
            elif verb[0] == "dial":
                _, n, timeout, numbers = verb
                dial = response.dial(action=self._url(f"dial/{n}"), method="POST", timeout=timeout,
                                     answer_on_bridge=True)
                for number, leg_id in numbers:
                    dial.number(number, url=self._url(f"legs/{leg_id}/answered"), method="POST",
                                status_callback=self._url(f"legs/{leg_id}/status"),
                                status_callback_event=LEG_EVENTS, status_callback_method="POST")
            elif verb[0] == "hangup":
                response.hangup()
        self.caller_verbs = []
        return response

    def _leg_document(self, leg_id: str) -> VoiceResponse:
        """What an answering leg hears: the whisper, nothing (connect it) or a hang-up."""
        verbs = self.leg_verbs.pop(leg_id, [])
        response = VoiceResponse()
        cfg = self.c.config.twilio
        if ("hangup",) in verbs or not verbs:
            response.hangup()
        elif ("bridge",) in verbs:
            pass  # an empty document: Twilio connects the parties
        else:
            text = next(v[1] for v in verbs if v[0] == "whisper")
            seconds = max(1, math.ceil(self.engine.setup.confirm_timeout))
            gather = response.gather(num_digits=1, timeout=seconds, action=self._url(f"legs/{leg_id}/key"),
                                     method="POST", action_on_empty_result=False, language=cfg.language)
            gather.say(text, voice=cfg.voice, language=cfg.language)
            response.hangup()  # no key: the whisper hangs up, and the caller is not connected to it
        return response

    # -- what Twilio reports -------------------------------------------------------------------

    def leg_status(self, leg_id: str, params: dict[str, str]) -> list:
        """A <Number>'s status callback: the events it means for the engine."""
        leg = self.legs.get(leg_id)
        if leg is None:
            return []
        leg.child_sid = leg.child_sid or params.get("CallSid", "")
        status = params.get("CallStatus", "")
        if status == "ringing":
            return [LegRinging(leg_id)]
        if status not in TERMINAL_CALL_STATUSES or leg.ended or leg.answered:
            # An answered leg's end is told by its whisper or by the Dial's action (with its duration).
            return []
        if self._sibling_answered(leg):
            leg.ended = True
            return [LegEnded(leg_id, "cut_off", CUT_OFF_MESSAGE)]
        if status == "canceled":
            # Twilio cancels a Dial's numbers when another one picked up (whose whisper request may
            # not be here yet) or when the caller left (whose own report may come later): the
            # sibling's whisper, the Dial's action or the caller's status callback will say which.
            leg.canceled = True
            return []
        leg.ended = True
        return [LegEnded(leg_id, _LEG_CAUSES.get(status, "hangup"), _detail(status, params))]

    def dial_ended(self, n: int, params: dict[str, str]) -> list:
        """The Dial's action: how each of its legs not yet reported ended, and maybe the caller's hang-up."""
        status = params.get("DialCallStatus", "")
        if params.get("CallStatus") in TERMINAL_CALL_STATUSES or status == "canceled":
            return [CallerHungUp()]  # the engine ends every leg still live with the caller's hang-up
        events: list = []
        for leg in self.legs.values():
            if leg.dial != n or leg.ended:
                continue
            leg.ended = True
            if leg.bridged or leg.answered:
                events.append(LegEnded(leg.leg_id, "hangup"))   # talked, or refused in its whisper
            elif self._sibling_answered(leg):
                events.append(LegEnded(leg.leg_id, "cut_off", CUT_OFF_MESSAGE))
            else:
                events.append(LegEnded(leg.leg_id, _LEG_CAUSES.get(status, "failed"), _detail(status, params)))
        return events

    def leg_answered(self, leg_id: str, params: dict[str, str]) -> list:
        leg = self.legs.get(leg_id)
        if leg is None:
            return []
        leg.child_sid = params.get("CallSid", "") or leg.child_sid
        leg.answered = True
        events: list = [LegAnswered(leg_id)]
        for other in self.legs.values():
            if other.dial == leg.dial and other.canceled and not other.ended:
                other.ended = True
                events.append(LegEnded(other.leg_id, "cut_off", CUT_OFF_MESSAGE))
        return events

    def _sibling_answered(self, leg: TwilioLeg) -> bool:
        return any(other.dial == leg.dial and other.answered and other is not leg for other in self.legs.values())


_LEG_CAUSES = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "completed": "hangup"}


def _detail(status: str, params: dict[str, str]) -> str:
    code = params.get("SipResponseCode") or params.get("ErrorCode")
    return f"Twilio reported {status or 'no status'}" + (f" (code {code})" if code else "")


def _caller_of(raw: str) -> str:
    # Twilio's placeholders for a withheld caller ID.
    return "" if raw.lstrip("+") in ("", "anonymous", "266696687", "7378742833", "2562533", "86282452253") else raw


def _e164(address: str) -> str | None:
    try:
        number = phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class TwilioCalls:
    """The routes of Twilio's voice webhooks (``/twilio/...``) and the calls they run."""

    def __init__(self, config, *, tokens_for: Callable[[str], Awaitable[list[str]]],
                 rest_for: Callable[[str], Awaitable[Any]] | None = None):
        self.config = config
        self.db = None
        self.reads = None
        self.metrics = Metrics()
        self.tts = None
        self.public_url = config.twilio.public_url.rstrip("/")
        self.auth = WebhookAuth(self.public_url, tokens_for, config.twilio.trust_forwarded_headers)
        self.rest_for = rest_for
        self.by_sid: dict[str, TwilioCallActor] = {}
        self.by_call: dict[str, TwilioCallActor] = {}
        self.finished: dict[str, TwilioCallActor] = {}
        self.tasks = Tasks("Twilio calls")
        self.closing = False
        #: Seconds after a call's end when its price is read (Twilio prices a call some time after it).
        self.price_delays: tuple[float, ...] = (5.0, 60.0, 300.0)

    def bind(self, db, reads=None, metrics: Metrics | None = None) -> None:
        """The database (and the way reads run) once the app opened it."""
        self.db = db
        self.reads = reads or (lambda fn, *args: run_and_release(db, fn, *args))
        self.metrics = metrics or self.metrics

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twilio/voice", self.voice),
            web.post("/twilio/status", self.status),
            web.post("/twilio/calls/{call}/played/{playback}", self.played),
            web.post("/twilio/calls/{call}/dial/{n}", self.dial_action),
            web.post("/twilio/calls/{call}/legs/{leg}/answered", self.answered),
            web.post("/twilio/calls/{call}/legs/{leg}/key", self.key),
            web.post("/twilio/calls/{call}/legs/{leg}/status", self.leg_status),
        ]

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    async def close(self) -> None:
        self.closing = True  # a call ended by the shutdown starts no price reading
        await self.tasks.close()

    def retire(self, actor: TwilioCallActor) -> None:
        self.by_sid.pop(actor.call_sid, None)
        if self.by_call.get(actor.call_id) is actor:
            del self.by_call[actor.call_id]
            self.finished[actor.call_id] = actor
            asyncio.get_running_loop().call_later(KEEP_FINISHED, self.finished.pop, actor.call_id, None)

    # -- the caller's webhooks ------------------------------------------------------------------

    async def voice(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        if not params.get("CallSid"):
            raise web.HTTPBadRequest(text="no CallSid\n")
        actor = self.by_sid.get(params["CallSid"])
        if actor is not None:
            log.warning("Twilio asked again for call %s's first document; it is running already", actor.call_sid)
            return _hang_up()
        actor = TwilioCallActor(self, params)
        self.by_sid[actor.call_sid] = actor
        reply = actor.ask(None)
        self.spawn(actor.run())
        return await self._answer(actor, reply)

    async def played(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        actor = await self._caller_actor(request, params)
        if actor is None:
            return _sorry()
        return await self._answer(actor, actor.ask(PlaybackFinished(request.match_info["playback"])))

    async def dial_action(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        actor = await self._caller_actor(request, params)
        if actor is None:
            return _sorry()
        try:
            n = int(request.match_info["n"])
        except ValueError:
            raise web.HTTPNotFound() from None
        return await self._answer(actor, actor.ask(actor.dial_ended(n, params)))

    async def status(self, request: web.Request) -> web.Response:
        """The number's status callback: the caller's call ended."""
        params = await self.auth.check(request)
        if params.get("CallStatus") not in TERMINAL_CALL_STATUSES:
            return web.Response(status=204)
        actor = self.by_sid.get(params.get("CallSid", ""))
        if actor is not None:
            actor.caller_gone = True
            actor.post(CallerHungUp())
        else:
            await self._close_if_lost(params.get("CallSid", ""))
        return web.Response(status=204)

    # -- the legs' webhooks ---------------------------------------------------------------------

    async def answered(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        actor, leg_id = self._leg_actor(request, params)
        if actor is None:
            return _hang_up()
        return await self._answer(actor, actor.ask(actor.leg_answered(leg_id, params), leg_id))

    async def key(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        actor, leg_id = self._leg_actor(request, params)
        if actor is None:
            return _hang_up()
        digit = params.get("Digits", "")[:1]
        event = DigitPressed(leg_id, digit) if digit in DTMF_DIGITS else None
        return await self._answer(actor, actor.ask(event, leg_id))

    async def leg_status(self, request: web.Request) -> web.Response:
        params = await self.auth.check(request)
        actor, leg_id = self._leg_actor(request, params)
        if actor is not None:
            events = actor.leg_status(leg_id, params)
            for event in events:
                actor.post(event)
        return web.Response(status=204)

    # -- helpers --------------------------------------------------------------------------------

    async def _answer(self, actor: TwilioCallActor, reply: asyncio.Future) -> web.Response:
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                response = await asyncio.shield(reply)
        except TimeoutError:
            log.error("Twilio call %s: the engine had nothing to say within %.0f s; apologizing and hanging up",
                      actor.call_sid, ANSWER_WITHIN)
            return _sorry()
        if response is None:
            return _hang_up()  # superseded by a newer request of the same call
        return twiml(response)

    async def _caller_actor(self, request: web.Request, params: dict[str, str]) -> TwilioCallActor | None:
        call = request.match_info["call"]
        actor = self.by_call.get(call)
        if actor is None and call in self.finished:
            return self.finished[call]
        if actor is None or actor.call_sid != params.get("CallSid"):
            log.warning("Twilio asked about call %s (%s), which this process does not run", call,
                        params.get("CallSid"))
            await self._close_if_lost(params.get("CallSid", ""))
            return None
        return actor

    def _leg_actor(self, request: web.Request, params: dict[str, str]) -> tuple[TwilioCallActor | None, str]:
        """The call a leg's webhook is about: the leg must be the call's, and Twilio's parent call the caller's."""
        call, leg_id = request.match_info["call"], request.match_info["leg"]
        actor = self.by_call.get(call)
        if actor is None or leg_id not in actor.legs or params.get("ParentCallSid") != actor.call_sid:
            return None, leg_id
        return actor, leg_id

    async def _close_if_lost(self, call_sid: str) -> None:
        if call_sid:
            await run_and_release(self.db, callstore.close_lost_provider_call,
                                  callstore.TWILIO_CALL_PREFIX + call_sid, LOST_MESSAGE, time.time())

    async def hang_up(self, account_sid: str, call_sid: str, what: str) -> None:
        try:
            client = await self.rest_for(account_sid) if self.rest_for else None
            if client is not None:
                await client.hang_up(call_sid)
        except Exception as exc:  # noqa: BLE001 - the whisper's own timeout ends it anyway
            log.warning("%s: Twilio could not hang up %s: %s", what, call_sid, exc)

    async def record_costs(self, actor: TwilioCallActor) -> None:
        """The call's price in USD cents, read from Twilio once it has priced the call and its legs."""
        sids = {leg.leg_id: leg.child_sid for leg in actor.legs.values() if leg.child_sid}
        waited = 0.0
        for delay in self.price_delays:
            await asyncio.sleep(max(0.0, delay - waited))
            waited = delay
            try:
                client = await self.rest_for(actor.account_sid) if self.rest_for else None
                if client is None:
                    return
                incoming = await client.fetch_call(actor.call_sid)
                legs = {leg_id: await client.fetch_call(sid) for leg_id, sid in sids.items()}
            except Exception as exc:  # noqa: BLE001 - tried again later; the call is over either way
                log.warning("call %s: cannot read its price from Twilio: %s", actor.log_id, exc)
                continue
            if incoming.price is None or any(info.price is None for info in legs.values()):
                continue  # not priced yet
            await run_and_release(self.db, callstore.set_costs, actor.log_id, incoming.cost_cents,
                                  {leg_id: info.cost_cents for leg_id, info in legs.items()})
            return
        log.warning("call %s: Twilio had not priced it %.0f s after its end; its cost stays 0", actor.log_id, waited)


def _hang_up_document() -> VoiceResponse:
    response = VoiceResponse()
    response.hangup()
    return response


def _hang_up() -> web.Response:
    return twiml(_hang_up_document())


def _sorry() -> web.Response:
    response = VoiceResponse()
    response.say(SORRY)
    response.hangup()
    return twiml(response)


__all__ = ["NOT_IN_SERVICE", "TwilioCallActor", "TwilioCalls"]
