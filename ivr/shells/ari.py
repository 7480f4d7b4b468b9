"""The ARI shell: Asterisk events in, escalation-engine commands out.

One Stasis application. The dialplan's arguments say what a channel is:
``incoming,<dialed number>`` for a caller, ``leg,<call id>`` for an on-call leg
Hotline originated. Each call is a ``CallActor``: a task that feeds its events,
in order, to its ``EscalationCall`` and carries out the commands. Database
writes go through the actor's ordered writer so a slow disk never delays a
ring; a failed write is logged and the call goes on.

Everything the engine decides is in ``ivr/core/engine.py``; this file only
translates. After every (re)connection to ARI the controller reconciles what it
believes with what Asterisk has: calls still in Stasis are resumed from the
stored log, calls that vanished are closed in the log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from ivr.store import callstore
from ivr.asterisk.ari import CONNECTED, AriClient, AriError, AriNotFound
from ivr.asterisk.dialstrings import NotDialable, endpoint_for
from ivr.asterisk.causes import leg_end_cause
from ivr.shells.base import SORRY, CallActorBase
from ivr.shells.recordings import NotKept, keep_recording
from ivr.store.db import run_and_release
from ivr.core.engine import (
    CALLER,
    LEG_ID_MARK,
    Answer,
    Bridge,
    CallerHungUp,
    CallSetup,
    CallStatus,
    CallStarted,
    CancelTimer,
    Dial,
    DigitPressed,
    EscalationCall,
    HangupCaller,
    HangupLeg,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackFinished,
    RecordCaller,
    RecordingEnded,
    SaveVoicemail,
    StartRingback,
    StartTimer,
    StopPlayback,
    StopRecording,
    StopRingback,
    UpdateItem,
    UpdateLog,
)
from ivr.metrics import Metrics, watch_loop_lag
from ivr.runtime import Tasks
from ivr.tts import Synthesizer, TTSError

log = logging.getLogger(__name__)

RINGBACK_MEDIA = "tone:ring;tonezone=us"
LOST_MESSAGE = ("The call was lost: it ended while Hotline's controller was not connected to Asterisk "
                "(a restart or a lost connection).")
CALL_LOST = object()  # an actor's own event: its caller vanished while ARI was disconnected
ASTERISK_GONE = object()  # an actor's own event: ARI has not answered for controller.ari_lost_after seconds
GONE_MESSAGE = ("The call was lost: Hotline could not reach its Asterisk for {seconds:.0f} s (Asterisk stopped, "
                "or the connection to it was lost).")

# The only ARI events the controller reads (the app's event filter drops the rest at the source).
EVENTS_USED = ["StasisStart", "StasisEnd", "ChannelDestroyed", "ChannelStateChange", "ChannelDtmfReceived",
               "PlaybackFinished", "RecordingFinished", "RecordingFailed"]

class Controller:
    """The ARI shell: one Stasis application's events dispatched to the calls (``CallActor``) they concern."""

    def __init__(self, config, db, ari: AriClient, tts: Synthesizer, reads=None, metrics: Metrics | None = None):
        self.config = config
        self.db = db
        self.reads = reads or (lambda fn, *args: run_and_release(db, fn, *args))
        self.metrics = metrics or Metrics()
        self.ari = ari
        self.tts = tts
        self.actors: set[CallActor] = set()
        self.by_channel: dict[str, CallActor] = {}  # and the contact center's actors (same questions)
        self.tasks = Tasks("ARI controller")
        #: Called after each reconnection with the channels Asterisk has and when they were listed
        #: (the contact center's calls, ivr/shells/contact_center.py).
        self.reconcilers: list = []
        #: Asked in turn, ``await route(channel_id, dialed, caller)``, for a call to a number no policy
        #: routes (the contact center's IVR menus): the actor that took the call, or None.
        self.incoming_routes: list = []

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        self.spawn(watch_loop_lag(self.metrics))
        self.spawn(self._watch_asterisk_gone())
        async for event in self.ari.events():
            try:
                self.dispatch(event)
            except Exception:
                log.exception("error handling ARI event %s", event.get("type"))

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    async def close(self) -> None:
        for actor in list(self.actors):
            actor.task.cancel()
        await asyncio.gather(*[a.task for a in self.actors], return_exceptions=True)
        await self.tasks.close()

    # -- events ------------------------------------------------------------------------

    def dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == CONNECTED:
            self.spawn(self.reconcile())
            return
        channel = event.get("channel") or {}
        channel_id = channel.get("id")
        if kind == "StasisStart":
            args = event.get("args") or []
            if args[:1] == ["incoming"] and channel_id not in self.by_channel:
                dialed = args[1] if len(args) > 1 else channel.get("dialplan", {}).get("exten", "")
                caller = (channel.get("caller") or {}).get("number", "")
                CallActor(self, channel_id, dialed=dialed, caller=caller).start()
            elif args[:1] == ["leg"]:
                if channel_id in self.by_channel:
                    self._post(channel_id, lambda actor: actor.leg_answered(channel_id))
                else:
                    # A leg that answered after its call ended: nobody is waiting for it.
                    self.spawn(self._hang_up_stray(channel_id))
            return
        if kind == "PlaybackFinished":
            playback = event.get("playback") or {}
            target = playback.get("target_uri", "")
            if target.startswith("channel:"):
                self._post(target[len("channel:"):], lambda actor: actor.playback_finished(playback.get("id", "")))
            return
        if kind in ("RecordingFinished", "RecordingFailed"):
            recording = event.get("recording") or {}
            target = recording.get("target_uri", "")
            if target.startswith("channel:"):
                self._post(target[len("channel:"):], lambda actor: getattr(actor, "recording_ended", lambda *_: None)(
                    recording.get("name", ""), kind == "RecordingFinished", recording.get("cause", "")))
            return
        if kind == "ChannelStateChange" and channel.get("state") == "Ringing":
            self._post(channel_id, lambda actor: None if actor.is_caller(channel_id) else LegRinging(channel_id))
        elif kind == "ChannelDtmfReceived":
            digit = event.get("digit", "")
            self._post(channel_id, lambda actor: None if actor.is_caller(channel_id)
                       else DigitPressed(channel_id, digit))
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            cause, cause_txt = event.get("cause"), event.get("cause_txt", "")
            self._post(channel_id, lambda actor: actor.channel_gone(channel_id, cause, cause_txt))

    def hand_to_policy(self, caller_channel: str, dialed: str, caller: str, policy_id: str, log_id,
                       on_end=None) -> None:
        """A caller another service holds (a menu's leaf) goes to the escalation of ``policy_id``, its
        log ``log_id``; ``on_end(final_status, answered_by_user_id)`` when that call is over."""
        actor = CallActor(self, caller_channel, dialed=dialed, caller=caller)
        actor.policy_id, actor.preset_log_id, actor.on_end = policy_id, log_id, on_end
        actor.start()

    async def _hang_up_stray(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except AriError:
            pass

    def _post(self, channel_id: str | None, make_event) -> None:
        actor = self.by_channel.get(channel_id) if channel_id else None
        if actor is None:
            return  # not ours, or already finished: "not found" means already gone
        event = make_event(actor)
        if event is not None:
            actor.post(event)

    async def _watch_asterisk_gone(self) -> None:
        """Without ARI for ``controller.ari_lost_after`` seconds, the calls this controller runs are
        closed as lost: their Asterisk stopped (a node of several died) or cannot be reached, so nobody
        can ring, bridge or hang up for them any more. Without this, their logs would stay open until
        that Asterisk came back, which a dead node never does. Should it come back with some of their
        channels still there, the reconciliation hangs those up (their logs are closed)."""
        lost_after = float(self.config.controller.ari_lost_after or 0)
        if lost_after <= 0:
            return
        while True:
            await self.ari.connected.wait()
            while self.ari.connected.is_set():
                await asyncio.sleep(0.2)
            since = time.monotonic()
            while not self.ari.connected.is_set() and time.monotonic() - since < lost_after:
                await asyncio.sleep(0.2)
            if self.ari.connected.is_set():
                continue  # back in time: the reconciliation judges the calls
            calls = [actor for actor in self.actors if not actor.task.done()]
            log.error("ARI has not answered for %.0f s: closing the %d call(s) on that Asterisk as lost",
                      lost_after, len(calls))
            for actor in calls:
                actor.gone_after = lost_after
                actor.post(ASTERISK_GONE)
            for reconcile in self.reconcilers:  # the contact center's calls: no channel is left
                try:
                    reconcile({}, time.time())
                except Exception:
                    log.exception("a reconciliation hook failed")

    # -- reconciliation ------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the logs and the running actors agree with the channels Asterisk has now."""
        try:
            await self.ari.filter_events(EVENTS_USED)
        except AriError as exc:
            log.warning("could not filter ARI events (%s); every event type will be received", exc)
        # Only what existed before the channels were listed is judged by the list: a call arriving
        # (or a leg being originated) meanwhile is simply not in it yet.
        known = {actor: actor.settled_legs() for actor in self.actors}
        listed_at = time.time()
        try:
            # Asterisk prefixes its channel ids with its systemname, if set: this Asterisk's calls only.
            name = ((await self.ari.info()).get("config") or {}).get("name") or ""
            logs = await run_and_release(self.db, callstore.open_logs, f"{name}-" if name else "")
            channels = {c["id"]: c for c in await self.ari.channels()}
        except (AriError, Exception) as exc:  # noqa: BLE001 - retried at the next connection
            log.error("reconciliation with Asterisk failed: %s", exc)
            return
        for actor, legs in known.items():
            actor.reconcile(channels, legs)
        for reconcile in self.reconcilers:
            try:
                reconcile(channels, listed_at)
            except Exception:
                log.exception("a reconciliation hook failed")
        now = time.time()
        running = {actor.log_id for actor in self.actors}  # finishing ones included: their last write is coming
        for row in logs:
            channel_id = row.callProviderCallId
            if channel_id in self.by_channel or row.id in running:
                continue
            if channel_id in channels:
                log.warning("resuming call %s (channel %s) at escalation rule %s after a controller restart",
                            row.id, channel_id, row.currentEscalationRuleOrder)
                CallActor(self, channel_id, resume_log=row, live_channels=set(channels)).start()
            else:
                log.warning("call %s (channel %s) ended while Hotline was not connected to Asterisk; closing its log",
                            row.id, channel_id)
                try:
                    await run_and_release(self.db, callstore.close_lost_call, row.id, LOST_MESSAGE, now)
                except Exception:
                    log.exception("could not close the log of lost call %s", row.id)
        await self._adopt_strays(channels)

    async def _adopt_strays(self, channels: dict[str, dict]) -> None:
        """Channels in this app that no call runs: a caller whose controller stopped before its log
        was written gets its call now; anything else left there (a leg, a caller whose call is
        over) is hung up. Channels newer than ``channels`` are left to their own StasisStart."""
        try:
            in_app = (await self.ari.application()).get("channel_ids") or []
        except AriError as exc:
            log.warning("could not list the channels in ARI application %s: %s", self.ari.app, exc)
            return
        strays = [cid for cid in in_app if cid not in self.by_channel and cid in channels]
        if not strays:
            return
        try:
            logged = await run_and_release(self.db, callstore.logged_channels, strays)
        except Exception:  # noqa: BLE001 - retried at the next connection
            log.exception("could not look up the logs of channels left in Stasis")
            return
        for channel_id in strays:
            channel = channels[channel_id]
            if LEG_ID_MARK in channel_id or channel_id in logged:
                log.warning("hanging up channel %s, left in Stasis by a call that is over", channel_id)
                self.spawn(self._hang_up_stray(channel_id))
            elif channel_id not in self.by_channel:
                log.warning("caller channel %s was in Stasis with no call running (the controller stopped "
                            "before logging it): starting its call now", channel_id)
                CallActor(self, channel_id, dialed=(channel.get("dialplan") or {}).get("exten", ""),
                          caller=(channel.get("caller") or {}).get("number", "")).start()


class CallActor(CallActorBase):
    """One incoming call over ARI: its engine, its channels, its timers and its ordered log writes."""

    records_voicemail = True  # ARI records the caller's channel (a policy's voicemail after NoAnswer)

    def __init__(self, controller: Controller, caller_channel: str, *, dialed: str = "", caller: str = "",
                 resume_log=None, live_channels: set[str] = frozenset()):
        super().__init__(controller, caller_channel, dialed, caller)
        self.resume_log = resume_log
        self.live_channels = live_channels  # resuming: the channels Asterisk had
        self.has_dialed = False
        self.legs: set[str] = set()
        self.originating: set[str] = set()  # legs whose originate request has not been answered yet
        self.answered_legs: set[str] = set()
        self.ringback_id: str | None = None
        self.ringback_seq = 0
        self.bridge_id: str | None = None
        self.task: asyncio.Task | None = None
        self.on_end = None  # called with (final status, answering user) when the call is over
        self.gone_after = 0.0  # seconds without ARI, when the call is closed for that (ASTERISK_GONE)

    def start(self) -> None:
        self.c.metrics.calls_in_progress.inc()
        self.c.actors.add(self)
        self.c.by_channel[self.caller_channel] = self
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run())

    def is_caller(self, channel_id: str) -> bool:
        return channel_id == self.caller_channel

    def playback_finished(self, playback_id: str) -> PlaybackFinished | None:
        """None for the shell's own ringback, which the engine never asked for by id."""
        if self.engine is not None and playback_id.startswith(f"{self.engine.setup.call_id}-ringback-"):
            return None
        return PlaybackFinished(playback_id)

    def leg_answered(self, leg: str) -> LegAnswered:
        self.answered_legs.add(leg)
        return LegAnswered(leg)

    def recording_ended(self, name: str, ok: bool, detail: str) -> RecordingEnded:
        return RecordingEnded(name, ok, detail)

    def channel_gone(self, channel_id: str, cause, cause_txt: str) -> Any:
        if channel_id == self.caller_channel:
            return CallerHungUp()
        detail = f"{cause_txt} (cause {cause})" if cause is not None else ""
        return LegEnded(channel_id, leg_end_cause(cause, channel_id in self.answered_legs), detail)

    def settled_legs(self) -> set[str]:
        """The legs Asterisk has surely heard of (their originate was answered)."""
        return self.legs - self.originating

    def reconcile(self, channels: dict[str, dict], legs: set[str]) -> None:
        """Events lost while ARI was disconnected: whatever vanished ended, for a reason nobody saw.
        ``legs``: the legs this call had before ``channels`` was listed."""
        if self.caller_channel not in channels:
            self.post(CALL_LOST)
            return
        for leg in legs & self.legs:
            channel = channels.get(leg)
            if channel is None:
                self.post(LegEnded(leg, "hangup" if leg in self.answered_legs else "failed",
                                   "the leg vanished while Hotline was disconnected from Asterisk"))
            elif channel.get("state") == "Up" and leg not in self.answered_legs:
                self.post(self.leg_answered(leg))  # its StasisStart was lost
        # The engine waits for the end of the greeting or closing message: that event may be lost too.
        playback = self.engine.state.caller_playback_id if self.engine is not None else None
        if playback:
            self.c.spawn(self._finished_if_gone(playback))

    async def _finished_if_gone(self, playback_id: str) -> None:
        try:
            await self.c.ari.playback(playback_id)
        except AriNotFound:
            self.post(PlaybackFinished(playback_id))  # a stale one (already reported) is ignored
        except AriError as exc:
            log.warning("call %s: could not look up playback %s: %s", self.log_id, playback_id, exc)

    # -- the call --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if self.resume_log is not None:
                setup = await self._resume()
            else:
                setup = await self._open()
            if setup is None:
                return
            if self.engine is None:
                self.engine = EscalationCall(setup)
                await self._feed(CallStarted())
            # Only now the log writes and the prompt synthesis: nothing may run before the first
            # originates are on their way (the loop runs ready tasks in order).
            self._start_writer()
            self.c.spawn(self._warm_prompts(setup))
            while not self.engine.is_finished:
                event = await self.queue.get()
                if event is CALL_LOST:
                    await self._close_lost()
                    return
                if event is ASTERISK_GONE:
                    self._close_gone()
                    return
                await self._feed(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call on channel %s failed inside Hotline", self.caller_channel)
            await self._fail_safe()
        finally:
            await self._finish()

    async def _resume(self) -> CallSetup | None:
        row = self.resume_log
        self.log_id, self.project_id = row.id, row.projectId
        now = time.time()
        talking = None
        if row.status == CallStatus.CONNECTED.value:
            talking = await run_and_release(self.c.db, callstore.connected_leg, row)
        old_legs = await run_and_release(self.c.db, callstore.close_open_items, row.id,
                                         "The controller restarted while this number was ringing.", now,
                                         talking.leg_id if talking else None)
        for leg in old_legs:
            await self._ignore_gone(self.c.ari.hangup(leg))
        setup = await run_and_release(self.c.db, callstore.resume_setup, row, f"{row.id}-r{secrets.token_hex(3)}",
                                      self.c.config.controller.confirm_timeout)
        if setup is not None:
            setup = self._shell_setup(setup)
        if setup is None:
            await run_and_release(self.c.db, callstore.close_lost_call, row.id,
                                  "The call's policy was deleted while the controller restarted.", now)
            await self._ignore_gone(self.c.ari.hangup(self.caller_channel))
            if talking:
                await self._ignore_gone(self.c.ari.hangup(talking.leg_id))
            return None
        if talking is not None:
            # The conversation goes on in its bridge (Asterisk keeps it): take it over, so that
            # either side's hang-up completes the call.
            leg = talking.leg_id
            log.warning("call %s: taking over the conversation with %s after a controller restart",
                        self.log_id, talking.contact.address)
            self.engine = EscalationCall.resume_connected(setup, leg, talking.contact, talking.rule_order,
                                                          talking.dialed_at, talking.connected_at)
            self.legs.add(leg)
            self.answered_legs.add(leg)
            self.c.by_channel[leg] = self
            self.bridge_id = await self._bridge_holding(self.caller_channel)
            if leg not in self.live_channels:
                self.post(LegEnded(leg, "hangup", "the on-call user hung up while the controller was restarting"))
        return setup

    async def _bridge_holding(self, channel_id: str) -> str | None:
        try:
            bridges = await self.c.ari.bridges()
        except AriError as exc:
            log.warning("call %s: could not list the bridges: %s", self.log_id, exc)
            return None
        return next((b["id"] for b in bridges if channel_id in (b.get("channels") or [])), None)

    async def _feed(self, event) -> None:
        step = self._step(event)
        if step is None:
            return
        commands, origin = step
        # Ring everyone of a rule at once, and before the caller-side requests (answer, ringback) that the
        # engine lists first: the on-call INVITEs go out one HTTP round trip after the decision.
        dials = [asyncio.ensure_future(self._originate(cmd)) for cmd in commands
                 if isinstance(cmd, Dial) and self._register_leg(cmd)]
        if dials:
            await asyncio.sleep(0)  # let the originate requests leave first
            if self.has_dialed:  # a later rule (or round) starting: how long after the rule before ended
                self.c.metrics.escalation_latency.observe(max(0.0, time.time() - origin))
            self.has_dialed = True
        try:
            for command in commands:
                if not isinstance(command, Dial):
                    await self._execute(command)
        finally:
            if dials:
                await asyncio.gather(*dials)

    async def _execute(self, command) -> None:
        ari = self.c.ari
        if isinstance(command, UpdateLog):
            self._record_log(command)
        elif isinstance(command, UpdateItem):
            self._record_item(command)
        elif isinstance(command, StartTimer):
            self._start_timer(command.timer_id, command.at)
        elif isinstance(command, CancelTimer):
            self._cancel_timer(command.timer_id)
        elif isinstance(command, Answer):
            await self._ignore_gone(ari.answer(self.caller_channel))
        elif isinstance(command, Play):
            await self._play(command)
        elif isinstance(command, StopPlayback):
            await self._ignore_gone(ari.stop_playback(command.playback_id))
        elif isinstance(command, StartRingback):
            self.ringback_seq += 1
            self.ringback_id = f"{self.engine.setup.call_id}-ringback-{self.ringback_seq}"
            await self._ignore_gone(ari.play(self.caller_channel, self.ringback_id, RINGBACK_MEDIA))
        elif isinstance(command, StopRingback):
            if self.ringback_id:
                await self._ignore_gone(ari.stop_playback(self.ringback_id))
                self.ringback_id = None
        elif isinstance(command, Bridge):
            await self._bridge(command.leg_id)
        elif isinstance(command, HangupLeg):
            await self._ignore_gone(ari.hangup(command.leg_id))
        elif isinstance(command, HangupCaller):
            await self._ignore_gone(ari.hangup(self.caller_channel))
        elif isinstance(command, RecordCaller):
            await self._record(command)
        elif isinstance(command, StopRecording):
            await self._ignore_gone(ari.stop_recording(command.name))
        elif isinstance(command, SaveVoicemail):
            await self._save_voicemail(command.name)
        else:
            log.error("call %s: unknown command %r", self.log_id, command)

    async def _record(self, command: RecordCaller) -> None:
        """The voicemail: after a beep, until #, the caller's hang-up, silence or its maximum length."""
        try:
            await self.c.ari.record_channel(self.caller_channel, command.name, max_seconds=int(command.max_seconds),
                                            max_silence_seconds=max(1, int(command.max_silence_seconds)))
        except AriError as exc:
            if not isinstance(exc, AriNotFound):
                log.error("call %s: could not record the voicemail: %s", self.log_id, exc)
            # The engine waits for the recording's end.
            self.post(RecordingEnded(command.name, False, f"Asterisk did not record it ({exc.message or exc.status})"))

    async def _save_voicemail(self, name: str) -> None:
        """Keep the voicemail under the recordings directory, then its file name and its alert (one write)."""
        relative = Path(str(self.project_id)) / f"policy-{self.log_id}.wav"
        try:
            await keep_recording(self.c.ari, name, self.c.config.recordings_dir, relative)
        except NotKept as exc:
            log.error("call %s: the voicemail was not kept: %s", self.log_id, exc)
            self.writes.put_nowait((callstore.voicemail_not_kept, self.log_id, str(exc)))
            return
        log.info("call %s: voicemail kept in %s", self.log_id, relative)
        self.writes.put_nowait((callstore.save_voicemail, self.log_id, str(relative),
                                bool(self.c.config.notify.webhook_url)))

    def _endpoint(self, address: str) -> str:
        sip = self.c.config.sip
        return endpoint_for(address, sip.outbound_trunk, sip.allowed_hosts)

    def _register_leg(self, command: Dial) -> bool:
        """Log the ring attempt and route the leg's events to this call; False if it cannot be dialed."""
        leg = command.leg_id
        self.writes.put_nowait((callstore.create_item, self.log_id, self.project_id, leg, command.contact,
                                command.rule_id, command.rule_order, time.time()))
        try:
            self._endpoint(command.contact.address)
        except NotDialable as exc:
            log.error("call %s: cannot ring %s: %s", self.log_id, command.contact.address, exc)
            self.post(LegEnded(leg, "failed", str(exc)))
            return False
        # Registered before the originate: its StasisStart can arrive before the HTTP answer.
        self.legs.add(leg)
        self.c.by_channel[leg] = self
        return True

    async def _originate(self, command: Dial) -> None:
        leg = command.leg_id
        setup = self.engine.setup
        caller_id = setup.caller_number if setup.caller_number[:1] == "+" else None
        self.originating.add(leg)
        try:
            await self.c.ari.originate(self._endpoint(command.contact.address), leg, f"leg,{setup.call_id}",
                                       timeout=int(command.timeout) + 5, caller_id=caller_id)
        except AriError as exc:
            log.warning("call %s: could not ring %s: %s", self.log_id, command.contact.address, exc)
            self.post(LegEnded(leg, "failed", f"Asterisk refused the call ({exc.message or exc.status})"))
        finally:
            self.originating.discard(leg)

    async def _play(self, command: Play) -> None:
        channel = self.caller_channel if command.target == CALLER else command.target
        try:
            media = await self.c.tts.media(command.text)
            await self.c.ari.play(channel, command.playback_id, media)
        except (TTSError, AriError) as exc:
            if not isinstance(exc, AriNotFound):
                log.error("call %s: could not play a prompt to %s: %s", self.log_id, channel, exc)
            # The engine waits for the end of every playback it asked for.
            self.post(PlaybackFinished(command.playback_id))

    async def _bridge(self, leg: str) -> None:
        self.answered_legs.add(leg)
        self.bridge_id = f"{self.engine.setup.call_id}-bridge"
        problem: AriError | None = None
        created = False
        for attempt in (1, 2):
            try:
                if not created:
                    await self.c.ari.create_bridge(self.bridge_id)
                    created = True
                await self.c.ari.add_to_bridge(self.bridge_id, [self.caller_channel, leg])
                return
            except AriNotFound:
                return  # a party left: its own event says so
            except AriError as exc:
                problem = exc
                log.error("call %s: could not bridge the caller with %s (attempt %d): %s", self.log_id, leg,
                          attempt, exc)
                await asyncio.sleep(0.2)
        # Both would wait in silence: end the call, and say why.
        self.post(LegEnded(leg, "failed", f"Asterisk could not bridge them ({problem})"))

    async def _ignore_gone(self, coro) -> None:
        try:
            await coro
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("call %s: %s", self.log_id, exc)

    async def _route_elsewhere(self) -> bool:
        for route in self.c.incoming_routes:
            try:
                taker = await route(self.caller_channel, self.dialed, self.caller)
                if taker is not None:
                    while not self.queue.empty():  # what happened meanwhile (the caller hung up) is theirs
                        taker.post(self.queue.get_nowait())
                    return True
            except Exception:
                log.exception("call from %s to %s: a router of incoming calls failed", self.caller, self.dialed)
        return False

    async def _announce_and_hang_up(self, text: str) -> None:
        ari = self.c.ari
        playback_id = f"{self.caller_channel}-announce"
        await self._ignore_gone(ari.answer(self.caller_channel))
        try:
            await ari.play(self.caller_channel, playback_id, await self.c.tts.media(text))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                event = await asyncio.wait_for(self.queue.get(), deadline - time.monotonic())
                if isinstance(event, (CallerHungUp,)):
                    return
                if isinstance(event, PlaybackFinished) and event.playback_id == playback_id:
                    break
        except (AriError, TTSError, asyncio.TimeoutError) as exc:
            log.warning("could not play an announcement on %s: %s", self.caller_channel, exc)
        await self._ignore_gone(ari.hangup(self.caller_channel))

    async def _close_lost(self) -> None:
        """The caller's channel vanished while ARI was disconnected: say so, not that someone hung up."""
        log.warning("call %s: its channel %s vanished while Hotline was disconnected from Asterisk; "
                    "closing its log", self.log_id, self.caller_channel)
        for leg in [*self.legs, self.caller_channel]:  # whatever of the call is left must not wait in silence
            await self._ignore_gone(self.c.ari.hangup(leg))
        self.writes.put_nowait((callstore.close_lost_call, self.log_id, LOST_MESSAGE, time.time()))

    def _close_gone(self) -> None:
        """ARI has not answered for a while: the call cannot go on. Nothing to hang up (Asterisk does
        not answer); the reconciliation hangs up whatever is left should it come back."""
        log.warning("call %s (channel %s): its Asterisk has not answered for %.0f s; closing its log as lost",
                    self.log_id, self.caller_channel, self.gone_after)
        if self.log_id is not None:
            self.writes.put_nowait((callstore.close_lost_call, self.log_id,
                                    GONE_MESSAGE.format(seconds=self.gone_after), time.time()))

    async def _fail_safe(self) -> None:
        """A bug must not leave a caller in silence or a log open: apologize, hang up, close."""
        for leg in list(self.legs):
            await self._ignore_gone(self.c.ari.hangup(leg))
        if self.log_id is not None:
            self.writes.put_nowait((callstore.close_lost_call, self.log_id,
                                    "Hotline hit an internal error during this call (see the server log).",
                                    time.time()))
        try:
            await asyncio.wait_for(self._announce_and_hang_up(SORRY), 35)
        except Exception:  # noqa: BLE001 - best effort; the hang-up below is what matters
            await self._ignore_gone(self.c.ari.hangup(self.caller_channel))

    async def _finish(self) -> None:
        self._count_end()
        # From now on the call's channels are strays: a leg answering late is hung up by dispatch.
        for channel in [self.caller_channel, *self.legs]:
            if self.c.by_channel.get(channel) is self:
                del self.c.by_channel[channel]
        if self.bridge_id:
            await self._ignore_gone(self.c.ari.destroy_bridge(self.bridge_id))
        try:
            await self._flush_writes()
        finally:
            self.c.actors.discard(self)
            if self.on_end is not None:
                try:
                    self.on_end(self.final_status, self.answered_by)
                except Exception:
                    log.exception("call %s: its end could not be reported", self.log_id)
