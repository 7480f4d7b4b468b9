"""FakeTwilio: an asyncio simulator of Twilio's Programmable Voice, for tests with no internet.

It talks HTTP to a web app under test (any server listening at ``base_url``) the way Twilio
does: signed, form-encoded webhooks with Twilio's standard parameters; it executes the TwiML
the app returns on simulated calls, and scripted phones (``Phone``) stand in for people.

    async with FakeTwilio(base_url=str(server.make_url("")), public_url="https://hotline.example.test",
                          auth_token=TOKEN, phones=[Phone.answering("+15550001", presses=["1"])],
                          time_scale=0.05) as twilio:
        call = await twilio.incoming_call(to="+15550100", from_="+14155550123",
                                          voice_url="https://hotline.example.test/twilio/voice",
                                          status_callback="https://hotline.example.test/twilio/status")
        assert call.status == "completed"
        assert call.child("+15550001").bridged_at is not None
        print(call.transcript, [(r.kind, r.path, r.params) for r in call.all_requests])

Time: every simulated duration (ringing, Say, Pause, Gather and Dial timeouts, a party's hang-up
delay) is slept for ``seconds * time_scale`` real seconds; times in the records (``Event.t``,
``Call.answered_at``..., ``CallDuration``) are simulated seconds since the harness started. HTTP
round trips take real time, which, divided by ``time_scale``, also counts as simulated time: keep
scripted margins of a simulated second or more when ``time_scale`` is small.

What follows Twilio's documentation (twilio.com/docs/voice/twiml/*, /docs/usage/webhooks/*,
/docs/usage/security, /docs/api/errors/*) is marked "docs"; what the documentation leaves open and
the harness chooses is marked "choice".
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
# docs (/docs/api/errors/11200, 12100): on a failed or unparseable TwiML fetch, Twilio plays this
# message to the caller and hangs up (the fallback URL is not simulated).
APPLICATION_ERROR_TEXT = "We are sorry, an application error has occurred. Goodbye."
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")

# What a verb handler returns besides ("url"|"twiml", ...) for the next document.
_CONTINUE = "continue"
_HANGUP = "hangup"
_END = "end"


def new_call_sid() -> str:
    """A Call SID as Twilio writes them: "CA" and 32 hex digits."""
    return "CA" + secrets.token_hex(16)


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --------------------------------------------------------------------------- the scripted parties


@dataclass
class Press:
    """Keys a party presses into one <Gather>: ``digits`` pressed ``delay`` simulated seconds after the
    Gather started (during its nested Say/Play they barge in, as on Twilio). Several digits are
    pressed at once; "" or None (a silent turn) lets the Gather time out."""

    digits: str | None
    delay: float = 0.5


@dataclass(eq=False)
class Phone:
    """A scripted telephone, keyed by its E.164 number.

    behaviour: "answer" (after ``ring`` seconds), "busy", "no-answer" (rings until the timeout),
    "fail" (the carrier cannot route it: failed). A number with no Phone registered fails too.
    presses: one entry per <Gather> executed on this phone's calls, in order: a digit string
    (pressed ``press_delay`` after the Gather started), a ``Press``, or None for a silent turn.
    When the list is exhausted the phone stays silent.
    hangup_after_answer: the party hangs up that many seconds after answering, whatever happens
    (a carrier voicemail: answers, never presses, hangs up). hangup_after_bridge: the party hangs up
    that many seconds after being connected to the caller (None: stays until the other side
    leaves or the Dial's timeLimit). For a caller (the From of an incoming call), see
    ``FakeTwilio.incoming_call(hangup_after=...)``.
    """

    number: str
    behaviour: str = "answer"
    ring: float = 1.0
    presses: list[str | Press | None] = field(default_factory=list)
    press_delay: float = 0.5
    hangup_after_answer: float | None = None
    hangup_after_bridge: float | None = 1.0
    _cursor: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.behaviour not in ("answer", "busy", "no-answer", "fail"):
            raise ValueError(f"unknown phone behaviour {self.behaviour!r}")

    @classmethod
    def answering(cls, number: str, *, ring: float = 1.0, presses: Iterable[str | Press | None] = (),
                  talk: float | None = 1.0, press_delay: float = 0.5) -> Phone:
        """A person who answers after ``ring`` s, presses ``presses`` into the Gathers, and hangs up
        ``talk`` s after being connected."""
        return cls(number, "answer", ring=ring, presses=list(presses), press_delay=press_delay,
                   hangup_after_bridge=talk)

    @classmethod
    def voicemail(cls, number: str, *, ring: float = 1.0, hangup_after: float = 3.0) -> Phone:
        """A carrier voicemail: answers, never presses a key, hangs up ``hangup_after`` s later."""
        return cls(number, "answer", ring=ring, hangup_after_answer=hangup_after, hangup_after_bridge=None)

    @classmethod
    def busy(cls, number: str) -> Phone:
        return cls(number, "busy")

    @classmethod
    def no_answer(cls, number: str) -> Phone:
        return cls(number, "no-answer")

    @classmethod
    def failing(cls, number: str) -> Phone:
        return cls(number, "fail")

    def next_press(self) -> Press | None:
        if self._cursor >= len(self.presses):
            return None
        entry = self.presses[self._cursor]
        self._cursor += 1
        if entry is None or isinstance(entry, Press):
            return entry
        return Press(entry, self.press_delay)


# --------------------------------------------------------------------------- what gets recorded


@dataclass
class Exchange:
    """One webhook request Twilio made and the app's answer."""

    t: float
    sid: str
    kind: str  # voice, gather-action, dial-action, redirect, whisper, outbound-url, status-callback
    method: str
    url: str  # the public URL, as signed (GET: without the appended parameters)
    params: dict[str, str]
    status: int | None = None
    body: str = ""
    error: str | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class Event:
    t: float
    sid: str
    party: str
    kind: str
    detail: str = ""


@dataclass(eq=False)
class Call:
    """One call leg: the caller's (inbound), a <Dial>ed number's (outbound-dial, a child of the
    caller's), or a REST-created one (outbound-api)."""

    sid: str
    from_: str
    to: str
    direction: str
    started_at: float
    parent: Call | None = None
    phone: Phone | None = None
    status: str = "queued"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: frozenset[str] = frozenset({"completed"})
    answered_at: float | None = None
    bridged_at: float | None = None
    ended_at: float | None = None
    says: list[str] = field(default_factory=list)
    plays: list[str] = field(default_factory=list)
    gathered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[Exchange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    children: list[Call] = field(default_factory=list)
    hangup_reason: str | None = None
    doc_url: str | None = None
    _redirect_to: tuple | None = field(default=None, repr=False)
    _interrupt: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _timers: list[asyncio.Task] = field(default_factory=list, repr=False)
    _sequence: Any = field(default_factory=itertools.count, repr=False)
    _reject_status: str | None = field(default=None, repr=False)

    # -- for tests

    @property
    def party(self) -> str:
        """The person on this leg: the caller for an inbound call, the called number otherwise."""
        return self.from_ if self.direction == "inbound" else self.to

    @property
    def duration(self) -> int:
        """CallDuration: whole seconds from answer to end (0 if never answered). choice: rounded up."""
        if self.answered_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else self.answered_at
        return max(0, math.ceil(end - self.answered_at - 1e-9))

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def tree(self) -> list[Call]:
        out = [self]
        for child in self.children:
            out.extend(child.tree())
        return out

    def child(self, number: str) -> Call:
        """The (last) child leg that called ``number``."""
        found = [c for c in self.children if c.to == number]
        if not found:
            raise KeyError(f"no child call to {number}; children: {[c.to for c in self.children]}")
        return found[-1]

    @property
    def transcript(self) -> dict[str, list[str]]:
        """What each party heard (Say texts, and Twilio's application-error message), by number."""
        out: dict[str, list[str]] = {}
        for leg in self.tree():
            if leg.says:
                out.setdefault(leg.party, []).extend(leg.says)
        return out

    @property
    def all_requests(self) -> list[Exchange]:
        return sorted((r for leg in self.tree() for r in leg.requests), key=lambda r: r.t)

    @property
    def timeline(self) -> list[Event]:
        return sorted((e for leg in self.tree() for e in leg.events), key=lambda e: e.t)

    @property
    def all_errors(self) -> list[str]:
        return [f"{leg.sid} {e}" for leg in self.tree() for e in leg.errors]

    def requests_to(self, path: str) -> list[Exchange]:
        return [r for r in self.all_requests if r.path == path]

    async def wait(self) -> Call:
        await self._done.wait()
        return self

    # -- for the engine

    @property
    def hung_up(self) -> bool:
        return self.hangup_reason is not None

    def interrupt_hangup(self, reason: str) -> None:
        if self.hangup_reason is None:
            self.hangup_reason = reason
        self._interrupt.set()

    def interrupt_redirect(self, target: tuple) -> None:
        self._redirect_to = target
        self._interrupt.set()

    def take_redirect(self) -> tuple | None:
        target, self._redirect_to = self._redirect_to, None
        if target is not None and not self.hung_up:
            self._interrupt.clear()
        return target


@dataclass
class _DialState:
    winner: Call | None = None
    picked_up: Call | None = None   # the first number that answered: the Dial is its
    children: list[Call] = field(default_factory=list)
    closed: bool = False
    winner_event: asyncio.Event = field(default_factory=asyncio.Event)


# --------------------------------------------------------------------------- the simulator


class FakeTwilio:
    """The simulator. Use as ``async with FakeTwilio(...) as twilio:``; every task it started is
    cancelled and awaited at exit, and an exception a background call raised is re-raised there."""

    def __init__(self, *, base_url: str, public_url: str, auth_token: str, account_sid: str | None = None,
                 phones: Iterable[Phone] = (), time_scale: float = 1.0, say_seconds_per_char: float = 0.005,
                 say_min_seconds: float = 0.05, play_seconds: float = 0.05, webhook_timeout: float = 15.0,
                 signature: str = "valid", max_documents: int = 50) -> None:
        if signature not in ("valid", "invalid", "missing"):
            raise ValueError("signature must be 'valid', 'invalid' or 'missing'")
        self.base_url = base_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or new_account_sid()
        self.phones: dict[str, Phone] = {p.number: p for p in phones}
        self.time_scale = time_scale
        self.say_seconds_per_char = say_seconds_per_char
        self.say_min_seconds = say_min_seconds
        self.play_seconds = play_seconds
        # docs (/docs/api/errors/11205): Twilio waits 15 s in all for an HTTP response. Real seconds.
        self.webhook_timeout = webhook_timeout
        #: "valid", "invalid" (signed with a wrong token) or "missing" (no X-Twilio-Signature);
        #: may be changed between calls.
        self.signature = signature
        # choice: a guard against a Redirect loop hanging a test.
        self.max_documents = max_documents
        self.calls: dict[str, Call] = {}
        self.requests: list[Exchange] = []
        self.timeline: list[Event] = []
        self.errors: list[str] = []
        self._validator = RequestValidator(auth_token)
        self._bad_validator = RequestValidator("x" + auth_token)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._crashes: list[BaseException] = []
        self._t0 = 0.0

    # -- lifecycle

    async def __aenter__(self) -> Self:
        self._t0 = asyncio.get_running_loop().time()
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.aclose()
        if exc is None and self._crashes:
            raise self._crashes[0]

    async def aclose(self) -> None:
        for call in self.calls.values():
            if not call.ended:
                call.interrupt_hangup("harness-closed")
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add_phone(self, phone: Phone) -> Phone:
        self.phones[phone.number] = phone
        return phone

    def now(self) -> float:
        """Simulated seconds since the harness started."""
        return (asyncio.get_running_loop().time() - self._t0) / self.time_scale

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._crashes.append(t.exception())

        task.add_done_callback(done)
        return task

    # -- public API: calls

    async def incoming_call(self, *, to: str, from_: str, voice_url: str, status_callback: str | None = None,
                            voice_method: str = "POST", status_callback_method: str = "POST",
                            hangup_after: float | None = None, caller: Phone | None = None) -> Call:
        """A call from ``from_`` to the Twilio number ``to`` whose voice webhook is ``voice_url``.

        Runs the whole call and returns its record once it has ended and every webhook it caused
        has been answered. ``hangup_after``: the caller hangs up that many seconds after the call
        started. ``caller``: the caller's phone (its presses go into the call's Gathers); default
        the Phone registered for ``from_``, else a silent one."""
        call = self._new_incoming_record(to=to, from_=from_, caller=caller, status_callback=status_callback,
                                      status_callback_method=status_callback_method)
        await self._run_incoming(call, voice_url, voice_method.upper(), hangup_after)
        return call

    def start_incoming_call(self, **kwargs) -> asyncio.Task:
        """``incoming_call`` as a background task (for concurrent calls); the task returns the Call."""
        return self._spawn(self.incoming_call(**kwargs))

    def _new_incoming_record(self, *, to: str, from_: str, caller: Phone | None, status_callback: str | None,
                          status_callback_method: str) -> Call:
        phone = caller or self.phones.get(from_) or Phone(from_, hangup_after_bridge=None)
        call = self._new_call(from_=from_, to=to, direction="inbound", phone=phone,
                              status_callback=status_callback, status_callback_method=status_callback_method,
                              events={"completed"})
        call.status = "ringing"
        return call

    async def _run_incoming(self, call: Call, url: str, method: str, hangup_after: float | None) -> None:
        if hangup_after is not None:
            call._timers.append(self._spawn(self._hangup_timer(call, hangup_after, "caller-hangup")))
        self._event(call, "incoming", f"{call.from_} -> {call.to}")
        await self._run(call, ("url", url, method, None, "voice"))
        final = call._reject_status or "completed"
        await self._end_call(call, final)

    async def outbound_call(self, sid: str | None, to: str, from_: str, url: str | None = None,
                            status_callback: str | None = None,
                            status_callback_event: Iterable[str] | str | None = None, timeout: float = 60, *,
                            twiml: str | None = None, method: str = "POST",
                            status_callback_method: str = "POST") -> Call:
        """A call created through the REST API (Calls.create): rings ``to``; once answered, fetches
        ``url`` (or runs ``twiml``) on that party. Returns the record when the call has ended.

        docs (/docs/voice/api/call-resource): Timeout defaults to 60 s; StatusCallbackEvent
        defaults to completed; the events are initiated, ringing, answered, completed."""
        call = self.create_outbound_record(sid, to=to, from_=from_, status_callback=status_callback,
                                           status_callback_event=status_callback_event,
                                           status_callback_method=status_callback_method)
        await self._run_outbound(call, url, twiml, method.upper(), timeout)
        return call

    def start_outbound_call(self, sid: str | None = None, **kwargs) -> Call:
        """``outbound_call`` in the background; returns the Call at once (``await call.wait()``)."""
        call = self.create_outbound_record(sid, to=kwargs["to"], from_=kwargs["from_"],
                                           status_callback=kwargs.get("status_callback"),
                                           status_callback_event=kwargs.get("status_callback_event"),
                                           status_callback_method=kwargs.get("status_callback_method", "POST"))
        self._spawn(self._run_outbound(call, kwargs.get("url"), kwargs.get("twiml"),
                                       kwargs.get("method", "POST").upper(), kwargs.get("timeout", 60)))
        return call

    def on_call_created(self, params: Mapping[str, Any], sid: str) -> Call:
        """A hook for a REST stand-in: ``params`` as posted to Calls.json (To, From, Url, Twiml,
        Method, StatusCallback, StatusCallbackEvent, StatusCallbackMethod, Timeout)."""

        def one(name: str, default=None):
            value = params.get(name, default)
            if isinstance(value, (list, tuple)):
                return value[0] if value else default
            return value

        # StatusCallbackEvent is repeated in a form post: a MultiDict's getall, a list, or one string.
        if hasattr(params, "getall"):
            events = list(params.getall("StatusCallbackEvent", []))
        else:
            events = params.get("StatusCallbackEvent")
        if isinstance(events, str):
            events = events.split()
        events = [e for value in events or () for e in str(value).split()]
        return self.start_outbound_call(
            sid, to=one("To"), from_=one("From"), url=one("Url"), twiml=one("Twiml"),
            method=one("Method", "POST"), status_callback=one("StatusCallback"),
            status_callback_event=events, status_callback_method=one("StatusCallbackMethod", "POST"),
            timeout=float(one("Timeout", 60)))

    def create_outbound_record(self, sid: str | None, *, to: str, from_: str, status_callback: str | None,
                               status_callback_event, status_callback_method: str) -> Call:
        if isinstance(status_callback_event, str):
            status_callback_event = status_callback_event.split()
        events = set(status_callback_event or ()) or {"completed"}
        return self._new_call(sid=sid, from_=from_, to=to, direction="outbound-api", phone=self.phones.get(to),
                              status_callback=status_callback, status_callback_method=status_callback_method,
                              events=events)

    async def _run_outbound(self, call: Call, url: str | None, twiml: str | None, method: str,
                            timeout: float) -> None:
        self._event(call, "created", f"{call.from_} -> {call.to}")
        call.status = "initiated"
        await self._status_event(call, "initiated")
        outcome = await self._ring(call, timeout)
        if outcome != "answered":
            await self._end_call(call, outcome)
            return
        await self._answer_called(call)
        first = ("twiml", twiml) if twiml is not None else ("url", url, method, None, "outbound-url")
        await self._run(call, first)
        await self._end_call(call, "completed")

    def hangup(self, sid: str) -> Call:
        """REST "update status=completed|canceled": ends the call wherever it is (a ringing call ends
        canceled, an answered one completed)."""
        call = self.calls[sid]
        if not call.ended:
            call.interrupt_hangup("rest-hangup")
        return call

    def redirect(self, sid: str, twiml: str | None = None, *, url: str | None = None, method: str = "POST") -> Call:
        """REST "update twiml=..." (or url=...): the call stops what it does and runs the new TwiML.
        Before the call is answered, the new TwiML replaces the initial document. choice: a <Dial>
        interrupted this way hangs up its numbers and does not request its action URL."""
        call = self.calls[sid]
        if not call.ended:
            target = ("twiml", twiml) if twiml is not None else ("url", url, method.upper(), None, "redirect")
            call.interrupt_redirect(target)
        return call

    # -- internals: records

    def _new_call(self, *, from_: str, to: str, direction: str, phone: Phone | None, status_callback: str | None,
                  status_callback_method: str, events: Iterable[str], parent: Call | None = None,
                  sid: str | None = None) -> Call:
        unknown = set(events) - set(CALL_EVENTS)
        if unknown:
            raise ValueError(f"unknown status callback events {unknown}")
        call = Call(sid=sid or new_call_sid(), from_=from_, to=to, direction=direction, started_at=self.now(),
                    parent=parent, phone=phone, status_callback=status_callback,
                    status_callback_method=(status_callback_method or "POST").upper(),
                    status_callback_events=frozenset(events))
        self.calls[call.sid] = call
        if parent is not None:
            parent.children.append(call)
        return call

    def _event(self, call: Call, kind: str, detail: str = "") -> None:
        event = Event(round(self.now(), 3), call.sid, call.party, kind, detail)
        call.events.append(event)
        self.timeline.append(event)

    def _error(self, call: Call, message: str) -> None:
        call.errors.append(message)
        self.errors.append(f"{call.sid} {message}")
        self._event(call, "error", message)

    def _params(self, call: Call) -> dict[str, str]:
        """docs (/docs/usage/webhooks/voice-webhooks): the parameters of every voice request."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
        }
        if call.parent is not None:
            params["ParentCallSid"] = call.parent.sid
        return params

    # -- internals: time

    async def _wait(self, call: Call, seconds: float) -> bool:
        """Sleep ``seconds`` of simulated time; False if the call was interrupted (hang-up, redirect)."""
        if call._interrupt.is_set():
            return False
        if seconds <= 0:
            return True
        try:
            async with asyncio.timeout(seconds * self.time_scale):
                await call._interrupt.wait()
        except TimeoutError:
            return True
        return False

    async def _wait_any(self, waits: list, seconds: float | None) -> int | None:
        """Wait for the first of some events/futures; its index, or None when ``seconds`` passed."""
        tasks = [asyncio.ensure_future(w.wait() if isinstance(w, asyncio.Event) else w) for w in waits]
        try:
            done, _ = await asyncio.wait(tasks, timeout=None if seconds is None else max(0, seconds) * self.time_scale,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task, w in zip(tasks, waits):
                if isinstance(w, asyncio.Event):
                    task.cancel()
            await asyncio.gather(*(t for t, w in zip(tasks, waits) if isinstance(w, asyncio.Event)),
                                 return_exceptions=True)
        for i, task in enumerate(tasks):
            if task in done:
                return i
        return None

    async def _hangup_timer(self, call: Call, seconds: float, reason: str) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.time_scale)
        if not call.ended:
            self._event(call, "party-hangup", reason)
            call.interrupt_hangup(reason)

    # -- internals: HTTP

    def _local_url(self, url: str) -> str | None:
        if url == self.public_url or url.startswith((self.public_url + "/", self.public_url + "?")):
            return self.base_url + url[len(self.public_url):]
        return None

    async def _request(self, call: Call, url: str, method: str, params: dict[str, str], kind: str) -> Exchange:
        """docs (/docs/usage/security): X-Twilio-Signature is the HMAC-SHA1 of the full URL (and,
        for a POST, the sorted parameters), computed here by the twilio SDK. A GET carries the
        parameters in its query string and is signed over the whole URL."""
        assert self._session is not None, "use FakeTwilio as `async with FakeTwilio(...) as twilio:`"
        method = method.upper()
        exchange = Exchange(t=round(self.now(), 3), sid=call.sid, kind=kind, method=method, url=url,
                            params=dict(params))
        local = self._local_url(url)
        if method not in ("GET", "POST"):
            exchange.error = f"unsupported method {method}"
        elif local is None:
            exchange.error = f"11200: {url} is not under the public URL {self.public_url} (unreachable here)"
        else:
            if method == "GET":
                signed_url, fetch_url, data, signed_params = _with_query(url, params), _with_query(local, params), None, {}
            else:
                signed_url, fetch_url, data, signed_params = url, local, params, params
            headers = {"User-Agent": "TwilioProxy/1.1", "Accept": "*/*",
                       "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
            if self.signature != "missing":
                validator = self._validator if self.signature == "valid" else self._bad_validator
                headers["X-Twilio-Signature"] = validator.compute_signature(signed_url, signed_params)
            try:
                async with self._session.request(method, fetch_url, data=data, headers=headers,
                                                 timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)) as resp:
                    exchange.status = resp.status
                    exchange.body = await resp.text()
            except TimeoutError:
                exchange.error = f"11205: no HTTP response within {self.webhook_timeout} s"
            except aiohttp.ClientError as exc:
                exchange.error = f"11200: {exc!r}"
        self.requests.append(exchange)
        call.requests.append(exchange)
        self._event(call, "request", f"{kind} {method} {exchange.path} -> {exchange.status or exchange.error}")
        return exchange

    async def _fetch_twiml(self, call: Call, url: str, method: str, extra: dict | None, kind: str) -> ET.Element | None:
        params = self._params(call)
        params.update(extra or {})
        exchange = await self._request(call, url, method, params, kind)
        if exchange.error:
            self._error(call, exchange.error)
            return None
        if not 200 <= (exchange.status or 0) < 300:
            self._error(call, f"11200: HTTP retrieval failure: {url} answered {exchange.status}")
            return None
        root = self._parse_twiml(call, exchange.body)
        if root is not None:
            call.doc_url = url
        return root

    def _parse_twiml(self, call: Call, body: str | None) -> ET.Element | None:
        try:
            root = ET.fromstring((body or "").strip())
        except ET.ParseError as exc:
            self._error(call, f"12100: Document parse failure: {exc}")
            return None
        if root.tag != "Response":
            self._error(call, f"12100: Document parse failure: root <{root.tag}>, not <Response>")
            return None
        return root

    async def _status_event(self, call: Call, event: str) -> None:
        """docs (/docs/voice/api/call-resource#statuscallbackevent, /docs/voice/twiml/number):
        call progress events are sent only when subscribed; CallStatus is initiated, ringing,
        in-progress (answered) or the final status (completed event), with CallbackSource,
        SequenceNumber, Timestamp, and CallDuration on completion."""
        if not call.status_callback or event not in call.status_callback_events:
            return
        params = self._params(call)
        params.update({
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(next(call._sequence)),
            "Timestamp": email.utils.format_datetime(datetime.now(UTC)),
        })
        if event == "completed":
            params["CallDuration"] = str(call.duration)
            params["Duration"] = str(math.ceil(call.duration / 60))
        exchange = await self._request(call, call.status_callback, call.status_callback_method, params,
                                       "status-callback")
        # docs: a status callback's response is ignored; a failure is only a warning (not an error
        # of the call).
        if exchange.error or not 200 <= (exchange.status or 0) < 300:
            self._event(call, "warning", f"status callback failed: {exchange.status or exchange.error}")

    # -- internals: call state

    def _answer(self, call: Call) -> None:
        if call.answered_at is None:
            call.answered_at = self.now()
            call.status = "in-progress"
            self._event(call, "answered")

    async def _answer_called(self, call: Call) -> None:
        """A called party picked up: in-progress, the answered event, the party's hang-up timer."""
        self._answer(call)
        await self._status_event(call, "answered")
        phone = call.phone
        if phone is not None and phone.hangup_after_answer is not None:
            call._timers.append(self._spawn(self._hangup_timer(call, phone.hangup_after_answer, "callee-hangup")))

    async def _end_call(self, call: Call, status: str) -> None:
        if call.ended:
            return
        call.ended_at = self.now()
        call.status = status
        for timer in call._timers:
            timer.cancel()
        self._event(call, "ended", status + (f" ({call.hangup_reason})" if call.hangup_reason else ""))
        await self._status_event(call, "completed")
        call._done.set()

    async def _ring(self, call: Call, timeout: float) -> str:
        """Ring a called party: "answered", or the final status busy/failed/no-answer/canceled.
        choice: a number with no Phone registered fails (as a non-existent number does)."""
        phone = call.phone
        deadline = call.started_at + timeout
        if phone is None or phone.behaviour == "fail":
            return "failed"
        if phone.behaviour == "busy":
            return "busy"
        call.status = "ringing"
        self._event(call, "ringing")
        await self._status_event(call, "ringing")
        answers_at = call.started_at + phone.ring if phone.behaviour == "answer" else math.inf
        if answers_at >= deadline:
            return "no-answer" if await self._wait(call, deadline - self.now()) else "canceled"
        return "answered" if await self._wait(call, answers_at - self.now()) else "canceled"

    # -- internals: running TwiML

    async def _run(self, call: Call, first) -> str:
        """Run documents on ``call`` until it ends: "ended" (the last document ran out) or "hangup"."""
        pending = call.take_redirect() or first
        documents = 0
        while True:
            if call.hung_up or pending == _HANGUP:
                return "hangup"
            if call._redirect_to is not None:
                pending = call.take_redirect()
            if pending == _END:
                return "ended"
            documents += 1
            if documents > self.max_documents:
                return await self._application_error(call, f"more than {self.max_documents} documents in one call")
            if pending[0] == "url":
                _, url, method, extra, kind = pending
                root = await self._fetch_twiml(call, url, method, extra, kind)
            else:
                root = self._parse_twiml(call, pending[1])
            if call.hung_up:
                return "hangup"
            if root is None:
                return await self._application_error(call, None)
            pending = await self._execute(call, root)

    async def _application_error(self, call: Call, message: str | None) -> str:
        if message:
            self._error(call, message)
        if not call.hung_up:
            self._answer(call)
            call.says.append(APPLICATION_ERROR_TEXT)
            await self._wait(call, self._say_seconds(APPLICATION_ERROR_TEXT))
        return "hangup"

    async def _execute(self, call: Call, root: ET.Element):
        handlers = {"Say": self._say, "Play": self._play, "Pause": self._pause, "Gather": self._gather,
                    "Dial": self._dial, "Hangup": self._hangup, "Redirect": self._redirect, "Reject": self._reject}
        for index, verb in enumerate(root):
            if call.hung_up:
                return _HANGUP
            if call._redirect_to is not None:
                return call.take_redirect()
            handler = handlers.get(verb.tag)
            if handler is None:
                # docs (/docs/api/errors/12100, 12200): an invalid document is an application
                # error: the message is played and the call ends.
                await self._application_error(call, f"12200: Schema validation: unknown or unsupported verb <{verb.tag}>")
                return _HANGUP
            if verb.tag == "Reject":
                result = await self._reject(call, verb, first=index == 0)
            else:
                if not (verb.tag == "Dial" and _bool(verb.get("answerOnBridge"))):
                    self._answer(call)
                result = await handler(call, verb)
            if result != _CONTINUE:
                return result
        if call.hung_up:
            return _HANGUP
        if call._redirect_to is not None:
            return call.take_redirect()
        return _END

    def _resolve(self, call: Call, url: str) -> str:
        """docs: relative URLs resolve against the URL of the current document."""
        return urljoin(call.doc_url or self.public_url + "/", url.strip())

    def _say_seconds(self, text: str) -> float:
        return max(self.say_min_seconds, len(text) * self.say_seconds_per_char)

    # -- verbs

    async def _say(self, call: Call, verb: ET.Element, until: float = math.inf) -> str:
        text = " ".join("".join(verb.itertext()).split())
        # choice: loop="0" (Twilio: repeat until the call ends, up to 1000 times) is played once.
        loops = max(1, int(verb.get("loop", "1") or 1))
        for _ in range(loops):
            call.says.append(text)
            self._event(call, "say", text)
            if not await self._wait(call, min(self._say_seconds(text), until - self.now())):
                break
            if self.now() >= until:
                break
        return _CONTINUE

    async def _play(self, call: Call, verb: ET.Element, until: float = math.inf) -> str:
        url = (verb.text or "").strip()
        loops = max(1, int(verb.get("loop", "1") or 1))
        if verb.get("digits"):
            self._event(call, "play-digits", verb.get("digits"))
        for _ in range(loops):
            if url:
                call.plays.append(url)
                self._event(call, "play", url)
            if not await self._wait(call, min(self.play_seconds, until - self.now())):
                break
        return _CONTINUE

    async def _pause(self, call: Call, verb: ET.Element, until: float = math.inf) -> str:
        # docs (/docs/voice/twiml/pause): length defaults to 1 second.
        await self._wait(call, min(float(verb.get("length", "1")), until - self.now()))
        return _CONTINUE

    async def _hangup(self, call: Call, verb: ET.Element) -> str:
        self._event(call, "hangup-verb")
        return _HANGUP

    async def _redirect(self, call: Call, verb: ET.Element):
        # docs (/docs/voice/twiml/redirect): method defaults to POST; relative URLs allowed.
        url = (verb.text or "").strip()
        if not url:
            await self._application_error(call, "12200: <Redirect> without a URL")
            return _HANGUP
        return ("url", self._resolve(call, url), verb.get("method", "POST").upper(), None, "redirect")

    async def _reject(self, call: Call, verb: ET.Element, first: bool = True) -> str:
        # docs (/docs/voice/twiml/reject): as the first verb Twilio does not pick up; the call ends
        # busy (reason="busy") or no-answer (reason="rejected", the default). choice: elsewhere,
        # or on an answered call, it just hangs up.
        if call.direction == "inbound" and call.answered_at is None and first:
            call._reject_status = "busy" if verb.get("reason", "rejected") == "busy" else "no-answer"
        self._event(call, "reject", verb.get("reason", "rejected"))
        return _HANGUP

    async def _gather(self, call: Call, verb: ET.Element):
        """docs (/docs/voice/twiml/gather): action defaults to the current document's URL, method
        to POST, timeout to 5 s (counted after the nested Say/Play end, and between digits),
        finishOnKey to "#", numDigits unlimited; a key pressed during a nested Say/Play interrupts
        it; digits are posted as Digits; with no input, the next verb runs, unless
        actionOnEmptyResult="true" which posts to the action anyway."""
        action = self._resolve(call, verb.get("action")) if verb.get("action") else call.doc_url
        if action is None:
            return await self._application_error(call, "harness: <Gather> without action in TwiML that has no URL")
        method = verb.get("method", "POST").upper()
        timeout = float(verb.get("timeout", "5"))
        finish_on_key = verb.get("finishOnKey", "#")
        num_digits = int(verb.get("numDigits")) if verb.get("numDigits") else None
        on_empty = _bool(verb.get("actionOnEmptyResult"))
        press = call.phone.next_press() if call.phone is not None else None
        if press is not None and not press.digits:
            press = None
        started = self.now()
        press_at = started + press.delay if press is not None else math.inf
        self._event(call, "gather", f"numDigits={num_digits} timeout={timeout}")
        for nested in verb:
            if self.now() >= press_at or call._interrupt.is_set():
                break
            if nested.tag == "Say":
                await self._say(call, nested, until=press_at)
            elif nested.tag == "Play":
                await self._play(call, nested, until=press_at)
            elif nested.tag == "Pause":
                await self._pause(call, nested, until=press_at)
            else:
                self._error(call, f"13xxx: <{nested.tag}> cannot be nested in <Gather> (ignored)")
        if call._interrupt.is_set():
            return _CONTINUE
        deadline = self.now() + timeout
        digits, finished_on_key = "", ""
        if press_at <= deadline:
            if not await self._wait(call, press_at - self.now()):
                return _CONTINUE
            self._event(call, "dtmf", press.digits)
            complete = False
            for key in press.digits:
                if finish_on_key and key in finish_on_key:
                    finished_on_key, complete = key, True
                    break
                digits += key
                if num_digits is not None and len(digits) >= num_digits:
                    complete = True
                    break
            if not complete and not await self._wait(call, timeout):
                return _CONTINUE
        else:
            if not await self._wait(call, deadline - self.now()):
                return _CONTINUE
            self._event(call, "gather-timeout")
        if digits:
            call.gathered.append(digits)
        if digits or on_empty:
            return ("url", action, method, {"Digits": digits, "FinishedOnKey": finished_on_key}, "gather-action")
        return _CONTINUE

    async def _dial(self, call: Call, verb: ET.Element):
        """docs (/docs/voice/twiml/dial, /docs/voice/twiml/number): up to ten <Number>s are rung at
        once; the first to answer is connected, the others are hung up. A <Number url> runs its
        TwiML on the called party after it answers and before the parties are connected; the
        caller hears ringback meanwhile. timeout (default 30 s) ends unanswered attempts with
        no-answer. When the Dial ends the action URL (if any) is requested with DialCallStatus,
        DialCallSid, DialCallDuration, DialBridged, and its TwiML continues the call; without
        action the next verb runs."""
        if call.direction == "outbound-dial":
            # docs (/docs/api/errors/13201): a called party's TwiML cannot <Dial>.
            return await self._application_error(call, "13201: Dial: Cannot Dial out from a Dial Call Segment")
        action = verb.get("action")
        method = verb.get("method", "POST").upper()
        timeout = float(verb.get("timeout", "30"))
        time_limit = float(verb.get("timeLimit", "14400"))
        # docs: callerId defaults to the caller's number (the From of the current call).
        caller_id = verb.get("callerId") or call.from_
        targets: list[tuple[str, Mapping[str, str]]] = []
        if (verb.text or "").strip():
            targets.append(((verb.text or "").strip(), {}))
        for noun in verb:
            if noun.tag != "Number":
                return await self._application_error(
                    call, f"harness: <Dial><{noun.tag}> is not simulated (only <Number> and a bare number)")
            targets.append(((noun.text or "").strip(), noun.attrib))
        if not targets or len(targets) > 10:
            return await self._application_error(call, f"13xxx: <Dial> needs 1 to 10 numbers, got {len(targets)}")

        state = _DialState()
        children = state.children
        for number, attrs in targets:
            events = set((attrs.get("statusCallbackEvent") or "completed").replace(",", " ").split())
            callback = self._resolve(call, attrs["statusCallback"]) if attrs.get("statusCallback") else None
            children.append(self._new_call(from_=caller_id, to=number, direction="outbound-dial",
                                           phone=self.phones.get(number), parent=call, status_callback=callback,
                                           status_callback_method=attrs.get("statusCallbackMethod", "POST"),
                                           events=events))
        self._event(call, "dial", " ".join(c.to for c in children))
        attempts = asyncio.gather(*(self._spawn(self._dial_attempt(call, child, attrs, state, timeout))
                                    for child, (_, attrs) in zip(children, targets)))
        try:
            await self._wait_any([state.winner_event, call._interrupt, attempts], None)
        except BaseException:
            attempts.cancel()
            raise
        state.closed = True
        winner = state.winner
        for child in children:
            if child is not winner and not child.ended:
                child.interrupt_hangup("dial-ended")
        await attempts

        bridged = False
        if winner is not None:
            if call._interrupt.is_set():
                winner.interrupt_hangup("caller-left")
            else:
                self._answer(call)
                winner.bridged_at = self.now()
                bridged = True
                self._event(call, "bridged", winner.to)
                self._event(winner, "bridged", call.from_)
                phone = winner.phone
                if phone is not None and phone.hangup_after_bridge is not None:
                    winner._timers.append(self._spawn(
                        self._hangup_timer(winner, phone.hangup_after_bridge, "callee-hangup")))
                index = await self._wait_any([call._interrupt, winner._interrupt], time_limit)
                if index is None:
                    self._event(call, "time-limit")
                elif index == 0:
                    winner.interrupt_hangup("caller-left")
            await self._end_call(winner, "completed")

        if call._redirect_to is not None and not call.hung_up:
            return call.take_redirect()
        status = self._dial_call_status(call, children, bridged)
        reference = winner or next((c for c in children if c.answered_at is not None), None) \
            or max(children, key=lambda c: c.ended_at or 0)
        self._event(call, "dial-ended", status)
        if not action:
            return _HANGUP if call.hung_up else _CONTINUE
        extra = {"DialCallStatus": status, "DialCallSid": reference.sid,
                 "DialCallDuration": str(reference.duration), "DialBridged": "true" if bridged else "false"}
        url = self._resolve(call, action)
        if call.hung_up:
            # docs: the action URL is requested when the dialed call ends, the caller having hung
            # up too; the call is over (CallStatus completed), so its TwiML is ignored.
            params = self._params(call)
            params.update(extra, CallStatus="completed")
            await self._request(call, url, method, params, "dial-action")
            return _HANGUP
        return ("url", url, method, extra, "dial-action")

    @staticmethod
    def _dial_call_status(call: Call, children: list[Call], bridged: bool) -> str:
        """docs: completed (answered and connected), busy, no-answer, failed, canceled.
        choice: a caller who hangs up before anyone answered gives "canceled" (the legs still
        ringing are canceled); a number that answered but whose whisper hung up gives "completed"
        with DialBridged=false; otherwise no-answer, then busy, then canceled, then failed."""
        if bridged:
            return "completed"
        statuses = [c.status for c in children]
        if any(c.answered_at is not None for c in children):
            return "completed"
        if call.hung_up:
            return "canceled"
        for status in ("no-answer", "busy", "canceled"):
            if status in statuses:
                return status
        return "failed"

    async def _dial_attempt(self, parent: Call, child: Call, attrs: Mapping[str, str], state: _DialState,
                            timeout: float) -> None:
        child.status = "initiated"
        await self._status_event(child, "initiated")
        outcome = await self._ring(child, timeout)
        if outcome != "answered":
            await self._end_call(child, outcome)
            return
        if state.picked_up is not None or state.closed:
            # Another number picked up first: this one was already hung up (a race of a few ms).
            child.interrupt_hangup("dial-ended")
            await self._end_call(child, "completed")
            return
        # docs (/docs/voice/twiml/number): "The first call to pick up is connected to the current
        # call and the rest are hung up": at the pick-up, before any whisper (<Number url>) runs.
        state.picked_up = child
        for other in state.children:
            if other is not child and not other.ended:
                other.interrupt_hangup("dial-ended")
        await self._answer_called(child)
        if attrs.get("url"):
            first = ("url", self._resolve(parent, attrs["url"]), attrs.get("method", "POST").upper(), None, "whisper")
            outcome = await self._run(child, first)
            if outcome != "ended" or child.hung_up:
                # The whisper hung up (Hangup verb, a Gather timing out into a Hangup, the party
                # leaving, an application error): the parties are not connected.
                self._event(child, "not-connected", "whisper ended the call")
                await self._end_call(child, "completed")
                return
        if state.winner is None and not state.closed and not parent._interrupt.is_set():
            state.winner = child
            state.winner_event.set()
            return
        child.interrupt_hangup("dial-ended")
        await self._end_call(child, "completed")
