"""Notification calls without Asterisk: rates, signatures, outcomes, the conversation (as a pure flow,
and spoken on a fake FastAGI channel), the webhook's retries (a real HTTP server on loopback), the
rate-table setting."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiohttp import web

from ivr.asterisk.agi import AgiHangup, AgiResult
from ivr.asterisk.ami import AmiTimeout
from ivr.config import ConfigError, load_config
from ivr.core.notification import (
    ACKNOWLEDGED,
    GOODBYE,
    PROMPT,
    VERIFICATION_AGAIN,
    VERIFICATION_INTRO,
    VERIFICATION_LOGGED,
    VERIFICATION_PROMPT,
    Digits,
    Notification,
    NotificationConversation,
    NotifyInputError,
    call_cost,
    rate_for,
    verification_message,
)
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
)
from ivr.shells.notify import (
    AgiOutcome,
    NotificationService,
    _Call,
    classify_unanswered,
    sign,
    signature_is_valid,
)
from ivr.store import outbox
from ivr.store.db import migrate, open_database
from ivr.tts import TTSError

RATES = {"1": 1, "44": 2, "4420": 3.5, "sip:": 0.25}


@pytest.mark.parametrize(("address", "rate"), [
    ("+14155550100", 1), ("+442079460000", 3.5), ("+441632960000", 2), ("+33142685300", 0),
    ("sip:alice@10.0.0.5:5060", 0.25), ("SIP:bob@example.com", 0.25), ("sips:bob@example.com", 0),
])
def test_the_longest_prefix_wins(address, rate):
    assert rate_for(address, RATES) == rate


@pytest.mark.parametrize(("seconds", "cents"), [(None, 0), (0.0, 4), (59.9, 4), (60.0, 4), (60.5, 7),
                                                (125, 11)])
def test_whole_minutes_rounded_up(seconds, cents):
    # +4420: 3.5 cents a minute; 1 minute -> 4 (cents rounded up), 2 -> 7, 3 -> 11; never answered -> 0
    assert call_cost("+442079460000", seconds, RATES) == cents


def test_no_rate_costs_nothing():
    assert call_cost("+33142685300", 300, RATES) == 0
    assert call_cost("+14155550100", 300, {}) == 0
    assert call_cost("+14155550100", 300, {"+1": 2}) == 10   # a leading + in the table is fine


def test_signature():
    body = b'{"callLogId":"x","event":"call-log.acknowledged"}'
    header = sign("s3cret", body, int(time.time()))
    assert header.startswith("t=") and ",v1=" in header and len(header.split("v1=")[1]) == 64
    assert signature_is_valid("s3cret", body, header)
    assert not signature_is_valid("other", body, header)
    assert not signature_is_valid("s3cret", body + b" ", header)
    assert not signature_is_valid("s3cret", body, None)


@pytest.mark.parametrize(("reason", "cause", "status", "text"), [
    (0, 17, "Busy", "Line busy: User busy (cause 17)"),                 # recorded: 486 -> Reason 0, cause 17
    (5, None, "Busy", "Line busy"),
    (3, 19, "Missed Call", "Not answered within 30 s"),               # recorded: rang until the timeout
    (0, 19, "Missed Call", "Not answered: User alerting, no answer (cause 19)"),   # recorded: 480
    (0, 21, "Missed Call", "Declined: Call Rejected (cause 21)"),    # recorded: 603
    (8, 34, "Error", "The network is congested: Circuit/channel congestion (cause 34)"),
    (0, 1, "Error", "The call could not be placed: Unallocated (unassigned) number (cause 1)"),
    (0, None, "Error", "The call could not be placed (Asterisk's OriginateResponse reason 0)"),
])
def test_unanswered_outcomes(reason, cause, status, text):
    assert classify_unanswered(reason, cause, 30.0) == (status, text)


def test_a_verification_message_says_the_code_twice_as_digits_never_as_text():
    assert verification_message("123456") == (VERIFICATION_INTRO, Digits("123456"), VERIFICATION_AGAIN,
                                              Digits("123456"))
    note = Notification(uuid.uuid4(), uuid.uuid4(), "+14155550100", None, VERIFICATION_LOGGED, "verification",
                        number_id=uuid.uuid4(), code="482913")
    assert note.parts() == verification_message("482913")
    # Nothing a log line or a traceback could show holds the code; nor does the Call Log row.
    for shown in (repr(note), repr(note.parts()), str(note.call_data()), str(note.response())):
        assert "482913" not in shown, shown
    assert note.call_data()["message"] == "Your Hotline verification code is ******"
    with pytest.raises(NotifyInputError):
        Notification(uuid.uuid4(), uuid.uuid4(), "+14155550100", None, VERIFICATION_LOGGED, "verification")
    with pytest.raises(ValueError):
        Digits("12a4")


# -- the conversation as a pure flow ---------------------------------------------------------------


def talk(code: str = "482913") -> NotificationConversation:
    return NotificationConversation(verification_message(code), verifying=True, max_prompts=2, digit_timeout=5.0)


def test_the_verification_flow_says_the_code_with_say_digits_and_never_asks_to_synthesize_it():
    flow = talk()
    assert "482913" not in " ".join(flow.texts())          # what a shell synthesizes (and caches)
    assert flow.texts() == [VERIFICATION_INTRO, VERIFICATION_AGAIN, VERIFICATION_PROMPT, ACKNOWLEDGED, GOODBYE]
    said = []
    commands = flow.start()
    while commands and not isinstance(commands[0], (AwaitDigit, HangupCaller)):
        [command] = commands
        said.append(command)
        commands = flow.handle(PlaybackFinished(command.playback_id))
    assert [(type(c).__name__, getattr(c, "text", None) or c.digits, c.interrupt_digits) for c in said] == [
        ("Play", VERIFICATION_INTRO, "9"), ("SayDigits", "482913", "9"), ("Play", VERIFICATION_AGAIN, "9"),
        ("SayDigits", "482913", "9"), ("Play", VERIFICATION_PROMPT, "9")]
    assert flow.outcome.heard                                 # heard once the second reading ended
    assert all(c.target == CALLER for c in said) and "482913" not in repr(said)
    assert isinstance(commands[0], AwaitDigit)


def test_9_during_the_digits_starts_the_message_again_and_hanging_up_before_the_end_is_not_heard():
    flow = talk()
    [intro] = flow.start()
    [digits] = flow.handle(PlaybackFinished(intro.playback_id))
    assert isinstance(digits, SayDigits) and not flow.outcome.heard
    [again] = flow.handle(DigitPressed(CALLER, "9"))             # the key stopped the digits
    assert isinstance(again, Play) and again.text == VERIFICATION_INTRO and flow.outcome.replays == 1
    [digits] = flow.handle(PlaybackFinished(again.playback_id))
    [second] = flow.handle(PlaybackFinished(digits.playback_id))
    assert isinstance(digits, SayDigits) and second.text == VERIFICATION_AGAIN
    [digits] = flow.handle(PlaybackFinished(second.playback_id))
    with pytest.raises(IllegalEvent):
        flow.handle(PlaybackFinished(intro.playback_id))          # a stale playback is a shell bug
    assert flow.handle(CallerHungUp()) == []
    assert flow.finished and not flow.outcome.heard              # hung up during the second reading


def test_a_plain_notification_is_one_synthesized_text():
    flow = NotificationConversation("Disk full.", verifying=False, max_prompts=1, digit_timeout=5.0)
    assert flow.texts() == ["Disk full.", PROMPT, ACKNOWLEDGED, GOODBYE]
    assert flow.start() == [Play(CALLER, "notify-pb-1", "Disk full.", "19")]


def test_the_rate_table_setting(tmp_path):
    config = load_config(env={"HOTLINE_NOTIFY_RATES": "1=1, 44=2.5,sip:=0"})
    assert config.notify.rates == {"1": 1, "44": 2.5, "sip:": 0}
    path = tmp_path / "hotline.yaml"
    path.write_text("notify:\n  rates:\n    '+1': 1\n    44: 2\n")
    assert load_config(path, env={}).notify.rates == {"+1": 1, "44": 2}
    with pytest.raises(ConfigError, match="notify.rates must be of type map"):
        load_config(env={"HOTLINE_NOTIFY_RATES": "1=-3"})
    with pytest.raises(ConfigError, match="notify.rates"):
        load_config(env={"HOTLINE_NOTIFY_RATES": "oops"})


# -- the conversation of the FastAGI route ---------------------------------------------------------


class FakeChannel:
    """An answered channel: each playback or wait takes the next scripted key (None: nothing pressed;
    "hangup": the callee hangs up then)."""

    def __init__(self, call_log_id: str, keys: list, unplayable: tuple[str, ...] = ()):
        self.args = [call_log_id]
        self.keys = list(keys)
        self.unplayable = unplayable   # files Asterisk cannot open: STREAM FILE answers result=-1
        self.played: list[str] = []
        self.hung_up = False
        self.hangup_notice = False

    def _next(self):
        key = self.keys.pop(0) if self.keys else None
        if key == "hangup":
            self.hung_up = self.hangup_notice = True
            raise AgiHangup("hung up")
        return key

    async def stream_file(self, path: str, escape: str = "") -> AgiResult:
        self.played.append(path.rsplit("/", 1)[1])
        if self.played[-1] in self.unplayable:
            return AgiResult(200, "-1")
        key = self._next() if escape else None
        if key is not None and key not in escape:
            key = None  # Asterisk ignores a key that is not an escape digit
        return AgiResult(200, str(ord(key)) if key else "0")

    async def say_digits(self, digits: str, escape: str = "") -> AgiResult:
        self.played.append(f"(say digits {digits})")
        if "digits" in self.unplayable:
            return AgiResult(200, "-1")
        key = self._next() if escape else None
        if key is not None and key not in escape:
            key = None
        return AgiResult(200, str(ord(key)) if key else "0")

    async def wait_for_digit(self, seconds: float):
        self.played.append("(wait)")
        return self._next()

    async def hangup(self) -> None:
        self.played.append("(hangup)")


class FakeTts:
    def __init__(self, broken: bool = False):
        self.broken = broken
        self.texts: list[str] = []     # everything synthesized (and so cached in a file named after it)

    async def media(self, text: str) -> str:
        self.texts.append(text)
        if self.broken:
            raise TTSError("espeak-ng: not found")
        return f"sound:/sounds/{text}"


class FakeAmi:
    """Connected; an Originate raises ``originate_error`` if set (nothing else of AMI is used here)."""

    address = "127.0.0.1:5038"
    last_error = None

    def __init__(self):
        self.connected = asyncio.Event()
        self.connected.set()
        self.originate_error: Exception | None = None
        self.originates: list[dict] = []

    async def originate(self, **fields):
        self.originates.append(fields)
        if self.originate_error is not None:
            raise self.originate_error
        raise AssertionError("this fake only refuses")

    def add_listener(self, fn):
        pass

    def remove_listener(self, fn):
        pass


def service(tts=None, **env) -> NotificationService:
    config = load_config(env={"HOTLINE_NOTIFY_MAX_PROMPTS": "2", **env})
    return NotificationService(config, db=None, ami=FakeAmi(), tts=tts or FakeTts())


CODE = "482913"


def new_call(svc: NotificationService, kind: str = "notification", to: str = "+14155550100") -> _Call:
    if kind == "verification":
        note = Notification(uuid.uuid4(), uuid.uuid4(), to, None, VERIFICATION_LOGGED, kind,
                            number_id=uuid.uuid4(), code=CODE)
    else:
        note = Notification(uuid.uuid4(), uuid.uuid4(), to, None, "Incident 42 is critical.", kind)
    call = _Call(note, "chan")
    loop = asyncio.get_running_loop()
    call.agi_done, call.hangup = loop.create_future(), loop.create_future()
    svc.calls[str(note.call_log_id)] = call
    return call


async def converse(keys: list, kind: str = "notification", unplayable: tuple[str, ...] = (), tts=None):
    svc = service(tts=tts)
    call = new_call(svc, kind)
    note = call.note
    call.media = await svc.synthesize(note)
    chan = FakeChannel(str(note.call_log_id), keys, unplayable)
    await svc.agi_route(chan)
    outcome = call.agi_done.result()
    status, message, data, seconds = await svc._answered(call)
    return chan.played, outcome, status, message, data


MSG = "Incident 42 is critical."


async def test_pressing_1_during_the_message_acknowledges():
    played, outcome, status, message, data = await converse(["1"])
    assert played == [MSG, ACKNOWLEDGED, "(hangup)"]
    assert (outcome.key, outcome.heard, status) == ("1", True, "Success")
    assert data["acknowledged"] is True and data["keyPressed"] == "1"
    assert message == "Answered; the message was heard and acknowledged (key 1)."


async def test_9_replays_then_1_acknowledges():
    played, outcome, status, _, data = await converse([None, None, "9", None, "1"])
    assert played == [MSG, PROMPT, "(wait)", MSG, PROMPT, ACKNOWLEDGED, "(hangup)"]
    assert (outcome.replays, outcome.key, status, data["replays"]) == (1, "1", "Success", 1)


async def test_no_answer_to_the_prompt_hangs_up_after_max_prompts_heard_but_not_acknowledged():
    played, outcome, status, message, data = await converse([None, None, None, None, "7"])
    assert played == [MSG, PROMPT, "(wait)", PROMPT, "(wait)", GOODBYE, "(hangup)"]
    assert (outcome.heard, outcome.key, status) == (True, None, "Success")
    assert message == "Answered and the message was heard; not acknowledged." and data["acknowledged"] is False


async def test_hanging_up_during_the_message_is_a_missed_call():
    played, outcome, status, message, _ = await converse(["hangup"])
    assert (outcome.heard, outcome.lost, status) == (False, False, "Missed Call")
    assert message == "Answered, but hung up before the message was heard in full."


SAID = [VERIFICATION_INTRO, f"(say digits {CODE})", VERIFICATION_AGAIN, f"(say digits {CODE})"]


async def test_verification_calls_only_offer_a_replay():
    played, outcome, status, message, _ = await converse([None] * 4 + ["1", "1", None, None], kind="verification")
    assert played == [*SAID, VERIFICATION_PROMPT, "(wait)", VERIFICATION_PROMPT, "(wait)", GOODBYE, "(hangup)"]
    assert (outcome.key, status, message) == (None, "Success", "Answered; the verification code was read out.")


async def test_a_verification_code_is_said_with_say_digits_and_never_synthesized():
    """A synthesized prompt is cached in a file named after a hash of its text: a code in a text would
    be recoverable from the prompt directory's listing. The code goes only through SAY DIGITS."""
    tts = FakeTts()
    played, outcome, status, _, _ = await converse([None, "9"] + [None] * 6, kind="verification", tts=tts)
    assert played == [VERIFICATION_INTRO, f"(say digits {CODE})", *SAID,   # 9 during the first digits: again
                      VERIFICATION_PROMPT, "(wait)", VERIFICATION_PROMPT, "(wait)", GOODBYE, "(hangup)"]
    assert (outcome.replays, outcome.heard, status) == (1, True, "Success")
    assert tts.texts and not any(CODE in text or "4, 8" in text or "4 8" in text for text in tts.texts)
    assert not any(CODE in name for name in played if not name.startswith("(say digits"))


async def test_hanging_up_before_the_second_reading_ends_is_not_heard():
    played, outcome, status, _, _ = await converse([None, None, None, "hangup"], kind="verification")
    assert played == SAID and (outcome.heard, status) == (False, "Missed Call")


async def test_digits_asterisk_cannot_say_are_an_error_that_does_not_repeat_them():
    played, outcome, status, message, _ = await converse([None], kind="verification", unplayable=("digits",))
    assert played == [VERIFICATION_INTRO, f"(say digits {CODE})", "(hangup)"] and not outcome.heard
    assert status == "Error" and message.startswith("Answered, but the message could not be played: Asterisk "
                                                    "could not say the digits")
    assert CODE not in message


async def test_a_message_asterisk_cannot_play_is_an_error_not_a_message_heard():
    played, outcome, status, message, data = await converse([None], unplayable=(MSG,))
    assert played == [MSG, "(hangup)"] and not outcome.heard
    assert status == "Error" and message.startswith(f"Answered, but the message could not be played: Asterisk "
                                                    f"could not play /sounds/{MSG}")


async def test_an_acknowledgement_stands_when_the_closing_prompt_fails():
    played, outcome, status, message, data = await converse(["1"], unplayable=(ACKNOWLEDGED,))
    assert outcome.error and (status, data["acknowledged"]) == ("Success", True)


async def test_speech_that_cannot_be_synthesized_places_no_call():
    svc = service(tts=FakeTts(broken=True))
    call = new_call(svc, to="sip:alice@127.0.0.1:5062")
    status, message, _, _ = await svc._call(call)
    assert status == "Error" and svc.ami.originates == []
    assert message == "The message could not be synthesized (espeak-ng: not found): the call was not placed."


async def test_an_originate_acknowledged_too_late_is_followed_not_called_refused():
    """Asterisk may place an Originate whose answer timed out: its FastAGI session is still awaited."""
    svc = service()
    svc.ami.originate_error = AmiTimeout("AMI did not answer Originate within 5 s")
    call = new_call(svc, to="sip:alice@127.0.0.1:5062")

    async def asterisk_placed_it_anyway():
        await asyncio.sleep(0.05)
        call.agi_started.set()
        call.agi_done.set_result(AgiOutcome(answered_at=time.time() - 3, ended_at=time.time(), heard=True, key="1"))

    placed = asyncio.create_task(asterisk_placed_it_anyway())
    status, message, data, seconds = await svc._call(call)
    await placed
    assert (status, data["acknowledged"], len(svc.ami.originates)) == ("Success", True, 1)
    assert 2.9 < seconds < 3.5


async def test_answered_then_hung_up_before_the_message_started_is_a_missed_call():
    svc = service()
    call = new_call(svc)
    call.hangup.set_result((16, time.time()))
    status, message, _, _ = await svc._answered(call)
    assert (status, message) == ("Missed Call", "Answered, but hung up at once, before the message could start.")


async def test_a_route_for_an_unknown_call_hangs_up():
    svc = service()
    chan = FakeChannel(str(uuid.uuid4()), [])
    await svc.agi_route(chan)
    assert chan.played == ["(hangup)"]


# -- the webhook ---------------------------------------------------------------------------------


@pytest.fixture
async def receiver(aiohttp_server):
    got: list[tuple[bytes, dict]] = []
    plan: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=plan.pop(0) if plan else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return server, got, plan


@pytest.fixture
async def outbox_db(tmp_path):
    """A migrated SQLite database: acknowledgements wait in its outbox table."""
    db = open_database(f"sqlite:///{tmp_path / 'hotline.db'}", pool_size=2)
    await migrate(db)
    await db.aclose()
    try:
        yield db
    finally:
        await db.close_pool()


def webhook_service(db, **env) -> NotificationService:
    config = load_config(env={"HOTLINE_NOTIFY_MAX_PROMPTS": "2", **env})
    svc = NotificationService(config, db=db, ami=FakeAmi(), tts=FakeTts())
    svc.webhook_base_delay = 0.01
    return svc


async def drain(svc: NotificationService, rounds: int = 20) -> None:
    """Run the outbox's webhook worker until nothing is left (retries come due within milliseconds)."""
    for _ in range(rounds):
        await svc.deliver_webhooks()
        if not await svc.db.run(outbox.pending, "webhook"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("acknowledgements are still waiting in the outbox")


async def queue_ack(svc: NotificationService, note: Notification) -> None:
    await svc.db.run(outbox.put, "webhook", svc.webhook_payload(note, {"keyPressed": "1", "acknowledged": True}))


async def test_an_acknowledgement_is_signed_and_retried_with_back_off(receiver, outbox_db):
    server, got, plan = receiver
    plan.extend([500, 503])
    svc = webhook_service(outbox_db, HOTLINE_NOTIFY_WEBHOOK_URL=str(server.make_url("/hook")),
                          HOTLINE_NOTIFY_WEBHOOK_SECRET="k3y", HOTLINE_NOTIFY_WEBHOOK_RETRIES="3")
    note = Notification(uuid.uuid4(), uuid.uuid4(), "+14155550100", None, "Disk full", links={"incidentId": "i-1"})
    try:
        await queue_ack(svc, note)
        await drain(svc)
    finally:
        await svc.close()
    assert len(got) == 3
    body, headers = got[-1]
    assert signature_is_valid("k3y", body, headers["X-Hotline-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "call-log.acknowledged" and payload["callLogId"] == str(note.call_log_id)
    assert payload["keyPressed"] == "1" and payload["incidentId"] == "i-1"
    assert len({h["X-Hotline-Delivery"] for _, h in got}) == 1   # one delivery, several attempts


async def test_an_acknowledgement_survives_a_restart(receiver, outbox_db):
    """Queued by one service, delivered by the next one (a restart, or another node)."""
    server, got, plan = receiver
    env = {"HOTLINE_NOTIFY_WEBHOOK_URL": str(server.make_url("/hook")), "HOTLINE_NOTIFY_WEBHOOK_SECRET": "k3y"}
    first = webhook_service(outbox_db, **env)
    await queue_ack(first, Notification(uuid.uuid4(), uuid.uuid4(), "+14155550100", None, "Disk full"))
    await first.close()
    assert got == []
    second = webhook_service(outbox_db, **env)
    try:
        await drain(second)
    finally:
        await second.close()
    assert len(got) == 1


async def test_a_refusing_receiver_is_not_retried_and_no_secret_means_no_delivery(receiver, outbox_db):
    server, got, plan = receiver
    plan.append(401)
    svc = webhook_service(outbox_db, HOTLINE_NOTIFY_WEBHOOK_URL=str(server.make_url("/hook")),
                          HOTLINE_NOTIFY_WEBHOOK_SECRET="k3y")
    note = Notification(uuid.uuid4(), uuid.uuid4(), "+14155550100", None, "Disk full")
    unsigned = webhook_service(outbox_db, HOTLINE_NOTIFY_WEBHOOK_URL=str(server.make_url("/hook")))
    try:
        await queue_ack(svc, note)
        await drain(svc)
        assert len(got) == 1
        await queue_ack(unsigned, note)
        await drain(unsigned)
        assert len(got) == 1
    finally:
        await svc.close()
        await unsigned.close()


def test_a_signature_is_refused_when_old_or_forged():
    body = b'{"event":"call-log.acknowledged"}'
    now = 1_800_000_000
    header = sign("k3y", body, now)
    assert signature_is_valid("k3y", body, header, now=now + 299)
    assert not signature_is_valid("k3y", body, header, now=now + 301)      # a replay, later
    assert not signature_is_valid("k3y", body + b" ", header, now=now)
    assert not signature_is_valid("other", body, header, now=now)
    assert not signature_is_valid("k3y", body, header.replace(f"t={now}", f"t={now + 1}"), now=now)
    assert not signature_is_valid("k3y", body, "sha256=abc", now=now)
