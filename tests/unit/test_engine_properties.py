"""Property tests of the escalation engine: random policies driven by random telephony.

A `World` plays the shell and the telephone network at once: it offers every event that could
happen next (legs ringing, answering, pressing digits, being busy or failing, timers firing,
playbacks ending, the caller leaving), plus stale echoes of old events and impossible ones, and
checks after each step the invariants the product promises:

* at most one leg is ever bridged, and only a leg that answered and is still there;
* every dialed leg ends with exactly one terminal item status, with endedAt and dial duration;
* every terminal log has endedAt and callDurationInSeconds (0 unless someone talked);
* the number of dials is bounded by rounds x contacts; nothing is produced after the end;
* the call is finished as soon as the caller hung up or the engine hung up the caller, and a call
  that is not connected always waits for something that will come (a timer or a playback), so
  natural progress alone always finishes it;
* a voicemail is recorded only after nobody answered (the log ends NoAnswer), only for a policy
  that takes voicemail, once; it is kept (SaveVoicemail) only when its recording ended well, and a
  caller who hangs up during the recording ends the call when the recording's end is known;
* the state round-trips through JSON and a restored engine behaves identically;
* an impossible event raises IllegalEvent and leaves the state untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as record
from hypothesis import strategies as st

from ivr.core.engine import (
    CALLER,
    LEG_END_CAUSES,
    TERMINAL_STATUSES,
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
    Phase,
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
    UpdateItem,
    UpdateLog,
    escalation_plan,
)
from ivr.core.oncall import restrictions_to_json

CALL = "c9"
PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------------- policies

USERS = ["ann", "ben", "cat"]  # few, so numbers often repeat within and across rules
CONTACTS = [
    Contact(user, f"{user}-{kind}", f"+1555{i}{j}")
    for i, user in enumerate(USERS)
    for j, kind in enumerate(["mobile", "desk"])
]

rules_strategy = st.lists(
    st.builds(
        lambda order, after, contacts: Rule(order, f"r{order}", f"Rule {order}", after,
                                            tuple(contacts)),
        order=st.integers(0, 6),
        after=st.sampled_from([1.0, 2.5, 5.0, 30.0]),
        # Duplicates on purpose; empty rules now and then (they are skipped).
        contacts=st.tuples(
            st.sampled_from([True] * 5 + [False]),
            st.lists(st.sampled_from(CONTACTS), min_size=1, max_size=4),
        ).map(lambda pair: tuple(pair[1]) if pair[0] else ()),
    ),
    min_size=1,
    max_size=4,
)

base_setups = st.builds(
    CallSetup,
    call_id=st.just(CALL),
    policy_name=st.sampled_from(["Ops", "Payments on-call"]),
    caller_number=st.sampled_from(["+14155550100", "", "sip:bob@10.0.0.9"]),
    greeting=st.sampled_from(["Please wait.", ""]),
    no_answer_message=st.sampled_from(["No one is available.", ""]),
    no_one_available_message=st.sampled_from(["Nobody on call.", ""]),
    # Mostly enabled: a disabled policy ends at once and would waste examples.
    is_enabled=st.sampled_from([True] * 9 + [False]),
    repeat_if_no_one_answers=st.booleans(),
    repeat_times=st.integers(0, 3),
    require_confirmation=st.booleans(),
    confirm_timeout=st.sampled_from([1.0, 4.0, 10.0]),
    rules=rules_strategy.map(tuple),
    resume_from_order=st.one_of(st.none(), st.none(), st.integers(0, 7)),
    resume_repeat_count=st.integers(0, 3),
    dial_enforces_timeout=st.booleans(),
    # Mostly lists that let the caller through: a refused call ends at once and would waste examples.
    caller_e164=st.sampled_from(["+14155550100", "+442071838750", None]),
    caller_block_list=st.sampled_from([()] * 6 + [("+1415*",), ("+14155550100", "+33*"), ("+44*",)]),
    caller_allow_list=st.sampled_from([()] * 6 + [("+1*",), ("+442071838750",)]),
    blocked_caller_message=st.sampled_from(["Not you.", ""]),
    admitted=st.booleans(),
    after_hours_message=st.sampled_from(["Closed.", ""]),
    voicemail_on_no_answer=st.booleans(),
    voicemail_max_seconds=st.sampled_from([5.0, 120.0]),
    voicemail_max_silence=st.sampled_from([3.0, 10.0]),
)

# Business hours and whether they are open when the worlds start (now = 0: Thursday 1970-01-01
# 00:00 UTC, 09:00 in Tokyo), edges included.
NINE_TO_FIVE = ({"type": "Daily", "startTime": "09:00", "endTime": "17:00"},)
NOT_THURSDAYS = ({"type": "Weekly", "startDay": "Friday", "startTime": "00:00", "endDay": "Thursday",
                  "endTime": "00:00"},)
HOURS = [((), "UTC", True)] * 4 + [(NINE_TO_FIVE, "UTC", False), (NINE_TO_FIVE, "Asia/Tokyo", True),
                                   (NOT_THURSDAYS, "UTC", False)]
OPEN_AT_START = {(json.dumps(hours), zone): open_ for hours, zone, open_ in HOURS}

setups = st.tuples(base_setups, st.sampled_from(HOURS)).map(
    lambda pair: replace(pair[0], business_hours=pair[1][0], business_hours_time_zone=pair[1][1]))


def refused_at_start(setup: CallSetup) -> bool:
    """Whether the policy refuses this call when it starts at 0 (written apart from the engine's code)."""
    if setup.admitted or not setup.is_enabled:
        return False
    caller = setup.caller_e164

    def listed(entries: tuple[str, ...]) -> bool:
        return caller is not None and any(
            caller == entry or (entry.endswith("*") and caller.startswith(entry[:-1])) for entry in entries)

    if listed(setup.caller_block_list) or (setup.caller_allow_list and not listed(setup.caller_allow_list)):
        return True
    hours = json.dumps(tuple(restrictions_to_json(setup.business_hours)))
    return not OPEN_AT_START[(hours, setup.business_hours_time_zone)]


# ------------------------------------------------------------------------ the world (checks)


@dataclass
class World:
    setup: CallSetup
    call: EscalationCall = field(init=False)
    now: float = 0.0
    log: dict[str, Any] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    terminal_item_writes: dict[str, int] = field(default_factory=dict)
    dialed: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # LegAnswered reported
    pressed_one: set[str] = field(default_factory=set)  # DigitPressed "1" reported
    gone: set[str] = field(default_factory=set)  # LegEnded reported
    hung_up: set[str] = field(default_factory=set)  # HangupLeg executed
    echoed: set[str] = field(default_factory=set)  # LegEnded echoed after our hang-up
    bridged: list[str] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    issued_timers: set[str] = field(default_factory=set)
    playing: dict[str, str] = field(default_factory=dict)  # playback id -> target
    issued_playbacks: set[str] = field(default_factory=set)
    ringback: bool = False
    started: bool = False
    caller_gone: bool = False
    engine_hung_up_caller: bool = False
    terminal_logs: int = 0
    closing_status: CallStatus | None = None  # the outcome decided before the final message
    recording: str | None = None  # the voicemail's recording (RecordCaller executed)
    recording_live: bool = False  # ...and its end not reported (nor stopped) yet
    saved: list[str] = field(default_factory=list)  # SaveVoicemail executed

    def __post_init__(self) -> None:
        self.call = EscalationCall(self.setup)
        plan = escalation_plan(self.setup)
        self.dial_bound = self.setup.max_rounds * sum(len(r.contacts) for r in plan)

    # -- which legs are where -----------------------------------------------------------------

    def live(self, leg_id: str) -> bool:
        return leg_id not in self.gone and leg_id not in self.hung_up

    def live_legs(self) -> list[str]:
        return [leg for leg in self.dialed if self.live(leg)]

    # -- feeding events -----------------------------------------------------------------------

    def send(self, event: Event) -> list[Command]:
        before = self.call.state
        saved = json.dumps(before.to_dict())
        commands = self.call.handle(event, self.now)

        # A restored copy of the engine does exactly the same thing.
        twin = EscalationCall.from_state(CallState.from_dict(json.loads(saved)))
        assert twin.state == before
        assert twin.handle(event, self.now) == commands
        assert twin.state == self.call.state

        was_finished = self.terminal_logs > 0
        if was_finished:
            assert commands == [], f"commands after the end: {commands}"
        self.observe(event)
        for command in commands:
            self.execute(command)
        self.check()
        return commands

    def observe(self, event: Event) -> None:
        match event:
            case CallStarted():
                self.started = True
            case LegAnswered(leg_id=leg_id) if self.live(leg_id):
                self.answered.add(leg_id)
            case DigitPressed(leg_id=leg_id, digit="1") if self.live(leg_id):
                self.pressed_one.add(leg_id)
            case LegEnded(leg_id=leg_id):
                if leg_id in self.hung_up:
                    self.echoed.add(leg_id)
                self.gone.add(leg_id)
                self.stop_playbacks_on(leg_id)
            case PlaybackFinished(playback_id=pb):
                self.playing.pop(pb, None)
            case TimerFired(timer_id=tid):
                self.timers.pop(tid, None)
            case RecordingEnded():
                self.recording_live = False
            case CallerHungUp():
                self.caller_gone = True
                self.ringback = False
                self.stop_playbacks_on(CALLER)

    def stop_playbacks_on(self, target: str) -> None:
        self.playing = {pb: t for pb, t in self.playing.items() if t != target}

    def execute(self, command: Command) -> None:
        finished = self.terminal_logs > 0
        # Keeping the recorded voicemail is the one thing that follows the terminal log.
        assert not finished or isinstance(command, SaveVoicemail), f"{command} after the terminal log"
        targets_caller = isinstance(
            command, (Answer, StartRingback, StopRingback, HangupCaller, Bridge)
        ) or (isinstance(command, Play) and command.target == CALLER)
        assert not (targets_caller and self.caller_gone), f"{command} to a caller who left"
        assert not self.engine_hung_up_caller or isinstance(command, (UpdateLog, UpdateItem, SaveVoicemail))

        match command:
            case Answer():
                assert self.setup.resume_from_order is None
            case Play(target=target, playback_id=pb):
                assert pb not in self.issued_playbacks
                assert pb.startswith(f"{CALL}-pb-")
                if target != CALLER:
                    assert self.live(target) and target in self.answered
                self.issued_playbacks.add(pb)
                self.playing[pb] = target
            case StopPlayback(playback_id=pb):
                assert pb in self.issued_playbacks
                self.playing.pop(pb, None)
            case StartRingback():
                assert not self.ringback
                self.ringback = True
            case StopRingback():
                assert self.ringback
                self.ringback = False
            case Dial(leg_id=leg_id, contact=contact, timeout=timeout):
                assert leg_id not in self.dialed and leg_id.startswith(f"{CALL}-leg-")
                assert not self.bridged
                assert contact.number_id not in {
                    self.items[leg]["numberId"] for leg in self.live_legs()
                }, "a number rung twice at once"
                assert timeout > 0
                self.dialed.append(leg_id)
                assert len(self.dialed) <= self.dial_bound
                self.items[leg_id] = {"status": CallStatus.RINGING, "started_at": self.now,
                                      "numberId": contact.number_id}
            case Bridge(leg_id=leg_id):
                assert not self.bridged, "a second bridge"
                assert self.live(leg_id) and leg_id in self.answered
                if self.setup.require_confirmation:
                    assert leg_id in self.pressed_one, "bridged without pressing 1"
                self.bridged.append(leg_id)
            case HangupLeg(leg_id=leg_id):
                assert leg_id in self.dialed and self.live(leg_id)
                self.hung_up.add(leg_id)
                self.stop_playbacks_on(leg_id)
            case HangupCaller():
                self.engine_hung_up_caller = True
                self.stop_playbacks_on(CALLER)
            case StartTimer(timer_id=tid, at=at):
                assert tid not in self.issued_timers, "timer id reused"
                assert at >= self.now
                self.issued_timers.add(tid)
                self.timers[tid] = at
            case CancelTimer(timer_id=tid):
                assert tid in self.timers
                del self.timers[tid]
            case RecordCaller(name=name, max_seconds=seconds, max_silence_seconds=silence):
                assert self.setup.voicemail_on_no_answer, "a voicemail the policy does not take"
                assert self.recording is None, "a second recording"
                assert not self.bridged and self.live_legs() == [] and not self.caller_gone
                assert self.terminal_logs == 0 and self.call.state.closing_status == CallStatus.NO_ANSWER
                assert (seconds, silence) == (self.setup.voicemail_max_seconds, self.setup.voicemail_max_silence)
                assert not self.playing, "recording while a prompt plays"
                self.recording, self.recording_live = name, True
            case StopRecording(name=name):
                assert name == self.recording and self.recording_live and not self.caller_gone
                self.recording_live = False
            case SaveVoicemail(name=name):
                # Over: reported ended, or its channel hung up (Asterisk ends a channel's recording with
                # the channel, whether or not the engine heard RecordingFinished before it gave up waiting).
                assert name == self.recording and (not self.recording_live or self.caller_gone) and not self.saved
                assert finished and self.log["status"] == CallStatus.NO_ANSWER
                assert self.log["status_message"].endswith("the caller left a voicemail")
                self.saved.append(name)
            case UpdateItem(leg_id=leg_id):
                fields = command.changes()
                item = self.items[leg_id]
                assert item["status"] not in TERMINAL_STATUSES, "item changed after its end"
                if fields.get("status") == CallStatus.CONNECTED:
                    assert fields["is_answered"] is True and leg_id in self.bridged
                if fields.get("status") == CallStatus.COMPLETED:
                    assert item["status"] == CallStatus.CONNECTED
                item.update(fields)
                if item["status"] in TERMINAL_STATUSES:
                    assert "ended_at" in item and "dial_seconds" in item
                    assert item["dial_seconds"] >= 0
                    self.terminal_item_writes[leg_id] = self.terminal_item_writes.get(leg_id, 0) + 1
            case UpdateLog():
                fields = command.changes()
                self.log.update(fields)
                if fields.get("status") == CallStatus.CONNECTED:
                    assert self.bridged and fields["answered_by_user_id"]
                if fields.get("status") in TERMINAL_STATUSES:
                    assert "ended_at" in fields and "talk_seconds" in fields
                    assert fields["talk_seconds"] >= 0
                    if not self.bridged:
                        assert fields["talk_seconds"] == 0
                    if fields["status"] == CallStatus.COMPLETED:
                        assert self.bridged
                    if self.recording is not None:  # a voicemail only after nobody answered
                        assert fields["status"] == CallStatus.NO_ANSWER
                    self.terminal_logs += 1
            case _:
                raise AssertionError(f"unknown command {command!r}")

    # -- invariants after every step -----------------------------------------------------------

    def check(self) -> None:
        call = self.call
        assert self.terminal_logs <= 1
        assert call.is_finished == (self.terminal_logs == 1)
        assert self.timers == call.pending_timers
        assert len(self.bridged) <= 1
        if self.engine_hung_up_caller:
            assert call.is_finished, "the caller was hung up but the call is not finished"
        if self.caller_gone and not call.is_finished:
            # Only a recording outlives its caller, until Asterisk says it ended (or its timer fires).
            assert self.recording_live and "voicemail:caller-gone" in self.timers, \
                "the caller left but the call is not finished"
        if call.is_finished:
            assert self.timers == {}
            assert self.live_legs() == [], "a leg left ringing after the end"
            for leg_id in self.dialed:
                assert self.terminal_item_writes.get(leg_id) == 1, leg_id
            assert self.log["status"] in TERMINAL_STATUSES
        state = call.state
        phase = state.phase
        # The caller hears ringback exactly while legs are being hunted.
        assert self.ringback == (phase is Phase.HUNTING)
        # Every pending timer still means something.
        confirming = {leg.leg_id for leg in state.legs if leg.phase == "confirming"}
        expected_timers = {f"confirm:{leg_id}" for leg_id in confirming}
        if state.rule_timer_id is not None:
            expected_timers.add(state.rule_timer_id)
        if phase is Phase.VOICEMAIL and state.recording is not None:
            expected_timers.add("voicemail:caller-gone" if state.caller_gone else "voicemail")
        assert set(self.timers) == expected_timers
        assert confirming <= self.answered and all(self.live(leg) for leg in confirming)
        # Legs ring (or decide) only while hunting; a connected call keeps just its bridged leg.
        if phase is not Phase.HUNTING:
            assert set(self.live_legs()) <= set(self.bridged), "legs left ringing"
        if phase in (Phase.GREETING, Phase.CLOSING) or (phase is Phase.VOICEMAIL and state.recording is None):
            # Waiting for a playback the shell will report.
            assert state.caller_playback_id in self.playing
        if phase is Phase.VOICEMAIL:
            assert self.setup.voicemail_on_no_answer and state.closing_status == CallStatus.NO_ANSWER
            assert state.recording is None or self.recording_live or self.caller_gone
        if phase in (Phase.CLOSING, Phase.VOICEMAIL):
            if self.closing_status is None:
                self.closing_status = state.closing_status
            assert state.closing_status == self.closing_status
        elif phase is Phase.HUNTING:
            # Waiting for a timer: a call can never hang forever before it is connected.
            # (A shell whose dial enforces the ring time ends the ringing legs itself.)
            assert self.timers or dial_timed_out(self), "hunting without any timer"
            if not state.exhausted:
                # ...and never waits out a rule whose legs are all gone (escalate at once).
                assert state.rule_position is not None
                assert state.rule_timer_id is not None or self.setup.dial_enforces_timeout
                rule = escalation_plan(self.setup)[state.rule_position]
                numbers = {c.number_id for c in rule.contacts}
                assert any(self.items[leg]["numberId"] in numbers for leg in self.live_legs())
            else:
                assert state.rule_timer_id is None and confirming
        elif phase is Phase.CONNECTED:
            assert self.bridged and self.live(self.bridged[0])
        elif phase is Phase.FINISHED and self.closing_status is not None:
            # A caller leaving during the final message does not change the outcome.
            assert self.log["status"] == self.closing_status
        # JSON round trip of the snapshot.
        snapshot = json.loads(json.dumps(call.state.to_dict()))
        assert CallState.from_dict(snapshot) == call.state

    # -- what can happen next -----------------------------------------------------------------

    def possible_events(self) -> list[Event]:
        """What may happen next, apart from the caller leaving (drawn separately, less often)."""
        events: list[Event] = []
        if not self.started:
            events.append(CallStarted())
        for pb in self.playing:
            events.append(PlaybackFinished(pb))
        if self.recording_live:
            events += [RecordingEnded(self.recording), RecordingEnded(self.recording, False, "disk full")]
        for tid in self.timers:
            events.append(TimerFired(tid))
        for leg_id in self.live_legs():
            if leg_id in self.bridged:
                events.append(LegEnded(leg_id, "hangup"))
                continue
            if self.setup.dial_enforces_timeout:
                events.append(DialStarted((leg_id,)))
            events += [LegRinging(leg_id), LegEnded(leg_id, "busy"),
                       LegEnded(leg_id, "failed"), LegEnded(leg_id, "no_answer"),
                       LegEnded(leg_id, "hangup")]
            if leg_id in self.answered:
                events += [DigitPressed(leg_id, "1"), DigitPressed(leg_id, "1"),
                           DigitPressed(leg_id, "5")]
            else:
                events += [LegAnswered(leg_id), LegAnswered(leg_id)]
        return events

    def stale_events(self) -> list[Event]:
        """Echoes of the past that real shells do deliver (races): all are ignored, but for an ended
        leg answering, which is hung up."""
        events: list[Event] = []
        for leg_id in self.hung_up - self.echoed - self.gone:
            events.append(LegEnded(leg_id, "hangup"))  # Asterisk confirms our hang-up
            events.append(LegAnswered(leg_id))  # answered just as we hung up
        for leg_id in self.gone:
            events.append(LegEnded(leg_id, "hangup"))
            events.append(DigitPressed(leg_id, "1"))
        for leg_id in self.answered:
            events.append(LegAnswered(leg_id))  # reported twice
        for tid in self.issued_timers - set(self.timers):
            events.append(TimerFired(tid))
        for pb in self.issued_playbacks - set(self.playing):
            events.append(PlaybackFinished(pb))
        if self.recording is not None and not self.recording_live:
            events.append(RecordingEnded(self.recording))  # its end after StopRecording, or twice
        return events

    def illegal_events(self) -> list[Any]:
        n = len(self.dialed)
        events: list[Any] = [
            LegAnswered(f"{CALL}-leg-{n + 1}"),
            LegEnded(f"{CALL}-leg-{n + 1}", "busy"),
            DigitPressed("someone-else-leg-1", "1"),
            PlaybackFinished(f"{CALL}-pb-{len(self.issued_playbacks) + 1}"),
            TimerFired(f"rule:{len(self.issued_timers) + 1}"),
            TimerFired("bogus"),
            RecordingEnded("someone-elses-recording"),
            object(),
        ]
        if self.recording is None:
            events.append(TimerFired("voicemail"))
        if not self.caller_gone or self.recording is None:
            events.append(TimerFired("voicemail:caller-gone"))
        if self.started:
            events.append(CallStarted())
        if self.dialed:
            events.append(LegEnded(self.dialed[0], "exploded"))
            events.append(DigitPressed(self.dialed[0], "x"))
        return events


def drive(world: World, data: st.DataObject, max_steps: int) -> None:
    for _ in range(max_steps):
        kind = data.draw(st.sampled_from(["next"] * 6 + ["stale", "illegal"]), label="kind")
        if kind == "illegal":
            illegal = data.draw(st.sampled_from(world.illegal_events()), label="illegal")
            before = world.call.state
            try:
                world.call.handle(illegal, world.now)
            except IllegalEvent:
                pass
            else:
                raise AssertionError(f"{illegal!r} was accepted")
            assert world.call.state is before and world.call.state == before
            continue
        if kind == "stale":
            echoes = world.stale_events()
            if not echoes:
                continue
            stale = data.draw(st.sampled_from(echoes), label="stale")
            before = world.call.state
            # The one echo that acts: a leg whose end was decided answering anyway is hung up.
            leg = before.leg(stale.leg_id) if isinstance(stale, LegAnswered) else None
            if leg is not None and leg.phase == "ended" and before.phase != "finished":
                assert world.call.handle(stale, world.now) == [HangupLeg(stale.leg_id)]
                assert world.call.state == before
            else:
                assert world.send(stale) == [], f"stale {stale!r} was not ignored"
            continue
        if world.call.is_finished:
            return
        # None: nothing happens for a while (a conversation goes on, a phone keeps ringing).
        candidates: list[Event | None] = [None, *world.possible_events()]
        if data.draw(st.integers(0, 11), label="caller patience") == 0:
            event: Event | None = CallerHungUp()
        else:
            event = data.draw(st.sampled_from(candidates), label="event")
        if isinstance(event, TimerFired):
            world.now = max(world.now, world.timers[event.timer_id])
        else:
            world.now += data.draw(st.sampled_from([0.0, 0.5, 2.0, 7.0]), label="dt")
        if event is not None:
            world.send(event)


def progress_naturally(world: World) -> None:
    """Only what happens by itself: playbacks end, timers fire, the callee hangs up at last."""
    for _ in range(1000):
        if world.call.is_finished:
            return
        if not world.started:
            event: Event = CallStarted()
        elif world.playing and world.call.state.caller_playback_id in world.playing:
            event = PlaybackFinished(world.call.state.caller_playback_id)
        elif world.recording_live:
            event = RecordingEnded(world.recording)
        elif world.timers:
            tid, at = min(world.timers.items(), key=lambda t: t[1])
            world.now = max(world.now, at)
            event = TimerFired(tid)
        elif dial_timed_out(world):
            event = dial_timed_out(world)
        elif world.bridged:
            event = LegEnded(world.bridged[0], "hangup")
        else:
            raise AssertionError(f"stuck in {world.call.state.phase}")
        world.send(event)
    raise AssertionError("the call did not finish by natural progress")


def replay(setup: CallSetup, world: World) -> World:
    """A fresh world continuing from the engine's persisted state (as after a restart)."""
    copy = World(setup)
    for name in world.__dataclass_fields__:
        if name != "call":
            value = getattr(world, name)
            setattr(copy, name, type(value)(value) if isinstance(value, (dict, set, list))
                    else value)
    copy.items = {leg: dict(item) for leg, item in world.items.items()}
    copy.call = EscalationCall.from_state(
        CallState.from_dict(json.loads(json.dumps(world.call.state.to_dict())))
    )
    return copy


# ----------------------------------------------------------------------------------- tests


@PROPERTY_SETTINGS
@given(setup=setups, data=st.data())
def test_random_calls_keep_every_invariant(setup: CallSetup, data: st.DataObject) -> None:
    world = World(setup)
    world.send(CallStarted())
    drive(world, data, max_steps=data.draw(st.integers(0, 40), label="steps"))

    # Whatever happened so far, the call ends properly both ways it can end.
    by_itself = replay(setup, world)
    progress_naturally(by_itself)
    assert by_itself.call.is_finished

    record(f"after the random steps: {world.call.state.phase}, log {world.log.get('status')}")
    record(f"naturally ends as {by_itself.log['status']}")

    if refused_at_start(setup):
        # Refused (a blocked caller, outside business hours): nobody is ever rung, and it says Failed.
        assert world.dialed == [] and by_itself.dialed == [] and by_itself.log["status"] == CallStatus.FAILED
        assert by_itself.log["status_message"].startswith(("Blocked caller", "Outside business hours"))

    if by_itself.recording is not None:
        assert by_itself.log["status"] == CallStatus.NO_ANSWER
        # Kept unless its recording failed (then the log says so).
        failed = by_itself.log["status_message"].endswith("could not be recorded: disk full")
        assert by_itself.saved == ([] if failed else [by_itself.recording])

    caller_leaves = replay(setup, world)
    caller_leaves.send(CallerHungUp())
    if caller_leaves.recording_live and not caller_leaves.call.is_finished:  # (a call already over is not)
        # Hung up during the recording: what was said is kept once Asterisk says the recording ended,
        # or when the timer gives up waiting for that.
        if data.draw(st.booleans(), label="recording end reported"):
            caller_leaves.send(RecordingEnded(caller_leaves.recording))
        else:
            caller_leaves.now = caller_leaves.timers["voicemail:caller-gone"]
            caller_leaves.send(TimerFired("voicemail:caller-gone"))
        assert caller_leaves.saved == [caller_leaves.recording]
    assert caller_leaves.call.is_finished
    assert caller_leaves.log["status"] in TERMINAL_STATUSES
    assert "ended_at" in caller_leaves.log and "talk_seconds" in caller_leaves.log


@settings(max_examples=100, deadline=None)
@given(setup=setups, data=st.data())
def test_caller_can_leave_before_the_start_is_reported(setup: CallSetup,
                                                       data: st.DataObject) -> None:
    world = World(setup)
    world.send(CallerHungUp())
    assert world.call.is_finished and world.log["status"] == CallStatus.CALLER_HUNG_UP
    world.send(CallStarted())  # the late start is ignored
    drive(world, data, max_steps=5)


@settings(max_examples=150, deadline=None)
@given(setup=setups, data=st.data())
def test_everyone_unreachable_uses_exactly_the_allowed_rounds(setup: CallSetup,
                                                              data: st.DataObject) -> None:
    """Nobody ever answers: every contact of every round is rung once, then NoAnswer."""
    world = World(setup)
    world.send(CallStarted())
    causes = sorted(LEG_END_CAUSES)
    while not world.call.is_finished:
        ringing = [leg for leg in world.live_legs() if leg not in world.bridged]
        leg_ends: bool = data.draw(st.booleans(), label="leg ends") if ringing else False
        if leg_ends:
            world.now += 1
            world.send(LegEnded(ringing[0], data.draw(st.sampled_from(causes), label="cause")))
        else:
            progress_naturally_one(world)
    plan = escalation_plan(setup)
    if setup.is_enabled and plan and not refused_at_start(setup):
        rounds = setup.max_rounds - (setup.resume_repeat_count
                                     if setup.resume_from_order is not None else 0)
        assert world.log["status"] == CallStatus.NO_ANSWER
        assert world.bridged == []
        # Nobody answered: the policy that takes voicemail records one (the caller stays to the end here).
        assert (world.saved != []) == setup.voicemail_on_no_answer
        if setup.resume_from_order is None:
            assert len(world.dialed) == world.dial_bound
            assert world.log["repeat_count"] == setup.max_rounds - 1
        else:
            assert len(world.dialed) <= max(rounds, 1) * sum(len(r.contacts) for r in plan)
    else:
        assert world.log["status"] == CallStatus.FAILED and world.dialed == []


def dial_timed_out(world: World) -> Event | None:
    """A shell whose dial enforces the ring time: its first ringing leg ends unanswered at that time."""
    if not world.setup.dial_enforces_timeout:
        return None
    ringing = [leg for leg in world.live_legs() if leg not in world.bridged and leg not in world.answered]
    return LegEnded(ringing[0], "no_answer") if ringing else None


def progress_naturally_one(world: World) -> None:
    if world.call.state.caller_playback_id in world.playing:
        world.send(PlaybackFinished(world.call.state.caller_playback_id))
    elif world.recording_live:
        world.now += 3
        world.send(RecordingEnded(world.recording))
    elif not world.timers and dial_timed_out(world):
        world.now += 1
        world.send(dial_timed_out(world))
    else:
        tid, at = min(world.timers.items(), key=lambda t: t[1])
        world.now = max(world.now, at)
        world.send(TimerFired(tid))
