"""Deflection of a caller, as a pure flow: to voicemail (a prompt, a beep, a recording), to a
message (said, then goodbye), or to a scheduled call-back (a call to the caller's number later, in
the same queue: :class:`ScheduleCallback`; a caller whose number cannot be called back, hidden or
premium-rate, hears the message instead).

Voicemail: status ``voicemail`` while the caller is invited and recorded; when the recording is
over (the caller pressed #, hung up, or the maximum length passed) ``voicemail_received``, with the
recording saved by the shell (:class:`SaveVoicemail`). A caller who hangs up before the beep left
no voicemail: the call is ``deflected`` and says so. A message: ``deflected``, ``deflection``
``message`` (or ``scheduled_call``). ``voicemail_reason`` is set only for a voicemail; ``deflection``
always.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.contact_center.updates import UpdateCall, UpdateParticipant
from ivr.core.contact_center.vocabulary import (
    CallStatus,
    Deflection,
    DisconnectedBy,
    FailReason,
    ParticipantStatus,
    ParticipantType,
    VoicemailReason,
)
from ivr.core.texts import VOICEMAIL_PROMPT
# The recording's words are the engine's (an Incoming Call Policy's voicemail records the same way).
from ivr.core.vocabulary import (CALLER, CancelTimer, HangupCaller, IllegalEvent, Play, PlaybackFinished,
                                 RecordCaller, RecordingEnded, SaveVoicemail, StartTimer, StopRecording, TimerFired)

__all__ = ["DEFAULT_MESSAGE", "GOODBYE", "RECORDING_GUARD", "VOICEMAIL_PROMPT", "DeflectionFlow", "DeflectionSetup",
           "DeflectionStarted", "RecordCaller", "RecordingEnded", "SaveVoicemail", "ScheduleCallback", "StopRecording",
           "callback_text"]

GOODBYE = "Thank you. Goodbye."
DEFAULT_MESSAGE = "No one can take your call right now. Please try again later. Goodbye."
RECORDING_GUARD = "recording-guard"


@dataclass(frozen=True)
class DeflectionSetup:
    call_id: str
    deflection: Deflection            # VOICEMAIL or MESSAGE
    reason: VoicemailReason
    message: str = ""                 # the message (MESSAGE), or what precedes the voicemail prompt
    max_record_seconds: float = 120.0
    max_silence_seconds: float = 10.0
    menu_id: str = ""
    callback_seconds: float | None = None  # SCHEDULED_CALL: the caller is called back this much later (None: cannot be)


@dataclass(frozen=True)
class ScheduleCallback:
    """Schedule a call to the caller's number, in ``menu_id``'s queue, ``seconds`` from now."""

    menu_id: str
    seconds: float


def callback_text(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    when = "in about a minute" if minutes == 1 else f"in about {minutes} minutes"
    return f"We will call you back at this number {when}. Goodbye."


@dataclass(frozen=True)
class DeflectionStarted:
    pass


class DeflectionFlow:
    def __init__(self, setup: DeflectionSetup):
        self.setup = setup
        self.phase = "new"    # new, prompt, recording, bye, done
        self.prompt_id = f"{setup.call_id}-deflect-prompt"
        self.bye_id = f"{setup.call_id}-deflect-bye"
        self.recording = f"hotline-vm-{setup.call_id}"

    @property
    def is_voicemail(self) -> bool:
        return self.setup.deflection is Deflection.VOICEMAIL

    @property
    def is_finished(self) -> bool:
        return self.phase == "done"

    def handle(self, event, now: float) -> list:
        s = self.setup
        if self.phase == "done":
            return []
        if isinstance(event, DeflectionStarted):
            if self.phase != "new":
                raise IllegalEvent("deflection started twice")
            self.phase = "prompt"
            if self.is_voicemail:
                text = " ".join(t for t in (s.message, VOICEMAIL_PROMPT) if t)
                return [UpdateCall(status=CallStatus.VOICEMAIL, deflection=Deflection.VOICEMAIL,
                                   voicemail_reason=s.reason),
                        Play(CALLER, self.prompt_id, text)]
            if s.deflection is Deflection.SCHEDULED_CALL and s.callback_seconds is not None:
                text = " ".join(t for t in (s.message, callback_text(s.callback_seconds)) if t)
                return [UpdateCall(status=CallStatus.DEFLECTED, deflection=Deflection.SCHEDULED_CALL),
                        ScheduleCallback(s.menu_id, s.callback_seconds), Play(CALLER, self.prompt_id, text)]
            # A message (or a call-back to a number that cannot be called: the message instead).
            return [UpdateCall(status=CallStatus.DEFLECTED, deflection=Deflection.MESSAGE),
                    Play(CALLER, self.prompt_id, s.message or DEFAULT_MESSAGE)]
        if isinstance(event, PlaybackFinished):
            if event.playback_id == self.prompt_id and self.phase == "prompt":
                if self.is_voicemail:
                    self.phase = "recording"
                    return [RecordCaller(self.recording, s.max_record_seconds, s.max_silence_seconds),
                            StartTimer(RECORDING_GUARD, now + s.max_record_seconds + 5)]
                return self._end(now, [HangupCaller()])
            if event.playback_id == self.bye_id and self.phase == "bye":
                return self._end(now, [HangupCaller()], write=False)
            return []
        if isinstance(event, RecordingEnded):
            if event.name != self.recording or self.phase != "recording":
                return []
            return self._recorded(event.ok, event.detail, now)
        if isinstance(event, TimerFired):
            if event.timer_id == RECORDING_GUARD and self.phase == "recording":
                # Asterisk never said the recording ended: stop it and keep what it has.
                return [StopRecording(self.recording)] + self._recorded(True, "", now)
            return []
        raise IllegalEvent(f"the deflection does not expect {event!r}")

    def _recorded(self, ok: bool, detail: str, now: float) -> list:
        out: list = [CancelTimer(RECORDING_GUARD)]
        if not ok:
            out.append(UpdateCall(status=CallStatus.FAILED, fail_reason=FailReason.SYSTEM_ERROR,
                                  fail_details=f"The voicemail could not be recorded: {detail or 'unknown error'}",
                                  disconnected_by=DisconnectedBy.SYSTEM, ended_at=now))
            return out + self._end(now, [HangupCaller()], write=False)
        out += [SaveVoicemail(self.recording),
                UpdateParticipant(ParticipantType.END_USER, status=ParticipantStatus.FINISHED, ended_at=now),
                UpdateCall(status=CallStatus.VOICEMAIL_RECEIVED, ended_at=now,
                           disconnected_by=DisconnectedBy.END_USER)]
        self.phase = "bye"
        return out + [Play(CALLER, self.bye_id, GOODBYE)]

    def hung_up(self, now: float) -> list:
        """The caller left: a recording in progress still ends (Asterisk reports it), else the call ends."""
        if self.phase == "recording":
            return []   # RecordingEnded follows: what was said is kept
        if self.phase in ("done", "bye"):
            self.phase = "done"
            return []
        out = [UpdateCall(status=CallStatus.DEFLECTED, disconnected_by=DisconnectedBy.END_USER,
                          fail_details="The caller hung up before leaving a voicemail" if self.is_voicemail else None)]
        return out + self._end(now, [])

    def _end(self, now: float, commands: list, write: bool = True) -> list:
        self.phase = "done"
        out = list(commands)
        if write:
            out += [UpdateParticipant(ParticipantType.END_USER, status=ParticipantStatus.FINISHED, ended_at=now),
                    UpdateCall(ended_at=now)]
        return out
