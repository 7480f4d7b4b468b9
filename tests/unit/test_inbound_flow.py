"""The inbound contact-center flow (ivr.core.contact_center.inbound): the menu walk, the queue's
offers (multicast, cascade), deflection to voicemail or a message, and the hand-over to a policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.core.contact_center.inbound import InboundCall, InboundSetup, LoadQueue, QueueLoaded
from ivr.core.contact_center.outbound import BridgeParties, DialParty
from ivr.core.contact_center.queue import QueueAgent, QueueSetup
from ivr.core.contact_center.updates import UpdateCall
from ivr.core.contact_center.vocabulary import (
    CallStatus,
    Deflection,
    FailReason,
    MenuState,
    OfferType,
    VoicemailReason,
)
from ivr.core.contact_center.voicemail import RecordCaller, RecordingEnded, SaveVoicemail
from ivr.core.contact_center.walk import MAX_ROUNDS, HandToPolicy, MenuNode, Started, WalkSetup
from ivr.core.vocabulary import (
    CALLER,
    CallerHungUp,
    IllegalEvent,
    DigitPressed,
    HangupCaller,
    HangupLeg,
    LegAnswered,
    LegEnded,
    Play,
    PlaybackFinished,
    StartTimer,
    TimerFired,
)


def tree(root_state=MenuState.OPEN, after_hours=Deflection.VOICEMAIL) -> dict[str, MenuNode]:
    return {
        "root": MenuNode("root", "Acme", "Welcome to Acme.", root_state, ("sales", "support"), ("1", "2"),
                         after_hours=after_hours),
        "sales": MenuNode("sales", "Sales", "You chose sales."),
        "support": MenuNode("support", "Support", "", policy_id="policy-1"),
    }


class Driver:
    def __init__(self, menus=None, **queue):
        self.flow = InboundCall(InboundSetup(WalkSetup("call", "root", menus or tree(), input_seconds=5)))
        self.now = 1000.0
        self.out: list = []
        self.queue = queue
        self.ended: set[str] = set()   # legs reported ended

    def feed(self, event, dt: float = 0.0) -> list:
        self.now += dt
        if isinstance(event, LegEnded):
            self.ended.add(event.leg_id)
        try:
            commands = self.flow.handle(event, self.now)
        except IllegalEvent:   # the shell logs and ignores an event a phase cannot take
            return []
        self.out += commands
        for command in commands:
            if isinstance(command, LoadQueue):
                agents = self.queue.get("agents", (QueueAgent("u1", "sip:a@10.0.0.1"), QueueAgent("u2", "sip:b@10.0.0.2")))
                setup = QueueSetup("call", command.menu_id, "Sales", "+14155550100", tuple(agents),
                                   **{k: v for k, v in self.queue.items() if k != "agents"})
                commands += self.feed(QueueLoaded(setup))
        return commands

    def last_play(self) -> Play:
        return [c for c in self.out if isinstance(c, Play)][-1]

    def statuses(self) -> list[str]:
        return [c.status for c in self.out if isinstance(c, UpdateCall) and c.status is not None]

    def dials(self) -> list[DialParty]:
        return [c for c in self.out if isinstance(c, DialParty)]


def walk_to_sales(d: Driver) -> None:
    d.feed(Started())
    prompt = d.last_play()
    assert prompt.text == "Welcome to Acme. For Sales, press 1. For Support, press 2."
    d.feed(DigitPressed("caller-channel", "1"), 1)
    d.feed(PlaybackFinished(d.last_play().playback_id), 1)


def test_a_walk_to_a_queue_offers_everyone_at_once_and_the_second_agent_who_presses_1_wins():
    d = Driver()
    walk_to_sales(d)
    legs = [c.leg_id for c in d.dials()]
    assert len(legs) == 2 and d.statuses()[:2] == [CallStatus.SELECTING, CallStatus.QUEUED]
    d.feed(LegAnswered(legs[0]), 1)                      # answers, never presses 1
    d.feed(LegAnswered(legs[1]), 0.5)
    d.feed(DigitPressed(legs[1], "1"), 1)
    bridge = [c for c in d.out if isinstance(c, BridgeParties)]
    assert bridge == [BridgeParties(legs[1], CALLER, False)]
    assert HangupLeg(legs[0]) in d.out
    assert d.statuses()[-3:] == [CallStatus.ASSIGNED, CallStatus.CONNECTING, CallStatus.CONNECTED]
    assert [c.agent_id for c in d.out if isinstance(c, UpdateCall) and c.agent_id] == ["u2"]
    d.feed(LegEnded(legs[1], "hangup"), 10)
    assert d.statuses()[-1] == CallStatus.FINISHED and HangupCaller() in d.out and d.flow.is_finished


def test_cascade_adds_group_2_only_after_the_group_delay():
    agents = (QueueAgent("u1", "sip:a@10.0.0.1", 1), QueueAgent("u2", "sip:b@10.0.0.2", 2))
    d = Driver(agents=agents, offer_type=OfferType.CASCADE, group_delay=4.0)
    walk_to_sales(d)
    assert [c.address for c in d.dials()] == ["sip:a@10.0.0.1"]
    assert StartTimer("next-group", d.now + 4.0) in d.out
    d.feed(TimerFired("next-group"), 4.0)
    assert [c.address for c in d.dials()] == ["sip:a@10.0.0.1", "sip:b@10.0.0.2"]
    groups = [c.offer_group for c in d.out if isinstance(c, UpdateCall) and c.offer_group]
    assert groups == [1, 2]


def test_no_agent_accepting_within_the_wait_deflects_to_voicemail_which_is_recorded():
    d = Driver(max_wait_seconds=20.0)
    walk_to_sales(d)
    d.feed(TimerFired("max-wait"), 20)
    assert all(HangupLeg(c.leg_id) in d.out for c in d.dials())
    assert d.statuses()[-1] == CallStatus.VOICEMAIL
    vm = [c for c in d.out if isinstance(c, UpdateCall) and c.voicemail_reason]
    assert vm[-1].voicemail_reason is VoicemailReason.NO_AGENT_AVAILABLE and vm[-1].deflection is Deflection.VOICEMAIL
    d.feed(PlaybackFinished(d.last_play().playback_id))
    record = [c for c in d.out if isinstance(c, RecordCaller)][0]
    d.feed(CallerHungUp(), 5)            # the caller hangs up while recording: what was said is kept
    assert not d.flow.is_finished
    d.feed(RecordingEnded(record.name), 0.1)
    assert SaveVoicemail(record.name) in d.out and d.statuses()[-1] == CallStatus.VOICEMAIL_RECEIVED


def test_an_after_hours_root_goes_to_voicemail_without_a_menu():
    d = Driver(tree(MenuState.AFTER_HOURS))
    d.feed(Started())
    assert d.statuses()[-1] == CallStatus.VOICEMAIL
    assert [c.voicemail_reason for c in d.out if isinstance(c, UpdateCall) and c.voicemail_reason] == \
        [VoicemailReason.AFTER_HOURS]
    assert not d.dials()


def test_after_hours_to_a_message_says_it_and_hangs_up():
    d = Driver(tree(MenuState.AFTER_HOURS, Deflection.MESSAGE))
    d.feed(Started())
    d.feed(PlaybackFinished(d.last_play().playback_id))
    assert d.statuses()[-1] == CallStatus.DEFLECTED and HangupCaller() in d.out and d.flow.is_finished


def test_wrong_keys_repeat_the_menu_then_end_politely():
    d = Driver()
    d.feed(Started())
    for _ in range(MAX_ROUNDS - 1):
        d.feed(DigitPressed("c", "9"), 1)
        assert d.last_play().text.startswith("That is not a valid choice.")
    d.feed(PlaybackFinished(d.last_play().playback_id))
    d.feed(TimerFired("menu-input"), 5)   # and then silence
    failed = [c for c in d.out if isinstance(c, UpdateCall) and c.status is CallStatus.FAILED]
    assert failed[0].fail_reason is FailReason.END_USER_NO_SELECTION
    d.feed(PlaybackFinished(d.last_play().playback_id))
    assert HangupCaller() in d.out and d.flow.is_finished


def test_a_policy_leaf_hands_the_call_over():
    d = Driver()
    d.feed(Started())
    d.feed(DigitPressed("c", "2"))
    assert HandToPolicy("support", "policy-1") in d.out and d.flow.is_finished


def test_a_caller_hanging_up_in_the_queue_fails_the_call_and_hangs_up_every_offer():
    d = Driver()
    walk_to_sales(d)
    d.feed(CallerHungUp(), 2)
    assert all(HangupLeg(c.leg_id) in d.out for c in d.dials())
    failed = [c for c in d.out if isinstance(c, UpdateCall) and c.status is CallStatus.FAILED]
    assert failed[-1].fail_reason is FailReason.END_USER_HUNG_UP and d.flow.is_finished


def test_every_agent_refusing_deflects_at_once():
    d = Driver()
    walk_to_sales(d)
    for dial in d.dials():
        d.feed(LegEnded(dial.leg_id, "busy"))
    assert d.statuses()[-1] == CallStatus.VOICEMAIL


# -- random telephony: the flow's promises hold whatever happens ----------------------------------

EVENTS = st.lists(st.tuples(st.sampled_from(["answer", "press", "other_key", "end", "ring_timer", "confirm_timer",
                                             "group", "wait", "announce", "played", "hangup", "recorded"]),
                            st.integers(0, 2), st.floats(0, 5)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.sampled_from([OfferType.MULTICAST, OfferType.CASCADE]))
def test_random_events_bridge_at_most_one_agent_and_end_every_offer(events, offer_type):
    agents = tuple(QueueAgent(f"u{i}", f"sip:a{i}@10.0.0.{i + 1}", i + 1) for i in range(3))
    d = Driver(agents=agents, offer_type=offer_type, group_delay=2.0)
    walk_to_sales(d)
    for kind, index, dt in events:
        legs = [c.leg_id for c in d.dials()]
        leg = legs[index % len(legs)] if legs else "none"
        plays = [c.playback_id for c in d.out if isinstance(c, Play)]
        event = {"answer": LegAnswered(leg), "press": DigitPressed(leg, "1"), "other_key": DigitPressed(leg, "5"),
                 "end": LegEnded(leg, "hangup"), "ring_timer": TimerFired(f"ring:{leg}"),
                 "confirm_timer": TimerFired(f"confirm:{leg}"), "group": TimerFired("next-group"),
                 "wait": TimerFired("max-wait"), "announce": TimerFired("announce"),
                 "played": PlaybackFinished(plays[-1] if plays else "x"), "hangup": CallerHungUp(),
                 "recorded": RecordingEnded("hotline-vm-call")}[kind]
        d.feed(event, dt)
    bridges = [c for c in d.out if isinstance(c, BridgeParties)]
    assert len(bridges) <= 1
    if d.flow.is_finished:
        hung_up = {c.leg_id for c in d.out if isinstance(c, HangupLeg)}
        for dial in d.dials():
            # every offer ended: hung up by the flow, or reported gone
            assert dial.leg_id in hung_up or dial.leg_id in d.ended, dial.leg_id
        terminal = {CallStatus.FINISHED, CallStatus.FAILED, CallStatus.DEFLECTED, CallStatus.VOICEMAIL_RECEIVED}
        assert d.statuses()[-1] in terminal
    if bridges:  # connected once, to an agent who pressed 1 after answering
        leg = bridges[0].agent_leg
        assert any(isinstance(c, Play) and c.target == leg for c in d.out)


def api_call(**queue) -> Driver:
    from ivr.core.contact_center.inbound import EndUserDial

    d = Driver(**queue)
    d.flow = InboundCall(InboundSetup(WalkSetup("call", "sales", {}),
                                      dial=EndUserDial("sales", "+18596579625", "+13392195276", 4.0)))
    return d


def test_a_call_of_the_api_calls_the_end_user_first_then_queues_them():
    d = api_call()
    d.feed(Started())
    [dial] = d.dials()
    assert (dial.address, dial.caller_id) == ("+18596579625", "+13392195276")
    d.feed(LegAnswered(dial.leg_id), 2)
    assert d.statuses() == [CallStatus.QUEUED] and len(d.dials()) == 3   # the end user, then both agents
    agent = d.dials()[1].leg_id
    d.feed(LegAnswered(agent), 1)
    d.feed(DigitPressed(agent, "1"), 1)
    assert [c for c in d.out if isinstance(c, BridgeParties)] == [BridgeParties(agent, CALLER, False)]


def test_an_end_user_who_is_busy_fails_the_call_and_no_agent_is_rung():
    d = api_call()
    d.feed(Started())
    d.feed(LegEnded(d.dials()[0].leg_id, "busy"), 1)
    failed = [c for c in d.out if isinstance(c, UpdateCall) and c.status is CallStatus.FAILED]
    assert failed[0].fail_reason is FailReason.END_USER_BUSY and len(d.dials()) == 1 and d.flow.is_finished


def test_no_agent_deflects_to_a_call_back_when_the_caller_can_be_called_back():
    from ivr.core.contact_center.voicemail import ScheduleCallback

    for can, expected in ((True, Deflection.SCHEDULED_CALL), (False, Deflection.MESSAGE)):
        d = Driver(agents=(), no_agent=Deflection.SCHEDULED_CALL, callback_seconds=600.0)
        d.flow = InboundCall(InboundSetup(WalkSetup("call", "root", tree(), input_seconds=5), can_call_back=can))
        walk_to_sales(d)
        assert [c.deflection for c in d.out if isinstance(c, UpdateCall) and c.deflection] == [expected]
        callbacks = [c for c in d.out if isinstance(c, ScheduleCallback)]
        assert callbacks == ([ScheduleCallback("sales", 600.0)] if can else [])
        if can:
            assert "call you back at this number in about 10 minutes" in d.last_play().text
        d.feed(PlaybackFinished(d.last_play().playback_id))
        assert HangupCaller() in d.out and d.flow.is_finished and d.statuses()[-1] == CallStatus.DEFLECTED


def test_manual_redirection_forwards_the_caller_to_the_verified_number():
    menus = tree(MenuState.MANUAL_REDIRECTION)
    from dataclasses import replace

    menus["root"] = replace(menus["root"], redirection_number="+14155550177")
    d = Driver(menus)
    d.flow = InboundCall(InboundSetup(WalkSetup("call", "root", menus), caller_id="+14155550100", ring_seconds=5))
    d.feed(Started())
    [dial] = d.dials()
    assert (dial.address, dial.caller_id) == ("+14155550177", "+14155550100")
    assert [c.deflection for c in d.out if isinstance(c, UpdateCall) and c.deflection] == [Deflection.REDIRECTION]
    d.feed(LegAnswered(dial.leg_id), 2)
    assert BridgeParties(dial.leg_id, CALLER, False) in d.out
    d.feed(CallerHungUp(), 10)
    assert HangupLeg(dial.leg_id) in d.out and d.flow.is_finished
    assert [c.talk_seconds for c in d.out if isinstance(c, UpdateCall) and c.talk_seconds] == [10]


def test_manual_redirection_without_a_usable_number_says_so_and_rings_no_one():
    d = Driver(tree(MenuState.MANUAL_REDIRECTION))
    d.feed(Started())
    d.feed(PlaybackFinished(d.last_play().playback_id))
    assert not d.dials() and HangupCaller() in d.out and d.statuses()[-1] == CallStatus.DEFLECTED


def test_a_waiting_caller_hears_where_they_are_in_line_every_so_often():
    from ivr.core.contact_center.queue import AnnounceWait, wait_text

    d = Driver(announce_every=30.0)
    walk_to_sales(d)
    d.feed(TimerFired("announce"), 90)
    [announce] = [c for c in d.out if isinstance(c, AnnounceWait)]
    assert announce.waited >= 90
    d.feed(PlaybackFinished(announce.playback_id))
    assert StartTimer("announce", d.now + 30.0) in d.out
    assert wait_text(95, 2).startswith("All our agents are busy. You are number 2 in line. You have waited 1 minute.")
    assert "next in line" in wait_text(10, 1) and "less than a minute" in wait_text(10, 1)
