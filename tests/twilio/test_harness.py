"""FakeTwilio against a tiny TwiML app written here (it checks every signature with the SDK)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.twilio.harness import APPLICATION_ERROR_TEXT, FakeTwilio, Phone, Press

PUBLIC = "https://hotline.example.test"
TOKEN = "0123456789abcdef0123456789abcdef"
SCALE = 0.05  # 1 simulated second = 50 ms
CALLER = "+14155550123"
HOTLINE = "+15550100000"
ALICE = "+15550000001"
BOB = "+15550000002"
CAROL = "+15550000003"
VOICE = PUBLIC + "/twilio/voice"
STATUS = PUBLIC + "/twilio/status"


def twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


class TwimlApp:
    """Routes path -> TwiML (a string, or a function of the request's parameters)."""

    def __init__(self) -> None:
        self.routes: dict[str, str | Callable[[dict], str]] = {}
        self.received: list[tuple[str, str, dict]] = []
        self.rejected = 0
        self.base_url = ""

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(await request.post()) if request.method == "POST" else {}
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(TOKEN).validate(PUBLIC + request.path_qs, params, signature):
            self.rejected += 1
            return web.Response(status=403, text="bad signature")
        everything = {**dict(request.query), **params}
        self.received.append((request.method, request.path, everything))
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404)
        body = route(everything) if callable(route) else route
        if asyncio.iscoroutine(body):
            body = await body
        return web.Response(text=body, content_type="text/xml")

    def got(self, path: str) -> list[dict]:
        return [p for _, rpath, p in self.received if rpath == path]


@pytest.fixture
async def app(aiohttp_server) -> TwimlApp:
    twiml_app = TwimlApp()
    twiml_app.routes["/twilio/status"] = ""
    server = await aiohttp_server(twiml_app.web_app())
    twiml_app.base_url = str(server.make_url("")).rstrip("/")
    return twiml_app


def fake(app: TwimlApp, *phones: Phone, **kwargs) -> FakeTwilio:
    return FakeTwilio(base_url=app.base_url, public_url=PUBLIC, auth_token=TOKEN, phones=phones,
                      time_scale=SCALE, **kwargs)


async def test_say_then_hangup_signed_webhooks_and_status_callback(app):
    app.routes["/twilio/voice"] = twiml("<Say>Hello from Hotline</Say><Hangup/><Say>never</Say>")
    async with fake(app) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE, status_callback=STATUS)
    assert call.status == "completed"
    assert call.transcript == {CALLER: ["Hello from Hotline"]}
    assert app.rejected == 0 and not call.all_errors
    voice, status = app.got("/twilio/voice")[0], app.got("/twilio/status")[0]
    assert re.fullmatch(r"CA[0-9a-f]{32}", voice["CallSid"]) and voice["CallSid"] == call.sid
    assert re.fullmatch(r"AC[0-9a-f]{32}", voice["AccountSid"])
    assert (voice["From"], voice["To"], voice["Direction"], voice["ApiVersion"], voice["CallStatus"]) == \
        (CALLER, HOTLINE, "inbound", "2010-04-01", "ringing")
    assert status["CallStatus"] == "completed" and status["CallDuration"] == "1"
    assert status["CallbackSource"] == "call-progress-events"
    assert [r.kind for r in call.all_requests] == ["voice", "status-callback"]
    assert [e.kind for e in call.timeline][:3] == ["incoming", "request", "answered"]


async def test_gather_with_digits_posts_to_a_relative_action(app):
    app.routes["/twilio/voice"] = twiml(
        '<Gather numDigits="4" action="gathered"><Say>Enter your code</Say></Gather><Say>No input</Say>')
    app.routes["/twilio/gathered"] = lambda p: twiml(f"<Say>You entered {p['Digits']}</Say>")
    async with fake(app, Phone(CALLER, presses=["42#"])) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    assert call.transcript[CALLER] == ["Enter your code", "You entered 42"]
    assert app.got("/twilio/gathered")[0]["FinishedOnKey"] == "#"
    assert call.gathered == ["42"]


async def test_gather_timeout_runs_the_next_verb_unless_action_on_empty_result(app):
    app.routes["/twilio/voice"] = twiml(
        '<Gather timeout="2" action="/twilio/gathered"><Say>Press a key</Say></Gather><Say>No input</Say>')
    app.routes["/twilio/empty"] = twiml(
        '<Gather timeout="1" actionOnEmptyResult="true" action="/twilio/gathered"/><Say>unreachable</Say>')
    app.routes["/twilio/gathered"] = lambda p: twiml(f"<Say>Got [{p['Digits']}]</Say>")
    async with fake(app) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
        empty = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=PUBLIC + "/twilio/empty")
    assert call.transcript[CALLER] == ["Press a key", "No input"]
    assert empty.transcript[CALLER] == ["Got []"]
    assert len(app.got("/twilio/gathered")) == 1


async def test_dial_rings_both_numbers_and_the_first_to_answer_wins(app):
    events = 'statusCallback="/twilio/leg" statusCallbackEvent="initiated ringing answered completed"'
    app.routes["/twilio/voice"] = twiml(
        f'<Dial action="/twilio/dialed" timeout="10"><Number {events}>{ALICE}</Number>'
        f'<Number {events}>{BOB}</Number></Dial>')
    app.routes["/twilio/dialed"] = lambda p: twiml(f"<Say>Dial {p['DialCallStatus']}</Say>")
    app.routes["/twilio/leg"] = ""
    alice, bob = Phone.answering(ALICE, ring=4), Phone.answering(BOB, ring=1, talk=2)
    async with fake(app, alice, bob) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    a, b = call.child(ALICE), call.child(BOB)
    assert b.bridged_at is not None and a.bridged_at is None and a.answered_at is None
    assert (a.status, b.status) == ("canceled", "completed")
    dialed = app.got("/twilio/dialed")[0]
    assert dialed["DialCallStatus"] == "completed" and dialed["DialBridged"] == "true"
    assert dialed["DialCallSid"] == b.sid and int(dialed["DialCallDuration"]) in (2, 3)
    assert dialed["CallStatus"] == "in-progress"
    legs = app.got("/twilio/leg")
    assert [p["CallStatus"] for p in legs if p["To"] == BOB] == ["initiated", "ringing", "in-progress", "completed"]
    assert [p["CallStatus"] for p in legs if p["To"] == ALICE][-1] == "canceled"
    assert {p["ParentCallSid"] for p in legs} == {call.sid}
    assert {p["Direction"] for p in legs} == {"outbound-dial"} and {p["From"] for p in legs} == {CALLER}
    assert call.transcript[CALLER] == ["Dial completed"]


def whisper_app(app: TwimlApp) -> None:
    app.routes["/twilio/voice"] = twiml(
        f'<Dial action="/twilio/dialed" answerOnBridge="true" callerId="{HOTLINE}">'
        f'<Number url="/twilio/whisper">{ALICE}</Number></Dial>')
    app.routes["/twilio/whisper"] = twiml(
        '<Gather numDigits="1" timeout="3" action="/twilio/whisper-key"><Say>Press 1 to accept</Say></Gather>'
        "<Hangup/>")
    app.routes["/twilio/whisper-key"] = lambda p: twiml("" if p["Digits"] == "1" else "<Hangup/>")
    app.routes["/twilio/dialed"] = lambda p: twiml(f"<Say>{p['DialCallStatus']} {p['DialBridged']}</Say>")


async def test_whisper_key_1_bridges(app):
    whisper_app(app)
    async with fake(app, Phone.answering(ALICE, presses=["1"])) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    alice = call.child(ALICE)
    assert alice.bridged_at is not None and alice.from_ == HOTLINE
    assert call.transcript == {ALICE: ["Press 1 to accept"], CALLER: ["completed true"]}
    whisper = app.got("/twilio/whisper")[0]
    assert whisper["CallSid"] == alice.sid and whisper["ParentCallSid"] == call.sid


@pytest.mark.parametrize("presses", [[], ["7"]], ids=["silence", "other-key"])
async def test_whisper_that_hangs_up_does_not_connect(app, presses):
    whisper_app(app)
    async with fake(app, Phone.answering(ALICE, presses=presses)) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    alice = call.child(ALICE)
    assert alice.bridged_at is None and alice.answered_at is not None and alice.status == "completed"
    dialed = app.got("/twilio/dialed")[0]
    assert (dialed["DialCallStatus"], dialed["DialBridged"], dialed["DialCallSid"]) == ("completed", "false", alice.sid)
    assert call.transcript[CALLER] == ["completed false"]


async def test_voicemail_answers_whisper_and_hangs_up_without_connecting(app):
    whisper_app(app)
    async with fake(app, Phone.voicemail(ALICE, hangup_after=1)) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    assert call.child(ALICE).hangup_reason == "callee-hangup"
    assert app.got("/twilio/dialed")[0]["DialBridged"] == "false"
    assert not app.got("/twilio/whisper-key")


@pytest.mark.parametrize("phone, expected", [
    (Phone.busy(ALICE), "busy"),
    (Phone.no_answer(ALICE), "no-answer"),
    (Phone.failing(ALICE), "failed"),
    (None, "failed"),  # not registered
])
async def test_dial_outcomes(app, phone, expected):
    app.routes["/twilio/voice"] = twiml(
        f'<Dial timeout="3"><Number statusCallback="/twilio/leg">{ALICE}</Number></Dial>'
        '<Redirect method="GET">/twilio/after</Redirect>')
    app.routes["/twilio/after"] = lambda p: twiml("<Say>after the dial</Say>")
    app.routes["/twilio/leg"] = ""
    async with fake(app, *([phone] if phone else [])) as twilio:
        started = twilio.now()
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
        elapsed = twilio.now() - started
    assert call.child(ALICE).status == expected
    assert [p["CallStatus"] for p in app.got("/twilio/leg")] == [expected]
    assert call.transcript[CALLER] == ["after the dial"]
    assert ("GET", "/twilio/after") in [(m, p) for m, p, _ in app.received]
    if expected == "no-answer":
        assert elapsed >= 3
    else:
        assert elapsed < 3


async def test_caller_hangs_up_while_the_dial_rings(app):
    app.routes["/twilio/voice"] = twiml(
        f'<Dial action="/twilio/dialed" timeout="20"><Number statusCallback="/twilio/leg">{ALICE}</Number></Dial>')
    app.routes["/twilio/dialed"] = twiml("<Say>nobody hears this</Say>")
    app.routes["/twilio/leg"] = ""
    async with fake(app, Phone.answering(ALICE, ring=10)) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE, status_callback=STATUS,
                                          hangup_after=2)
    assert call.hangup_reason == "caller-hangup" and call.status == "completed"
    dialed = app.got("/twilio/dialed")[0]
    assert (dialed["CallStatus"], dialed["DialCallStatus"], dialed["DialBridged"]) == ("completed", "canceled", "false")
    assert [p["CallStatus"] for p in app.got("/twilio/leg")] == ["canceled"]
    assert CALLER not in call.transcript
    assert app.got("/twilio/status")[0]["CallStatus"] == "completed"


async def test_caller_hangs_up_while_bridged(app):
    app.routes["/twilio/voice"] = twiml(
        f'<Dial action="/twilio/dialed"><Number statusCallback="/twilio/leg">{ALICE}</Number></Dial>')
    app.routes["/twilio/dialed"] = twiml("")
    app.routes["/twilio/leg"] = ""
    async with fake(app, Phone.answering(ALICE, ring=1, talk=None)) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE, hangup_after=4)
    alice = call.child(ALICE)
    assert alice.hangup_reason == "caller-left" and alice.status == "completed"
    dialed = app.got("/twilio/dialed")[0]
    assert (dialed["CallStatus"], dialed["DialCallStatus"], dialed["DialBridged"]) == ("completed", "completed", "true")
    leg = app.got("/twilio/leg")[0]
    assert leg["CallStatus"] == "completed" and int(leg["CallDuration"]) >= 2


async def test_redirect_verb_and_rest_redirect(app):
    app.routes["/twilio/voice"] = twiml("<Say>one</Say><Redirect>next?step=2</Redirect><Say>never</Say>")
    app.routes["/twilio/next"] = twiml('<Say>two</Say><Pause length="30"/><Say>never</Say>')
    async with fake(app) as twilio:
        task = twilio.start_incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
        while not app.got("/twilio/next"):
            await asyncio.sleep(0.01)
        sid = app.got("/twilio/next")[0]["CallSid"]
        twilio.redirect(sid, twiml("<Say>three</Say>"))
        call = await task
    assert call.transcript[CALLER] == ["one", "two", "three"]
    assert call.requests[1].url == PUBLIC + "/twilio/next?step=2"
    assert twilio.now() < 30


@pytest.mark.parametrize("mode", ["invalid", "missing"])
async def test_bad_or_missing_signature_is_rejected_by_the_app(app, mode):
    app.routes["/twilio/voice"] = twiml("<Say>Hello</Say>")
    async with fake(app, signature=mode) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    assert app.rejected == 1
    assert call.requests[0].status == 403
    assert call.transcript[CALLER] == [APPLICATION_ERROR_TEXT]
    assert "403" in call.all_errors[0]


async def test_unknown_verb_is_an_application_error(app):
    app.routes["/twilio/voice"] = twiml("<Say>Hi</Say><Dance/><Say>never</Say>")
    async with fake(app) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
    assert call.transcript[CALLER] == ["Hi", APPLICATION_ERROR_TEXT]
    assert "Dance" in call.all_errors[0] and twilio.errors


async def test_reject_busy(app):
    app.routes["/twilio/voice"] = twiml('<Reject reason="busy"/>')
    async with fake(app) as twilio:
        call = await twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE, status_callback=STATUS)
    assert call.status == "busy" and call.answered_at is None
    assert app.got("/twilio/status")[0]["CallStatus"] == "busy"


async def test_outbound_api_call_with_a_gather_and_status_events(app):
    app.routes["/notify"] = twiml('<Gather numDigits="1" action="/ack"><Say>Incident. Press 1.</Say></Gather>')
    app.routes["/ack"] = lambda p: twiml(f"<Say>Acknowledged {p['Digits']}</Say><Hangup/>")
    app.routes["/notify-status"] = ""
    async with fake(app, Phone.answering(ALICE, presses=[Press("1", delay=0.2)])) as twilio:
        call = await twilio.outbound_call("CA" + "1" * 32, ALICE, HOTLINE, PUBLIC + "/notify",
                                          PUBLIC + "/notify-status", ["initiated", "ringing", "answered", "completed"],
                                          timeout=10)
    assert call.transcript == {ALICE: ["Incident. Press 1.", "Acknowledged 1"]}
    statuses = app.got("/notify-status")
    assert [p["CallStatus"] for p in statuses] == ["initiated", "ringing", "in-progress", "completed"]
    assert {p["Direction"] for p in statuses} == {"outbound-api"} and statuses[0]["CallSid"] == "CA" + "1" * 32
    assert [p["SequenceNumber"] for p in statuses] == ["0", "1", "2", "3"]


async def test_rest_created_call_hung_up_while_ringing_is_canceled(app):
    app.routes["/notify-status"] = ""
    async with fake(app, Phone.answering(ALICE, ring=20)) as twilio:
        call = twilio.on_call_created({"To": ALICE, "From": HOTLINE, "Url": PUBLIC + "/notify",
                                       "StatusCallback": PUBLIC + "/notify-status"}, "CA" + "2" * 32)
        await asyncio.sleep(0.05)
        twilio.hangup(call.sid)
        await call.wait()
    assert call.status == "canceled"
    assert [p["CallStatus"] for p in app.got("/notify-status")] == ["canceled"]


async def test_concurrent_calls(app):
    app.routes["/twilio/voice"] = lambda p: twiml(f'<Say>Hi {p["From"]}</Say><Pause length="2"/>')
    async with fake(app) as twilio:
        started = twilio.now()
        calls = await asyncio.gather(*(twilio.incoming_call(to=HOTLINE, from_=f"+1415555000{i}", voice_url=VOICE)
                                       for i in range(5)))
        assert twilio.now() - started < 5
    assert [c.transcript for c in calls] == [{f"+1415555000{i}": [f"Hi +1415555000{i}"]} for i in range(5)]


async def test_a_webhook_that_never_answers_is_an_error(app):
    async def slow(params):
        await asyncio.sleep(10)
        return twiml("")

    app.routes["/twilio/voice"] = slow
    async with fake(app, webhook_timeout=0.2) as twilio:
        call = await asyncio.wait_for(twilio.incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE), 5)
    assert "11205" in call.all_errors[0]
    assert call.transcript[CALLER] == [APPLICATION_ERROR_TEXT]


async def test_close_cancels_calls_in_progress_and_leaks_no_task(app):
    from multidict import MultiDict

    app.routes["/twilio/voice"] = twiml(f'<Dial><Number>{ALICE}</Number></Dial>')
    app.routes["/notify"] = twiml('<Pause length="60"/>')
    before = asyncio.all_tasks()
    async with fake(app, Phone.answering(ALICE, ring=1, talk=None), Phone.answering(BOB, ring=0)) as twilio:
        incoming = twilio.start_incoming_call(to=HOTLINE, from_=CALLER, voice_url=VOICE)
        outbound = twilio.on_call_created(MultiDict([("To", BOB), ("From", HOTLINE), ("Url", PUBLIC + "/notify"),
                                                     ("StatusCallbackEvent", "answered"),
                                                     ("StatusCallbackEvent", "completed")]), "CA" + "3" * 32)
        assert outbound.status_callback_events == {"answered", "completed"}
        await asyncio.sleep(0.2)
        assert not incoming.done() and not outbound.ended
    assert incoming.cancelled() and not twilio._tasks
    await asyncio.sleep(0.05)  # the app server's own handlers of the closed connections wind down
    assert asyncio.all_tasks() == before
