"""FastAGI through panoramisk, with its known defects wrapped.

Asterisk connects to Hotline's FastAGI server when the dialplan runs
``AGI(agi://HOST:PORT/<route>,<arg1>,<arg2>...)``, sends the AGI variables (``agi_*: value``
lines, then a blank line) and then answers one command at a time (``200 result=...``).

panoramisk's ``fast_agi.Application`` routes requests by ``agi_network_script``; its
``handler`` reads the headers with ``while b'\\n\\n' not in buffer: buffer += await
reader.read(...)``, which spins the event loop forever when a client connects and closes
before the blank line (a port scan, a TCP health check), and its ``Request`` reads results
without a timeout. So :class:`AgiServer` keeps the Application's routes and replaces the
handler: headers are read with a timeout and a size limit, anything that is not an AGI
request is closed and counted, a route runs as its own task (cancelled when the server
stops) and the connection is always closed afterwards. :class:`AgiChannel` (a panoramisk
``Request``) reads every result with a timeout, never takes an asynchronous ``HANGUP`` line
(AGISIGHUP) for the result of a command, and raises :class:`AgiHangup` once the channel is
gone.

FastAGI itself has no authentication: whoever connects can forge an incoming call's log, read
the on-call numbers from the Dial it is sent, or fake a leg's answer and a notification's
acknowledgement. So the server accepts connections only from ``allowed_peers`` (Asterisk's
addresses; anything else is closed before a byte is read), and every request must carry the
install's secret as its first AGI argument (``AGI(agi://HOST:PORT/<route>,<secret>,<arg1>...)``,
as the rendered dialplan passes it), compared in constant time. The server strips it: a route's
``channel.args`` (and ``agi_arg_N`` headers) are the arguments after the secret.

Route handlers must be ``async def`` and take the :class:`AgiChannel`; data comes as AGI
arguments (``channel.args``), never as a query string.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

from panoramisk import fast_agi

from ivr.config import ConfigError

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 5.0          # seconds for Asterisk to send the AGI variables
MAX_HEADER_BYTES = 16 * 1024  # Asterisk sends about 1 KB
COMMAND_TIMEOUT = 10.0        # a command that returns at once (ANSWER, GET VARIABLE, ...)

_HEADER_LINE = re.compile(r"^agi_[a-z_0-9]+$")

#: Who may connect when nothing else is configured (agi.allowed_peers): this machine only.
DEFAULT_ALLOWED_PEERS = ("127.0.0.1/32", "::1")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What a FastAGI secret may be made of: it is an argument of AGI() in the dialplan, where a ',' would
#: split it, and a header line of the request. Long enough not to be guessed (a generated one has 32).
_SECRET_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,128}$")


class AgiError(Exception):
    """A command failed or its answer could not be read."""


class AgiHangup(AgiError):
    """The channel hung up (or the connection closed): no further command can run."""


class AgiTimeout(AgiError):
    """Asterisk did not answer a command in time."""


@dataclass(frozen=True)
class AgiResult:
    """One parsed result line: ``200 result=49 endpos=1234`` or ``200 result=1 (value)``."""

    code: int
    result: str = ""
    data: str | None = None          # the parenthesised part of result=, e.g. a variable's value
    extras: dict[str, str] = field(default_factory=dict)  # other key=value pairs (endpos=...)
    text: str = ""                   # the line as received

    @property
    def value(self) -> int | None:
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def digit(self) -> str | None:
        """The key pressed, for STREAM FILE / WAIT FOR DIGIT / GET OPTION results (else None)."""
        value = self.value
        if value is None or value <= 0:
            return None
        return chr(value) if 32 < value < 127 else None


_RESULT_LINE = re.compile(r"^(\d{3})(?:[ -](.*))?$")
_RESULT_200 = re.compile(r"^result=(\S*)(?:\s*\((.*)\))?(.*)$")


def parse_result(line: str) -> AgiResult:
    """A result line of Asterisk, as an :class:`AgiResult` (pure; tested on recorded traces).

    panoramisk's ``parse_agi_result`` turns ``result=-1`` into an error without the value and
    cannot tell "hung up" from "file not found"; the shells need the raw facts.
    """
    text = line.rstrip("\r\n")
    match = _RESULT_LINE.match(text)
    if not match:
        raise AgiError(f"not an AGI result: {text[:120]!r}")
    code, rest = int(match.group(1)), match.group(2) or ""
    if code != 200:
        return AgiResult(code, text=text)
    fields = _RESULT_200.match(rest.strip())
    if not fields:
        raise AgiError(f"not an AGI result: {text[:120]!r}")
    extras = dict(re.findall(r"(\w+)=(\S+)", fields.group(3) or ""))
    return AgiResult(code, fields.group(1), fields.group(2), extras, text)


def parse_headers(data: bytes, encoding: str = "utf-8") -> OrderedDict[str, str]:
    """The AGI variables of a request (the bytes before the blank line); raises ValueError when
    it is not an AGI request."""
    text = data.decode(encoding, "replace")
    headers: OrderedDict[str, str] = OrderedDict()
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        key, sep, value = line.partition(": ")
        if not sep or not _HEADER_LINE.match(key):
            raise ValueError(f"not an AGI variable line: {line[:80]!r}")
        headers[key] = value
    if "agi_network_script" not in headers and "agi_request" not in headers:
        raise ValueError("no agi_network_script in the request")
    return headers


def agi_args(headers: dict[str, str]) -> list[str]:
    """``agi_arg_1``, ``agi_arg_2``... in order (the AGI() application's arguments)."""
    numbered = []
    for key, value in headers.items():
        if key.startswith("agi_arg_") and key[8:].isdigit():
            numbered.append((int(key[8:]), value))
    return [value for _, value in sorted(numbered)]


def split_secret(headers: dict[str, str]) -> tuple[str | None, OrderedDict[str, str]]:
    """The request's first AGI argument (the secret; None when there is none) and its headers
    without it: ``agi_arg_2`` becomes ``agi_arg_1`` and so on, so that a route sees the
    arguments the dialplan passed after the secret, and never the secret itself."""
    args = agi_args(headers)
    rest: OrderedDict[str, str] = OrderedDict(
        (key, value) for key, value in headers.items() if not (key.startswith("agi_arg_") and key[8:].isdigit()))
    for number, value in enumerate(args[1:], start=1):
        rest[f"agi_arg_{number}"] = value
    return (args[0] if args else None), rest


def checked_secret(secret: str | None, setting: str = "agi.secret") -> str:
    """``secret`` if it can be the FastAGI secret, else a ConfigError that says why."""
    if not secret:
        raise ConfigError(f"{setting} is empty: the FastAGI server needs a secret (without one anybody who can "
                          "connect could run its routes); set it, or let `hotline asterisk up` generate the lab's")
    if not _SECRET_RE.match(secret):
        raise ConfigError(f"{setting} must be 16 to 128 letters, digits or - _ . ~ + / = (the dialplan passes it "
                          "as an AGI argument), e.g. the output of "
                          "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`")
    return secret


def peer_networks(peers: Iterable[str], setting: str = "agi.allowed_peers") -> tuple[IpNetwork, ...]:
    """The networks of ``agi.allowed_peers`` (IP addresses or CIDRs; names would need DNS)."""
    networks = []
    for peer in peers:
        try:
            networks.append(ipaddress.ip_network(str(peer).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{setting}: {peer!r} is not an IP address or network (e.g. 127.0.0.1/32, "
                              "10.0.0.0/24, ::1)") from None
    return tuple(networks)


def peer_address(peer) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a socket's ``peername`` (an IPv4 client of a dual-stack socket as IPv4)."""
    if not isinstance(peer, (tuple, list)) or not peer:
        return None
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def route_of(headers: dict[str, str]) -> str:
    """The route: ``agi_network_script`` without a query string or a leading slash."""
    script = headers.get("agi_network_script") or headers.get("agi_request", "").split("/", 3)[-1]
    return script.split("?", 1)[0].strip("/")


def quote(text: str) -> str:
    """An argument of an AGI command, double-quoted the way res_agi parses it."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


class AgiChannel(fast_agi.Request):
    """One FastAGI session (one channel): commands in order, each bounded in time."""

    def __init__(self, app, headers, reader, writer, encoding="utf-8"):
        super().__init__(app, headers, reader, writer, encoding)
        self.args = agi_args(headers)
        self.route = route_of(headers)
        self.hung_up = False        # the channel is gone (however we learnt it)
        self.hangup_notice = False  # Asterisk said so (a HANGUP line, or 511), rather than just closing
        self.closed = False

    @property
    def channel(self) -> str:
        return self.headers.get("agi_channel", "")

    @property
    def uniqueid(self) -> str:
        return self.headers.get("agi_uniqueid", "")

    async def send_command(self, command: str) -> dict:  # panoramisk's API, kept working
        result = await self.command(command)
        return {"status_code": result.code, "result": (result.result, result.data or ""), "msg": result.text}

    async def command(self, command: str, timeout: float | None = COMMAND_TIMEOUT) -> AgiResult:
        """Send one command and read its result; ``timeout`` None waits as long as it takes
        (Dial: the whole conversation)."""
        if self.closed:
            raise AgiHangup("the AGI connection is closed")
        if "\n" in command:
            raise ValueError("an AGI command is one line")
        try:
            self.writer.write((command + "\n").encode(self.encoding))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.closed = self.hung_up = True
            raise AgiHangup(f"connection lost: {exc}") from None
        try:
            if timeout is None:
                return await self._read_result(command)
            return await asyncio.wait_for(self._read_result(command), timeout)
        except asyncio.TimeoutError:
            # Its late answer would be read as the next command's: the session cannot go on.
            self.closed = True
            self.writer.close()
            raise AgiTimeout(f"Asterisk did not answer {command.split(' ', 1)[0]} within {timeout:g} s; "
                             "the FastAGI session was closed") from None

    async def _read_result(self, command: str) -> AgiResult:
        while True:
            raw = await self.reader.readline()
            if not raw:
                self.closed = self.hung_up = True
                raise AgiHangup("Asterisk closed the AGI connection")
            line = raw.decode(self.encoding, "replace").rstrip("\r\n")
            if line == "HANGUP":  # AGISIGHUP: the channel hung up; the result follows
                self.hung_up = self.hangup_notice = True
                continue
            if not line:
                continue
            if line.startswith("520-"):  # usage follows until "520 End of proper usage."
                usage = [line]
                while not line.startswith("520 "):
                    more = await self.reader.readline()
                    if not more:
                        break
                    line = more.decode(self.encoding, "replace").rstrip("\r\n")
                    usage.append(line)
                raise AgiError(f"{command.split(' ', 1)[0]}: wrong usage: {' | '.join(usage)[:300]}")
            result = parse_result(line)
            if result.code == 511:
                self.hung_up = self.hangup_notice = True
                raise AgiHangup(f"{command.split(' ', 1)[0]}: the channel is gone")
            if result.code != 200:
                raise AgiError(f"{command.split(' ', 1)[0]}: {line}")
            return result

    # -- the commands Hotline uses ----------------------------------------------------------

    async def answer(self) -> None:
        await self.command("ANSWER")

    async def hangup(self) -> None:
        try:
            await self.command("HANGUP")
        except AgiHangup:
            pass

    async def stream_file(self, path: str, escape_digits: str = "", timeout: float | None = 600.0) -> AgiResult:
        """Play a file (path without extension). ``result.digit`` is the key that stopped it;
        ``value == -1`` means the channel hung up, or the file could not be played."""
        result = await self.command(f"STREAM FILE {path} {quote(escape_digits)}", timeout)
        if result.value == -1 and not self.hung_up:
            # -1 also means "file not found": only a dead channel is a hang-up.
            if not await self.is_up():
                self.hung_up = True
        if self.hung_up:
            raise AgiHangup("the channel hung up during the playback")
        return result

    async def say_digits(self, digits: str, escape_digits: str = "", timeout: float | None = 600.0) -> AgiResult:
        """``SAY DIGITS``: say ``digits`` one by one with Asterisk's own recordings (``digits/0`` ...
        ``digits/9`` in the channel's language); nothing is synthesized or written. ``result.digit``
        is the key that stopped it; ``value == -1`` means the channel hung up, or a digit's recording
        could not be played. Errors never repeat the digits (they may be a secret)."""
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError("SAY DIGITS takes digits 0-9")
        result = await self.command(f"SAY DIGITS {digits} {quote(escape_digits)}", timeout)
        if result.value == -1 and not self.hung_up:
            if not await self.is_up():
                self.hung_up = True
        if self.hung_up:
            raise AgiHangup("the channel hung up while digits were said")
        return result

    async def wait_for_digit(self, seconds: float) -> str | None:
        result = await self.command(f"WAIT FOR DIGIT {int(seconds * 1000)}", seconds + COMMAND_TIMEOUT)
        if result.value == -1:
            self.hung_up = True
            raise AgiHangup("the channel hung up while waiting for a key")
        return result.digit

    async def get_variable(self, expression: str) -> str | None:
        """``GET FULL VARIABLE``: ``${EXPR}`` evaluated on the channel (None when unset)."""
        result = await self.command(f"GET FULL VARIABLE {quote(expression)}")
        return result.data if result.value == 1 else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f"SET VARIABLE {name} {quote(value)}")

    async def set_autohangup(self, seconds: float) -> None:
        await self.command(f"SET AUTOHANGUP {max(0.0, seconds):.3f}")

    async def exec(self, application: str, arguments: str, timeout: float | None = COMMAND_TIMEOUT) -> int | None:
        """Run a dialplan application; its return value (-1: the channel hung up)."""
        result = await self.command(f"EXEC {application} {quote(arguments)}", timeout)
        return result.value

    async def is_up(self) -> bool:
        try:
            result = await self.command("CHANNEL STATUS")
        except AgiHangup:
            return False
        return result.value is not None and result.value >= 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass


Route = Callable[[AgiChannel], Awaitable[None]]


class AgiServer(fast_agi.Application):
    """panoramisk's FastAGI Application with a handler that survives what the network sends, and
    serves only Asterisk: connections from ``allowed_peers``, requests carrying ``secret``."""

    LOG_EVERY = 10.0  # seconds between two log lines about rejected connections

    def __init__(self, host: str, port: int, *, secret: str, allowed_peers: Iterable[str] = DEFAULT_ALLOWED_PEERS,
                 header_timeout: float = HEADER_TIMEOUT, max_header_bytes: int = MAX_HEADER_BYTES,
                 on_reject: Callable[[str], None] | None = None):
        self._secret = checked_secret(secret).encode("utf-8")
        super().__init__(default_encoding="utf-8", loop=asyncio.get_running_loop())
        self.host = host
        self.port = int(port)
        self.allowed_peers = peer_networks(allowed_peers)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.on_reject = on_reject
        self.server: asyncio.AbstractServer | None = None
        self.sessions: set[asyncio.Task] = set()
        self.rejected = 0     # connections closed without running a route
        self._last_reject_log = float("-inf")
        self._unlogged_rejects = 0
        self.served = 0       # requests that reached a route

    def add_route(self, path: str, endpoint: Route) -> None:
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"the FastAGI route {path!r} must be an `async def` function")
        super().add_route(path, endpoint)

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self.handler, self.host, self.port,
                                                     limit=max(self.max_header_bytes, 4096))
        except OSError as exc:
            raise RuntimeError(f"the FastAGI server cannot listen on {self.host}:{self.port}: {exc.strerror} "
                               "(set agi.port / HOTLINE_AGI_PORT)") from None
        log.info("FastAGI server listening on %s:%s (routes: %s; connections from %s only)", self.host, self.port,
                 ", ".join(self._route), ", ".join(map(str, self.allowed_peers)) or "nowhere")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=5)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self.server = None

    def peer_allowed(self, peer) -> bool:
        """Whether ``peer`` (a socket's ``peername``) is one of ``allowed_peers``."""
        address = peer_address(peer)
        return address is not None and any(address in network for network in self.allowed_peers)

    def secret_matches(self, given: str | None) -> bool:
        """The request's secret against this server's, in constant time (no timing oracle)."""
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self._secret)

    def _reject(self, peer, why: str, level: int = logging.INFO) -> None:
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject(why)
        # A port scan must not flood the log: one line per LOG_EVERY seconds, with a count.
        now = time.monotonic()
        if level >= logging.INFO and now - self._last_reject_log < self.LOG_EVERY:
            self._unlogged_rejects += 1
            return
        more = f" (and {self._unlogged_rejects} more since the last such line)" if self._unlogged_rejects else ""
        if level >= logging.INFO:
            self._last_reject_log, self._unlogged_rejects = now, 0
        log.log(level, "FastAGI: closed a connection from %s: %s%s", peer, why, more)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.sessions.add(task)
        peer = writer.get_extra_info("peername")
        channel: AgiChannel | None = None
        try:
            if not self.peer_allowed(peer):
                # Not Asterisk: closed before anything it sent is read.
                self._reject(peer, "its address is not in agi.allowed_peers", logging.WARNING)
                return
            try:
                data = await asyncio.wait_for(reader.readuntil(b"\n\n"), self.header_timeout)
            except asyncio.IncompleteReadError:
                self._reject(peer, "closed before the end of the AGI variables", logging.DEBUG)
                return
            except asyncio.LimitOverrunError:
                self._reject(peer, f"AGI variables longer than {self.max_header_bytes} bytes", logging.WARNING)
                return
            except asyncio.TimeoutError:
                self._reject(peer, f"no complete AGI request within {self.header_timeout:g} s")
                return
            except (ConnectionError, OSError) as exc:
                self._reject(peer, f"connection error ({exc})", logging.DEBUG)
                return
            if len(data) > self.max_header_bytes:
                self._reject(peer, f"AGI variables longer than {self.max_header_bytes} bytes", logging.WARNING)
                return
            try:
                headers = parse_headers(data[:-2], self.default_encoding)
            except ValueError as exc:
                self._reject(peer, f"not a FastAGI request ({exc})", logging.WARNING)
                return
            given, headers = split_secret(headers)
            if not self.secret_matches(given):
                # Checked before the route is looked up: nothing is learnt about the routes either.
                self._reject(peer, f"a FastAGI request for {route_of(headers)[:40]!r} without the right secret (the "
                                   "dialplan must pass agi.secret as the first AGI argument: render it again)",
                             logging.WARNING)
                return
            route_name = route_of(headers)
            route = self._route.get(route_name)
            if route is None:
                self._reject(peer, f"no FastAGI route {route_name!r}", logging.WARNING)
                return
            self.served += 1
            channel = AgiChannel(self, headers, reader, writer, self.default_encoding)
            log.debug("FastAGI %s from %s (channel %s, args %s)", route_name, peer, channel.channel, channel.args)
            try:
                await route(channel)
            except AgiHangup:
                pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("FastAGI route %r failed (channel %s)", route_name, channel.channel)
        finally:
            self.sessions.discard(task)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
