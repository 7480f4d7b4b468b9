"""The contact center's calls over ARI: outbound calls of the calls API (``/apps/api/v1/calls``).

The API creates the call and queues it in the outbox (ivr/store/contact_center.py); the
:class:`ContactCenterService` of the call services takes it once, claims it for its Asterisk node,
and runs an :class:`OutboundActor`: the pure flow ``ivr.core.contact_center.outbound`` fed with the
events of the ARI controller's Stasis application and carried out here. Its legs are originated as
``leg,<call id>`` into the same application, so the controller's dispatch routes their events
here (the actor answers the same questions the escalation's actors do). Writes go through an
ordered writer; a failed write is logged and the call goes on.

A recording (``recordRequested``) is ARI's recording of the mixing bridge (both parties, mixed),
fetched from Asterisk when the call ends into ``contact_center.recordings_dir/<project>/`` and
deleted from Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ivr.asterisk.ari import AriError, AriNotFound
from ivr.asterisk.causes import cause_text, party_end_cause
from ivr.asterisk.dialstrings import NotDialable, endpoint_for
from ivr.core.contact_center.outbound import (
    AGENT,
    END_USER,
    BridgeParties,
    DialParty,
    Lost,
    OutboundCall,
    OutboundSetup,
    Ringback,
    Started,
    UpdateCall,
    UpdateParticipant,
    leg_id,
)
from ivr.core.contact_center.vocabulary import CallStatus
from ivr.core.vocabulary import (
    CancelTimer,
    HangupLeg,
    IllegalEvent,
    LegAnswered,
    LegEnded,
    Play,
    PlaybackFinished,
    StartTimer,
    StopPlayback,
    TimerFired,
)
from ivr.runtime import Tasks, stopped_within
from ivr.store import cc_progress
from ivr.store.cc_progress import TakenCall
from ivr.shells.base import write_in_order
from ivr.shells.recordings import NotKept, keep_recording
from ivr.store.db import run_and_release, run_write
from ivr.tts import TTSError

log = logging.getLogger(__name__)

RINGBACK_MEDIA = "tone:ring;tonezone=us"
ENDED = frozenset({CallStatus.FINISHED, CallStatus.FAILED})
LOST_DETAIL = "The call was lost: its controller stopped or lost Asterisk during the call."


class ContactCenterService:
    """Takes the queued outbound calls and runs them on the ARI controller's application."""

    outbox_poll = 0.25   # seconds between two looks at the outbox

    def __init__(self, config, db, controller):
        self.config = config
        self.db = db
        self.controller = controller
        self.ari = controller.ari
        self.tts = controller.tts
        self.actors: dict[str, OutboundActor] = {}
        self.tasks = Tasks("contact center")
        self.node: str | None = None
        # Taking calls and closing stale ones exclude each other: a call just claimed, whose actor is
        # not registered yet, must not look stale.
        self._claiming = asyncio.Lock()
        #: Calls of this node that run outside an actor of this service (handed to a policy's escalation).
        self.running_elsewhere: set[str] = set()
        #: More work taken from the outbox like the outbound calls (the inbound calls of the API).
        self.pollers: list = []
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        controller.reconcilers.append(self._reconcile)

    async def start(self) -> None:
        self._loop_task = self.tasks.spawn(self._outbox_loop())

    async def close(self) -> None:
        # The outbox loop ends between two reads (ivr.runtime.stopped_within says why it is not cancelled).
        self._stopping.set()
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task], timeout=10)
        for actor in list(self.actors.values()):
            actor.task.cancel()
        await asyncio.gather(*[a.task for a in self.actors.values()], return_exceptions=True)
        await self.tasks.close()

    async def _node_name(self) -> str:
        """The Asterisk node's systemname (which node placed a call)."""
        name = ((await self.ari.info()).get("config") or {}).get("name") or ""
        return name or "asterisk"

    async def _outbox_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.ari.connected.is_set():
                    connected = asyncio.ensure_future(self.ari.connected.wait())
                    stopping = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait([connected, stopping], return_when=asyncio.FIRST_COMPLETED)
                    connected.cancel()
                    stopping.cancel()
                    continue
                if self.node is None:
                    self.node = await self._node_name()
                    await self._close_stale()
                async with self._claiming:
                    for taken in await run_write(self.db, cc_progress.take_outbound_calls, self.node):
                        self._start(taken)
                    for poll in self.pollers:
                        await poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("contact center: could not take the queued calls; trying again")
                if await stopped_within(self._stopping, 1.0):
                    return
            if await stopped_within(self._stopping, self.outbox_poll):
                return

    def _start(self, taken: TakenCall) -> None:
        cfg = self.config.contact_center
        if not taken.agent_address or not taken.end_user_address:
            log.error("contact-center call %s has no agent or end-user number; failing it", taken.number)
            self.tasks.spawn(run_and_release(self.db, cc_progress.close_lost, taken.call_id,
                                             "The call had no agent or end-user number to ring.", time.time()))
            return
        setup = OutboundSetup(
            call_id=taken.call_id, agent_address=taken.agent_address, end_user_address=taken.end_user_address,
            outbound_number=taken.outbound_number, choices=taken.choices, spoken_choices=taken.spoken_choices,
            created_at=taken.created_at, agent_ring_seconds=cfg.agent_ring_timeout,
            end_user_ring_seconds=cfg.end_user_ring_timeout, choice_seconds=cfg.choice_timeout,
            max_call_seconds=cfg.max_call_seconds, record=taken.record)
        actor = OutboundActor(self, taken, setup)
        self.actors[taken.call_id] = actor
        actor.start()

    async def _close_stale(self) -> None:
        """Calls this node claimed that no actor runs (the controller stopped): close them, and hang up
        what is left of them in Asterisk."""
        async with self._claiming:
            await self._close_stale_claimed()

    async def _close_stale_claimed(self) -> None:
        try:
            stale = [c for c in await run_and_release(self.db, cc_progress.open_calls, self.node)
                     if c not in self.actors and c not in self.running_elsewhere]
        except Exception:  # noqa: BLE001 - tried again at the next connection
            log.exception("contact center: could not list the open calls")
            return
        for call_id in stale:
            log.warning("contact-center call %s was running when the controller stopped; closing it", call_id)
            for party in (AGENT, END_USER):
                try:
                    await self.ari.hangup(leg_id(call_id, party))
                except AriError:
                    pass
            await run_and_release(self.db, cc_progress.close_lost, call_id, LOST_DETAIL, time.time())

    def _reconcile(self, channels: dict[str, dict], listed_at: float) -> None:
        """After a reconnection to ARI: legs that vanished meanwhile ended, unseen."""
        for actor in list(self.actors.values()):
            actor.reconcile(channels, listed_at)
        if self.node is not None:
            self.tasks.spawn(self._close_stale())


class ContactCenterActor:
    """What every contact-center call's actor does alike: its legs (originated into the controller's
    application), prompts, timers, ordered writes and recordings. ``label`` names the call in logs."""

    def __init__(self, service: ContactCenterService, call_id: str, project_id, label: str, voice: str | None = None):
        self.s = service
        self.call_id = call_id
        self.project_id = project_id
        self.label = label
        self.voice = voice            # the synthesizer's voice for this call's language (None: configured)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writes: asyncio.Queue = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.legs: set[str] = set()
        self.answered: set[str] = set()
        self.settled_at: dict[str, float] = {}    # leg -> when its originate was answered
        self.ringbacks: dict[str, str] = {}       # channel -> ringback playback id
        self.seq = 0
        self.bridge_id: str | None = None
        self.recording: str | None = None
        self.task: asyncio.Task | None = None
        self.writer: asyncio.Task | None = None
        self.own_channels: set[str] = set()       # channels of the call besides its legs (a caller's)

    # -- what the controller's dispatch asks (as of an escalation's actor) -------------------

    def post(self, event) -> None:
        self.queue.put_nowait(event)

    def is_caller(self, channel_id: str) -> bool:
        return False  # both parties are legs Hotline originated

    def leg_answered(self, leg: str) -> LegAnswered:
        self.answered.add(leg)
        return LegAnswered(leg)

    def channel_gone(self, channel_id: str, cause, cause_txt: str) -> LegEnded:
        code = cause if isinstance(cause, int) else None
        detail = f"{cause_txt} (cause {cause})" if cause is not None else ""
        if code is not None and not detail:
            detail = cause_text(code)
        return LegEnded(channel_id, party_end_cause(code, channel_id in self.answered), detail)

    def playback_finished(self, playback_id: str) -> PlaybackFinished | None:
        return None if playback_id in self.ringbacks.values() else PlaybackFinished(playback_id)

    def reconcile(self, channels: dict[str, dict], listed_at: float) -> None:
        for leg in list(self.legs):
            settled = self.settled_at.get(leg)
            if leg not in channels and settled is not None and settled < listed_at:
                self.post(LegEnded(leg, "hangup" if leg in self.answered else "failed",
                                   "the leg vanished while Hotline was disconnected from Asterisk"))

    # -- doing (both directions) -------------------------------------------------------------

    async def _feed(self, event) -> None:
        try:
            commands = self.flow.handle(event, time.time())
        except IllegalEvent as exc:
            log.warning("contact-center call %s: ignoring %r: %s", self.label, event, exc)
            return
        for command in commands:
            await self._execute(command)

    async def _execute(self, command) -> None:
        raise NotImplementedError

    async def _execute_common(self, command) -> bool:
        """What every contact-center flow asks alike; False for a command this does not know."""
        ari = self.s.ari
        if isinstance(command, UpdateCall):
            if command.status in ENDED:
                self.s.controller.metrics.cc_calls.labels(str(command.status),
                                                          str(command.fail_reason or "nothing")).inc()
            if command.status is not None:
                log.info("contact-center call %s: %s%s", self.label, command.status,
                         f" ({command.fail_reason}: {command.fail_details})" if command.fail_reason else "")
            self.writes.put_nowait((cc_progress.update_call, self.call_id, command))
        elif isinstance(command, UpdateParticipant):
            self.writes.put_nowait((cc_progress.update_participant, self.call_id, command))
        elif isinstance(command, DialParty):
            await self._dial(command)
        elif isinstance(command, StartTimer):
            self._start_timer(command.timer_id, command.at)
        elif isinstance(command, CancelTimer):
            handle = self.timers.pop(command.timer_id, None)
            if handle:
                handle.cancel()
        elif isinstance(command, Play):
            await self._play(command)
        elif isinstance(command, StopPlayback):
            await self._quiet(ari.stop_playback(command.playback_id))
        elif isinstance(command, Ringback):
            await self._ringback(command)
        elif isinstance(command, BridgeParties):
            await self._bridge(command)
        elif isinstance(command, HangupLeg):
            await self._quiet(ari.hangup(command.leg_id))
        else:
            return False
        return True

    def _channel(self, target: str) -> str:
        """The channel a command names (a leg id; the inbound actor adds its caller)."""
        return target

    def _start_writer(self) -> None:
        self.writer = asyncio.get_running_loop().create_task(
            write_in_order(self.s.db, self.writes, f"contact-center call {self.label}"))

    async def _dial(self, command: DialParty) -> None:
        leg = command.leg_id
        sip = self.s.config.sip
        try:
            endpoint = endpoint_for(command.address, sip.outbound_trunk, sip.allowed_hosts)
        except NotDialable as exc:
            log.error("contact-center call %s: cannot ring %s: %s", self.label, command.address, exc)
            self.post(LegEnded(leg, "failed", str(exc)))
            return
        # Registered before the originate: its StasisStart can arrive before the HTTP answer.
        self.legs.add(leg)
        self.s.controller.by_channel[leg] = self
        try:
            await self.s.ari.originate(endpoint, leg, f"leg,{self.call_id}", timeout=int(command.timeout) + 5,
                                       caller_id=command.caller_id)
            self.settled_at[leg] = time.time()
        except AriError as exc:
            log.warning("contact-center call %s: could not ring %s: %s", self.label, command.address, exc)
            self.post(LegEnded(leg, "failed", f"Asterisk refused the call ({exc.message or exc.status})"))

    async def _play(self, command: Play) -> None:
        try:
            media = await self.s.tts.media(command.text, self.voice)
            await self.s.ari.play(self._channel(command.target), command.playback_id, media)
        except (TTSError, AriError) as exc:
            if not isinstance(exc, AriNotFound):
                log.error("contact-center call %s: could not play a prompt: %s", self.label, exc)
            self.post(PlaybackFinished(command.playback_id))  # the flow waits for the end of what it asked

    def _start_timer(self, timer_id: str, at: float) -> None:
        old = self.timers.pop(timer_id, None)
        if old:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[timer_id] = loop.call_at(loop.time() + max(0.0, at - time.time()),
                                             lambda: self.post(TimerFired(timer_id)))

    async def _quiet(self, coro) -> None:
        try:
            await coro
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("contact-center call %s: %s", self.label, exc)

    async def _ringback(self, command: Ringback) -> None:
        if command.on:
            self.seq += 1
            playback_id = f"{self.call_id}-ringback-{self.seq}"
            self.ringbacks[command.leg_id] = playback_id
            await self._quiet(self.s.ari.play(self._channel(command.leg_id), playback_id, RINGBACK_MEDIA))
        elif command.leg_id in self.ringbacks:
            await self._quiet(self.s.ari.stop_playback(self.ringbacks.pop(command.leg_id)))

    async def _bridge(self, command: BridgeParties) -> None:
        ari = self.s.ari
        self.bridge_id = f"{self.call_id}-bridge"
        try:
            await ari.create_bridge(self.bridge_id)
            await ari.add_to_bridge(self.bridge_id, [self._channel(command.agent_leg),
                                                     self._channel(command.end_user_leg)])
        except AriNotFound:
            return  # a party left: its own event says so
        except AriError as exc:
            log.error("contact-center call %s: could not bridge the agent and the end user: %s",
                      self.label, exc)
            self.post(LegEnded(command.end_user_leg, "hangup", f"Asterisk could not bridge them ({exc})"))
            return
        if command.record:
            name = f"hotline-cc-{self.call_id}"
            try:
                await ari.record_bridge(self.bridge_id, name)
                self.recording = name
            except AriError as exc:
                log.error("contact-center call %s: could not start the recording: %s", self.label, exc)

    # -- the end ---------------------------------------------------------------------------

    async def _finish(self) -> None:
        self.s.controller.metrics.cc_calls_in_progress.dec()
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        by_channel = self.s.controller.by_channel
        for channel in [*self.legs, *self.own_channels]:
            if by_channel.get(channel) is self:
                del by_channel[channel]
        ari = self.s.ari
        if self.recording:
            await self._quiet(ari.stop_recording(self.recording))
        if self.bridge_id:
            await self._quiet(ari.destroy_bridge(self.bridge_id))
        if self.recording:
            await self._save_recording(self.recording)
        self.writes.put_nowait(None)
        if self.writer is not None:
            await asyncio.shield(self.writer)
        self.s.actors.pop(self.call_id, None)

    async def _save_recording(self, name: str, voicemail: bool = False) -> None:
        """Asterisk's stored recording into the recordings directory (ivr/shells/recordings.py)."""
        relative = Path(str(self.project_id)) / f"{self.call_id}.wav"
        try:
            await keep_recording(self.s.ari, name, self.s.config.recordings_dir, relative)
        except NotKept as exc:
            log.error("contact-center call %s: %s", self.label, exc)
            return
        if voicemail:  # kept, and announced through the webhook when there is one
            self.writes.put_nowait((cc_progress.save_voicemail, self.call_id, str(relative),
                                    bool(self.s.config.notify.webhook_url)))
        else:
            self.writes.put_nowait((cc_progress.set_recording, self.call_id, str(relative)))


class OutboundActor(ContactCenterActor):
    """One outbound call: its flow, its legs, its timers and its ordered writes."""

    def __init__(self, service: ContactCenterService, taken: TakenCall, setup: OutboundSetup):
        super().__init__(service, taken.call_id, taken.project_id, str(taken.number))
        self.taken = taken
        self.flow = OutboundCall(setup)

    # -- the call ------------------------------------------------------------------------

    def start(self) -> None:
        self.s.controller.metrics.cc_calls_in_progress.inc()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        log.info("contact-center call %s: ringing the agent at %s", self.label, self.flow.setup.agent_address)
        self._start_writer()
        try:
            await self._feed(Started())
            while not self.flow.is_finished:
                await self._feed(await self.queue.get())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("contact-center call %s failed inside Hotline", self.label)
            await self._feed(Lost("Hotline hit an internal error during this call (see the server log)."))
        finally:
            await self._finish()

    async def _execute(self, command) -> None:
        if not await self._execute_common(command):
            log.error("contact-center call %s: unknown command %r", self.label, command)

