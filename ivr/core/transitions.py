"""The escalation engine's transition function: ``step(state, event, now) -> (state, commands)``.

Pure: no I/O, no clock (``now`` is given), the given state is never modified, and an impossible
event raises :class:`IllegalEvent` leaving everything as it was. ``_Transition`` is one step's
working area; its handlers (``on_*``) are the only places where an event changes the call.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import replace
from typing import Any

from ivr.core.admission import Refusal, screen_caller, screen_hours
from ivr.core.state import CallState, LegPhase, LegState, Phase, UNANSWERED_LEG_PHASES
from ivr.core.texts import (DISABLED_MESSAGE, VOICEMAIL_LEFT, VOICEMAIL_NOT_LEFT, VOICEMAIL_PROMPT,
                            confirmation_prompt, plural, refusal_message, seconds, voicemail_failed,
                            voicemail_message)
from ivr.core.vocabulary import (
    ACCEPT_DIGIT,
    CALLER,
    DTMF_DIGITS,
    LEG_END_CAUSES,
    LEG_ID_MARK,
    Answer,
    Bridge,
    CallerHungUp,
    CallSetup,
    CallStarted,
    CallStatus,
    CancelTimer,
    Command,
    Contact,
    Dial,
    DialStarted,
    DigitPressed,
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
    UpdateItem,
    UpdateLog,
)


#: A confirming leg that hangs up this close to its confirmation deadline ran out of time (its
#: shell may cut it off exactly then, as the dialplan's autohangup does), rather than declined.
CONFIRM_DEADLINE_SLACK = 0.25
#: The voicemail's timers: the recording's guard (its maximum length and a grace: Asterisk never said it
#: ended), replaced when the caller hangs up by the wait for the recording's end (the grace).
VOICEMAIL_TIMER = "voicemail"
VOICEMAIL_WAIT = "voicemail:caller-gone"
RECORDING_GRACE = 5.0


def _duration(start: float, end: float) -> float:
    # A clock that stepped back must not produce negative durations in the logs.
    return round(max(0.0, float(end - start)), 3)



@functools.lru_cache(maxsize=512)
def escalation_plan(setup: CallSetup) -> tuple[Rule, ...]:
    """The rules that will actually be rung: sorted by order (stable), contacts deduplicated by
    number_id within each rule, rules without contacts dropped."""
    plan: list[Rule] = []
    for rule in sorted(setup.rules, key=lambda r: r.order):
        seen: set[str] = set()
        contacts: list[Contact] = []
        for contact in rule.contacts:
            if contact.number_id not in seen:
                seen.add(contact.number_id)
                contacts.append(contact)
        if contacts:
            plan.append(replace(rule, contacts=tuple(contacts)))
    return tuple(plan)



def step(state: CallState, event: Event, now: float) -> tuple[CallState, list[Command]]:
    """Apply one event at time ``now``; returns the new state and the commands to execute.

    Pure: the given state is never modified. Raises IllegalEvent for impossible input.
    """
    transition = _Transition(state, now)
    transition.apply(event)
    return transition.state, transition.commands


class _Transition:
    """One step's working area: the state being rebuilt (frozen values, replaced as it goes) and
    the commands emitted so far. Nothing escapes unless the whole step succeeds."""

    def __init__(self, state: CallState, now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []
        self.setup = state.setup
        self.plan = escalation_plan(state.setup)

    # ---- dispatch -------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if not isinstance(self.now, (int, float)) or not math.isfinite(self.now):
            raise IllegalEvent(f"now must be a finite number, got {self.now!r}")
        match event:
            case CallStarted():
                self.on_call_started()
            case PlaybackFinished(playback_id=playback_id):
                self.on_playback_finished(playback_id)
            case LegRinging(leg_id=leg_id):
                self.on_leg_ringing(self.known_leg(leg_id))
            case LegAnswered(leg_id=leg_id):
                self.on_leg_answered(self.known_leg(leg_id))
            case DigitPressed(leg_id=leg_id, digit=digit):
                leg = self.known_leg(leg_id)
                if digit not in DTMF_DIGITS:
                    raise IllegalEvent(f"not a DTMF digit: {digit!r}")
                self.on_digit_pressed(leg, digit)
            case LegEnded(leg_id=leg_id, cause=cause, detail=detail):
                leg = self.known_leg(leg_id)
                if cause not in LEG_END_CAUSES:
                    raise IllegalEvent(f"unknown leg end cause {cause!r}")
                self.on_leg_ended(leg, cause, detail)
            case CallerHungUp():
                self.on_caller_hung_up()
            case TimerFired(timer_id=timer_id):
                self.on_timer_fired(timer_id)
            case DialStarted(leg_ids=leg_ids):
                self.on_dial_started([self.known_leg(leg_id) for leg_id in leg_ids])
            case RecordingEnded(name=name, ok=ok, detail=detail):
                if self.state.recording is None or name != self.state.recording:
                    raise IllegalEvent(f"recording {name!r} was never started")
                self.on_recording_ended(ok, detail)
            case _:
                raise IllegalEvent(f"not an engine event: {event!r}")

    # ---- validation of ids the engine issued -----------------------------------------------

    def known_leg(self, leg_id: str) -> LegState:
        leg = self.state.leg(leg_id)
        if leg is None:
            raise IllegalEvent(f"leg {leg_id!r} was never dialed")
        return leg

    def confirm_window_closed(self, leg: LegState) -> bool:
        due = dict(self.state.timers).get(f"confirm:{leg.leg_id}")
        return due is not None and self.now >= due - CONFIRM_DEADLINE_SLACK

    def no_key_message(self) -> str:
        return (f"Answered but did not press {ACCEPT_DIGIT} within {seconds(self.setup.confirm_timeout)} s "
                "(likely voicemail)")

    def playback_was_issued(self, playback_id: str) -> bool:
        prefix = f"{self.setup.call_id}-pb-"
        suffix = playback_id[len(prefix) :] if playback_id.startswith(prefix) else ""
        return suffix.isdigit() and 1 <= int(suffix) <= self.state.playback_count

    def timer_was_issued(self, timer_id: str) -> bool:
        kind, _, rest = timer_id.partition(":")
        if kind == "rule":
            return rest.isdigit() and 1 <= int(rest) <= self.state.rule_timer_count
        if timer_id == VOICEMAIL_TIMER:
            return self.state.recording is not None
        if timer_id == VOICEMAIL_WAIT:
            return self.state.caller_gone
        if kind == "confirm":
            leg = self.state.leg(rest)
            return (
                leg is not None and self.setup.require_confirmation and leg.answered_at is not None
            )
        return False

    # ---- small state helpers --------------------------------------------------------------

    def emit(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def update(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)

    def put_leg(self, leg: LegState) -> None:
        self.update(legs=tuple(leg if old.leg_id == leg.leg_id else old for old in self.state.legs))

    def live_legs(self) -> list[LegState]:
        return [leg for leg in self.state.legs if leg.is_live]

    def next_playback_id(self) -> str:
        count = self.state.playback_count + 1
        self.update(playback_count=count)
        return f"{self.setup.call_id}-pb-{count}"

    def play(self, target: str, text: str) -> str:
        playback_id = self.next_playback_id()
        self.emit(Play(target, playback_id, text))
        return playback_id

    def start_timer(self, timer_id: str, at: float) -> None:
        self.update(timers=self.state.timers + ((timer_id, at),))
        self.emit(StartTimer(timer_id, at))

    def forget_timer(self, timer_id: str) -> bool:
        """Drop a timer from the pending set; False if it was not pending."""
        remaining = tuple(t for t in self.state.timers if t[0] != timer_id)
        if len(remaining) == len(self.state.timers):
            return False
        self.update(timers=remaining)
        return True

    def cancel_timer(self, timer_id: str | None) -> None:
        if timer_id is not None and self.forget_timer(timer_id):
            self.emit(CancelTimer(timer_id))
        if timer_id is not None and timer_id == self.state.rule_timer_id:
            self.update(rule_timer_id=None)

    def cancel_all_timers(self) -> None:
        for timer_id, _ in self.state.timers:
            self.emit(CancelTimer(timer_id))
        self.update(timers=(), rule_timer_id=None)

    def stop_ringback(self) -> None:
        if self.state.ringback_on:
            self.emit(StopRingback())
            self.update(ringback_on=False)

    def end_leg(self, leg: LegState, status: CallStatus, message: str) -> None:
        """Give a not-connected leg its one terminal item status."""
        self.cancel_timer(f"confirm:{leg.leg_id}")
        self.emit(
            UpdateItem(
                leg.leg_id,
                status=status,
                status_message=message,
                is_answered=False,
                dial_seconds=_duration(leg.dialed_at, self.now),
                ended_at=self.now,
            )
        )
        self.put_leg(
            replace(leg, phase=LegPhase.ENDED, item_status=status, prompt_playback_id=None)
        )

    def hang_up_leg(self, leg: LegState, status: CallStatus, message: str) -> None:
        self.emit(HangupLeg(leg.leg_id))
        self.end_leg(leg, status, message)

    def finish(
        self, status: CallStatus, message: str, *, hang_up_caller: bool, talk_seconds: float = 0.0
    ) -> None:
        """Write the one terminal log update; nothing happens after this."""
        self.cancel_all_timers()
        if hang_up_caller:
            self.stop_ringback()
            self.emit(HangupCaller())
        self.emit(
            UpdateLog(status=status, status_message=message, ended_at=self.now, talk_seconds=talk_seconds)
        )
        self.update(
            phase=Phase.FINISHED,
            log_status=status,
            ended_at=self.now,
            ringback_on=False,
            caller_playback_id=None,
            exhausted=False,
        )

    def close_with_message(self, status: CallStatus, message: str, text: str) -> None:
        """Tell the caller ``text``, then hang up and log ``status`` when it has been played."""
        self.stop_ringback()
        self.cancel_all_timers()
        if not text.strip():
            self.finish(status, message, hang_up_caller=True)
            return
        playback_id = self.play(CALLER, text)
        self.update(
            phase=Phase.CLOSING,
            caller_playback_id=playback_id,
            closing_status=status,
            closing_message=message,
            closing_cut_message=None,
            exhausted=False,
        )

    def refuse(self, refusal: Refusal, text: str) -> None:
        """A call the policy does not take (a blocked caller, outside business hours): ``text`` is
        played, nobody is rung, and the log says Failed with the reason (see docs/oncall.md)."""
        heard = refusal_message(refusal.reason, refusal.prompt, text=text, heard=True)
        self.close_with_message(CallStatus.FAILED, heard, text)
        if self.state.phase is Phase.CLOSING:
            self.update(closing_cut_message=refusal_message(refusal.reason, refusal.prompt, text=text, heard=False))

    def admission(self) -> tuple[Refusal, str] | None:
        """Why this call is not taken, and what the caller hears then; None: it is taken. The caller
        lists first (a blocked caller is refused at any hour), then the business hours."""
        setup = self.setup
        refusal = screen_caller(setup.caller_e164, setup.caller_number, setup.caller_block_list,
                                setup.caller_allow_list)
        if refusal is not None:
            return refusal, setup.blocked_caller_message
        if setup.business_hours:
            try:
                at = dt.datetime.fromtimestamp(self.now, dt.timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise IllegalEvent(f"now must be Unix time for business hours, got {self.now!r}") from None
            refusal = screen_hours(setup.business_hours, setup.business_hours_time_zone, at)
            if refusal is not None:
                return refusal, setup.after_hours_message
        return None

    # ---- the hunt ---------------------------------------------------------------------------

    def hunt_from(self, position: int) -> None:
        """Ring the plan's rule at ``position``; past the last rule, repeat or give up."""
        if position >= len(self.plan):
            if self.state.repeat_count + 1 < self.setup.max_rounds:
                self.update(repeat_count=self.state.repeat_count + 1)
                position = 0
            else:
                self.out_of_rules()
                return
        self.start_rule(position)

    def start_rule(self, position: int) -> None:
        rule = self.plan[position]
        first_start = not self.state.legs and self.state.repeat_count == 0 and position == 0
        self.emit(
            UpdateLog(
                status=CallStatus.RINGING if first_start else CallStatus.ESCALATED,
                current_rule_order=rule.order,
                repeat_count=self.state.repeat_count,
            )
        )
        if not self.state.ringback_on:
            self.emit(StartRingback())
        # A number still deciding on an earlier rule's call is not rung twice; this rule waits
        # for that leg instead (see rule_has_candidates).
        busy_numbers = {leg.contact.number_id for leg in self.live_legs()}
        new_legs: list[LegState] = []
        for contact in rule.contacts:
            if contact.number_id in busy_numbers:
                continue
            leg_id = f"{self.setup.call_id}{LEG_ID_MARK}{len(self.state.legs) + len(new_legs) + 1}"
            self.emit(Dial(leg_id, contact, rule.order, rule.escalate_after_seconds, rule.rule_id))
            new_legs.append(
                LegState(
                    leg_id=leg_id,
                    contact=contact,
                    rule_order=rule.order,
                    escalate_after_seconds=rule.escalate_after_seconds,
                    phase=LegPhase.DIALING,
                    dialed_at=self.now,
                )
            )
        # A fresh id per rule start: a late TimerFired of an earlier rule can never be taken
        # for the current one.
        # A shell whose dial ends the unanswered legs at the rule's time needs no timer, unless
        # this rule dialed nobody new (it waits for a leg of an earlier rule).
        timed_here = not self.setup.dial_enforces_timeout or not new_legs
        timer_count = self.state.rule_timer_count + (1 if timed_here else 0)
        timer_id = f"rule:{timer_count}" if timed_here else None
        self.update(
            phase=Phase.HUNTING,
            rule_position=position,
            exhausted=False,
            legs=self.state.legs + tuple(new_legs),
            rule_timer_count=timer_count,
            rule_timer_id=timer_id,
            ringback_on=True,
            log_status=CallStatus.RINGING if first_start else CallStatus.ESCALATED,
        )
        if timer_id is not None:
            self.start_timer(timer_id, self.now + rule.escalate_after_seconds)

    def out_of_rules(self) -> None:
        if self.live_legs():
            # Someone answered and is hearing the prompt: their confirm window still runs.
            self.update(exhausted=True, rule_timer_id=None)
            return
        rules = len(self.plan)
        rounds = self.state.repeat_count + 1
        message = (
            f"No one answered: all {plural(rules, 'escalation rule')} "
            f"{'was' if rules == 1 else 'were'} tried {plural(rounds, 'time')}"
        )
        if self.setup.voicemail_on_no_answer:
            self.offer_voicemail(message)
        else:
            self.close_with_message(CallStatus.NO_ANSWER, message, self.setup.no_answer_message)

    # ---- voicemail after NoAnswer -----------------------------------------------------------

    def offer_voicemail(self, message: str) -> None:
        """Nobody answered: the no-answer message, then the voicemail prompt, the beep and the recording.
        The log stays NoAnswer (nobody answered); its statusMessage says whether a voicemail was left."""
        self.stop_ringback()
        self.cancel_all_timers()
        cut = voicemail_message(message, VOICEMAIL_NOT_LEFT)
        if self.setup.no_answer_message.strip():
            self.close_with_message(CallStatus.NO_ANSWER, message, self.setup.no_answer_message)
            self.update(voicemail_next=True, closing_cut_message=cut)
        else:
            self.update(closing_status=CallStatus.NO_ANSWER, closing_message=message, closing_cut_message=cut,
                        exhausted=False)
            self.start_voicemail()

    def start_voicemail(self) -> None:
        playback_id = self.play(CALLER, VOICEMAIL_PROMPT)
        self.update(phase=Phase.VOICEMAIL, caller_playback_id=playback_id, voicemail_next=False)

    def start_recording(self) -> None:
        name = f"hotline-policy-vm-{self.setup.call_id}"
        self.emit(RecordCaller(name, self.setup.voicemail_max_seconds, self.setup.voicemail_max_silence))
        self.update(recording=name)
        self.start_timer(VOICEMAIL_TIMER, self.now + self.setup.voicemail_max_seconds + RECORDING_GRACE)

    def end_voicemail(self, ok: bool, detail: str) -> None:
        """The recording is over: the call ends NoAnswer, and a recording is kept (SaveVoicemail)."""
        name = self.state.recording
        assert name is not None
        base = self.state.closing_message or ""
        outcome = VOICEMAIL_LEFT if ok else voicemail_failed(detail)
        self.finish(CallStatus.NO_ANSWER, voicemail_message(base, outcome), hang_up_caller=not self.state.caller_gone)
        if ok:
            self.emit(SaveVoicemail(name))

    def escalate(self) -> None:
        """Leave the current rule (its ringing legs are already gone) for the next one."""
        self.cancel_timer(self.state.rule_timer_id)
        assert self.state.rule_position is not None
        self.hunt_from(self.state.rule_position + 1)

    def after_leg_closed(self) -> None:
        """A leg stopped being a candidate: escalate at once if the current rule has none left."""
        if self.state.phase is not Phase.HUNTING:
            return
        if self.state.exhausted:
            if not self.live_legs():
                self.out_of_rules()
            return
        if not self.rule_has_candidates():
            self.escalate()

    def rule_has_candidates(self) -> bool:
        """True while a live leg can still answer for the current rule (possibly a leg dialed by
        an earlier rule for the same number, still deciding whether to press 1)."""
        assert self.state.rule_position is not None
        numbers = {c.number_id for c in self.plan[self.state.rule_position].contacts}
        return any(leg.contact.number_id in numbers for leg in self.live_legs())

    def accept(self, leg: LegState) -> None:
        user_id = leg.contact.user_id
        self.cancel_all_timers()
        self.stop_ringback()
        if leg.prompt_playback_id is not None:
            # Asterisk cannot bridge a channel cleanly while it still plays the prompt.
            self.emit(StopPlayback(leg.prompt_playback_id))
        for other in self.live_legs():
            if other.leg_id != leg.leg_id:
                self.hang_up_leg(
                    other,
                    CallStatus.NO_ANSWER,
                    f"Call was answered elsewhere, by user {user_id}",
                )
        self.emit(Bridge(leg.leg_id))
        answered_at = leg.answered_at if leg.answered_at is not None else self.now
        self.emit(
            UpdateLog(
                status=CallStatus.CONNECTED,
                status_message=f"Connected to user {user_id}",
                answered_by_user_id=user_id,
                current_rule_order=leg.rule_order,
            ),
            UpdateItem(
                leg.leg_id,
                status=CallStatus.CONNECTED,
                status_message=(
                    f"Accepted by pressing {ACCEPT_DIGIT}" if self.setup.require_confirmation else "Answered"
                ),
                is_answered=True,
                dial_seconds=_duration(leg.dialed_at, answered_at),
            ),
        )
        self.put_leg(
            replace(
                leg,
                phase=LegPhase.BRIDGED,
                answered_at=answered_at,
                prompt_playback_id=None,
                item_status=CallStatus.CONNECTED,
            )
        )
        self.update(
            phase=Phase.CONNECTED,
            bridged_leg_id=leg.leg_id,
            connected_at=self.now,
            log_status=CallStatus.CONNECTED,
            exhausted=False,
        )

    def complete(self, hung_up_by_caller: bool) -> None:
        """End a connected call: hang up the side that is still there and log the talk time."""
        leg_id = self.state.bridged_leg_id
        assert leg_id is not None and self.state.connected_at is not None
        leg = self.known_leg(leg_id)
        who = "the caller" if hung_up_by_caller else "the on-call user"
        message = f"Call completed; {who} hung up"
        if hung_up_by_caller:
            self.emit(HangupLeg(leg_id))
        self.emit(
            UpdateItem(leg_id, status=CallStatus.COMPLETED, status_message=message, ended_at=self.now)
        )
        self.put_leg(replace(leg, phase=LegPhase.ENDED, item_status=CallStatus.COMPLETED))
        self.finish(
            CallStatus.COMPLETED,
            message,
            hang_up_caller=not hung_up_by_caller,
            talk_seconds=_duration(self.state.connected_at, self.now),
        )

    def connection_failed(self, leg: LegState, detail: str) -> None:
        """The user accepted but the two could not be connected: say so on both records."""
        reason = f": {detail}" if detail else ""
        self.emit(HangupLeg(leg.leg_id))
        self.emit(UpdateItem(leg.leg_id, status=CallStatus.FAILED, ended_at=self.now,
                             status_message=f"Accepted, but could not be connected with the caller{reason}"))
        self.put_leg(replace(leg, phase=LegPhase.ENDED, item_status=CallStatus.FAILED))
        self.finish(CallStatus.FAILED, f"Could not connect the caller with the on-call user{reason}",
                    hang_up_caller=True)

    # ---- event handlers ---------------------------------------------------------------------

    def on_call_started(self) -> None:
        if self.state.started:
            raise IllegalEvent("CallStarted twice")
        if self.state.phase is Phase.FINISHED:
            # The caller left before the shell reported the start: nothing to do any more.
            self.update(started=True)
            return
        resuming = self.setup.resume_from_order is not None
        # Decided first, so that an impossible time raises before anything changed.
        refused = None if self.setup.admitted or not self.setup.is_enabled else self.admission()
        self.update(started=True)
        if not resuming:
            self.emit(Answer())
        if not self.setup.is_enabled:
            self.close_with_message(CallStatus.FAILED, "Policy is disabled", DISABLED_MESSAGE)
        elif refused is not None:
            self.refuse(*refused)
        elif not self.plan:
            self.close_with_message(
                CallStatus.FAILED,
                "No on-call user available in any escalation rule",
                self.setup.no_one_available_message,
            )
        elif self.setup.resume_from_order is not None:
            resume_order = self.setup.resume_from_order
            position = next(
                (i for i, rule in enumerate(self.plan) if rule.order >= resume_order),
                len(self.plan),
            )
            self.update(repeat_count=self.setup.resume_repeat_count)
            self.hunt_from(position)
        elif self.setup.greeting.strip():
            playback_id = self.play(CALLER, self.setup.greeting)
            self.update(phase=Phase.GREETING, caller_playback_id=playback_id)
        else:
            self.hunt_from(0)

    def on_playback_finished(self, playback_id: str) -> None:
        if not self.playback_was_issued(playback_id):
            raise IllegalEvent(f"playback {playback_id!r} was never started")
        phase = self.state.phase
        if playback_id == self.state.caller_playback_id:
            self.update(caller_playback_id=None)
            if phase is Phase.GREETING:
                self.hunt_from(0)
            elif phase is Phase.CLOSING and self.state.voicemail_next:
                self.start_voicemail()
            elif phase is Phase.VOICEMAIL:
                self.start_recording()
            elif phase is Phase.CLOSING:
                assert self.state.closing_status is not None
                self.finish(
                    self.state.closing_status,
                    self.state.closing_message or "",
                    hang_up_caller=True,
                )
            return
        if phase is not Phase.HUNTING:
            return
        for leg in self.state.legs:
            if leg.prompt_playback_id == playback_id and leg.phase is LegPhase.CONFIRMING:
                # Repeat the prompt until the user presses 1 or the confirm window closes.
                self.put_leg(
                    replace(
                        leg,
                        prompt_playback_id=self.play(leg.leg_id, confirmation_prompt(self.setup)),
                    )
                )
                return

    def on_leg_ringing(self, leg: LegState) -> None:
        if leg.phase is LegPhase.DIALING and self.state.phase is Phase.HUNTING:
            self.put_leg(replace(leg, phase=LegPhase.RINGING))

    def on_leg_answered(self, leg: LegState) -> None:
        if leg.phase is LegPhase.ENDED:
            # Its end was decided without it (a lost event, a failed hang-up, an originate that timed
            # out but went through): whoever picked up must not wait in silence. (After the end of
            # the call, the shell hangs up such strays itself.)
            if self.state.phase is not Phase.FINISHED:
                self.emit(HangupLeg(leg.leg_id))
            return
        if leg.phase not in UNANSWERED_LEG_PHASES or self.state.phase is not Phase.HUNTING:
            return  # a duplicate, or a leg that is already being hung up
        if not self.setup.require_confirmation:
            self.accept(replace(leg, answered_at=self.now))
            return
        playback_id = self.play(leg.leg_id, confirmation_prompt(self.setup))
        self.put_leg(
            replace(
                leg,
                phase=LegPhase.CONFIRMING,
                answered_at=self.now,
                prompt_playback_id=playback_id,
            )
        )
        self.start_timer(f"confirm:{leg.leg_id}", self.now + self.setup.confirm_timeout)

    def on_digit_pressed(self, leg: LegState, digit: str) -> None:
        if (
            digit == ACCEPT_DIGIT
            and leg.phase is LegPhase.CONFIRMING
            and self.state.phase is Phase.HUNTING
        ):
            self.accept(leg)

    def on_leg_ended(self, leg: LegState, cause: str, detail: str = "") -> None:
        if leg.phase is LegPhase.ENDED or self.state.phase is Phase.FINISHED:
            return
        if leg.phase is LegPhase.BRIDGED:
            if cause == "failed":  # the shell could not bridge them: nobody talked
                self.connection_failed(leg, detail)
            else:
                self.complete(hung_up_by_caller=False)
            return
        if leg.phase is LegPhase.CONFIRMING:
            if self.confirm_window_closed(leg):
                # Gone at its deadline: the shell's own cut-off (a dialplan autohangup) or a
                # voicemail giving up; either way the window closed without a key.
                self.end_leg(leg, CallStatus.NO_ANSWER, self.no_key_message())
            else:
                self.end_leg(
                    leg,
                    CallStatus.NO_ANSWER,
                    f"Answered but hung up before pressing {ACCEPT_DIGIT} to accept",
                )
        elif cause == "busy":
            self.end_leg(leg, CallStatus.BUSY, "Line busy")
        elif cause == "failed":
            reason = f": {detail}" if detail else ""
            self.end_leg(leg, CallStatus.FAILED, f"Call to {leg.contact.address} failed{reason}")
        elif cause == "no_answer":
            self.end_leg(
                leg,
                CallStatus.NO_ANSWER,
                f"Not answered within {seconds(leg.escalate_after_seconds)} s",
            )
        elif cause == "cut_off":
            self.end_leg(
                leg, CallStatus.NO_ANSWER, detail or "Stopped ringing: another number answered first"
            )
        else:
            self.end_leg(leg, CallStatus.NO_ANSWER, "Hung up (declined) without answering")
        self.after_leg_closed()

    def on_caller_hung_up(self) -> None:
        phase = self.state.phase
        if phase is Phase.FINISHED:
            return
        if phase is Phase.CONNECTED:
            self.complete(hung_up_by_caller=True)
            return
        if phase is Phase.VOICEMAIL and self.state.recording is not None:
            # What was said is kept: the recording still ends (the shell reports it), or the timer says so.
            if not self.state.caller_gone:
                self.update(caller_gone=True)
                self.cancel_timer(VOICEMAIL_TIMER)
                self.start_timer(VOICEMAIL_WAIT, self.now + RECORDING_GRACE)
            return
        if phase in (Phase.CLOSING, Phase.VOICEMAIL):
            # The outcome was decided before the caller left; only the message was cut short.
            assert self.state.closing_status is not None
            message = self.state.closing_cut_message or self.state.closing_message or ""
            self.finish(self.state.closing_status, message, hang_up_caller=False)
            return
        for leg in self.live_legs():
            self.hang_up_leg(
                leg, CallStatus.CALLER_HUNG_UP, "Caller hung up before the call was accepted"
            )
        self.finish(
            CallStatus.CALLER_HUNG_UP,
            "Caller hung up before anyone accepted the call",
            hang_up_caller=False,
        )

    def on_timer_fired(self, timer_id: str) -> None:
        if not self.timer_was_issued(timer_id):
            raise IllegalEvent(f"timer {timer_id!r} was never started")
        if self.state.phase is Phase.FINISHED or not self.forget_timer(timer_id):
            return  # cancelled, or already fired
        if timer_id in (VOICEMAIL_TIMER, VOICEMAIL_WAIT):
            if self.state.phase is Phase.VOICEMAIL:
                # Asterisk never said the recording ended: stop it (if the caller is still there) and keep it.
                if not self.state.caller_gone:
                    self.emit(StopRecording(self.state.recording or ""))
                self.end_voicemail(True, "")
            return
        if timer_id == self.state.rule_timer_id:
            self.update(rule_timer_id=None)
            for leg in self.live_legs():
                if leg.phase in UNANSWERED_LEG_PHASES:
                    self.hang_up_leg(
                        leg,
                        CallStatus.NO_ANSWER,
                        f"Not answered within {seconds(leg.escalate_after_seconds)} s",
                    )
            self.escalate()
            return
        leg = self.known_leg(timer_id.partition(":")[2])
        if leg.phase is LegPhase.CONFIRMING:
            self.hang_up_leg(leg, CallStatus.NO_ANSWER, self.no_key_message())
            self.after_leg_closed()

    def on_recording_ended(self, ok: bool, detail: str) -> None:
        if self.state.phase is Phase.VOICEMAIL:
            self.end_voicemail(ok, detail)

    def on_dial_started(self, legs: list[LegState]) -> None:
        for leg in legs:
            if leg.phase in UNANSWERED_LEG_PHASES and self.now > leg.dialed_at:
                self.put_leg(replace(leg, dialed_at=self.now))
                self.emit(UpdateItem(leg.leg_id, started_at=self.now))

