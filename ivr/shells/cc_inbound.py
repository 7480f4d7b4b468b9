"""Inbound contact-center calls over ARI: a phone call to a root IVR menu's routing number.

The ARI controller gives a caller to :meth:`InboundCalls.route` when no Incoming Call Policy has the
dialed number. If a root IVR menu has it, the call is opened (``Voice Inbound (IVR)``, status
``selecting``) and an :class:`InboundActor` runs the pure flow ``ivr.core.contact_center.inbound``:
the menu walk, then the queue's offer to its agents (legs ``leg,<call id>`` in the controller's
application, so its dispatch routes their events here), voicemail or a message, or the hand-over of
the caller's channel to the escalation engine of the leaf's policy (a ``CallActor``, whose log the
call links). Prompts are spoken in the call's language (the menu's first; espeak-ng's voice of it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid

from ivr.asterisk.ari import AriError
from ivr.core.contact_center.inbound import EndUserDial, InboundCall, InboundSetup, LoadQueue, QueueLoaded
from ivr.core.contact_center.outbound import END_USER, Ringback, leg_id
from ivr.core.contact_center.queue import AnnounceWait, wait_text
from ivr.core.contact_center.updates import UpdateCall
from ivr.core.contact_center.vocabulary import CallStatus, DisconnectedBy, FailReason
from ivr.core.contact_center.voicemail import (
    RecordCaller,
    RecordingEnded,
    SaveVoicemail,
    ScheduleCallback,
    StopRecording,
)
from ivr.core.contact_center.walk import HandToPolicy, Started, WalkSetup
from ivr.core.engine import CallStatus as LogStatus
from ivr.core.vocabulary import (
    CALLER,
    Answer,
    CallerHungUp,
    HangupCaller,
    Play,
    StartRingback,
    StopRingback,
)
from ivr.shells.contact_center import ContactCenterActor, ContactCenterService
from ivr.store import cc_inbound, cc_progress
from ivr.store.cc_inbound import InboundOpened
from ivr.store.db import run_and_release, run_write

log = logging.getLogger(__name__)

#: How the end of an Incoming Call Policy's call that a menu handed over ends the contact-center call.
_POLICY_ENDS = {
    LogStatus.COMPLETED.value: (CallStatus.FINISHED, FailReason.NOTHING),
    LogStatus.CALLER_HUNG_UP.value: (CallStatus.FAILED, FailReason.END_USER_HUNG_UP),
    LogStatus.NO_ANSWER.value: (CallStatus.FAILED, FailReason.AGENT_NO_ANSWER),
    LogStatus.BUSY.value: (CallStatus.FAILED, FailReason.AGENT_BUSY),
    # No one could be rung (no one on call, the policy disabled or closed, the caller refused).
    LogStatus.FAILED.value: (CallStatus.FAILED, FailReason.AGENT_UNREACHABLE),
}


class InboundCalls:
    """The contact center's side of incoming calls: routes them, and keeps what it handed to a policy."""

    def __init__(self, service: ContactCenterService):
        self.service = service
        self.controller = service.controller
        self.handed: set[str] = set()   # calls now run by a policy's escalation (not stale)
        self.controller.incoming_routes.append(self.route)
        service.running_elsewhere = self.handed
        service.pollers.append(self.take_queued)

    async def route(self, channel_id: str, dialed: str, caller: str) -> "InboundActor | None":
        s = self.service
        cfg = s.config
        if s.node is None:
            s.node = await s._node_name()
        opened = await run_and_release(s.db, cc_inbound.open_inbound, dialed, caller, cfg.sip.default_region,
                                       s.node, channel_id, cfg.contact_center.menu_input_timeout)
        if opened is None:
            return None
        log.info("contact-center call %s: %s called menu number %s", opened.number, caller or "an unknown number",
                 dialed)
        actor = InboundActor(s, self, opened, channel_id, dialed, caller)
        actor.start()
        return actor

    async def take_queued(self) -> None:
        """The inbound calls of the API (and fired scheduled calls): call their end users."""
        s = self.service
        cfg = s.config.contact_center
        for taken in await run_write(s.db, cc_inbound.take_inbound_calls, s.node):
            log.info("contact-center call %s: calling the end user %s to queue them", taken.number,
                     taken.end_user_address)
            # can_call_back stays False: a call-back that finds no agent ends with the message, never with
            # another call-back (which could call the end user again and again).
            opened = InboundOpened(taken.call_id, taken.number, taken.project_id, taken.lang, taken.end_user_address,
                                   WalkSetup(call_id=taken.call_id, root_id=taken.menu_id, menus={}))
            dial = EndUserDial(taken.menu_id, taken.end_user_address, taken.outbound_number, cfg.end_user_ring_timeout)
            InboundActor(s, self, opened, leg_id(taken.call_id, END_USER), "", taken.end_user_address,
                         dial=dial).start()


class InboundActor(ContactCenterActor):
    def __init__(self, service: ContactCenterService, calls: InboundCalls, opened: InboundOpened,
                 caller_channel: str, dialed: str, caller: str, dial: EndUserDial | None = None):
        engine = service.config.tts.engine
        voice = opened.lang if engine == "espeak-ng" and not service.config.tts.voice.startswith(opened.lang) else None
        super().__init__(service, opened.call_id, opened.project_id, str(opened.number), voice)
        cfg = service.config.contact_center
        self.calls = calls
        self.opened = opened
        self.caller_channel = caller_channel
        self.dialed, self.caller = dialed, caller
        self.own_channels.add(caller_channel)
        self.flow = InboundCall(InboundSetup(opened.walk, max_silence_seconds=cfg.voicemail_max_silence, dial=dial,
                                             can_call_back=opened.can_call_back,
                                             caller_id=opened.caller_number if opened.caller_number[:1] == "+" else None,
                                             ring_seconds=cfg.agent_ring_timeout))
        self.queue_menu: str | None = None

    # -- what the controller's dispatch asks ----------------------------------------------------

    def is_caller(self, channel_id: str) -> bool:
        return False  # the caller's keys walk the menu: they reach the flow as DigitPressed

    def channel_gone(self, channel_id: str, cause, cause_txt: str):
        if channel_id == self.caller_channel and not self.flow.dialing:
            return CallerHungUp()
        return super().channel_gone(channel_id, cause, cause_txt)

    def recording_ended(self, name: str, ok: bool, detail: str) -> RecordingEnded:
        return RecordingEnded(name, ok, detail)

    def _channel(self, target: str) -> str:
        return self.caller_channel if target == CALLER else target

    # -- the call ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.s.controller.metrics.cc_calls_in_progress.inc()
        self.s.actors[self.call_id] = self
        self.s.controller.by_channel[self.caller_channel] = self
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        self._start_writer()
        try:
            await self._feed(Started())
            while not self.flow.is_finished:
                await self._feed(await self.queue.get())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("contact-center call %s failed inside Hotline", self.label)
            self.writes.put_nowait((cc_progress.update_call, self.call_id, UpdateCall(
                status=CallStatus.FAILED, fail_reason=FailReason.SYSTEM_ERROR,
                fail_details="Hotline hit an internal error during this call (see the server log).",
                disconnected_by=DisconnectedBy.SYSTEM, ended_at=time.time())))
            for leg in list(self.legs):
                await self._quiet(self.s.ari.hangup(leg))
            await self._quiet(self.s.ari.hangup(self.caller_channel))
        finally:
            await self._finish()

    async def _execute(self, command) -> None:
        ari = self.s.ari
        if await self._execute_common(command):
            return
        if isinstance(command, AnnounceWait):
            await self._announce(command)
        elif isinstance(command, Answer):
            await self._quiet(ari.answer(self.caller_channel))
        elif isinstance(command, StartRingback):
            await self._ringback(Ringback(CALLER, True))
        elif isinstance(command, StopRingback):
            await self._ringback(Ringback(CALLER, False))
        elif isinstance(command, HangupCaller):
            await self._quiet(ari.hangup(self.caller_channel))
        elif isinstance(command, LoadQueue):
            await self._load_queue(command.menu_id)
        elif isinstance(command, HandToPolicy):
            self._hand_to_policy(command)
        elif isinstance(command, RecordCaller):
            await self._record(command)
        elif isinstance(command, StopRecording):
            await self._quiet(ari.stop_recording(command.name))
        elif isinstance(command, ScheduleCallback):
            self.writes.put_nowait((self._schedule_callback, command))
        elif isinstance(command, SaveVoicemail):
            await self._save_recording(command.name, voicemail=True)
        else:
            log.error("contact-center call %s: unknown command %r", self.label, command)

    async def _load_queue(self, menu_id: str) -> None:
        cfg = self.s.config.contact_center
        try:
            setup = await run_and_release(self.s.db, functools.partial(
                cc_inbound.queue_setup, self.call_id, menu_id, self.opened.caller_number,
                ring_seconds=cfg.agent_ring_timeout, confirm_seconds=cfg.offer_confirm_timeout,
                announce_every=cfg.queue_announce_every, max_call_seconds=cfg.max_call_seconds))
        except Exception:
            log.exception("contact-center call %s: could not read the queue's agents", self.label)
            raise
        self.queue_menu = menu_id
        log.info("contact-center call %s: queued in %r (%s) with %d available agent(s)", self.label,
                 setup.queue_name, setup.offer_type, len(setup.agents))
        self.post(QueueLoaded(setup))

    async def _announce(self, command: AnnounceWait) -> None:
        position = None
        try:
            position = await run_and_release(self.s.db, cc_inbound.queue_position, self.call_id, self.queue_menu)
        except Exception:  # noqa: BLE001 - the wait is still worth saying
            log.exception("contact-center call %s: could not read its place in the queue", self.label)
        await self._play(Play(CALLER, command.playback_id, wait_text(command.waited, position)))

    def _hand_to_policy(self, command: HandToPolicy) -> None:
        log_id = uuid.uuid4()
        log.info("contact-center call %s: menu %s hands the caller to Incoming Call Policy %s (log %s)",
                 self.label, command.menu_id, command.policy_id, log_id)
        self.writes.put_nowait((cc_progress.update_call, self.call_id, UpdateCall(
            status=CallStatus.QUEUED, queued_at=time.time(), incoming_call_log_id=str(log_id))))
        self.calls.handed.add(self.call_id)
        # The caller's channel is the policy call's from now on (dispatch routes its events there).
        self.own_channels.discard(self.caller_channel)
        self.s.controller.hand_to_policy(self.caller_channel, self.dialed, self.caller, command.policy_id, log_id,
                                         on_end=self._policy_ended)

    def _policy_ended(self, final_status: str | None, answered_by: str | None) -> None:
        """The policy's call is over: so is the contact-center call, as that call ended."""
        # No final status: the policy's call never started (its policy was deleted meanwhile) or broke.
        status, reason = _POLICY_ENDS.get(final_status or "", (CallStatus.FAILED, FailReason.SYSTEM_ERROR))
        now = time.time()
        update = UpdateCall(status=status, agent_id=answered_by, ended_at=now,
                            fail_reason=reason if status is CallStatus.FAILED else None,
                            fail_details=(f"The Incoming Call Policy's call ended {final_status or 'unknown'}"
                                          if status is CallStatus.FAILED else None),
                            disconnected_by=DisconnectedBy.END_USER if reason is FailReason.END_USER_HUNG_UP
                            else DisconnectedBy.UNKNOWN)
        log.info("contact-center call %s: its policy call ended %s", self.label, final_status)
        self.s.tasks.spawn(self._write_late(update))

    async def _write_late(self, update: UpdateCall) -> None:
        try:
            await run_and_release(self.s.db, cc_progress.update_call, self.call_id, update)
        finally:
            self.calls.handed.discard(self.call_id)

    def _schedule_callback(self, command: ScheduleCallback) -> None:
        """(In the writer's thread, in order with the call's writes.)"""
        number = cc_inbound.schedule_callback(self.call_id, command.menu_id, command.seconds)
        if number is None:
            log.warning("contact-center call %s: no number to call back", self.label)
        else:
            log.info("contact-center call %s: call-back %s scheduled in %g s", self.label, number, command.seconds)

    async def _record(self, command: RecordCaller) -> None:
        try:
            await self.s.ari.record_channel(self.caller_channel, command.name, max_seconds=int(command.max_seconds),
                                            max_silence_seconds=int(command.max_silence_seconds))
        except AriError as exc:
            log.error("contact-center call %s: could not record the voicemail: %s", self.label, exc)
            self.post(RecordingEnded(command.name, False, str(exc)))
