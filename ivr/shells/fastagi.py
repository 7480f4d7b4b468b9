"""The FastAGI shell of the escalation engine: Incoming Call Policies for dialplan-first installs.

The dialplan sends a caller with ``AGI(agi://HOST:4573/incoming-call-policy,<secret>,<dialed>,<caller ID>)``
(extensions.conf does it when the ARI controller is not connected; the server checks and strips the
secret, so the routes here see ``<dialed>,<caller ID>``, both filtered by the dialplan). The same
engine as the ARI shell (ivr/core/engine.py) decides; this file turns its commands into AGI commands
on the caller's channel and turns what Asterisk reports into its events:

==========================  ==================================================================
engine command              over FastAGI
==========================  ==================================================================
Answer / Play(caller)       ``ANSWER`` (``Answer(,i)``, not waiting for media, when the legs ring
                            next) / ``STREAM FILE <prompt>``, then ``PlaybackFinished``
Dial (all legs of a rule)   one ``EXEC Dial(<legs joined by &>,<rule's seconds>,rg b(...) U(...))``
StartRingback               Dial's ``r`` option (in-band ring tone); StopRingback: nothing to do
Play(leg) / Bridge(leg)     the leg's own FastAGI session, run by Dial's ``U()`` subroutine when
                            the leg answers (route ``leg-answered``): ``STREAM FILE <prompt> "1"``;
                            bridging = ``HOTLINE_LEG_CONFIRMED=1``, then returning from the
                            subroutine (GOSUB_RESULT empty); without that variable the dialplan
                            hangs the leg up (a refused, lost or stopped session fails closed)
HangupLeg(leg)              confirming leg: ``GOSUB_RESULT=CONTINUE`` (Dial hangs it up and returns);
                            its confirmation window is also armed as ``SET AUTOHANGUP`` so that a
                            prompt being played cannot make it late; a ringing leg: nothing
                            (Dial ends it)
HangupCaller                ``HANGUP``
StartTimer                  a timer on the event loop; a confirmation window is also the leg's
                            autohangup. The engine arms no rule timer: the set-up says
                            ``dial_enforces_timeout`` (Dial's own timeout ends the rule's legs,
                            reported as ``LegEnded(no_answer)``), and the shell reports
                            ``DialStarted`` when a queued Dial really starts ringing
==========================  ==================================================================

How legs end: Dial's ``b()`` subroutine pushes a hangup handler on every leg before it rings;
when the leg ends, the handler calls the route ``leg-ended`` with the leg
(``DIALEDPEERNUMBER``), ``HANGUPCAUSE`` and ``CHANNEL(hangupsource)``. A leg the far end ended
(busy, declined, hung up) is reported at once with its cause; a leg Asterisk ended (Dial's
timeout, the caller gone) is decided by Dial's return (``DIALSTATUS``, or the caller's hang-up);
cause 26 with no far-end source is Dial cutting a leg off because another one answered.

Where the dialplan shell cannot behave like the ARI shell (the logs say which happened):

* Dial rings a rule's legs in parallel and gives the call to the *first leg that answers*: it
  ends the others' ringing at that moment, before that leg pressed 1. Their items say
  "Stopped ringing: ... answered first" (not "answered elsewhere by user X"), and if the
  answering leg then fails to confirm, the rule has no candidate left and the call escalates at
  once (ARI would let the others ring until the rule's time is up).
* One application runs on the caller's channel at a time: the next rule cannot ring while a leg
  of the current rule is still deciding whether to press 1; it rings when that leg is done.
* A caller who hangs up while a leg hears the confirmation prompt is seen at once only when AMI
  is connected (its HangupRequest event); without AMI, when the confirmation ends.
* A FastAGI session ends with the process: a call is not resumed after a restart (the ARI
  controller resumes its calls). The dialplan continues after ``AGI()`` (AGISTATUS=FAILURE: the
  fallback number or the apology), and the FastAGI server closes such logs as lost when it
  starts again.
* The legs show the caller's caller ID (Dial passes it on), like ARI does for E.164 callers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from ivr.store import callstore
from ivr.asterisk.agi import AgiChannel, AgiError, AgiHangup, AgiServer
from ivr.asterisk.ami import AmiError
from ivr.asterisk.causes import ANSWERED_ELSEWHERE, cause_text, int_or_none, leg_end_cause
from ivr.asterisk.dialstrings import NotDialable, dial_target, safe_in_dialplan
from ivr.shells.base import SORRY, CallActorBase
from ivr.store.db import run_and_release
from ivr.core.engine import (
    CALLER,
    Answer,
    Bridge,
    CallerHungUp,
    CallStarted,
    CancelTimer,
    Dial,
    DialStarted,
    DigitPressed,
    EscalationCall,
    HangupCaller,
    HangupLeg,
    LegAnswered,
    LegEnded,
    LegPhase,
    Play,
    PlaybackFinished,
    StartRingback,
    StartTimer,
    StopPlayback,
    StopRingback,
    UpdateItem,
    UpdateLog,
)
from ivr.metrics import Metrics
from ivr.runtime import Tasks
from ivr.tts import Synthesizer, TTSError

log = logging.getLogger(__name__)

ROUTE_INCOMING = "incoming-call-policy"
ROUTE_LEG_ANSWERED = "leg-answered"
ROUTE_LEG_ENDED = "leg-ended"
LEG_SUBROUTINE = "hotline-agi-leg"
CONFIRM_SUBROUTINE = "hotline-agi-confirm"
#: Set on a leg Hotline bridges: [hotline-agi-confirm] bridges no leg without it. AGISTATUS cannot
#: say it: a FastAGI server that closes the connection (it refused the request, or stopped) is a
#: SUCCESS for Asterisk.
CONFIRMED_VARIABLE = "HOTLINE_LEG_CONFIRMED"
CUT_OFF_MESSAGE = ("Stopped ringing: another number of this rule answered first (the dialplan's Dial ends "
                   "the other calls at the first answer, before anyone pressed 1)")
LOST_MESSAGE = ("The call was lost: its FastAGI session ended when Hotline stopped (a call run over "
                "FastAGI cannot be resumed).")
STOPPED_MESSAGE = "Hotline stopped during the call (a call run over FastAGI ends with the process)."
RECONCILE_EVERY = 60.0   # seconds between two looks for FastAGI call logs left open
_UNANSWERED = (LegPhase.DIALING, LegPhase.RINGING)


# -- the shell's own events (facts of the FastAGI world, turned into engine events) ---------


@dataclass
class DialOp:
    """One ``EXEC Dial`` on the caller's channel: a rule's legs, by Dial target."""

    legs: dict[str, str]              # DIALEDPEERNUMBER -> leg id
    timeout: int
    decided_at: float
    escalation: bool                  # not the call's first Dial (for the latency histogram)
    started_at: float | None = None
    done: bool = False


@dataclass(frozen=True)
class _DialDone:
    op: DialOp
    result: int | None
    status: str


@dataclass(frozen=True)
class _LegReport:
    target: str
    cause: int | None
    by_far_end: bool
    channel: str


@dataclass(frozen=True)
class _LegSessionStarted:
    leg_id: str


@dataclass(frozen=True)
class _CallerGone:
    why: str


@dataclass
class LegSession:
    """The FastAGI session of an answered leg (Dial's U() subroutine), fed instructions."""

    chan: AgiChannel
    leg_id: str
    instructions: asyncio.Queue = field(default_factory=asyncio.Queue)
    playing: bool = False


class AgiCalls:
    """The routes ``incoming-call-policy``, ``leg-answered`` and ``leg-ended``, and their calls."""

    def __init__(self, config, db, tts: Synthesizer, metrics: Metrics | None = None, reads=None, ami=None):
        self.config = config
        self.db = db
        self.reads = reads or (lambda fn, *args: run_and_release(db, fn, *args))
        self.tts = tts
        self.metrics = metrics or Metrics()
        self.ami = ami
        self.actors: set[AgiCallActor] = set()
        self.by_call: dict[str, AgiCallActor] = {}
        self.by_uniqueid: dict[str, AgiCallActor] = {}
        self.tasks = Tasks("FastAGI calls")
        if ami is not None:
            ami.add_listener(self._ami_event)

    def add_routes(self, server: AgiServer) -> None:
        server.add_route(ROUTE_INCOMING, self.incoming)
        server.add_route(ROUTE_LEG_ANSWERED, self.leg_answered)
        server.add_route(ROUTE_LEG_ENDED, self.leg_ended)
        server.add_route("health", _health_route)

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    async def close(self) -> None:
        if self.ami is not None:
            self.ami.remove_listener(self._ami_event)
        await self.tasks.close()

    def start(self) -> None:
        self.spawn(self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        while True:
            if self.ami is not None and self.ami.connected.is_set():
                try:
                    await self.close_lost_logs()
                except Exception:  # noqa: BLE001 - tried again later
                    log.exception("reconciling the FastAGI call logs failed")
                await asyncio.sleep(RECONCILE_EVERY)
            else:
                await asyncio.sleep(0.5)

    async def close_lost_logs(self) -> int:
        """Close the open logs of FastAGI calls whose channel Asterisk no longer has and that no
        session here runs (their FastAGI server stopped: a previous process). A call whose channel
        still exists may belong to another Hotline's FastAGI server: it is looked at again later."""
        # Taken before the read: a call that ends meanwhile still counts as live here.
        live = {actor.caller_channel for actor in self.actors}
        try:
            # Asterisk prefixes its channel ids with its systemname, if set: this Asterisk's calls only.
            name = (await self.ami.send({"Action": "CoreSettings"})).get("SystemName") or ""
        except AmiError as exc:
            log.warning("cannot ask Asterisk its system name to reconcile FastAGI call logs: %s", exc)
            return 0
        rows = await run_and_release(self.db, callstore.open_agi_logs, f"{name}-" if name else "")
        rows = [row for row in rows if row.callProviderCallId not in live]
        if not rows:
            return 0
        try:
            channels = {event.uniqueid for event in
                        await self.ami.send_list({"Action": "CoreShowChannels"}, "CoreShowChannelsComplete")}
        except AmiError as exc:
            log.warning("cannot list Asterisk's channels to reconcile FastAGI call logs: %s", exc)
            return 0
        closed = 0
        for row in rows:
            if row.callProviderCallId[len(callstore.AGI_CALL_PREFIX):] in channels:
                continue
            log.warning("FastAGI call %s (%s) ended while no FastAGI session ran it; closing its log",
                        row.id, row.callProviderCallId)
            await run_and_release(self.db, callstore.close_lost_call, row.id, LOST_MESSAGE, time.time())
            closed += 1
        return closed

    # -- routes ------------------------------------------------------------------------

    async def incoming(self, chan: AgiChannel) -> None:
        actor = AgiCallActor(self, chan)
        self.metrics.agi_sessions.labels(ROUTE_INCOMING).inc()
        try:
            await actor.run()
        finally:
            self.metrics.agi_sessions.labels(ROUTE_INCOMING).dec()

    async def leg_answered(self, chan: AgiChannel) -> None:
        call_id, target = (chan.args + ["", ""])[:2]
        actor = self.by_call.get(call_id)
        self.metrics.agi_sessions.labels(ROUTE_LEG_ANSWERED).inc()
        try:
            if actor is None:
                log.warning("FastAGI leg %s (%s) answered for call %r, which is not running here: hanging it up",
                            target, chan.channel, call_id)
                await _reject_leg(chan)
                return
            await actor.leg_session(chan, target)
        finally:
            self.metrics.agi_sessions.labels(ROUTE_LEG_ANSWERED).dec()

    async def leg_ended(self, chan: AgiChannel) -> None:
        """Run from a leg's hangup handler: report and return at once (Dial waits for it)."""
        call_id, target, cause, source = (chan.args + ["", "", "", ""])[:4]
        actor = self.by_call.get(call_id)
        if actor is not None:
            actor.post(_LegReport(target, int_or_none(cause), bool(source) and source == chan.channel,
                                  chan.channel))

    def _ami_event(self, event) -> None:
        # The caller's own hang-up, seen at once even while Dial runs a leg's confirmation.
        if event.event == "HangupRequest":
            actor = self.by_uniqueid.get(event.uniqueid)
            if actor is not None:
                actor.post(_CallerGone("the caller hung up (AMI HangupRequest)"))


async def _reject_leg(chan: AgiChannel) -> None:
    try:
        await chan.set_variable("GOSUB_RESULT", "CONTINUE")
    except AgiError:
        pass


class AgiCallActor(CallActorBase):
    """One incoming call over FastAGI: its engine, its Dial operations, its leg sessions, its writes."""

    shell = " over FastAGI"
    dial_enforces_timeout = True

    def __init__(self, calls: AgiCalls, chan: AgiChannel):
        args = chan.args
        caller = args[1] if len(args) > 1 else chan.headers.get("agi_callerid", "")
        super().__init__(calls, callstore.AGI_CALL_PREFIX + (chan.uniqueid or chan.channel),
                         dialed=args[0] if args else chan.headers.get("agi_extension", ""),
                         caller="" if caller in ("unknown", "<unknown>") else caller)
        self.chan = chan
        self.uniqueid = chan.uniqueid
        self.ops: asyncio.Queue = asyncio.Queue()
        self.dial_ops: list[DialOp] = []
        self.op_of: dict[str, DialOp] = {}         # leg id -> its Dial
        self.sessions: dict[str, LegSession] = {}
        self.caller_gone = False
        self._plays_to_caller = False
        self.event_at = time.time()                 # when the event being handled arrived
        self.caller_task: asyncio.Task | None = None

    # -- the call --------------------------------------------------------------------------

    async def run(self) -> None:
        self.c.metrics.calls_in_progress.inc()
        self.c.actors.add(self)
        if self.uniqueid:
            self.c.by_uniqueid[self.uniqueid] = self
        try:
            setup = await self._open()
            if setup is None:
                return
            self.engine = EscalationCall(setup)
            self.c.by_call[setup.call_id] = self
            self.caller_task = asyncio.get_running_loop().create_task(self._caller_loop())
            await self._feed(CallStarted())
            self._start_writer()
            self.c.spawn(self._warm_prompts(setup))
            while not self.engine.is_finished:
                event = await self.queue.get()
                self.event_at = time.time()
                await self._handle(event)
            await self._drain_caller()
        except asyncio.CancelledError:
            if self.log_id is not None and self.final_status is None:
                self.writes.put_nowait((callstore.close_lost_call, self.log_id, STOPPED_MESSAGE, time.time()))
            raise
        except Exception:
            log.exception("FastAGI call on %s failed inside Hotline", self.chan.channel)
            await self._fail_safe()
        finally:
            await self._finish()

    async def _handle(self, event) -> None:
        if isinstance(event, _DialDone):
            await self._dial_done(event)
        elif isinstance(event, _LegReport):
            await self._leg_report(event)
        elif isinstance(event, _LegSessionStarted):
            await self._feed(LegAnswered(event.leg_id))
        elif isinstance(event, _CallerGone):
            if not self.caller_gone:
                self.caller_gone = True
                log.debug("call %s: %s", self.log_id, event.why)
            await self._feed(CallerHungUp())
        else:
            await self._feed(event)

    async def _feed(self, event) -> None:
        if self.engine.is_finished:
            return
        step = self._step(event)
        if step is None:
            return
        commands, _ = step
        # A leg's confirmation deadline goes to its session before the prompt it plays.
        for command in commands:
            if isinstance(command, StartTimer) and command.timer_id.startswith("confirm:"):
                session = self.sessions.get(command.timer_id.partition(":")[2])
                if session is not None:
                    session.instructions.put_nowait(("deadline", command.at))
        self._plays_to_caller = any(isinstance(c, Play) and c.target == CALLER for c in commands)
        dials = [c for c in commands if isinstance(c, Dial)]
        for command in commands:
            await self._execute(command)
        if dials:
            self._queue_dial(dials)

    async def _execute(self, command) -> None:
        if isinstance(command, UpdateLog):
            self._record_log(command)
        elif isinstance(command, UpdateItem):
            self._record_item(command)
        elif isinstance(command, StartTimer):
            self._start_timer(command.timer_id, command.at)
        elif isinstance(command, CancelTimer):
            self._cancel_timer(command.timer_id)
        elif isinstance(command, Answer):
            self.ops.put_nowait(("answer", not self._plays_to_caller))
        elif isinstance(command, Play):
            if command.target == CALLER:
                self.ops.put_nowait(("play", command.playback_id, command.text))
            else:
                session = self.sessions.get(command.target)
                if session is not None:
                    session.instructions.put_nowait(("play", command.playback_id, command.text))
        elif isinstance(command, Bridge):
            session = self.sessions.get(command.leg_id)
            if session is not None:
                session.instructions.put_nowait(("bridge",))
        elif isinstance(command, HangupLeg):
            await self._hang_up_leg(command.leg_id)
        elif isinstance(command, HangupCaller):
            self.ops.put_nowait(("hangup",))
        elif isinstance(command, (StartRingback, StopRingback, StopPlayback, Dial)):
            pass  # Dial's r option rings back; a prompt stops at the key that ends it; Dial: below
        else:
            log.error("call %s: unknown command %r", self.log_id, command)

    async def _hang_up_leg(self, leg_id: str) -> None:
        session = self.sessions.get(leg_id)
        if session is None:
            return  # still ringing inside Dial (which ends it), or already gone
        session.instructions.put_nowait(("reject",))
        ami = self.c.ami
        if session.playing and ami is not None and ami.connected.is_set() and session.chan.channel:
            # The session is inside STREAM FILE and cannot take a command until it ends.
            try:
                await ami.send({"Action": "Hangup", "Channel": session.chan.channel, "Cause": "16"})
            except Exception as exc:  # noqa: BLE001 - the confirmation's autohangup ends it anyway
                log.debug("call %s: AMI could not hang up %s: %s", self.log_id, session.chan.channel, exc)

    # -- Dial ------------------------------------------------------------------------------

    def _queue_dial(self, dials: list[Dial]) -> None:
        sip = self.c.config.sip
        legs: dict[str, str] = {}
        now = time.time()
        for command in dials:
            self.writes.put_nowait((callstore.create_item, self.log_id, self.project_id, command.leg_id,
                                    command.contact, command.rule_id, command.rule_order, now))
            try:
                target = dial_target(command.contact.address, sip.outbound_trunk, sip.allowed_hosts)
            except NotDialable as exc:
                log.error("call %s: cannot ring %s: %s", self.log_id, command.contact.address, exc)
                self.post(LegEnded(command.leg_id, "failed", str(exc)))
                continue
            if not safe_in_dialplan(target) or target in legs:
                self.post(LegEnded(command.leg_id, "failed",
                                   f"{command.contact.address} cannot be dialed through the dialplan"))
            else:
                legs[target] = command.leg_id
        if not legs:
            return
        timeout = max(1, math.ceil(max(d.timeout for d in dials)))
        op = DialOp(legs, timeout, self.event_at, escalation=bool(self.dial_ops))
        self.dial_ops.append(op)
        for leg_id in legs.values():
            self.op_of[leg_id] = op
        self.ops.put_nowait(("dial", op))

    async def _run_dial(self, op: DialOp) -> None:
        call_id = self.engine.setup.call_id
        op.started_at = time.time()
        if op.escalation:
            self.c.metrics.escalation_latency.observe(max(0.0, op.started_at - op.decided_at))
        # It may have waited for the previous Dial (a leg deciding whether to press 1): the legs'
        # ring time counts from now.
        self.post(DialStarted(tuple(op.legs.values())))
        targets = "&".join(f"PJSIP/{target}" for target in op.legs)
        options = f"rgb({LEG_SUBROUTINE}^s^1({call_id}))U({CONFIRM_SUBROUTINE}^{call_id})"
        try:
            result = await self.chan.exec("Dial", f"{targets},{op.timeout},{options}", timeout=None)
        except AgiHangup:
            self.post(_DialDone(op, -1, "CANCEL"))
            return
        try:
            if self.chan.hung_up or ((result is None or result < 0) and not await self.chan.is_up()):
                self.post(_DialDone(op, -1, "CANCEL"))  # Dial returns -1 when the caller hangs up
                return
            status = await self.chan.get_variable("${DIALSTATUS}") or ""
        except AgiHangup:
            self.post(_DialDone(op, -1, "CANCEL"))
            return
        self.post(_DialDone(op, max(0, result or 0), status))  # the caller is still there

    def _leg_for(self, target: str) -> str | None:
        for op in reversed(self.dial_ops):
            if target in op.legs:
                return op.legs[target]
        return None

    async def _dial_done(self, done: _DialDone) -> None:
        op = done.op
        op.done = True
        if done.result is None or done.result < 0:
            await self._handle(_CallerGone("the caller hung up (Dial returned -1)"))
            return
        # Whatever the reports did not say: no leg of a finished Dial is still ringing (NOANSWER:
        # Dial's timeout, the rule's time, ended them).
        for leg_id in op.legs.values():
            leg = self.engine.state.leg(leg_id)
            if leg is None or not (leg.is_live or leg.phase is LegPhase.BRIDGED):
                continue
            if leg.phase in _UNANSWERED:
                cause = {"BUSY": "busy", "NOANSWER": "no_answer"}.get(done.status, "failed")
                await self._feed(LegEnded(leg_id, cause, f"Asterisk's Dial ended with DIALSTATUS {done.status}"))
            else:
                await self._feed(LegEnded(leg_id, "hangup"))

    async def _leg_report(self, report: _LegReport) -> None:
        leg_id = self._leg_for(report.target)
        leg = self.engine.state.leg(leg_id) if leg_id else None
        if leg is None or not (leg.is_live or leg.phase is LegPhase.BRIDGED):
            return
        if report.by_far_end:
            # A confirming leg cut off by its autohangup is the engine's to recognize (its deadline).
            if leg.phase in _UNANSWERED:
                await self._feed(LegEnded(leg_id, leg_end_cause(report.cause, False), cause_text(report.cause)))
            else:
                await self._feed(LegEnded(leg_id, "hangup"))
        elif report.cause == ANSWERED_ELSEWHERE and leg.phase in _UNANSWERED:
            await self._feed(LegEnded(leg_id, "cut_off", CUT_OFF_MESSAGE))
        # else: Asterisk ended it (Dial's timeout, the caller gone, Hotline's decision): Dial's end says why

    # -- the answered leg's session -----------------------------------------------------------

    async def leg_session(self, chan: AgiChannel, target: str) -> None:
        leg_id = self._leg_for(target)
        leg = self.engine.state.leg(leg_id) if (leg_id and self.engine) else None
        if leg is None or leg.phase not in _UNANSWERED or self.engine.is_finished or leg_id in self.sessions:
            await _reject_leg(chan)
            return
        session = LegSession(chan, leg_id)
        self.sessions[leg_id] = session
        self.post(_LegSessionStarted(leg_id))
        bridged = False
        try:
            while True:
                kind, *data = await session.instructions.get()
                if kind == "deadline":
                    await chan.set_autohangup(data[0] - time.time())
                elif kind == "play":
                    playback_id, text = data
                    try:
                        path = _path(await self.c.tts.media(text))
                    except TTSError as exc:
                        log.error("call %s: could not synthesize the confirmation prompt: %s", self.log_id, exc)
                        continue  # the confirmation window decides
                    session.playing = True
                    try:
                        result = await chan.stream_file(path, "1")
                    finally:
                        session.playing = False
                    if result.digit:
                        self.post(DigitPressed(leg_id, result.digit))
                    self.post(PlaybackFinished(playback_id))
                elif kind == "bridge":
                    await chan.set_autohangup(0)
                    await chan.set_variable(CONFIRMED_VARIABLE, "1")
                    bridged = True
                    return
                elif kind == "reject":
                    return
        except AgiHangup:
            return  # the leg's hang-up handler reports it
        finally:
            self.sessions.pop(leg_id, None)
            if not bridged and not chan.hung_up:
                await _reject_leg(chan)

    # -- the caller's channel ----------------------------------------------------------------

    async def _caller_loop(self) -> None:
        """Run the caller's operations one after the other (one AGI command at a time)."""
        while True:
            op = await self.ops.get()
            if op is None:
                return
            kind = op[0]
            if self.chan.hung_up or self.caller_gone:
                if not self.caller_gone:
                    self.post(_CallerGone("the caller's channel is gone"))
                continue
            try:
                if kind == "answer":
                    if op[1]:
                        # Nothing is played first (the legs ring next): no need to wait up to 500 ms
                        # for the caller's media, as ANSWER does.
                        await self.chan.exec("Answer", ",i")
                    else:
                        await self.chan.answer()
                elif kind == "play":
                    await self._play_to_caller(op[1], op[2])
                elif kind == "dial":
                    await self._run_dial(op[1])
                elif kind == "hangup":
                    await self._done_with_caller()
                    await self.chan.hangup()
            except AgiHangup:
                self.post(_CallerGone("the caller hung up"))
            except AgiError as exc:
                log.error("call %s: %s failed: %s", self.log_id, kind, exc)
                if kind == "play":
                    self.post(PlaybackFinished(op[1]))
                elif kind == "dial":
                    self.post(_DialDone(op[1], 0, "ERROR"))

    async def _play_to_caller(self, playback_id: str, text: str) -> None:
        try:
            path = _path(await self.c.tts.media(text))
            await self.chan.stream_file(path, "")
        except TTSError as exc:
            log.error("call %s: could not play a prompt to the caller: %s", self.log_id, exc)
        self.post(PlaybackFinished(playback_id))

    async def _drain_caller(self) -> None:
        """The engine is done; let the caller's last operations (a hang-up) run."""
        self.ops.put_nowait(None)
        if self.caller_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.caller_task), 30)
            except asyncio.TimeoutError:
                self.caller_task.cancel()

    async def _done_with_caller(self) -> None:
        """Tell the dialplan that Hotline finished with the call (extensions.conf: a caller still
        there without it was abandoned by a FastAGI server that stopped, and gets the last resort)."""
        await self.chan.set_variable("HOTLINE_CALL_DONE", "1")

    async def _announce_and_hang_up(self, text: str) -> None:
        try:
            await self._done_with_caller()
            await self.chan.answer()
            await self.chan.stream_file(_path(await self.c.tts.media(text)), "")
            await self.chan.hangup()
        except (AgiError, TTSError) as exc:
            log.warning("could not play an announcement on %s: %s", self.chan.channel, exc)

    async def _fail_safe(self) -> None:
        if self.log_id is not None:
            self.writes.put_nowait((callstore.close_lost_call, self.log_id,
                                    "Hotline hit an internal error during this call (see the server log).",
                                    time.time()))
        for session in list(self.sessions.values()):
            session.instructions.put_nowait(("reject",))
        if self.caller_task is not None:
            self.caller_task.cancel()
        if not self.chan.hung_up:
            try:
                await asyncio.wait_for(self._announce_and_hang_up(SORRY), 35)
            except Exception:  # noqa: BLE001
                pass

    async def _finish(self) -> None:
        self._count_end()
        for session in list(self.sessions.values()):
            session.instructions.put_nowait(("reject",))
        if self.caller_task is not None and not self.caller_task.done():
            self.caller_task.cancel()
        try:
            await self._flush_writes()
        finally:
            if self.engine is not None and self.c.by_call.get(self.engine.setup.call_id) is self:
                del self.c.by_call[self.engine.setup.call_id]
            if self.c.by_uniqueid.get(self.uniqueid) is self:
                del self.c.by_uniqueid[self.uniqueid]
            self.c.actors.discard(self)


def _path(media: str) -> str:
    """``sound:/dir/hl-abc`` (the ARI media URI) -> ``/dir/hl-abc`` (STREAM FILE's argument)."""
    return media.split(":", 1)[1] if media.startswith("sound:") else media


async def _health_route(chan: AgiChannel) -> None:
    """``hotline doctor`` checks that this is Hotline's FastAGI server: one NOOP, answered."""
    await chan.command('NOOP "hotline"', timeout=2)

