"""The outbound contact-center flow, pure: events in, commands out."""

from __future__ import annotations

import pytest

from ivr.core.contact_center.outbound import (
    AGENT,
    END_USER,
    BridgeParties,
    DialParty,
    Lost,
    OutboundCall,
    OutboundSetup,
    Started,
    UpdateCall,
    UpdateParticipant,
)
from ivr.core.contact_center.vocabulary import CallStatus, DisconnectedBy, FailReason, ParticipantStatus
from ivr.core.vocabulary import (DigitPressed, HangupLeg, LegAnswered, LegEnded, Play, PlaybackFinished,
                                 TimerFired)

AGENT_ADDR, USER_ADDR = "sip:agent@127.0.0.1:5070", "+18596579625"


def flow(**kw) -> OutboundCall:
    values = dict(call_id="c1", agent_address=AGENT_ADDR, end_user_address=USER_ADDR,
                  outbound_number="+13392195276", created_at=100.0)
    values.update(kw)
    return OutboundCall(OutboundSetup(**values))


def of(commands, kind):
    return [c for c in commands if isinstance(c, kind)]


def call_updates(commands) -> dict:
    out = {}
    for c in of(commands, UpdateCall):
        out.update(c.changes())
    return out


def party_updates(commands, party) -> dict:
    out = {}
    for c in of(commands, UpdateParticipant):
        if c.party is party:
            out.update(c.changes())
    return out


def test_agent_first_then_end_user_from_the_outbound_number_then_finished_by_the_end_user():
    f = flow()
    first = f.handle(Started(), 101.0)
    (dial,) = of(first, DialParty)
    assert (dial.party, dial.address) == (AGENT, AGENT_ADDR)
    assert party_updates(first, AGENT)["status"] is ParticipantStatus.CONNECTING
    answered = f.handle(LegAnswered(f.agent_leg), 104.0)
    (dial,) = of(answered, DialParty)
    assert (dial.party, dial.address, dial.caller_id) == (END_USER, USER_ADDR, "+13392195276")
    assert call_updates(answered)["status"] is CallStatus.CONNECTING
    connected = f.handle(LegAnswered(f.end_user_leg), 110.0)
    assert of(connected, BridgeParties) == [BridgeParties(f.agent_leg, f.end_user_leg, False)]
    assert call_updates(connected) == {"status": CallStatus.CONNECTED, "connected_at": 110.0, "wait_seconds": 10.0}
    end = f.handle(LegEnded(f.end_user_leg, "hangup"), 140.0)
    assert of(end, HangupLeg) == [HangupLeg(f.agent_leg)]
    assert call_updates(end) == {"status": CallStatus.FINISHED, "disconnected_by": DisconnectedBy.END_USER,
                                 "ended_at": 140.0, "talk_seconds": 30.0}
    assert party_updates(end, AGENT) == {"status": ParticipantStatus.FINISHED, "ended_at": 140.0,
                                         "talk_seconds": 36.0}
    assert f.is_finished


def test_the_agent_hanging_up_a_connected_call_is_disconnected_by_agent():
    f = flow()
    f.handle(Started(), 0.0)
    f.handle(LegAnswered(f.agent_leg), 1.0)
    f.handle(LegAnswered(f.end_user_leg), 2.0)
    end = f.handle(LegEnded(f.agent_leg, "hangup"), 5.0)
    assert call_updates(end)["disconnected_by"] is DisconnectedBy.AGENT
    assert of(end, HangupLeg) == [HangupLeg(f.end_user_leg)]


@pytest.mark.parametrize(("cause", "reason", "by"), [
    ("busy", FailReason.END_USER_BUSY, DisconnectedBy.END_USER),
    ("rejected", FailReason.END_USER_REJECTED, DisconnectedBy.END_USER),
    ("no_answer", FailReason.END_USER_NO_ANSWER, DisconnectedBy.SYSTEM),
    ("failed", FailReason.END_USER_UNREACHABLE, DisconnectedBy.UNKNOWN),
])
def test_the_end_user_not_answering_fails_the_call_and_the_agent_hears_why(cause, reason, by):
    f = flow()
    f.handle(Started(), 0.0)
    f.handle(LegAnswered(f.agent_leg), 1.0)
    out = f.handle(LegEnded(f.end_user_leg, cause, "User busy (cause 17)"), 3.0)
    assert call_updates(out) == {"status": CallStatus.FAILED, "fail_reason": reason,
                                 "fail_details": "User busy (cause 17)", "disconnected_by": by, "ended_at": 3.0}
    assert party_updates(out, END_USER) == {"status": ParticipantStatus.FAILED, "fail_reason": reason,
                                            "ended_at": 3.0}
    assert party_updates(out, AGENT)["status"] is ParticipantStatus.FINISHED
    (play,) = of(out, Play)
    assert play.target == f.agent_leg and not f.is_finished
    done = f.handle(PlaybackFinished(play.playback_id), 5.0)
    assert of(done, HangupLeg) == [HangupLeg(f.agent_leg)] and f.is_finished


def test_the_agent_not_answering_fails_at_the_ring_timeout_and_the_end_user_is_never_dialed():
    f = flow(agent_ring_seconds=3.0)
    (start,) = [c for c in f.handle(Started(), 0.0) if type(c).__name__ == "StartTimer"]
    out = f.handle(TimerFired(start.timer_id), 3.0)
    assert call_updates(out)["fail_reason"] is FailReason.AGENT_NO_ANSWER
    assert party_updates(out, END_USER) == {"status": ParticipantStatus.FAILED, "ended_at": 3.0,
                                            "fail_reason": FailReason.AGENT_NO_ANSWER}
    assert of(out, HangupLeg) == [HangupLeg(f.agent_leg)] and not of(out, DialParty) and f.is_finished


def test_the_keypad_chooses_the_outbound_number():
    f = flow(outbound_number=None, choices=("+13392195276", "+17604108538"))
    f.handle(Started(), 0.0)
    (prompt,) = of(f.handle(LegAnswered(f.agent_leg), 1.0), Play)
    assert "Press 2" in prompt.text and prompt.interrupt_digits == "12"
    assert f.handle(DigitPressed(f.agent_leg, "7"), 2.0) == []  # not a choice
    out = f.handle(DigitPressed(f.agent_leg, "2"), 2.5)
    assert call_updates(out)["outbound_number"] == "+17604108538"
    assert of(out, DialParty)[0].caller_id == "+17604108538"


def test_no_choice_after_two_prompts_fails_the_call():
    f = flow(outbound_number=None, choices=("+13392195276", "+17604108538"), choice_seconds=2.0)
    f.handle(Started(), 0.0)
    for round_ in (1, 2):
        (prompt,) = of(f.handle(LegAnswered(f.agent_leg), 1.0) if round_ == 1 else last, Play)
        f.handle(PlaybackFinished(prompt.playback_id), 5.0)
        last = f.handle(TimerFired("choice"), 7.0)
    assert call_updates(last)["fail_reason"] is FailReason.AGENT_NO_CHOICE


def test_the_agent_leaving_while_the_end_user_rings_ends_both():
    f = flow()
    f.handle(Started(), 0.0)
    f.handle(LegAnswered(f.agent_leg), 1.0)
    out = f.handle(LegEnded(f.agent_leg, "hangup"), 2.0)
    assert call_updates(out)["fail_reason"] is FailReason.AGENT_HUNG_UP
    assert call_updates(out)["disconnected_by"] is DisconnectedBy.AGENT
    assert of(out, HangupLeg) == [HangupLeg(f.end_user_leg)] and f.is_finished


def test_lost_connected_call_finishes_by_nobody_known():
    f = flow()
    f.handle(Started(), 0.0)
    f.handle(LegAnswered(f.agent_leg), 1.0)
    f.handle(LegAnswered(f.end_user_leg), 2.0)
    out = f.handle(Lost(), 9.0)
    assert call_updates(out)["status"] is CallStatus.FINISHED
    assert call_updates(out)["disconnected_by"] is DisconnectedBy.UNKNOWN and f.is_finished


# -- properties: random telephony ---------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ivr.core.vocabulary import CancelTimer, StartTimer, StopPlayback  # noqa: E402
from ivr.core.contact_center.outbound import Ringback  # noqa: E402

TERMINAL_PARTICIPANT = {ParticipantStatus.FINISHED, ParticipantStatus.FAILED}


class World:
    """Plays Asterisk: offers every event that could come next, and checks the promises after each step:
    the call ends exactly once (finished or failed, with ended_at), each participant ends exactly once,
    the end user is dialed only after the agent answered, a bridge joins two answered legs once,
    every leg started is hung up or ended, and a live call always waits for something (a timer, a
    playback, a leg) so natural progress alone ends it."""

    def __init__(self, choices: int):
        numbers = tuple(f"+1339219527{i}" for i in range(choices))
        self.f = flow(outbound_number=None if choices else "+13392195276", choices=numbers)
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.playing: set[str] = set()
        self.live: set[str] = set()      # legs dialed and not yet gone
        self.up: set[str] = set()        # legs that answered
        self.bridged = 0
        self.call: dict = {}
        self.parties: dict = {AGENT: {}, END_USER: {}}
        self.terminal_updates = 0
        self.step(Started())

    def step(self, event) -> None:
        assert not self.f.is_finished
        self.now += 0.5
        out = self.f.handle(event, self.now)
        for c in out:
            if isinstance(c, DialParty):
                if c.party is END_USER:
                    assert self.f.agent_leg in self.up, "the end user is dialed only after the agent answered"
                self.live.add(c.leg_id)
            elif isinstance(c, StartTimer):
                self.timers[c.timer_id] = c.at
            elif isinstance(c, CancelTimer):
                self.timers.pop(c.timer_id, None)
            elif isinstance(c, Play):
                self.playing.add(c.playback_id)
            elif isinstance(c, StopPlayback):
                self.playing.discard(c.playback_id)
            elif isinstance(c, BridgeParties):
                assert {c.agent_leg, c.end_user_leg} <= self.up & self.live
                self.bridged += 1
            elif isinstance(c, HangupLeg):
                self.live.discard(c.leg_id)
            elif isinstance(c, UpdateCall):
                if c.status in (CallStatus.FINISHED, CallStatus.FAILED):
                    self.terminal_updates += 1
                    assert c.ended_at is not None
                self.call.update(c.changes())
            elif isinstance(c, UpdateParticipant):
                before = self.parties[c.party].get("status")
                assert before not in TERMINAL_PARTICIPANT, f"{c.party} ended twice"
                self.parties[c.party].update(c.changes())
            else:
                assert isinstance(c, Ringback), c
        assert self.bridged <= 1 and self.terminal_updates <= 1
        if self.f.is_finished:
            assert self.terminal_updates == 1 and not self.live, "every leg is hung up or gone at the end"
            assert all(p.get("status") in TERMINAL_PARTICIPANT for p in self.parties.values())
        else:
            assert self.timers or self.playing or self.live, "a live call always waits for something"

    def options(self) -> list:
        out = [TimerFired(t) for t in self.timers] + [PlaybackFinished(p) for p in self.playing]
        for leg in self.live:
            out.append(LegEnded(leg, "hangup" if leg in self.up else "busy"))
            if leg not in self.up:
                out += [LegAnswered(leg), LegEnded(leg, "no_answer"), LegEnded(leg, "rejected"),
                        LegEnded(leg, "failed")]
            else:
                out += [DigitPressed(leg, d) for d in "129#"]
        return out


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.lists(st.integers(0, 1000), min_size=40, max_size=40))
def test_random_telephony_always_ends_the_call_truthfully(choices, picks):
    world = World(choices)
    for pick in picks:
        if world.f.is_finished:
            break
        options = world.options()
        event = options[pick % len(options)]
        if isinstance(event, LegAnswered):
            world.up.add(event.leg_id)
        elif isinstance(event, LegEnded):
            world.live.discard(event.leg_id)
        elif isinstance(event, (TimerFired,)):
            world.timers.pop(event.timer_id, None)
        elif isinstance(event, PlaybackFinished):
            world.playing.discard(event.playback_id)
        world.step(event)
    # Natural progress (timers, playbacks, legs hanging up) alone ends whatever is left.
    for _ in range(50):
        if world.f.is_finished:
            break
        if world.timers:
            timer = min(world.timers, key=world.timers.get)
            world.timers.pop(timer)
            world.step(TimerFired(timer))
        elif world.playing:
            world.step(PlaybackFinished(world.playing.pop()))
        else:
            leg = sorted(world.live)[0]
            world.live.discard(leg)
            world.step(LegEnded(leg, "hangup"))
    assert world.f.is_finished


@pytest.mark.parametrize(("cause", "answered", "reason"), [
    (21, False, "rejected"), (17, False, "busy"), (19, False, "no_answer"), (34, False, "failed"),
    (21, True, "hangup"), (16, True, "hangup"),
])
def test_the_causes_table_tells_a_declined_call_from_a_failed_one(cause, answered, reason):
    from ivr.asterisk.causes import party_end_cause

    assert party_end_cause(cause, answered) == reason
