"""SIP parties for end-to-end tests, built on sipp (Debian package ``sip-tester``).

A :class:`Caller` places calls (caller ID, dialed number; hangs up after N seconds, or
waits for the far end). A :class:`Phone` is an on-call engineer's phone on its own port:
it answers (at once or after N seconds), never answers, is busy, answers and presses keys
(RFC 2833, sip-tester's pcaps), or answers and stays silent like a voicemail box.

Every party is one ``sipp`` process started with ``asyncio.create_subprocess_exec`` on
ports of its own, so parties run concurrently; each reports what happened to it
(:class:`PartyResult`: answered, who hung up, digits sent, durations, SIP final status)
from the events its scenario logs. Processes are stopped only by their own pid;
:func:`stop_all` (used by the e2e fixtures) stops whatever a test left running.

    async with Phone.answer_and_press("1") as phone:
        ... originate to phone.endpoint() ...
        result = await phone.wait(10)
        assert result.answered and result.digits == "1"
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import re
import shutil
import signal
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ivr.lab.processes import port_free

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
PCAP_DIR = Path("/usr/share/sip-tester")
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: Ports handed to parties: below the default ephemeral range and away from the lab's RTP
#: ranges. Each party takes a block of 4: SIP on base, RTP on base+1 (sipp also binds
#: base+3 for video).
PORT_RANGE = (24000, 29996)
_BLOCK = 4

_EVENT_RE = re.compile(r"^EV (\d+) \S+\t\S+\t(\d+(?:\.\d+)?) (\w+) ?(.*)$")
_DIGIT_PCAPS = {**{str(d): f"dtmf_2833_{d}.pcap" for d in range(10)},
                "*": "dtmf_2833_star.pcap", "#": "dtmf_2833_pound.pcap"}

_live: "weakref.WeakSet[SipParty]" = weakref.WeakSet()
_taken: set[int] = set()
_next_port = PORT_RANGE[0] + _BLOCK * random.randrange((PORT_RANGE[1] - PORT_RANGE[0]) // _BLOCK)
_workdir: Path | None = None
#: HOTLINE_SIPP_TRACE=1 keeps every SIP message of every party (messages.log next to the
#: party's events.log) and the work directory, for debugging.
TRACE = os.environ.get("HOTLINE_SIPP_TRACE", "") not in ("", "0")


def sipp_available() -> bool:
    return os.access(SIPP, os.X_OK)


def _session_workdir() -> Path:
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="hotline-sipp-"))
        if not TRACE:
            atexit.register(shutil.rmtree, _workdir, True)
    return _workdir


def allocate_ports(ip: str = "127.0.0.1") -> int:
    """A base port whose SIP and media ports are free (process-wide, never handed twice)."""
    global _next_port
    span = PORT_RANGE[1] - PORT_RANGE[0]
    for _ in range(span // _BLOCK):
        base = _next_port
        _next_port += _BLOCK
        if _next_port > PORT_RANGE[1]:
            _next_port = PORT_RANGE[0]
        if base in _taken:
            continue
        if all(port_free("udp", ip, base + offset) for offset in (0, 1, 3)):
            _taken.add(base)
            return base
    raise RuntimeError(f"no free UDP ports for a SIP party in {PORT_RANGE}")


def _udp_bound_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            with open(table) as fh:
                next(fh)
                for line in fh:
                    local = line.split()[1]
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


# ------------------------------------------------------------------------------ results

@dataclass
class CallRecord:
    """What happened to one call of a party (times are ``time.time()`` seconds)."""

    call: int
    events: list[tuple[float, str, str]] = field(default_factory=list)
    invited_at: float | None = None      # INVITE sent (caller) or received (phone)
    ringing_at: float | None = None      # 180 received (caller) or sent (phone)
    answered_at: float | None = None     # ACK of the 200 sent (caller) or received (phone)
    ended_at: float | None = None        # BYE exchanged, or final response
    final_status: int | None = None      # SIP final status of the INVITE
    hung_up_by: str | None = None        # "local" (this party) or "remote"; None if never answered
    canceled: bool = False               # CANCEL sent (caller) or received (phone)
    digits: str = ""                     # keys this party pressed (RFC 2833)
    dialed: str = ""                     # number dialed (caller) or request-URI user (phone)
    remote: str = ""                     # the From header the phone received

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def setup_time(self) -> float | None:
        """INVITE to final response (the answer, or the error)."""
        end = self.answered_at or self.ended_at
        if self.invited_at is None or end is None:
            return None
        return end - self.invited_at

    @property
    def talk_time(self) -> float | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.answered_at

    @property
    def duration(self) -> float | None:
        if self.invited_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.invited_at

    @property
    def caller_number(self) -> str | None:
        """The user part of the From header a phone received (the caller ID it was shown)."""
        match = re.search(r"<sips?:([^@>;]+)@", self.remote)
        return match.group(1) if match else None


@dataclass
class PartyResult:
    """A party's report; the single-call properties describe its first call."""

    name: str
    role: str
    returncode: int | None
    calls: list[CallRecord]
    errors: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def call(self) -> CallRecord:
        return self.calls[0] if self.calls else CallRecord(call=0)

    @property
    def received_call(self) -> bool:
        return bool(self.calls)

    @property
    def answered(self) -> bool:
        return self.call.answered

    @property
    def hung_up_by(self) -> str | None:
        return self.call.hung_up_by

    @property
    def digits(self) -> str:
        return self.call.digits

    @property
    def final_status(self) -> int | None:
        return self.call.final_status

    @property
    def canceled(self) -> bool:
        return self.call.canceled

    @property
    def answered_count(self) -> int:
        return sum(1 for c in self.calls if c.answered)

    @property
    def successful(self) -> int:
        """Calls sipp counts as successful (the scenario ran to its end)."""
        return self.stats.get("successful", 0)

    @property
    def failed(self) -> int:
        return self.stats.get("failed", 0)

    def describe(self) -> str:
        lines = [f"{self.name} ({self.role}) sipp exit {self.returncode}; {len(self.calls)} call(s); "
                 f"stats {self.stats}"]
        for c in self.calls[:5]:
            lines.append(f"  call {c.call}: " + ", ".join(f"{name}{' ' + detail if detail else ''}"
                                                          for _t, name, detail in c.events))
        if self.errors:
            lines.append("  sipp errors: " + self.errors.strip()[-1500:])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def parse_events(text: str, name: str = "", role: str = "") -> list[CallRecord]:
    calls: dict[int, CallRecord] = {}
    for line in text.splitlines():
        match = _EVENT_RE.match(line.strip("\r"))
        if not match:
            continue
        number, when, event, detail = int(match.group(1)), float(match.group(2)), match.group(3), match.group(4)
        rec = calls.setdefault(number, CallRecord(call=number))
        rec.events.append((when, event, detail))
        if event == "invite":
            rec.invited_at = when
            if role == "caller":
                rec.dialed = detail
            else:
                user = re.search(r"user=(\S*)", detail)
                rec.dialed = user.group(1) if user else ""
                sender = re.search(r"from=(.*?)(?: ruri=|$)", detail)
                rec.remote = sender.group(1).strip() if sender else ""
        elif event == "ringing":
            rec.ringing_at = rec.ringing_at or when
        elif event == "final":
            rec.final_status = int(detail.split()[0])
            if rec.final_status >= 300:
                rec.ended_at = when
        elif event == "answered":
            rec.answered_at = when
        elif event in ("cancel", "canceled"):
            rec.canceled = True
        elif event == "digit":
            rec.digits += detail.strip()
        elif event == "hangup":
            rec.hung_up_by = detail.strip()
            rec.ended_at = when
    return [calls[k] for k in sorted(calls)]


def _parse_screen(text: str) -> dict[str, int]:
    stats = {}
    for key, label in (("successful", "Successful call"), ("failed", "Failed call"),
                       ("created", "Total Call created"), ("outgoing", "OutGoing call created"),
                       ("incoming", "IncomingCall created")):
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        if found:
            stats[key] = int(found[-1])
    return stats


# ------------------------------------------------------------------------------ parties

class SipParty:
    role = "party"
    scenario = ""

    def __init__(self, *, ip: str = "127.0.0.1", port: int | None = None, calls: int = 1,
                 max_wait: float = 30.0, name: str | None = None, workdir: Path | None = None):
        self.ip = ip
        self.port = port or allocate_ports(ip)
        self.media_port = self.port + 1
        self.calls = calls
        self.max_wait = max_wait
        self.name = name or f"{self.role}-{self.port}"
        base = workdir or _session_workdir()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=base))
        self.log_file = self.dir / "events.log"
        self.error_file = self.dir / "errors.log"
        self.screen_file = self.dir / "screen.log"
        self.output_file = self.dir / "sipp.out"
        self.proc: asyncio.subprocess.Process | None = None
        self._result: PartyResult | None = None

    # Subclasses: the rendered scenario and the extra sipp arguments.
    def render(self) -> str:
        raise NotImplementedError

    def sipp_args(self) -> list[str]:
        return []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        scenario = self.dir / "scenario.xml"
        scenario.write_text(self.render())
        return [SIPP, *self.sipp_args(), "-sf", str(scenario),
                "-i", self.ip, "-p", str(self.port), "-mi", self.ip, "-mp", str(self.media_port),
                "-m", str(self.calls), "-nostdin", "-aa",
                "-timeout", f"{int(self.max_wait + 5)}s", "-timeout_error",
                "-trace_logs", "-log_file", str(self.log_file),
                "-trace_err", "-error_file", str(self.error_file),
                "-trace_screen", "-screen_file", str(self.screen_file),
                *(["-trace_msg", "-message_file", str(self.dir / "messages.log")] if TRACE else [])]

    async def start(self) -> "SipParty":
        if not sipp_available():
            raise RuntimeError("sipp is not installed (Debian package sip-tester; `make test` installs it)")
        out = open(self.output_file, "wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                cwd=self.dir, start_new_session=True)
        finally:
            out.close()
        _live.add(self)
        await self._wait_listening()
        return self

    async def _wait_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.port not in _udp_bound_ports():
            if self.proc.returncode is not None:
                raise RuntimeError(f"sipp ({self.name}) exited at once: {self._tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sipp ({self.name}) is not listening on {self.ip}:{self.port}: {self._tail()}")
            await asyncio.sleep(0.01)

    def _tail(self) -> str:
        texts = []
        for path in (self.output_file, self.error_file):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace").strip()[-800:])
        return " | ".join(t for t in texts if t) or "(no output)"

    def result(self) -> PartyResult:
        """What happened so far (complete once the process has ended)."""
        if self._result is not None:
            return self._result
        text = ""
        with contextlib.suppress(OSError):
            text = self.log_file.read_text(errors="replace")
        errors = ""
        with contextlib.suppress(OSError):
            errors = self.error_file.read_text(errors="replace")
        stats = {}
        with contextlib.suppress(OSError):
            stats = _parse_screen(self.screen_file.read_text(errors="replace"))
        result = PartyResult(self.name, self.role, self.proc.returncode if self.proc else None,
                             parse_events(text, self.name, self.role), errors, stats)
        if self.proc is not None and self.proc.returncode is not None:
            self._result = result
        return result

    def events(self) -> list[CallRecord]:
        return self.result().calls

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10.0) -> CallRecord:
        """Wait until ``count`` calls have logged ``event`` (invite, ringing, answered,
        hangup, final, digit, canceled); returns the last such call."""
        deadline = time.monotonic() + timeout
        while True:
            calls = [c for c in self.events() if any(e[1] == event for e in c.events)]
            if len(calls) >= count:
                return calls[count - 1]
            if self.proc is None or self.proc.returncode is not None:
                raise AssertionError(f"{self.name} ended without {event!r}:\n{self.result()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {event!r} within {timeout} s:\n{self.result()}")
            await asyncio.sleep(0.02)

    async def wait(self, timeout: float | None = None) -> PartyResult:
        """Wait for sipp to finish its calls; on timeout stop it and raise."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        try:
            await asyncio.wait_for(self.proc.wait(), timeout if timeout is not None else self.max_wait + 10)
        except asyncio.TimeoutError:
            await self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout} s:\n{self.result()}") from None
        _live.discard(self)
        return self.result()

    async def stop(self) -> PartyResult:
        """Stop the process (by its pid) if it still runs; returns what happened."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        _live.discard(self)
        _taken.discard(self.port)
        return self.result()

    def kill_now(self) -> None:
        """Synchronous last resort (fixture teardown in another event loop)."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, 0)
        _live.discard(self)
        _taken.discard(self.port)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _render(name: str, **values) -> str:
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    leftover = re.findall(r"\{\{\w+\}\}", text)
    if leftover:
        raise ValueError(f"{name}: no value for {leftover}")
    return text


class Caller(SipParty):
    """A caller dialing ``dialed`` at ``target`` (host, port) with caller ID ``caller_id``.

    hangup_after: seconds after the answer when the caller hangs up; None waits for the far
    end (up to max_wait). cancel_after: seconds without an answer before it gives up
    (CANCEL); default max_wait. calls/concurrency/rate: several calls (a load test).
    """

    role = "caller"

    def __init__(self, dialed: str, target: tuple[str, int], *, caller_id: str = "15550001111",
                 caller_name: str = "Test Caller", hangup_after: float | None = None,
                 cancel_after: float | None = None, calls: int = 1, concurrency: int | None = None,
                 rate: float | None = None, steps: tuple[tuple[float, str], ...] = (), **kwargs):
        super().__init__(calls=calls, **kwargs)
        self.dialed = dialed
        self.target = target
        self.caller_id = caller_id
        self.caller_name = caller_name
        self.hangup_after = hangup_after
        self.cancel_after = cancel_after
        self.concurrency = concurrency
        self.rate = rate
        #: After the answer, in order: (seconds to wait, a key "0"-"9" or "speak": sip-tester's G.711
        #: sample, a few seconds of speech). hangup_after counts from the last step.
        self.steps: list[tuple[float, str]] = list(steps)
        for _, what in self.steps:
            if what != "speak" and what not in _DIGIT_PCAPS:
                raise ValueError(f"no RFC 2833 pcap for key {what!r}")

    def render(self) -> str:
        hold = self.hangup_after if self.hangup_after is not None else self.max_wait
        cancel = self.cancel_after if self.cancel_after is not None else self.max_wait
        media = []
        for index, (wait, what) in enumerate(self.steps):
            pcap = PCAP_DIR / ("g711a.pcap" if what == "speak" else _DIGIT_PCAPS[what])
            label = "speech" if what == "speak" else f"digit {what}"
            media.append(f'  <recv request="BYE" timeout="{max(1, int(wait * 1000))}" ontimeout="step{index}" '
                         f'next="bye_received"/>\n'
                         f'  <label id="step{index}"/>\n'
                         f'  <nop><action><exec play_pcap_audio="{pcap}"/>'
                         f'<log message="EV [call_number] [timestamp] {label}"/></action></nop>')
        return _render("caller.xml", answer_timeout_ms=int(cancel * 1000), hold_ms=max(1, int(hold * 1000)),
                       media="\n".join(media))

    def sipp_args(self) -> list[str]:
        host, port = self.target
        args = [f"{host}:{port}", "-s", self.dialed, "-key", "caller_id", self.caller_id,
                "-key", "caller_name", self.caller_name]
        if self.concurrency:
            args += ["-l", str(self.concurrency)]
        args += ["-r", str(self.rate or max(self.calls, 10)), "-rp", "1000"]
        return args

    async def _wait_listening(self, timeout: float = 5.0) -> None:
        # A caller sends at once; nothing to wait for.
        return None


class Phone(SipParty):
    """An on-call phone on its own port. Use the constructors below."""

    role = "phone"

    def __init__(self, *, ring: float = 0.0, answers: bool = True, reject: int | None = None,
                 digits: str = "", digit_delay: float = 0.5, digit_gap: float = 0.3,
                 hold: float | None = None, calls: int = 1, **kwargs):
        super().__init__(calls=calls, **kwargs)
        self.ring = ring
        self.answers = answers
        self.reject = reject
        self.digits = digits
        self.digit_delay = digit_delay
        self.digit_gap = digit_gap
        self.hold = hold
        for digit in digits:
            if digit not in _DIGIT_PCAPS:
                raise ValueError(f"no RFC 2833 pcap for key {digit!r}")

    # The behaviours of the issue.
    @classmethod
    def answer(cls, **kwargs) -> "Phone":
        """Answers at once and stays until the far end hangs up (or ``hold`` seconds)."""
        return cls(**kwargs)

    @classmethod
    def answer_after(cls, seconds: float, **kwargs) -> "Phone":
        """Rings ``seconds``, then answers (a CANCEL meanwhile ends the call)."""
        return cls(ring=seconds, **kwargs)

    @classmethod
    def never_answer(cls, **kwargs) -> "Phone":
        """Rings until canceled (or ``max_wait``, then 480)."""
        return cls(answers=False, **kwargs)

    @classmethod
    def busy(cls, status: int = 486, **kwargs) -> "Phone":
        """Refuses every call: 486 Busy Here (or another status)."""
        return cls(reject=status, **kwargs)

    @classmethod
    def answer_and_press(cls, digits: str = "1", *, delay: float = 0.5, ring: float = 0.0, **kwargs) -> "Phone":
        """Answers, then presses ``digits`` (RFC 2833) ``delay`` seconds later."""
        return cls(ring=ring, digits=digits, digit_delay=delay, **kwargs)

    @classmethod
    def answer_silent(cls, ring: float = 0.0, **kwargs) -> "Phone":
        """Answers and never presses anything, like a voicemail box."""
        return cls(ring=ring, **kwargs)

    def uri(self, user: str = "oncall") -> str:
        return f"sip:{user}@{self.ip}:{self.port}"

    def endpoint(self, user: str = "oncall") -> str:
        """The ARI/Dial endpoint that rings this phone through the lab's hotline-direct."""
        return f"PJSIP/hotline-direct/{self.uri(user)}"

    def render(self) -> str:
        if self.reject is not None:
            reasons = {486: "Busy Here", 480: "Temporarily Unavailable", 603: "Decline", 404: "Not Found",
                       503: "Service Unavailable"}
            return _render("phone_reject.xml", status=self.reject, reason=reasons.get(self.reject, "Rejected"))
        media = []
        for index, digit in enumerate(self.digits):
            wait = self.digit_delay if index == 0 else self.digit_gap
            pcap = PCAP_DIR / _DIGIT_PCAPS[digit]
            media.append(f'  <recv request="BYE" timeout="{max(1, int(wait * 1000))}" ontimeout="key{index}" '
                         f'next="bye_received"/>\n'
                         f'  <label id="key{index}"/>\n'
                         f'  <nop><action><exec play_pcap_audio="{pcap}"/>'
                         f'<log message="EV [call_number] [timestamp] digit {digit}"/></action></nop>')
        hold = self.hold if self.hold is not None else self.max_wait
        ring = self.ring if self.answers else self.max_wait
        return _render("phone.xml", ring_ms=max(1, int(ring * 1000)),
                       after_ring="answer" if self.answers else "unavailable",
                       media="\n".join(media), hold_ms=max(1, int(hold * 1000)))


async def stop_all() -> None:
    """Stop every party still running (fixtures call this after each test)."""
    for party in list(_live):
        await party.stop()


def kill_all_now() -> None:
    for party in list(_live):
        party.kill_now()
