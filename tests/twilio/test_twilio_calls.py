"""The Twilio shell end to end: Incoming Call Policies run over TwiML webhooks that FakeTwilio
(tests/twilio/harness.py) signs and executes as Twilio does, on SQLite and PostgreSQL.

The scenario table of the Asterisk shells (tests/e2e/test_calls.py), over Twilio. The calls of a
backend run at once (one module fixture places them all), then each test reads its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest_asyncio
from aiohttp import web

from ivr.config import load_config
from ivr.shells.base import NOT_IN_SERVICE
from ivr.shells.twilio.clients import TwilioClients
from ivr.shells.twilio.voice import TwilioCalls
from ivr.store import models as m
from ivr.store.db import open_database, run_and_release
from ivr.store.twilio_accounts import encrypt_token, new_key
from tests.twilio.harness import Call, FakeTwilio, Phone
from tests.twilio.rest_standin import TwilioStandIn

PUBLIC = "https://hotline.example.test"
ACCOUNT = "AC" + "7" * 32
TOKEN = "f" * 32
PROJECT_ACCOUNT = "AC" + "8" * 32   # a project's own account (projectCallSMSConfig)
PROJECT_TOKEN = "e" * 32
KEY = new_key()
CALLER = "+14155550123"
CONFIRM = 2.0  # seconds an engineer has to press 1

_numbers = iter(range(10**6))


def number(prefix: str) -> str:
    """A valid North American number in area ``prefix`` (its exchange 200-999), fresh for the session."""
    n = next(_numbers) + (int(time.time()) % 100) * 10000
    return f"+1{prefix}{200 + n // 10000 % 800:03d}{n % 10000:04d}"


def config_for(database_url: str, **twilio):
    env = {"HOTLINE_DATABASE_URL": database_url, "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT,
           "HOTLINE_TWILIO_AUTH_TOKEN": TOKEN, "HOTLINE_TWILIO_PUBLIC_URL": PUBLIC,
           "HOTLINE_CONTROLLER_CONFIRM_TIMEOUT": str(CONFIRM)}
    env.update({f"HOTLINE_TWILIO_{key.upper()}": str(value) for key, value in twilio.items()})
    return load_config(None, env=env)


@dataclass
class Rule:
    phones: list[Phone]
    team: bool = False
    escalate_after: int = 2


@dataclass
class Scenario:
    routing: str
    policy_id: uuid.UUID | None = None
    users: dict[str, uuid.UUID] = field(default_factory=dict)   # phone number -> user id
    call: Call | None = None
    log: m.IncomingCallLog | None = None
    items: list[m.IncomingCallLogItem] = field(default_factory=list)


def build(routing: str, rules: list[Rule], policy: dict) -> Scenario:
    """A project, a policy on ``routing`` and one user per phone with a verified E.164 number."""
    project = m.Project.create(name="twilio")
    policy = dict(policy)
    if policy.pop("project_account", False):
        own = m.ProjectCallSMSConfig.create(project=project, name="Ours", twilioAccountSID=PROJECT_ACCOUNT,
                                            twilioAuthToken=encrypt_token(PROJECT_TOKEN, KEY),
                                            twilioPrimaryPhoneNumber="+16465550199")
        policy["projectCallSMSConfigId"] = own.id
    row = m.IncomingCallPolicy.create(project=project, name="Ops", slug=f"tw-{uuid.uuid4().hex}",
                                      routingPhoneNumber=routing, greetingMessage="Connecting you to Ops.",
                                      noAnswerMessage="Nobody answered.", **policy)
    scenario = Scenario(routing, row.id)
    for order, rule in enumerate(rules, start=1):
        users = []
        for phone in rule.phones:
            if phone.number not in scenario.users:
                user = m.User.create(project=project, name=f"User {phone.number}")
                m.UserIncomingCallNumber.create(project=project, user=user, phoneNumber=phone.number, isVerified=True)
                scenario.users[phone.number] = user.id
            users.append(scenario.users[phone.number])
        target = {}
        if rule.team:
            team = m.Team.create(project=project, name=f"Team {order}")
            for user in users:
                m.TeamMember.create(project=project, team=team, user=user)
            target["team"] = team
        else:
            target["user"] = users[0]
        m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=row, order=order,
                                                  name=f"Rule {order}", escalateAfterSeconds=rule.escalate_after,
                                                  **target)
    return scenario


class Lab:
    """Hotline's Twilio routes on a loopback port with its database; FakeTwilio in front, and the
    REST stand-in (hang-ups, prices) wired to FakeTwilio's calls."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.standin = TwilioStandIn()
        self.db = open_database(database_url, pool_size=4)
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.fakes: list[FakeTwilio] = []

    async def start(self) -> None:
        await self.standin.start()
        self.standin.account(ACCOUNT, TOKEN)
        self.standin.account(PROJECT_ACCOUNT, PROJECT_TOKEN)
        self.standin.calls_elsewhere = self._call_fields
        self.standin.on_call_updated = self._updated
        self.config = config_for(self.database_url, api_base_url=self.standin.base_url, encryption_key=KEY)
        self.clients = TwilioClients(self.config)
        self.clients.bind(self.db)
        self.calls = TwilioCalls(self.config, tokens_for=self.clients.tokens_for, rest_for=self.clients.for_account)
        self.calls.price_delays = (0.2, 1.0)
        self.calls.bind(self.db)
        app = web.Application()
        app.router.add_routes(self.calls.routes())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self.calls.close()
        await self.clients.close()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.standin.stop()
        await self.db.close_pool()

    def twilio(self, phones, account: str = ACCOUNT, token: str = TOKEN, **kwargs) -> FakeTwilio:
        fake = FakeTwilio(base_url=self.base_url, public_url=PUBLIC, auth_token=token, account_sid=account,
                          phones=phones, **kwargs)
        self.fakes.append(fake)
        return fake

    def _call_fields(self, sid: str) -> dict | None:
        """A FakeTwilio call as Twilio's Call resource shows it, priced like Twilio once it ended:
        0.85 cents a started minute for the caller's call, 1.4 for a dialed one that answered."""
        call = next((fake.calls[sid] for fake in self.fakes if sid in fake.calls), None)
        if call is None:
            return None
        price = None
        if call.ended:
            rate = 0.0085 if call.direction == "inbound" else 0.014
            price = f"{-rate * math.ceil(call.duration / 60):.4f}" if call.answered_at is not None else "0.0000"
        return {"status": call.status, "duration": str(call.duration), "price": price, "price_unit": "USD",
                "parent_call_sid": call.parent.sid if call.parent else None, "direction": call.direction}

    async def _updated(self, params: dict, sid: str) -> None:
        if params.get("Status") in ("completed", "canceled"):
            for fake in self.fakes:
                if sid in fake.calls:
                    fake.hangup(sid)

    async def place(self, twilio: FakeTwilio, scenario: Scenario, **kwargs) -> Scenario:
        scenario.call = await twilio.incoming_call(to=scenario.routing, from_=kwargs.pop("from_", CALLER),
                                                   voice_url=PUBLIC + "/twilio/voice",
                                                   status_callback=PUBLIC + "/twilio/status", **kwargs)
        scenario.log, scenario.items = await self.final_log(scenario)
        return scenario

    async def final_log(self, scenario: Scenario, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        Log, Item = m.IncomingCallLog, m.IncomingCallLogItem

        def read():
            logs = list(Log.select().where(Log.incomingCallPolicyId == scenario.policy_id))
            items = list(Item.select().where(Item.incomingCallLog == logs[0].id)
                         .order_by(Item.startedAt, Item.escalationRuleOrder)) if logs else []
            return logs, items

        while True:
            logs, items = await run_and_release(self.db, read)
            if logs and logs[0].status in m.TERMINAL_STATUSES and \
                    all(item.status in m.TERMINAL_STATUSES for item in items) and \
                    not any(a.log_id == logs[0].id for a in self.calls.by_call.values()):
                return logs[0], items
            if time.monotonic() > deadline:
                return (logs[0] if logs else None), []
            await asyncio.sleep(0.1)

    async def settled(self, timeout: float = 10.0) -> None:
        """Every call's price read (the shell's background tasks are done)."""
        deadline = time.monotonic() + timeout
        while len(self.calls.tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def closed_now(zone: str) -> list[dict]:
    """A daily window of ``zone`` that opens in 2 hours."""
    start = dt.datetime.now(ZoneInfo(zone)) + dt.timedelta(hours=2)
    return [{"type": "Daily", "startTime": f"{start:%H:%M}", "endTime": f"{start + dt.timedelta(hours=3):%H:%M}"}]


# The scenarios: (phones, rules, policy columns, what the caller does).
def scenarios() -> dict[str, tuple]:
    first = Phone.answering(number("202"), presses=["1"], talk=1)
    silent, second = Phone.no_answer(number("202")), Phone.answering(number("202"), presses=["1"], talk=1)
    box, person = Phone.voicemail(number("202"), ring=0.5, hangup_after=8), \
        Phone.answering(number("202"), presses=["1"], talk=1)
    busy, after_busy = Phone.busy(number("202")), Phone.answering(number("202"), presses=["1"], talk=1)
    fast, slow = Phone.answering(number("202"), ring=0.5, presses=["1"], talk=1), \
        Phone.answering(number("202"), ring=4, presses=["1"], talk=1)
    wrong, right = Phone.answering(number("202"), presses=["2"], talk=1), \
        Phone.answering(number("202"), presses=["1"], talk=1)
    nobody = Phone.no_answer(number("202"))
    own = Phone.answering(number("202"), presses=["1"], talk=1)
    ring_a, ring_b = Phone.no_answer(number("202")), Phone.no_answer(number("202"))
    unreachable = Phone.failing(number("202"))
    return {
        "first_rule_accepts": ([first], [Rule([first])], {}, {}),
        "second_rule_accepts": ([silent, second], [Rule([silent]), Rule([second])], {}, {}),
        "voicemail_is_not_an_answer": ([box, person], [Rule([box], escalate_after=6), Rule([person])], {}, {}),
        "busy_then_accepts": ([busy, after_busy], [Rule([busy]), Rule([after_busy])], {}, {}),
        "team_first_to_pick_up": ([fast, slow], [Rule([fast, slow], team=True, escalate_after=6)], {}, {}),
        "wrong_key_escalates": ([wrong, right], [Rule([wrong], escalate_after=6), Rule([right])], {}, {}),
        "repeat_then_no_answer": ([nobody], [Rule([nobody])], {"repeatPolicyIfNoOneAnswers": True,
                                                               "repeatPolicyIfNoOneAnswersTimes": 1}, {}),
        "caller_hangs_up_while_ringing": ([ring_a, ring_b], [Rule([ring_a, ring_b], team=True, escalate_after=10)],
                                          {}, {"hangup_after": 2.0}),
        "unreachable_number_fails_then_no_answer": ([unreachable], [Rule([unreachable])], {}, {}),
        "project_account": ([own], [Rule([own])], {"project_account": True}, {}),
        "after_hours": ([], [], {"businessHours": closed_now("Pacific/Kiritimati"),
                                 "businessHoursTimeZone": "Pacific/Kiritimati"}, {}),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placed(database_url):
    """Every scenario's call, placed at once through FakeTwilio; then their logs."""
    lab = Lab(database_url)
    await lab.start()
    table = scenarios()
    try:
        phones = [phone for spec in table.values() for phone in spec[0]]
        built = {}
        for name, (_, rules, policy, _) in table.items():
            built[name] = await run_and_release(lab.db, build, number("646"), rules, policy)
        own = table.pop("project_account")
        async with lab.twilio(phones) as twilio, \
                lab.twilio(own[0], account=PROJECT_ACCOUNT, token=PROJECT_TOKEN) as projects_twilio:
            await asyncio.gather(lab.place(projects_twilio, built["project_account"]),
                                 *(lab.place(twilio, built[name], **table[name][3]) for name in table))
            await lab.settled()
            for scenario in built.values():  # again, with their costs
                scenario.log, scenario.items = await lab.final_log(scenario)
            # Unknown numbers, bad signatures: no policy, nothing logged.
            unknown = await twilio.incoming_call(to="+16465550000", from_=CALLER, voice_url=PUBLIC + "/twilio/voice")
            twilio.signature = "invalid"
            forged = await twilio.incoming_call(to=built["first_rule_accepts"].routing, from_=CALLER,
                                                voice_url=PUBLIC + "/twilio/voice")
            twilio.signature = "missing"
            unsigned = await twilio.incoming_call(to=built["first_rule_accepts"].routing, from_=CALLER,
                                                  voice_url=PUBLIC + "/twilio/voice")
        policy = built["first_rule_accepts"].policy_id
        logs_after = await run_and_release(lab.db, lambda: list(m.IncomingCallLog.select().where(
            m.IncomingCallLog.incomingCallPolicyId == policy)))
        yield {"lab": lab, "unknown": unknown, "forged": forged, "unsigned": unsigned, "logs_after": logs_after,
               **built}
    finally:
        await lab.stop()


def statuses(scenario: Scenario) -> list[tuple[str, str]]:
    return [(item.status, item.statusMessage) for item in scenario.items]


def test_first_rule_answers_and_presses_1(placed):
    s: Scenario = placed["first_rule_accepts"]
    assert s.log.status == "Completed", s.log.statusMessage
    [phone] = s.users
    assert s.log.answeredByUserId == s.users[phone]
    assert [(i.status, i.isAnswered) for i in s.items] == [("Completed", True)]
    assert s.log.callProviderCallId == "twilio:" + s.call.sid
    assert s.call.child(phone).bridged_at is not None
    heard = s.call.transcript
    assert heard[CALLER][0] == "Connecting you to Ops."
    assert heard[phone][0].startswith("Call for Ops from plus 1 4 1 5") and heard[phone][0].endswith("Press 1 to accept.")
    assert not s.call.all_errors
    assert 1 <= s.log.callDurationInSeconds <= 3


def test_second_rule_accepts_after_the_first_rang_out(placed):
    s = placed["second_rule_accepts"]
    assert s.log.status == "Completed", s.log.statusMessage
    assert statuses(s)[0] == ("NoAnswer", "Not answered within 2 s")
    assert [i.status for i in s.items] == ["NoAnswer", "Completed"]
    assert s.log.answeredByUserId == s.items[1].userId


def test_a_voicemail_that_answers_is_not_the_answer(placed):
    s = placed["voicemail_is_not_an_answer"]
    box = s.items[0].numberDialed
    assert s.log.status == "Completed", s.log.statusMessage
    assert statuses(s)[0] == ("NoAnswer", f"Answered but did not press 1 within {CONFIRM:g} s (likely voicemail)")
    assert s.items[0].isAnswered is False
    assert s.call.child(box).bridged_at is None          # the caller never talked to the mailbox
    assert s.log.answeredByUserId == s.items[1].userId
    # The mailbox was hung up by Hotline when its window closed, not left running to the Dial's end.
    assert s.items[0].dialDurationInSeconds < 5


def test_busy_then_the_next_rule(placed):
    s = placed["busy_then_accepts"]
    assert (s.items[0].status, s.items[0].statusMessage) == ("Busy", "Line busy")
    assert s.log.status == "Completed"


def test_a_team_rings_at_once_and_the_first_to_pick_up_gets_the_whisper(placed):
    s = placed["team_first_to_pick_up"]
    assert s.log.status == "Completed", s.log.statusMessage
    by_status = sorted((i.status, i.statusMessage) for i in s.items)
    assert by_status[0][0] == "Completed"
    assert by_status[1][0] == "NoAnswer" and by_status[1][1].startswith("Stopped ringing: another number")
    started = sorted(i.startedAt for i in s.items)
    assert (started[1] - started[0]).total_seconds() < 1   # rung together


def test_another_key_hangs_the_whisper_up_and_escalates(placed):
    s = placed["wrong_key_escalates"]
    assert s.log.status == "Completed"
    assert s.items[0].status == "NoAnswer" and not s.items[0].isAnswered
    assert s.call.child(s.items[0].numberDialed).bridged_at is None
    assert s.log.answeredByUserId == s.items[1].userId


def test_repeat_then_no_answer(placed):
    s = placed["repeat_then_no_answer"]
    assert s.log.status == "NoAnswer", s.log.statusMessage
    assert [i.status for i in s.items] == ["NoAnswer", "NoAnswer"]
    assert s.call.transcript[CALLER][-1] == "Nobody answered."
    assert len(s.call.requests_to(f"/twilio/calls/{s.log.id}/dial/1")) == 1
    assert len(s.call.requests_to(f"/twilio/calls/{s.log.id}/dial/2")) == 1
    assert s.log.repeatCount == 1


def test_caller_hangs_up_while_the_team_rings(placed):
    s = placed["caller_hangs_up_while_ringing"]
    assert s.log.status == "CallerHungUp", s.log.statusMessage
    assert [i.status for i in s.items] == ["CallerHungUp", "CallerHungUp"]
    assert s.log.callDurationInSeconds == 0 and s.log.endedAt


def test_a_number_twilio_cannot_reach_fails_its_item(placed):
    s = placed["unreachable_number_fails_then_no_answer"]
    assert s.log.status == "NoAnswer", s.log.statusMessage
    [item] = s.items
    assert item.status == "Failed" and item.statusMessage.startswith(f"Call to {item.numberDialed} failed")


def test_after_hours_the_caller_hears_the_message_and_nobody_rings(placed):
    s = placed["after_hours"]
    assert s.log.status == "Failed" and s.log.statusMessage.startswith("Outside business hours")
    assert s.items == []
    assert s.call.transcript[CALLER] == ["We are closed. Please call again during business hours."]


def test_an_unknown_number_is_not_in_service(placed):
    call = placed["unknown"]
    assert call.transcript[CALLER] == [NOT_IN_SERVICE]
    assert [r.status for r in call.all_requests if r.kind == "voice"] == [200]


def test_forged_or_unsigned_webhooks_are_refused_and_change_nothing(placed):
    for call in (placed["forged"], placed["unsigned"]):
        [voice] = [r for r in call.all_requests if r.kind == "voice"]
        assert voice.status == 403
    # Only the one real call of that policy is logged.
    assert len(placed["logs_after"]) == 1


def test_the_calls_left_nothing_running(placed):
    lab = placed["lab"]
    assert not lab.calls.by_call and not lab.calls.by_sid


def test_costs_come_from_twilios_prices_of_the_call_and_its_legs(placed):
    s = placed["first_rule_accepts"]
    # 1 started minute of the caller's call (0.85 cents) and of the engineer's leg (1.4 cents).
    assert (s.log.incomingCallCostInUSDCents, s.log.outgoingCallCostInUSDCents, s.log.callCostInUSDCents) == (1, 1, 2)
    assert [i.callCostInUSDCents for i in s.items] == [1]
    unanswered = placed["second_rule_accepts"]
    assert [i.callCostInUSDCents for i in unanswered.items] == [0, 1]
    fetched = {r.path.rsplit("/", 1)[-1] for r in placed["lab"].standin.requests if r.method == "GET"}
    assert s.call.sid + ".json" in fetched and s.call.children[0].sid + ".json" in fetched


def test_a_policy_with_its_own_account_is_served_with_that_account(placed):
    s = placed["project_account"]
    assert s.log.status == "Completed", s.log.statusMessage
    assert s.call.all_requests[0].params["AccountSid"] == PROJECT_ACCOUNT
    # Its prices were read with the project's credentials, from the project's account.
    lab = placed["lab"]
    assert any(r.account_sid == PROJECT_ACCOUNT and s.call.sid in r.path for r in lab.standin.requests)
    assert s.log.callCostInUSDCents == 2


def test_a_voicemail_is_hung_up_through_the_rest_api_when_its_window_closes(placed):
    s = placed["voicemail_is_not_an_answer"]
    box = s.call.child(s.items[0].numberDialed)
    hangups = [r for r in placed["lab"].standin.requests if r.method == "POST" and r.path.endswith(box.sid + ".json")]
    assert [r.form.get("Status") for r in hangups] == ["completed"]
