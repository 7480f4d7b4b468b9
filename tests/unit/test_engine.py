"""Given/when/then tests of the escalation engine (ivr.core.engine).

A tiny fake shell (`Shell`) executes the engine's commands into a fake database (the log row and
one item row per Dial), so each scenario reads as: given a policy, when these things happen at
these times, then the log and the items say this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ivr.core.engine import (
    CALLER,
    DISABLED_MESSAGE,
    Answer,
    Bridge,
    CallerHungUp,
    CallSetup,
    CallStarted,
    CallState,
    CallStatus,
    CancelTimer,
    Command,
    Contact,
    Dial,
    DigitPressed,
    EscalationCall,
    Event,
    HangupCaller,
    HangupLeg,
    IllegalEvent,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackFinished,
    RecordCaller,
    RecordingEnded,
    Rule,
    SaveVoicemail,
    StartRingback,
    StartTimer,
    StopPlayback,
    StopRecording,
    StopRingback,
    TimerFired,
    DialStarted,
    Phase,
    UpdateItem,
    UpdateLog,
    escalation_plan,
    speakable_number,
    step,
)
from ivr.core.texts import VOICEMAIL_PROMPT

CALL = "call-7"
GREETING = "Please wait while we connect you to the on-call engineer."
NO_ANSWER = "No one is available. Please try again later."
NO_ONE = "We are sorry, but no on-call engineer is currently available."


# ----------------------------------------------------------------------------------- builders


def contact(user: str, number: str | None = None) -> Contact:
    number = number or f"{user}-mobile"
    return Contact(user_id=user, number_id=number, address=f"sip:{number}@10.0.0.5")


def rule(order: int, *users: str | Contact, after: float = 30.0) -> Rule:
    contacts = tuple(u if isinstance(u, Contact) else contact(u) for u in users)
    return Rule(order=order, rule_id=f"rule-{order}", name=f"Rule {order}",
                escalate_after_seconds=after, contacts=contacts)


def policy(*rules: Rule, **overrides: Any) -> CallSetup:
    fields: dict[str, Any] = dict(
        call_id=CALL,
        policy_name="Payments on-call",
        caller_number="+14155550100",
        greeting=GREETING,
        no_answer_message=NO_ANSWER,
        no_one_available_message=NO_ONE,
        is_enabled=True,
        repeat_if_no_one_answers=False,
        repeat_times=1,
        require_confirmation=False,
        confirm_timeout=10.0,
        rules=rules,
    )
    fields.update(overrides)
    return CallSetup(**fields)


def leg(n: int) -> str:
    return f"{CALL}-leg-{n}"


# --------------------------------------------------------------------------------- fake shell


@dataclass
class Shell:
    """Executes commands the way a real shell would, into an in-memory 'database'."""

    setup: CallSetup
    call: EscalationCall = field(init=False)
    now: float = 0.0
    log: dict[str, Any] = field(default_factory=lambda: {"status": CallStatus.INITIATED})
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    dials: list[Dial] = field(default_factory=list)
    history: list[Command] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    playing: dict[str, str] = field(default_factory=dict)  # target -> playback id
    played_texts: list[tuple[str, str]] = field(default_factory=list)
    bridged: list[str] = field(default_factory=list)
    hung_up_legs: list[str] = field(default_factory=list)
    caller_answered: bool = False
    caller_hung_up_by_engine: bool = False
    ringback: bool = False
    last: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.call = EscalationCall(self.setup)

    def send(self, event: Event, at: float | None = None) -> list[Command]:
        if at is not None:
            self.now = at
        self.last = self.call.handle(event, self.now)
        if isinstance(event, CallerHungUp):
            self.ringback = False  # the caller's channel, and what it heard, is gone
            self.playing.pop(CALLER, None)
        for command in self.last:
            self.execute(command)
        self.history.extend(self.last)
        assert self.timers == self.call.pending_timers
        return self.last

    def execute(self, command: Command) -> None:
        match command:
            case Answer():
                self.caller_answered = True
            case Play(target=target, playback_id=pb, text=text):
                self.playing[target] = pb
                self.played_texts.append((target, text))
            case StopPlayback(playback_id=pb):
                self.playing = {t: p for t, p in self.playing.items() if p != pb}
            case StartRingback():
                assert not self.ringback, "ringback started twice"
                self.ringback = True
            case StopRingback():
                assert self.ringback
                self.ringback = False
            case Dial(leg_id=leg_id, contact=c, rule_order=order):
                assert leg_id not in self.items
                self.dials.append(command)
                self.items[leg_id] = {"status": CallStatus.RINGING, "started_at": self.now,
                                      "userId": c.user_id, "ruleOrder": order}
            case Bridge(leg_id=leg_id):
                self.bridged.append(leg_id)
            case HangupLeg(leg_id=leg_id):
                self.hung_up_legs.append(leg_id)
            case HangupCaller():
                self.caller_hung_up_by_engine = True
            case StartTimer(timer_id=tid, at=at):
                assert tid not in self.timers
                self.timers[tid] = at
            case CancelTimer(timer_id=tid):
                del self.timers[tid]
            case UpdateLog():
                self.log.update(command.changes())
            case UpdateItem(leg_id=leg_id):
                self.items[leg_id].update(command.changes())
            case RecordCaller() | StopRecording() | SaveVoicemail():
                pass  # what the voicemail's tests look at in the commands themselves
            case _:
                raise AssertionError(f"unknown command {command!r}")

    # Steps written in scenario tables: (time, verb, *args); time None = "when it is due".
    def do(self, at: float | None, verb: str, *args: Any) -> list[Command]:
        match verb:
            case "start":
                return self.send(CallStarted(), at)
            case "played":  # the current playback on the caller ("caller") or on leg n ended
                target = CALLER if args[0] == "caller" else leg(args[0])
                return self.send(PlaybackFinished(self.playing.pop(target)), at)
            case "ringing":
                return self.send(LegRinging(leg(args[0])), at)
            case "answered":
                return self.send(LegAnswered(leg(args[0])), at)
            case "pressed":
                return self.send(DigitPressed(leg(args[0]), args[1]), at)
            case "ended":
                return self.send(LegEnded(leg(args[0]), args[1]), at)
            case "caller_hangup":
                return self.send(CallerHungUp(), at)
            case "fire":  # ("fire", "rule") or ("fire", "confirm", n)
                tid = self.rule_timer() if args[0] == "rule" else f"confirm:{leg(args[1])}"
                due = self.timers.pop(tid)
                return self.send(TimerFired(tid), due if at is None else at)
            case _:
                raise AssertionError(f"unknown step {verb!r}")

    def rule_timer(self) -> str:
        (tid,) = [t for t in self.timers if t.startswith("rule:")]
        return tid

    def run(self, steps: list[tuple]) -> Shell:
        for at, verb, *args in steps:
            self.do(at, verb, *args)
        return self


def run(setup: CallSetup, steps: list[tuple]) -> Shell:
    return Shell(setup).run(steps)


def subset(actual: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The part of `actual` that `expected` talks about, with `...` meaning 'contains'."""
    picked = {}
    for key, want in expected.items():
        got = actual.get(key, "<missing>")
        if isinstance(want, Contains):
            picked[key] = want if isinstance(got, str) and want.text in got else got
        else:
            picked[key] = got
    return picked


@dataclass(frozen=True)
class Contains:
    text: str


# ---------------------------------------------------------------------------- scenario table

START = [(0, "start"), (3, "played", "caller")]  # greeting of 3 s, then the hunt begins


@dataclass(frozen=True)
class Scenario:
    name: str
    given: CallSetup
    when: list[tuple]
    log: dict[str, Any]
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    dialed: list[tuple[int, str, int]] | None = None  # (leg number, user, rule order)
    bridged: int | None = None
    finished: bool = True


SCENARIOS = [
    Scenario(
        "first rule accepts (no confirmation)",
        given=policy(rule(1, "alice")),
        when=START + [(4, "ringing", 1), (8, "answered", 1), (68, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "alice",
             "current_rule_order": 1, "repeat_count": 0,
             "talk_seconds": 60.0, "ended_at": 68},
        items={1: {"status": CallStatus.COMPLETED, "is_answered": True,
                   "dial_seconds": 5.0, "ended_at": 68}},
        dialed=[(1, "alice", 1)],
        bridged=1,
    ),
    Scenario(
        "first rule accepts by pressing 1, callee hangs up",
        given=policy(rule(1, "alice"), require_confirmation=True),
        when=START + [(8, "answered", 1), (11, "pressed", 1, "1"), (41, "ended", 1, "hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "alice",
             "talk_seconds": 30.0, "ended_at": 41,
             "status_message": Contains("on-call user hung up")},
        items={1: {"status": CallStatus.COMPLETED, "is_answered": True,
                   "dial_seconds": 5.0}},
        bridged=1,
    ),
    Scenario(
        "first rule never answers, second accepts",
        given=policy(rule(1, "alice", after=20), rule(2, "bob", after=15)),
        when=START + [(None, "fire", "rule"), (30, "answered", 2), (90, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "bob",
             "current_rule_order": 2, "talk_seconds": 60.0},
        items={1: {"status": CallStatus.NO_ANSWER, "is_answered": False,
                   "status_message": "Not answered within 20 s", "ended_at": 23,
                   "dial_seconds": 20.0},
               2: {"status": CallStatus.COMPLETED, "is_answered": True, "started_at": 23,
                   "dial_seconds": 7.0}},
        dialed=[(1, "alice", 1), (2, "bob", 2)],
        bridged=2,
    ),
    Scenario(
        "voicemail answers but never presses 1: not an answer, the hunt goes on",
        given=policy(rule(1, "alice"), rule(2, "bob"), require_confirmation=True,
                     confirm_timeout=8),
        when=START + [(5, "answered", 1), (None, "fire", "confirm", 1),
                      (15, "answered", 2), (17, "pressed", 2, "1"), (20, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "bob",
             "current_rule_order": 2},
        items={1: {"status": CallStatus.NO_ANSWER, "is_answered": False, "ended_at": 13,
                   "status_message": Contains("did not press 1 within 8 s (likely voicemail)")},
               2: {"status": CallStatus.COMPLETED, "is_answered": True}},
        dialed=[(1, "alice", 1), (2, "bob", 2)],  # bob rung at once at 13, not at 33
        bridged=2,
    ),
    Scenario(
        "busy leg: item Busy and immediate escalation",
        given=policy(rule(1, "alice"), rule(2, "bob")),
        when=START + [(4, "ended", 1, "busy"), (6, "answered", 2), (9, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "bob"},
        items={1: {"status": CallStatus.BUSY, "is_answered": False, "ended_at": 4},
               2: {"status": CallStatus.COMPLETED, "started_at": 4}},
        bridged=2,
    ),
    Scenario(
        "failed leg: item Failed with a message, then escalation",
        given=policy(rule(1, "alice"), rule(2, "bob")),
        when=START + [(3, "ended", 1, "failed"), (5, "answered", 2), (9, "ended", 2, "hangup")],
        log={"status": CallStatus.COMPLETED, "talk_seconds": 4.0},
        items={1: {"status": CallStatus.FAILED, "status_message": Contains("failed")},
               2: {"status": CallStatus.COMPLETED}},
        bridged=2,
    ),
    Scenario(
        "leg declines (hangs up while ringing) and leg times out at Asterisk: NoAnswer",
        given=policy(rule(1, "alice", "bob", after=20), rule(2, "carol")),
        when=START + [(5, "ended", 1, "hangup"), (23, "ended", 2, "no_answer"),
                      (40, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP, "current_rule_order": 2,
             "talk_seconds": 0},
        items={1: {"status": CallStatus.NO_ANSWER, "status_message": Contains("declined")},
               2: {"status": CallStatus.NO_ANSWER, "status_message": "Not answered within 20 s"},
               3: {"status": CallStatus.CALLER_HUNG_UP, "started_at": 23}},
        dialed=[(1, "alice", 1), (2, "bob", 1), (3, "carol", 2)],
    ),
    Scenario(
        "team rings all at once; the first to accept wins, the others are hung up",
        given=policy(rule(1, "alice", "bob", "carol"), require_confirmation=True),
        when=START + [(5, "answered", 1), (6, "answered", 2), (7, "pressed", 2, "1"),
                      (100, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "bob",
             "talk_seconds": 93.0},
        items={1: {"status": CallStatus.NO_ANSWER, "is_answered": False,
                   "status_message": "Call was answered elsewhere, by user bob"},
               2: {"status": CallStatus.COMPLETED, "is_answered": True,
                   "dial_seconds": 3.0},
               3: {"status": CallStatus.NO_ANSWER,
                   "status_message": "Call was answered elsewhere, by user bob"}},
        dialed=[(1, "alice", 1), (2, "bob", 1), (3, "carol", 1)],
        bridged=2,
    ),
    Scenario(
        "repeat twice, then NoAnswer after exactly three rounds",
        given=policy(rule(1, "alice", after=10), rule(2, "bob", after=10),
                     repeat_if_no_one_answers=True, repeat_times=2),
        when=START + [(None, "fire", "rule")] * 6 + [(70, "played", "caller")],
        log={"status": CallStatus.NO_ANSWER, "repeat_count": 2, "current_rule_order": 2,
             "status_message": "No one answered: all 2 escalation rules were tried 3 times",
             "ended_at": 70, "talk_seconds": 0},
        items={n: {"status": CallStatus.NO_ANSWER} for n in range(1, 7)},
        dialed=[(1, "alice", 1), (2, "bob", 2), (3, "alice", 1), (4, "bob", 2),
                (5, "alice", 1), (6, "bob", 2)],
    ),
    Scenario(
        "no repeat: one round, then NoAnswer",
        given=policy(rule(1, "alice", after=10), repeat_times=5),
        when=START + [(None, "fire", "rule"), (20, "played", "caller")],
        log={"status": CallStatus.NO_ANSWER, "repeat_count": 0,
             "status_message": "No one answered: all 1 escalation rule was tried 1 time"},
        dialed=[(1, "alice", 1)],
    ),
    Scenario(
        "nobody available in any rule",
        given=policy(rule(1), rule(2)),
        when=[(0, "start"), (6, "played", "caller")],
        log={"status": CallStatus.FAILED, "ended_at": 6, "talk_seconds": 0,
             "status_message": "No on-call user available in any escalation rule"},
        dialed=[],
    ),
    Scenario(
        "disabled policy",
        given=policy(rule(1, "alice"), is_enabled=False),
        when=[(0, "start"), (2, "played", "caller")],
        log={"status": CallStatus.FAILED, "status_message": "Policy is disabled",
             "ended_at": 2, "talk_seconds": 0},
        dialed=[],
    ),
    Scenario(
        "caller hangs up during the greeting",
        given=policy(rule(1, "alice")),
        when=[(0, "start"), (1, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP, "ended_at": 1, "talk_seconds": 0},
        dialed=[],
    ),
    Scenario(
        "caller hangs up while legs ring",
        given=policy(rule(1, "alice", "bob")),
        when=START + [(4, "ringing", 1), (9, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP, "ended_at": 9, "talk_seconds": 0},
        items={1: {"status": CallStatus.CALLER_HUNG_UP, "ended_at": 9,
                   "dial_seconds": 6.0},
               2: {"status": CallStatus.CALLER_HUNG_UP}},
    ),
    Scenario(
        "caller hangs up while a leg is confirming",
        given=policy(rule(1, "alice"), require_confirmation=True),
        when=START + [(5, "answered", 1), (7, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP, "talk_seconds": 0},
        items={1: {"status": CallStatus.CALLER_HUNG_UP, "is_answered": False}},
    ),
    Scenario(
        "caller hangs up while connected",
        given=policy(rule(1, "alice")),
        when=START + [(5, "answered", 1), (125, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "talk_seconds": 120.0,
             "status_message": Contains("the caller hung up")},
        items={1: {"status": CallStatus.COMPLETED, "ended_at": 125}},
        bridged=1,
    ),
    Scenario(
        "a confirming leg keeps its window after its rule times out, and wins",
        given=policy(rule(1, "alice", "bob", after=10), rule(2, "carol"),
                     require_confirmation=True, confirm_timeout=20),
        when=START + [(8, "answered", 1), (None, "fire", "rule"), (15, "pressed", 1, "1"),
                      (20, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "alice",
             "current_rule_order": 1},
        items={1: {"status": CallStatus.COMPLETED, "dial_seconds": 5.0},
               2: {"status": CallStatus.NO_ANSWER, "status_message": "Not answered within 10 s"},
               3: {"status": CallStatus.NO_ANSWER,
                   "status_message": "Call was answered elsewhere, by user alice"}},
        dialed=[(1, "alice", 1), (2, "bob", 1), (3, "carol", 2)],
        bridged=1,
    ),
    Scenario(
        "last rule times out while a leg confirms: wait for it, then NoAnswer",
        given=policy(rule(1, "alice", after=10), require_confirmation=True, confirm_timeout=20),
        when=START + [(8, "answered", 1), (None, "fire", "rule"), (None, "fire", "confirm", 1),
                      (30, "played", "caller")],
        log={"status": CallStatus.NO_ANSWER, "ended_at": 30,
             "status_message": Contains("tried 1 time")},
        items={1: {"status": CallStatus.NO_ANSWER, "ended_at": 28,
                   "status_message": Contains("within 20 s (likely voicemail)")}},
    ),
    Scenario(
        "a confirming leg hangs up: NoAnswer, hung up before accepting",
        given=policy(rule(1, "alice"), rule(2, "bob"), require_confirmation=True),
        when=START + [(5, "answered", 1), (7, "ended", 1, "hangup"), (9, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP},
        items={1: {"status": CallStatus.NO_ANSWER,
                   "status_message": "Answered but hung up before pressing 1 to accept"},
               2: {"status": CallStatus.CALLER_HUNG_UP, "started_at": 7}},
    ),
    Scenario(
        "caller hangs up during the no-answer message: the outcome stays NoAnswer",
        given=policy(rule(1, "alice", after=5)),
        when=START + [(None, "fire", "rule"), (9, "caller_hangup")],
        log={"status": CallStatus.NO_ANSWER, "ended_at": 9, "talk_seconds": 0},
    ),
    Scenario(
        "all team members fail at once: escalate without waiting for the timer",
        given=policy(rule(1, "alice", "bob"), rule(2, "carol")),
        when=START + [(3, "ended", 1, "failed"), (4, "ended", 2, "busy"), (5, "answered", 3),
                      (6, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "carol"},
        items={1: {"status": CallStatus.FAILED}, 2: {"status": CallStatus.BUSY},
               3: {"status": CallStatus.COMPLETED, "started_at": 4}},
        bridged=3,
    ),
    Scenario(
        "empty greeting: ringing starts at once",
        given=policy(rule(1, "alice"), greeting=""),
        when=[(0, "start"), (2, "answered", 1), (3, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "talk_seconds": 1.0},
        items={1: {"started_at": 0, "dial_seconds": 2.0}},
        bridged=1,
    ),
    Scenario(
        "rules without contacts are skipped, the log names the rule really rung",
        given=policy(rule(1), rule(5, "alice", after=4), rule(7), rule(9, "bob")),
        when=START + [(None, "fire", "rule"), (9, "caller_hangup")],
        log={"status": CallStatus.CALLER_HUNG_UP, "current_rule_order": 9},
        dialed=[(1, "alice", 5), (2, "bob", 9)],
    ),
    Scenario(
        "resume: no answer or greeting again, ring the stored rule in the stored round",
        given=policy(rule(1, "alice"), rule(2, "bob"), rule(3, "carol"),
                     resume_from_order=2, resume_repeat_count=1,
                     repeat_if_no_one_answers=True, repeat_times=1),
        when=[(100, "start"), (None, "fire", "rule"), (None, "fire", "rule"),
              (170, "played", "caller")],
        log={"status": CallStatus.NO_ANSWER, "repeat_count": 1,
             "current_rule_order": 3, "status_message": Contains("tried 2 times")},
        dialed=[(1, "bob", 2), (2, "carol", 3)],
    ),
    Scenario(
        "resume at an order without contacts continues with the next rule that has some",
        given=policy(rule(1, "alice"), rule(2), rule(3, "carol"), resume_from_order=2),
        when=[(0, "start"), (5, "answered", 1), (6, "caller_hangup")],
        log={"status": CallStatus.COMPLETED, "answered_by_user_id": "carol",
             "current_rule_order": 3},
        dialed=[(1, "carol", 3)],
        bridged=1,
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    shell = run(scenario.given, scenario.when)

    assert subset(shell.log, scenario.log) == scenario.log
    for n, expected in scenario.items.items():
        assert subset(shell.items[leg(n)], expected) == expected, f"item of leg {n}"
    if scenario.dialed is not None:
        assert [(d.leg_id, d.contact.user_id, d.rule_order) for d in shell.dials] == [
            (leg(n), user, order) for n, user, order in scenario.dialed
        ]
    assert shell.bridged == ([] if scenario.bridged is None else [leg(scenario.bridged)])
    assert shell.call.is_finished is scenario.finished
    if scenario.finished:
        # The truth rules every finished call obeys.
        assert shell.log["status"] in {CallStatus.COMPLETED, CallStatus.NO_ANSWER,
                                       CallStatus.FAILED, CallStatus.CALLER_HUNG_UP}
        assert "ended_at" in shell.log and "talk_seconds" in shell.log
        for leg_id, item in shell.items.items():
            assert item["status"] in {CallStatus.COMPLETED, CallStatus.NO_ANSWER,
                                      CallStatus.FAILED, CallStatus.CALLER_HUNG_UP,
                                      CallStatus.BUSY}, leg_id
            assert "ended_at" in item and "dial_seconds" in item, leg_id
        assert shell.timers == {}
        assert not shell.ringback


def test_a_leg_that_stops_confirming_loses_its_confirm_timer() -> None:
    shell = Shell(policy(rule(1, "alice", "bob"), require_confirmation=True))
    shell.run(START + [(5, "answered", 1), (6, "answered", 2)])
    assert set(shell.timers) == {"rule:1", f"confirm:{leg(1)}", f"confirm:{leg(2)}"}
    assert shell.do(7, "ended", 1, "hangup")[0] == CancelTimer(f"confirm:{leg(1)}")
    assert set(shell.timers) == {"rule:1", f"confirm:{leg(2)}"}
    assert shell.send(LegAnswered(leg(2))) == []  # reported twice: the prompt is not restarted


# ------------------------------------------------------------------- the commands, precisely


def test_call_start_answers_and_plays_the_greeting() -> None:
    shell = Shell(policy(rule(1, "alice")))
    assert shell.do(0, "start") == [Answer(), Play(CALLER, f"{CALL}-pb-1", GREETING)]
    assert shell.log["status"] is CallStatus.INITIATED


def test_starting_a_rule_rings_each_distinct_number_once_with_ringback_and_a_timer() -> None:
    bob_desk = contact("bob", "bob-desk")
    team = rule(4, "alice", bob_desk, contact("alice"), bob_desk, after=25)
    shell = Shell(policy(team))
    shell.do(0, "start")
    commands = shell.do(2.5, "played", "caller")
    assert commands == [
        UpdateLog(**{"status": CallStatus.RINGING, "current_rule_order": 4,
                   "repeat_count": 0}),
        StartRingback(),
        Dial(leg(1), contact("alice"), 4, 25, "rule-4"),
        Dial(leg(2), contact("bob", "bob-desk"), 4, 25, "rule-4"),
        StartTimer("rule:1", 27.5),
    ]


def test_escalation_timer_fires_exactly_escalate_after_seconds_after_the_dial() -> None:
    shell = Shell(policy(rule(1, "alice", after=20), rule(2, "bob", after=15)))
    shell.run(START)
    assert shell.timers == {"rule:1": 23.0}
    commands = shell.do(None, "fire", "rule")
    assert shell.now == 23.0
    assert commands == [
        HangupLeg(leg(1)),
        UpdateItem(leg(1), **{"status": CallStatus.NO_ANSWER,
                            "status_message": "Not answered within 20 s", "is_answered": False,
                            "dial_seconds": 20.0, "ended_at": 23.0}),
        UpdateLog(**{"status": CallStatus.ESCALATED, "current_rule_order": 2,
                   "repeat_count": 0}),
        Dial(leg(2), contact("bob"), 2, 15, "rule-2"),
        StartTimer("rule:2", 38.0),
    ]
    assert shell.log["status"] is CallStatus.ESCALATED


def test_accepting_stops_everything_before_bridging() -> None:
    shell = Shell(policy(rule(1, "alice", "bob"), require_confirmation=True))
    shell.run(START + [(5, "answered", 1), (6, "answered", 2)])
    prompt_1, prompt_2 = shell.playing[leg(1)], shell.playing[leg(2)]
    commands = shell.do(9, "pressed", 2, "1")
    assert commands == [
        CancelTimer("rule:1"),
        CancelTimer(f"confirm:{leg(1)}"),
        CancelTimer(f"confirm:{leg(2)}"),
        StopRingback(),
        StopPlayback(prompt_2),
        HangupLeg(leg(1)),
        UpdateItem(leg(1), **{"status": CallStatus.NO_ANSWER,
                            "status_message": "Call was answered elsewhere, by user bob",
                            "is_answered": False, "dial_seconds": 6.0, "ended_at": 9}),
        Bridge(leg(2)),
        UpdateLog(**{"status": CallStatus.CONNECTED, "status_message": "Connected to user bob",
                   "answered_by_user_id": "bob", "current_rule_order": 1}),
        UpdateItem(leg(2), **{"status": CallStatus.CONNECTED,
                            "status_message": "Accepted by pressing 1", "is_answered": True,
                            "dial_seconds": 3.0}),
    ]
    assert prompt_1 != prompt_2


def test_confirmation_prompt_speaks_policy_and_digits_and_repeats_until_answered() -> None:
    shell = Shell(policy(rule(1, "alice"), require_confirmation=True, confirm_timeout=12))
    shell.run(START)
    prompt = "Call for Payments on-call from plus 1 4 1 5 5 5 5 0 1 0 0. Press 1 to accept."
    assert shell.do(4, "answered", 1) == [
        Play(leg(1), f"{CALL}-pb-2", prompt),
        StartTimer(f"confirm:{leg(1)}", 16.0),
    ]
    assert shell.do(9, "played", 1) == [Play(leg(1), f"{CALL}-pb-3", prompt)]
    assert shell.do(10, "pressed", 1, "7") == []  # other digits are ignored
    assert shell.do(11, "pressed", 1, "1")[-3] == Bridge(leg(1))
    assert shell.items[leg(1)]["dial_seconds"] == 1.0  # rang from 3 to 4


def test_no_answer_message_then_hangup_after_it_finishes() -> None:
    shell = Shell(policy(rule(1, "alice", after=5)))
    shell.run(START)
    commands = shell.do(None, "fire", "rule")
    assert commands[-2:] == [StopRingback(), Play(CALLER, f"{CALL}-pb-2", NO_ANSWER)]
    assert not shell.call.is_finished and shell.log["status"] is CallStatus.RINGING
    assert shell.do(20, "played", "caller") == [
        HangupCaller(),
        UpdateLog(**{"status": CallStatus.NO_ANSWER,
                   "status_message": "No one answered: all 1 escalation rule was tried 1 time",
                   "ended_at": 20, "talk_seconds": 0}),
    ]
    assert shell.call.is_finished


def test_disabled_policy_plays_the_fixed_message() -> None:
    shell = Shell(policy(rule(1, "alice"), is_enabled=False))
    assert shell.do(0, "start") == [Answer(), Play(CALLER, f"{CALL}-pb-1", DISABLED_MESSAGE)]


def test_empty_final_message_hangs_up_at_once() -> None:
    shell = Shell(policy(rule(1), no_one_available_message=""))
    commands = shell.do(0, "start")
    assert commands[:2] == [Answer(), HangupCaller()]
    assert shell.call.is_finished and shell.log["status"] is CallStatus.FAILED


def test_repeat_rounds_keep_ringback_on_and_count_in_the_log() -> None:
    shell = Shell(policy(rule(1, "alice", after=10), repeat_if_no_one_answers=True,
                         repeat_times=1))
    shell.run(START)
    commands = shell.do(None, "fire", "rule")
    assert UpdateLog(**{"status": CallStatus.ESCALATED, "current_rule_order": 1,
                      "repeat_count": 1}) in commands
    assert StartRingback() not in commands
    assert [c for c in commands if isinstance(c, Dial)] == [
        Dial(leg(2), contact("alice"), 1, 10, "rule-1")]


def test_resume_does_not_answer_or_greet_and_restarts_ringback() -> None:
    shell = Shell(policy(rule(1, "alice"), rule(2, "bob"), resume_from_order=2))
    commands = shell.do(50, "start")
    assert commands == [
        UpdateLog(**{"status": CallStatus.ESCALATED, "current_rule_order": 2,
                   "repeat_count": 0}),
        StartRingback(),
        Dial(leg(1), contact("bob"), 2, 30, "rule-2"),
        StartTimer("rule:1", 80),
    ]


def test_resume_past_the_last_rule_repeats_or_gives_up() -> None:
    gives_up = Shell(policy(rule(1, "alice"), resume_from_order=9))
    assert gives_up.do(0, "start") == [Play(CALLER, f"{CALL}-pb-1", NO_ANSWER)]
    repeats = Shell(policy(rule(1, "alice"), resume_from_order=9,
                           repeat_if_no_one_answers=True, repeat_times=3))
    repeats.do(0, "start")
    assert repeats.log["repeat_count"] == 1 and len(repeats.dials) == 1


def test_number_still_confirming_from_an_earlier_rule_is_not_rung_again() -> None:
    # alice is in both rules; while she decides, rule 2 rings only bob and waits for her too.
    shell = Shell(policy(rule(1, "alice", after=10), rule(2, "alice", "bob", after=10),
                         require_confirmation=True, confirm_timeout=30))
    shell.run(START + [(5, "answered", 1), (None, "fire", "rule")])
    assert [d.contact.user_id for d in shell.dials] == ["alice", "bob"]
    shell.do(16, "ended", 2, "busy")  # bob busy, but alice still may accept for rule 2
    assert len(shell.dials) == 2 and not shell.call.is_finished
    shell.do(18, "pressed", 1, "1")
    assert shell.bridged == [leg(1)]


# ----------------------------------------------------------------- stale and illegal events


def test_stale_events_are_ignored() -> None:
    shell = Shell(policy(rule(1, "alice", "bob", after=10), rule(2, "carol"),
                         require_confirmation=True))
    shell.run(START + [(4, "ended", 1, "busy")])
    assert shell.send(LegEnded(leg(1), "hangup")) == []  # ended twice
    assert shell.send(LegAnswered(leg(1))) == [HangupLeg(leg(1))]  # late answer of an ended leg: hung up
    assert shell.send(DigitPressed(leg(2), "1")) == []  # not confirming
    assert shell.send(LegRinging(leg(2))) == []  # recorded in the state, nothing to do
    assert shell.send(LegRinging(leg(2))) == []  # reported twice
    assert shell.send(PlaybackFinished(f"{CALL}-pb-1")) == []  # the greeting, finished before
    shell.do(None, "fire", "rule")
    assert shell.send(TimerFired("rule:1")) == []  # already fired
    shell.do(20, "caller_hangup")
    assert shell.call.is_finished
    late_events: list[Event] = [LegAnswered(leg(3)), LegEnded(leg(3), "hangup"), CallerHungUp(),
                                TimerFired("rule:2"), PlaybackFinished(f"{CALL}-pb-1")]
    for late in late_events:
        assert shell.send(late) == []


def test_a_late_timer_of_an_earlier_rule_does_not_cut_the_next_rule_short() -> None:
    # The rule timer and the legs' own dial timeouts race; the legs' ends escalate first.
    shell = Shell(policy(rule(1, "alice", after=10), rule(2, "bob", after=10)))
    shell.run(START + [(13, "ended", 1, "no_answer")])
    assert shell.timers == {"rule:2": 23}
    assert shell.send(TimerFired("rule:1"), 13) == []  # was cancelled: ignored
    assert shell.items[leg(2)]["status"] is CallStatus.RINGING


def test_ringing_is_recorded_only_for_a_dialing_leg() -> None:
    shell = Shell(policy(rule(1, "alice")))
    shell.run(START)
    assert shell.send(LegRinging(leg(1))) == []
    recorded = shell.call.state.leg(leg(1))
    assert recorded is not None and recorded.phase == "ringing"


ILLEGAL = [
    ("unknown leg answered", LegAnswered("call-7-leg-99")),
    ("unknown leg ended", LegEnded("nope", "busy")),
    ("unknown leg digit", DigitPressed("call-7-leg-0", "1")),
    ("unknown leg ringing", LegRinging("other-call-leg-1")),
    ("CallStarted twice", CallStarted()),
    ("playback never started", PlaybackFinished("call-7-pb-42")),
    ("foreign playback", PlaybackFinished("x-pb-1")),
    ("timer never started", TimerFired("rule:9")),
    ("confirm timer of a leg never answered", TimerFired("confirm:call-7-leg-1")),
    ("unknown timer kind", TimerFired("greeting")),
    ("unknown end cause", LegEnded("call-7-leg-1", "congestion")),
    ("not a DTMF digit", DigitPressed("call-7-leg-1", "12")),
    ("not an event", "CallStarted"),
]


@pytest.mark.parametrize("event", [e for _, e in ILLEGAL], ids=[n for n, _ in ILLEGAL])
def test_illegal_events_raise_and_leave_the_state_unchanged(event: Any) -> None:
    shell = Shell(policy(rule(1, "alice"), require_confirmation=True))
    shell.run(START)
    before = shell.call.state
    with pytest.raises(IllegalEvent):
        shell.call.handle(event, 5)
    assert shell.call.state is before


def test_illegal_events_still_raise_after_the_call_finished() -> None:
    shell = Shell(policy(rule(1, "alice")))
    shell.run(START + [(5, "caller_hangup")])
    with pytest.raises(IllegalEvent):
        shell.call.handle(CallStarted(), 6)
    with pytest.raises(IllegalEvent):
        shell.call.handle(LegAnswered("call-7-leg-5"), 6)


def test_non_finite_time_is_illegal() -> None:
    call = EscalationCall(policy(rule(1, "alice")))
    with pytest.raises(IllegalEvent):
        call.handle(CallStarted(), float("nan"))
    assert not call.state.started


def test_caller_gone_before_the_start_was_reported() -> None:
    call = EscalationCall(policy(rule(1, "alice")))
    commands = call.handle(CallerHungUp(), 1)
    assert commands == [
        UpdateLog(**{"status": CallStatus.CALLER_HUNG_UP,
                   "status_message": "Caller hung up before anyone accepted the call",
                   "ended_at": 1, "talk_seconds": 0})
    ]
    assert call.handle(CallStarted(), 2) == []  # the late start is a race, not an error
    with pytest.raises(IllegalEvent):
        call.handle(CallStarted(), 3)


# ------------------------------------------------------------------- persistence and helpers


def test_state_round_trips_through_json_and_the_call_continues() -> None:
    shell = Shell(policy(rule(1, "alice", "bob", after=10), rule(2, "carol"),
                         require_confirmation=True, repeat_if_no_one_answers=True))
    shell.run(START + [(5, "answered", 1), (6, "ended", 2, "busy")])
    saved = json.dumps(shell.call.state.to_dict())
    restored = EscalationCall.from_state(CallState.from_dict(json.loads(saved)))
    assert restored.state == shell.call.state
    assert restored.pending_timers == shell.call.pending_timers
    assert restored.handle(DigitPressed(leg(1), "1"), 8) == shell.send(
        DigitPressed(leg(1), "1"), 8)


def test_unknown_state_version_is_refused() -> None:
    data = CallState.initial(policy(rule(1, "alice"))).to_dict()
    data["version"] = 99
    with pytest.raises(ValueError):
        CallState.from_dict(data)


def test_step_is_pure() -> None:
    state = CallState.initial(policy(rule(1, "alice")))
    new_state, commands = step(state, CallStarted(), 0)
    assert state.phase == "new" and new_state.phase == "greeting" and commands


def test_escalation_plan_sorts_dedupes_and_drops_empty_rules() -> None:
    setup = policy(rule(3, "carol"), rule(1), rule(2, "bob", "bob", "alice"))
    assert [(r.order, [c.user_id for c in r.contacts]) for r in escalation_plan(setup)] == [
        (2, ["bob", "alice"]), (3, ["carol"])]


@pytest.mark.parametrize(
    ("caller", "spoken"),
    [
        ("+14155550100", "plus 1 4 1 5 5 5 5 0 1 0 0"),
        ("(415) 555-0100", "4 1 5 5 5 5 0 1 0 0"),
        ("sip:+4930123@trunk.example", "plus 4 9 3 0 1 2 3"),
        ("sip:alice@10.0.0.5:5060", "alice"),
        ("", "an unknown number"),
        ("anonymous", "an unknown number"),
    ],
)
def test_speakable_number(caller: str, spoken: str) -> None:
    assert speakable_number(caller) == spoken


@pytest.mark.parametrize(
    "overrides",
    [{"repeat_times": -1}, {"confirm_timeout": 0}, {"confirm_timeout": float("inf")},
     {"resume_repeat_count": -1}, {"call_id": ""}],
)
def test_invalid_setup_is_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy(rule(1, "alice"), **overrides)


def test_rule_needs_a_positive_timeout_and_accepts_lists() -> None:
    with pytest.raises(ValueError):
        rule(1, "alice", after=0)
    made = Rule(1, "r", "R", 5, [contact("alice")])  # type: ignore[arg-type]
    assert made.contacts == (contact("alice"),)
    assert hash(replace(policy(made), rules=[made]))  # type: ignore[arg-type]  # still hashable


@pytest.mark.parametrize("who", ["caller", "on-call user"])
def test_a_conversation_taken_over_after_a_restart_completes_on_either_hang_up(who: str) -> None:
    alice = Contact("user-alice", "number-alice", "sip:alice@10.0.0.1")
    call = EscalationCall.resume_connected(policy(rule(1, alice)), "old-leg", alice, 1, dialed_at=100.0,
                                           connected_at=110.0)
    event = CallerHungUp() if who == "caller" else LegEnded("old-leg", "hangup")
    commands = call.handle(event, 170.0)
    hang_up = HangupLeg("old-leg") if who == "caller" else HangupCaller()
    message = f"Call completed; the {who} hung up"
    assert commands == [
        *([hang_up] if who == "caller" else []),
        UpdateItem("old-leg", **{"status": CallStatus.COMPLETED, "status_message": message, "ended_at": 170.0}),
        *([hang_up] if who != "caller" else []),
        UpdateLog(**{"status": CallStatus.COMPLETED, "status_message": message, "ended_at": 170.0,
                   "talk_seconds": 60.0}),
    ]
    assert call.is_finished


def test_a_bridge_that_cannot_be_made_fails_the_call_truthfully() -> None:
    alice = Contact("user-alice", "number-alice", "sip:alice@10.0.0.1")
    call = EscalationCall.resume_connected(policy(rule(1, alice)), "leg-a", alice, 1, dialed_at=100.0,
                                           connected_at=110.0)
    commands = call.handle(LegEnded("leg-a", "failed", "ARI 500: boom"), 110.5)
    assert commands == [
        HangupLeg("leg-a"),
        UpdateItem("leg-a", **{"status": CallStatus.FAILED, "ended_at": 110.5,
                             "status_message": "Accepted, but could not be connected with the caller: ARI 500: boom"}),
        HangupCaller(),
        UpdateLog(**{"status": CallStatus.FAILED, "status_message": "Could not connect the caller with the on-call "
                   "user: ARI 500: boom", "ended_at": 110.5, "talk_seconds": 0.0}),
    ]
    assert call.is_finished


# -- shells whose dial operation enforces the ring time (the dialplan's Dial over FastAGI) ------


def test_a_dial_that_enforces_the_ring_time_gets_no_rule_timer_and_escalates_when_its_legs_end() -> None:
    shell = Shell(policy(rule(1, "alice", "bob", after=5), rule(2, "carol"), greeting="",
                         dial_enforces_timeout=True))
    shell.do(0, "start")
    assert [d.contact.user_id for d in shell.dials] == ["alice", "bob"] and shell.timers == {}
    shell.do(5, "ended", 1, "no_answer")
    assert len(shell.dials) == 2  # bob may still answer for rule 1
    shell.do(5.01, "ended", 2, "no_answer")
    assert [d.contact.user_id for d in shell.dials] == ["alice", "bob", "carol"] and shell.timers == {}
    assert shell.items[leg(1)]["status_message"] == "Not answered within 5 s"
    assert shell.log["status"] == CallStatus.ESCALATED and shell.log["current_rule_order"] == 2


def test_legs_that_start_ringing_late_count_their_ring_time_from_then() -> None:
    shell = Shell(policy(rule(1, "alice", after=5), greeting="", dial_enforces_timeout=True))
    shell.do(0, "start")
    commands = shell.send(DialStarted((leg(1),)), 2.5)
    assert commands == [UpdateItem(leg(1), started_at=2.5)]
    shell.do(8, "answered", 1)
    assert shell.items[leg(1)]["dial_seconds"] == 5.5
    assert shell.send(DialStarted((leg(1),)), 9) == []  # not ringing any more: nothing to correct


def test_a_confirming_leg_gone_at_its_deadline_ran_out_of_time() -> None:
    """The dialplan cuts a confirming leg off at its deadline (its autohangup), which reaches the
    engine as a hang-up: at the deadline it is the window closing, before it a decline."""
    for gone_at, message in ((17.9, "did not press 1 within 10 s"), (12, "hung up before pressing 1")):
        shell = Shell(policy(rule(1, "alice"), greeting="", require_confirmation=True))
        shell.do(0, "start")
        shell.do(8, "answered", 1)
        shell.do(gone_at, "ended", 1, "hangup")
        assert message in shell.items[leg(1)]["status_message"]
        assert shell.items[leg(1)]["status"] == CallStatus.NO_ANSWER and shell.call.state.phase is Phase.CLOSING


# ------------------------------------------------------- business hours and caller lists (admission)

AFTER_HOURS = "We are closed. Please call again during business hours."
BLOCKED = "This number cannot take your call."
WEEKDAYS_9_TO_5 = [{"type": "Daily", "startTime": "09:00", "endTime": "17:00",
                    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]}]


def at(iso: str) -> float:
    """Unix time of an ISO instant (the shells give the engine time.time())."""
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def hours(windows: list[dict] | None = None, zone: str = "Europe/Paris", **overrides: Any) -> CallSetup:
    fields = {"business_hours": WEEKDAYS_9_TO_5 if windows is None else windows, "business_hours_time_zone": zone,
              "after_hours_message": AFTER_HOURS, **overrides}
    return policy(rule(1, "alice"), **fields)


def screened(caller_e164: str | None, block: tuple[str, ...] = (), allow: tuple[str, ...] = (),
             **overrides: Any) -> CallSetup:
    return policy(rule(1, "alice"), caller_number=caller_e164 or "anonymous", caller_e164=caller_e164,
                  caller_block_list=block, caller_allow_list=allow, blocked_caller_message=BLOCKED, **overrides)


def refused_with(shell: Shell, text: str) -> None:
    """The caller was answered, heard ``text`` and was hung up; nobody was rung."""
    assert shell.history[:2] == [Answer(), Play(CALLER, f"{CALL}-pb-1", text)]
    assert not shell.call.is_finished  # the message plays first
    shell.do(shell.now + 4, "played", "caller")
    assert shell.call.is_finished and shell.caller_hung_up_by_engine
    assert shell.dials == [] and shell.items == {} and not shell.ringback
    assert shell.log["status"] is CallStatus.FAILED and shell.log["talk_seconds"] == 0


# Paris is UTC+1 in early March 2024 (summer time from 31 March): 09:00-17:00 there is 08:00-16:00 UTC.
@pytest.mark.parametrize(("instant", "open_"), [
    ("2024-03-05T07:59:59+00:00", False),   # Tuesday 08:59:59 in Paris
    ("2024-03-05T08:00:00+00:00", True),    # 09:00 sharp: the window opens (inclusive)
    ("2024-03-05T15:59:59+00:00", True),
    ("2024-03-05T16:00:00+00:00", False),   # 17:00 sharp: closed (the end is exclusive)
    ("2024-03-09T10:00:00+00:00", False),   # Saturday
    ("2024-04-02T07:30:00+00:00", True),    # summer time: 09:30 in Paris (UTC+2)
    ("2024-04-02T15:30:00+00:00", False),   # 17:30 in Paris
])
def test_business_hours_are_read_on_the_policy_clocks_edges_included(instant: str, open_: bool) -> None:
    shell = Shell(hours())
    shell.do(at(instant), "start")
    if open_:
        assert shell.history == [Answer(), Play(CALLER, f"{CALL}-pb-1", GREETING)]
        shell.do(shell.now + 3, "played", "caller")
        assert [d.contact.user_id for d in shell.dials] == ["alice"]
    else:
        refused_with(shell, AFTER_HOURS)
        assert shell.log["status_message"].startswith("Outside business hours (Europe/Paris, ")
        assert shell.log["status_message"].endswith("local time): the after-hours message was played")


def test_the_same_instant_is_open_in_one_zone_and_closed_in_another() -> None:
    instant = at("2024-03-05T15:00:00+00:00")   # 16:00 in Paris, 10:00 in New York, 00:00 in Tokyo
    for zone, open_ in (("Europe/Paris", True), ("America/New_York", True), ("Asia/Tokyo", False)):
        shell = Shell(hours(zone=zone))
        shell.do(instant, "start")
        assert (shell.call.state.phase is Phase.GREETING) == open_, zone
    tokyo = Shell(hours(zone="Asia/Tokyo"))
    tokyo.do(instant, "start")
    tokyo.do(instant + 2, "played", "caller")
    assert tokyo.log["status_message"] == ("Outside business hours (Asia/Tokyo, Wednesday 00:00 local time): "
                                           "the after-hours message was played")


def test_a_weekly_window_wraps_over_the_weekend() -> None:
    weekend = [{"type": "Weekly", "startDay": "Friday", "startTime": "18:00", "endDay": "Monday", "endTime": "08:00"}]
    for instant, open_ in (("2024-03-08T17:59:00+00:00", False), ("2024-03-08T18:00:00+00:00", True),
                           ("2024-03-10T12:00:00+00:00", True), ("2024-03-11T07:59:59+00:00", True),
                           ("2024-03-11T08:00:00+00:00", False)):
        shell = Shell(hours(weekend, zone="UTC"))
        shell.do(at(instant), "start")
        assert (shell.call.state.phase is Phase.GREETING) == open_, instant


def test_no_business_hours_is_always_open_whatever_the_clock() -> None:
    for now in (0.0, 12.5, at("2024-03-09T03:00:00+00:00")):
        shell = Shell(hours([]))
        shell.do(now, "start")
        assert shell.call.state.phase is Phase.GREETING


def test_outside_hours_an_empty_message_hangs_up_at_once_and_says_so() -> None:
    shell = Shell(hours(after_hours_message=" "))
    commands = shell.do(at("2024-03-09T10:00:00+00:00"), "start")
    assert commands[:2] == [Answer(), HangupCaller()] and shell.call.is_finished and shell.dials == []
    assert shell.log["status"] is CallStatus.FAILED
    assert shell.log["status_message"].endswith("no after-hours message is set; the call was hung up at once")


def test_a_caller_who_hangs_up_during_the_after_hours_message_is_logged_so() -> None:
    shell = Shell(hours())
    shell.do(at("2024-03-09T10:00:00+00:00"), "start")
    shell.do(shell.now + 1, "caller_hangup")
    assert shell.call.is_finished and shell.log["status"] is CallStatus.FAILED
    assert shell.log["status_message"] == ("Outside business hours (Europe/Paris, Saturday 11:00 local time): the "
                                           "caller hung up during the after-hours message")


def test_a_resumed_call_that_rang_someone_is_not_screened_again() -> None:
    """A call taken before a restart goes on, even if the hours closed or the lists changed since."""
    shell = Shell(hours(resume_from_order=1, admitted=True, caller_e164="+14155550100",
                        caller_block_list=("+1415*",)))
    shell.do(at("2024-03-09T10:00:00+00:00"), "start")
    assert [d.contact.user_id for d in shell.dials] == ["alice"]


def test_a_resumed_call_that_rang_no_one_yet_is_screened_without_answering_again() -> None:
    """It may have been hearing its refusal when the controller restarted: it must not ring anyone."""
    shell = Shell(hours(resume_from_order=1, caller_e164="+14155550100", caller_block_list=("+1415*",),
                        blocked_caller_message=BLOCKED))
    assert shell.do(at("2024-03-05T10:00:00+00:00"), "start") == [Play(CALLER, f"{CALL}-pb-1", BLOCKED)]
    shell.do(shell.now + 2, "played", "caller")
    assert shell.dials == [] and shell.log["status"] is CallStatus.FAILED


def test_a_disabled_policy_says_so_rather_than_closed() -> None:
    shell = Shell(hours(is_enabled=False))
    assert shell.do(at("2024-03-09T10:00:00+00:00"), "start") == [Answer(), Play(CALLER, f"{CALL}-pb-1",
                                                                                  DISABLED_MESSAGE)]


@pytest.mark.parametrize(("caller", "block", "allow", "message"), [
    ("+14155550100", ("+14155550100",), (), "Blocked caller +14155550100: is in +14155550100 of the callerBlockList"),
    ("+14155550100", ("+1415*",), (), "Blocked caller +14155550100: matches +1415* of the callerBlockList"),
    ("+14155550100", ("+1415*",), ("+14155550100",),   # the block list wins
     "Blocked caller +14155550100: matches +1415* of the callerBlockList"),
    ("+442071838750", (), ("+1*",), "Blocked caller +442071838750: not in the callerAllowList"),
    (None, (), ("+1*",), "Blocked caller anonymous (not a phone number): an unknown caller matches no entry of "
                         "the callerAllowList"),
])
def test_blocked_callers_hear_the_message_and_nobody_rings(caller, block, allow, message) -> None:
    shell = Shell(screened(caller, block, allow))
    shell.do(at("2024-03-05T10:00:00+00:00"), "start")
    refused_with(shell, BLOCKED)
    assert shell.log["status_message"] == f"{message}: the blocked-caller message was played"


def test_a_caller_without_caller_id_is_named_so_when_refused() -> None:
    shell = Shell(replace(screened(None, allow=("+1*",)), caller_number="an unknown number"))
    shell.do(0, "start")
    refused_with(shell, BLOCKED)
    assert shell.log["status_message"] == ("Blocked caller with no caller ID: an unknown caller matches no entry "
                                           "of the callerAllowList: the blocked-caller message was played")


@pytest.mark.parametrize(("caller", "block", "allow"), [
    ("+14155550100", ("+1416*", "+14155550101"), ()),      # not listed
    ("+14155550100", (), ("+1415*",)),                     # allowed by a prefix
    ("+14155550100", ("+44*",), ("+14155550100", "+33*")),  # allowed by its number
    (None, ("+1*",), ()),                                  # anonymous passes a block list
])
def test_callers_the_lists_let_through_are_rung_as_usual(caller, block, allow) -> None:
    shell = Shell(screened(caller, block, allow))
    shell.run(START)
    assert [d.contact.user_id for d in shell.dials] == ["alice"]


def test_a_blocked_caller_is_refused_even_inside_business_hours_and_with_its_own_message() -> None:
    setup = replace(hours(), caller_e164="+14155550100", caller_block_list=("+14155550100",),
                    blocked_caller_message=BLOCKED)
    shell = Shell(setup)
    shell.do(at("2024-03-05T10:00:00+00:00"), "start")   # open
    refused_with(shell, BLOCKED)
    closed = Shell(setup)
    closed.do(at("2024-03-09T10:00:00+00:00"), "start")  # closed too: the caller's refusal is said
    refused_with(closed, BLOCKED)


def test_setup_with_hours_and_lists_round_trips_through_json() -> None:
    setup = replace(hours(), caller_e164="+14155550100", caller_block_list=["+1415*"],
                    caller_allow_list=["+14155550100"])
    assert isinstance(setup.caller_block_list, tuple) and hash(setup)
    assert CallSetup.from_dict(json.loads(json.dumps(setup.to_dict()))) == setup
    shell = Shell(setup)
    shell.do(at("2024-03-09T10:00:00+00:00"), "start")
    saved = json.loads(json.dumps(shell.call.state.to_dict()))
    restored = EscalationCall.from_state(CallState.from_dict(saved))
    assert restored.handle(CallerHungUp(), shell.now + 1) == shell.send(CallerHungUp(), shell.now + 1)


@pytest.mark.parametrize("overrides", [
    {"business_hours_time_zone": "Mars/Olympus"},
    {"caller_block_list": ("4155550100",)},
    {"caller_allow_list": ("+1 415*",)},  # not in stored form (the API removes the space)
    {"business_hours": ({"type": "Daily", "startTime": "25:00", "endTime": "17:00"},)},
])
def test_invalid_admission_setup_is_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy(rule(1, "alice"), **overrides)


def test_a_time_that_is_not_unix_time_is_illegal_only_when_hours_need_it() -> None:
    call = EscalationCall(hours())
    with pytest.raises(IllegalEvent):
        call.handle(CallStarted(), 1e300)
    assert call.state.phase is Phase.NEW and not call.state.started  # unchanged
    assert EscalationCall(hours([])).handle(CallStarted(), 1e300)


# ------------------------------------------------------------------------- voicemail after NoAnswer
NOBODY = "No one answered: all 1 escalation rule was tried 1 time"
VM = f"hotline-policy-vm-{CALL}"


def voicemail_policy(**overrides: Any) -> CallSetup:
    fields: dict[str, Any] = {"voicemail_on_no_answer": True, "voicemail_max_seconds": 60.0,
                              "voicemail_max_silence": 4.0, **overrides}
    return policy(rule(1, "alice", after=5), **fields)


def unanswered(setup: CallSetup) -> Shell:
    """The call of ``setup``: greeted, its one rule rung for 5 s, nobody answered."""
    shell = Shell(setup)
    shell.run(START)
    shell.do(None, "fire", "rule")
    return shell


def test_nobody_answered_the_caller_hears_the_message_then_the_prompt_then_is_recorded() -> None:
    shell = unanswered(voicemail_policy())
    assert shell.played_texts[-1] == (CALLER, NO_ANSWER)
    assert shell.do(20, "played", "caller") == [Play(CALLER, f"{CALL}-pb-3", VOICEMAIL_PROMPT)]
    assert shell.call.state.phase is Phase.VOICEMAIL and shell.log["status"] is CallStatus.RINGING
    # The beep and the recording (its guard: the maximum length and a grace).
    assert shell.do(25, "played", "caller") == [RecordCaller(VM, 60.0, 4.0), StartTimer("voicemail", 90.0)]
    commands = shell.send(RecordingEnded(VM), 40)
    assert commands == [CancelTimer("voicemail"), HangupCaller(),
                        UpdateLog(status=CallStatus.NO_ANSWER,
                                  status_message=f"{NOBODY}; the caller left a voicemail", ended_at=40,
                                  talk_seconds=0),
                        SaveVoicemail(VM)]
    assert shell.call.is_finished and shell.log["status"] is CallStatus.NO_ANSWER


def test_a_caller_who_hangs_up_before_the_tone_left_no_voicemail() -> None:
    for heard_message in (False, True):
        shell = unanswered(voicemail_policy())
        if heard_message:
            shell.do(20, "played", "caller")  # the prompt plays now
        commands = shell.do(22, "caller_hangup")
        assert not any(isinstance(c, (RecordCaller, SaveVoicemail, HangupCaller)) for c in commands)
        assert shell.call.is_finished and shell.log["status"] is CallStatus.NO_ANSWER
        assert shell.log["status_message"] == (
            f"{NOBODY}; the caller hung up before the voicemail tone: no voicemail was left")


def test_a_caller_who_hangs_up_while_recorded_keeps_the_voicemail() -> None:
    shell = unanswered(voicemail_policy())
    shell.do(20, "played", "caller")
    shell.do(21, "played", "caller")
    # Asterisk ends the recording when the caller leaves: it is awaited (at most a grace), not cut.
    assert shell.do(30, "caller_hangup") == [CancelTimer("voicemail"), StartTimer("voicemail:caller-gone", 35.0)]
    assert not shell.call.is_finished
    commands = shell.send(RecordingEnded(VM), 30.2)
    assert HangupCaller() not in commands and commands[-1] == SaveVoicemail(VM)
    assert shell.log["status_message"].endswith("the caller left a voicemail")


def test_a_recording_asterisk_never_ends_is_stopped_by_its_guard_and_kept() -> None:
    shell = unanswered(voicemail_policy())
    shell.do(20, "played", "caller")
    shell.do(21, "played", "caller")
    due = shell.timers.pop("voicemail")
    commands = shell.send(TimerFired("voicemail"), due)
    assert commands[0] == StopRecording(VM) and commands[-1] == SaveVoicemail(VM)
    assert shell.call.is_finished and shell.send(RecordingEnded(VM), due + 1) == []  # its late end: ignored


def test_a_recording_that_fails_ends_the_call_no_answer_and_says_why() -> None:
    shell = unanswered(voicemail_policy())
    shell.do(20, "played", "caller")
    shell.do(21, "played", "caller")
    commands = shell.send(RecordingEnded(VM, False, "disk full"), 22)
    assert not any(isinstance(c, SaveVoicemail) for c in commands) and HangupCaller() in commands
    assert shell.log["status"] is CallStatus.NO_ANSWER
    assert shell.log["status_message"] == f"{NOBODY}; the voicemail could not be recorded: disk full"


def test_without_a_no_answer_message_the_prompt_comes_at_once() -> None:
    shell = unanswered(voicemail_policy(no_answer_message=""))
    assert shell.played_texts[-1] == (CALLER, VOICEMAIL_PROMPT)


def test_voicemail_is_only_for_nobody_answering() -> None:
    # Answered: a conversation, no voicemail.
    shell = Shell(voicemail_policy())
    shell.run(START)
    shell.do(4, "answered", 1)
    shell.do(9, "ended", 1, "hangup")
    assert shell.log["status"] is CallStatus.COMPLETED
    # Nobody on call, disabled, outside business hours: Failed with its message, no voicemail.
    for setup in (policy(rule(1), voicemail_on_no_answer=True), voicemail_policy(is_enabled=False),
                  voicemail_policy(business_hours=({"type": "Daily", "startTime": "09:00", "endTime": "10:00"},),
                                   after_hours_message="Closed.")):
        shell = Shell(replace(setup, rules=(rule(1),)) if not setup.rules[0].contacts else setup)
        shell.do(0, "start")
        shell.do(3, "played", "caller")
        assert shell.call.is_finished and shell.log["status"] is CallStatus.FAILED
        assert all(text != VOICEMAIL_PROMPT for _, text in shell.played_texts)
    # A policy that does not take voicemail hangs up after the no-answer message, as always.
    shell = unanswered(replace(voicemail_policy(), voicemail_on_no_answer=False))
    assert shell.do(20, "played", "caller")[0] == HangupCaller()


def test_a_recording_the_engine_never_started_is_illegal() -> None:
    shell = unanswered(voicemail_policy())
    for event in (RecordingEnded(VM), TimerFired("voicemail")):
        with pytest.raises(IllegalEvent):
            shell.call.handle(event, 21)


def test_a_call_in_its_voicemail_round_trips_through_json() -> None:
    shell = unanswered(voicemail_policy())
    shell.do(20, "played", "caller")
    shell.do(21, "played", "caller")
    state = CallState.from_dict(json.loads(json.dumps(shell.call.state.to_dict())))
    assert state == shell.call.state and state.recording == VM
    assert CallSetup.from_dict(json.loads(json.dumps(state.setup.to_dict()))).voicemail_max_seconds == 60.0


@pytest.mark.parametrize("overrides", [{"voicemail_max_seconds": 0}, {"voicemail_max_silence": -1.0}])
def test_invalid_voicemail_setup_is_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        voicemail_policy(**overrides)
