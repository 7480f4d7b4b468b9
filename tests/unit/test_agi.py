"""FastAGI: result parsing on lines recorded from Asterisk 22, and the server over real sockets
(what panoramisk's own handler does not survive: clients that close early, garbage, silence; and
who may use it at all: Asterisk's addresses, with the install's secret)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from ivr.asterisk import agi
from ivr.asterisk.agi import (
    AgiChannel,
    AgiHangup,
    AgiServer,
    AgiTimeout,
    agi_args,
    checked_secret,
    parse_headers,
    parse_result,
    peer_address,
    quote,
    route_of,
    split_secret,
)
from ivr.config import ConfigError

SECRET = "lab-agi-secret-0123456789abcdef"

# Recorded from the lab Asterisk (22.10): a trunk call falling back to FastAGI (the rendered
# dialplan passes the secret first).
HEADERS = (b"agi_network: yes\nagi_network_script: incoming-call-policy\n"
           b"agi_request: agi://127.0.0.1:15273/incoming-call-policy\nagi_channel: PJSIP/hotline-trunk-00000022\n"
           b"agi_language: en\nagi_type: PJSIP\nagi_uniqueid: hotline-e2e7-1795417573.34\n"
           b"agi_version: 22.10.1+dfsg+~cs6.17.60671434-1\nagi_callerid: +14155550123\n"
           b"agi_calleridname: Test Caller\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
           b"agi_callingtns: 0\nagi_dnid: +12125550100\nagi_rdnis: unknown\nagi_context: hotline-fallback\n"
           b"agi_extension: s\nagi_priority: 2\nagi_enhanced: 0.0\nagi_accountcode: \n"
           b"agi_threadid: 140417836857024\nagi_arg_1: " + SECRET.encode() + b"\nagi_arg_2: +12125550100\n"
           b"agi_arg_3: +14155550123\n\n")


def request(route: str = "incoming-call-policy", *args: str) -> bytes:
    """The AGI variables of a request for ``route`` with these arguments (the secret is one of them)."""
    lines = ["agi_network: yes", f"agi_network_script: {route}", f"agi_request: agi://127.0.0.1:4573/{route}",
             "agi_channel: PJSIP/hotline-trunk-00000001", "agi_uniqueid: hotline-1795417573.1"]
    lines += [f"agi_arg_{n}: {value}" for n, value in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


@pytest.mark.parametrize(("line", "code", "value", "data", "extras", "digit"), [
    ("200 result=0", 200, 0, None, {}, None),                                      # ANSWER
    ("200 result=-1 endpos=0", 200, -1, None, {"endpos": "0"}, None),              # STREAM FILE, no such file
    ("200 result=49 endpos=5000", 200, 49, None, {"endpos": "5000"}, "1"),         # STREAM FILE stopped by 1
    ("200 result=1 (hotline-direct/sip:oncall@127.0.0.1:25688)", 200, 1,
     "hotline-direct/sip:oncall@127.0.0.1:25688", {}, None),                       # GET VARIABLE
    ("200 result=1 (PJSIP/hotline-direct-00000002,PJSIP/hotline-direct-00000001)", 200, 1,
     "PJSIP/hotline-direct-00000002,PJSIP/hotline-direct-00000001", {}, None),      # HANGUPCAUSE_KEYS()
    ("200 result=1 ()", 200, 1, "", {}, None),                                     # an empty variable
    ("200 result= (timeout)", 200, None, "timeout", {}, None),                     # GET DATA, nothing typed
    ("200 result=6", 200, 6, None, {}, None),                                      # CHANNEL STATUS: up
    ("510 Invalid or unknown command", 510, None, None, {}, None),
    ("511 Command Not Permitted on a dead channel or intercept routine", 511, None, None, {}, None),
])
def test_results_recorded_from_asterisk(line, code, value, data, extras, digit):
    result = parse_result(line + "\n")
    assert (result.code, result.value, result.data, result.extras, result.digit) == (code, value, data, extras, digit)


def test_not_a_result():
    with pytest.raises(Exception, match="not an AGI result"):
        parse_result("HTTP/1.1 200 OK")


def test_headers_arguments_and_route():
    headers = parse_headers(HEADERS)
    assert headers["agi_channel"] == "PJSIP/hotline-trunk-00000022"
    assert headers["agi_accountcode"] == ""
    assert agi_args(headers) == [SECRET, "+12125550100", "+14155550123"]
    assert route_of(headers) == "incoming-call-policy"
    assert route_of({"agi_network_script": "notification?x=1"}) == "notification"
    assert agi_args({"agi_arg_10": "j", "agi_arg_2": "b", "agi_arg_1": "a"}) == ["a", "b", "j"]


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\nHost: x\n\n", b"hello\n\n", b"agi_x: 1\n\n",
                                  b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\n\n"])
def test_what_is_not_an_agi_request(data):
    with pytest.raises(ValueError):
        parse_headers(data)


def test_the_secret_is_split_off_and_the_other_arguments_renumbered():
    secret, headers = split_secret(parse_headers(HEADERS))
    assert secret == SECRET
    assert agi_args(headers) == ["+12125550100", "+14155550123"]
    assert headers["agi_arg_1"] == "+12125550100" and "agi_arg_3" not in headers
    assert SECRET not in headers.values() and headers["agi_channel"] == "PJSIP/hotline-trunk-00000022"
    assert split_secret(parse_headers(request("health"))) == (None, parse_headers(request("health")))
    assert split_secret({"agi_arg_1": SECRET, "agi_arg_2": ""})[1] == {"agi_arg_1": ""}


def test_secrets_that_cannot_be_used():
    assert checked_secret(SECRET) == SECRET
    for bad in ("", None, "short", "a" * 129, "comma,splits-the-arguments", "newline\nagi_arg_2: x" + "y" * 16,
                "space in the dialplan argument"):
        with pytest.raises(ConfigError, match="agi.secret"):
            checked_secret(bad)


def test_peer_addresses():
    assert str(peer_address(("127.0.0.1", 4000))) == "127.0.0.1"
    assert str(peer_address(("::ffff:10.0.0.7", 4000, 0, 0))) == "10.0.0.7"   # IPv4 on a dual-stack socket
    assert str(peer_address(("fe80::1%eth0", 4000, 0, 2))) == "fe80::1"
    assert peer_address(None) is None and peer_address("/run/agi.sock") is None


def test_quoting_for_res_agi():
    assert quote('PJSIP/a&PJSIP/b,5,rU(x^y)') == '"PJSIP/a&PJSIP/b,5,rU(x^y)"'
    assert quote('say "hi" \\ there') == '"say \\"hi\\" \\\\ there"'


# -- the server over real sockets ------------------------------------------------------------


class FakeAsterisk:
    """The Asterisk side of one FastAGI session: sends the variables, answers commands from a script."""

    def __init__(self, port: int, answers: dict[str, list[str]] | None = None, headers: bytes = HEADERS):
        self.port = port
        self.answers = answers or {}
        self.headers = headers
        self.commands: list[str] = []

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.headers)
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                break
            command = line.decode().strip()
            self.commands.append(command)
            verb = command.split(" ")[0] if not command.startswith("STREAM") else "STREAM FILE"
            replies = self.answers.get(verb) or ["200 result=0"]
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            if reply == "(silence)":
                continue
            writer.write((reply + "\n").encode())
            await writer.drain()
        writer.close()


async def start_server(host: str = "127.0.0.1", **kwargs) -> AgiServer:
    kwargs.setdefault("secret", SECRET)
    server = AgiServer(host, 0, **kwargs)
    await server.start()
    server.port = server.server.sockets[0].getsockname()[1]
    return server


async def test_sync_routes_are_refused():
    server = AgiServer("127.0.0.1", 0, secret=SECRET)

    def not_async(chan):
        pass

    with pytest.raises(TypeError, match="async def"):
        server.add_route("x", not_async)


async def test_a_route_runs_commands_and_survives_hangup_lines():
    seen: dict = {}

    async def route(chan: AgiChannel) -> None:
        seen["args"] = chan.args
        await chan.answer()
        seen["var"] = await chan.get_variable("${DIALSTATUS}")
        # The channel hangs up during the playback: Asterisk answers -1, then says HANGUP.
        with pytest.raises(AgiHangup):
            await chan.stream_file("/var/lib/hotline/sounds/hl-x", "1")
        seen["hung_up"] = (chan.hung_up, chan.hangup_notice)
        with pytest.raises(AgiHangup):
            await chan.answer()

    server = await start_server()
    server.add_route("incoming-call-policy", route)
    fake = FakeAsterisk(server.port, {
        "GET": ["200 result=1 (NOANSWER)"],
        "STREAM FILE": ["HANGUP\n200 result=-1 endpos=1200"],
        "CHANNEL": ["511 Command Not Permitted on a dead channel or intercept routine"],
        "ANSWER": ["200 result=0", "511 Command Not Permitted on a dead channel or intercept routine"],
    })
    await asyncio.wait_for(fake.run(), 5)
    await server.close()
    assert seen == {"args": ["+12125550100", "+14155550123"], "var": "NOANSWER", "hung_up": (True, True)}
    assert fake.commands[:3] == ["ANSWER", 'GET FULL VARIABLE "${DIALSTATUS}"', 'STREAM FILE /var/lib/hotline/sounds/hl-x "1"']
    assert server.served == 1 and server.rejected == 0


async def test_say_digits_speaks_with_asterisks_recordings_and_reports_keys_and_hang_ups():
    """SAY DIGITS answers like STREAM FILE: 0 when said to the end, the key that stopped it, -1 when the
    channel is gone (or a digit's recording is missing: CHANNEL STATUS tells them apart)."""
    seen: dict = {}

    async def route(chan: AgiChannel) -> None:
        seen["done"] = (await chan.say_digits("482913", "9")).digit
        seen["key"] = (await chan.say_digits("482913", "9")).digit
        seen["missing"] = (await chan.say_digits("0", "")).value
        with pytest.raises(ValueError):
            await chan.say_digits("48 29", "")     # never an argument res_agi would split
        with pytest.raises(AgiHangup) as hung_up:
            await chan.say_digits("482913", "9")
        seen["error"] = str(hung_up.value)

    server = await start_server()
    server.add_route("incoming-call-policy", route)
    fake = FakeAsterisk(server.port, {
        "SAY": ["200 result=0", "200 result=57", "200 result=-1", "HANGUP\n200 result=-1"],
        "CHANNEL": ["200 result=6"],
    })
    await asyncio.wait_for(fake.run(), 5)
    await server.close()
    assert seen == {"done": None, "key": "9", "missing": -1, "error": "the channel hung up while digits were said"}
    assert fake.commands[:2] == ['SAY DIGITS 482913 "9"', 'SAY DIGITS 482913 "9"']
    assert fake.commands[2:4] == ['SAY DIGITS 0 ""', "CHANNEL STATUS"]


async def test_a_command_without_an_answer_times_out():
    async def route(chan: AgiChannel) -> None:
        started = time.monotonic()
        with pytest.raises(AgiTimeout):
            await chan.command("ANSWER", timeout=0.2)
        assert time.monotonic() - started < 1
        # Asterisk's late answer would be taken for the next command's: the session is over.
        with pytest.raises(AgiHangup, match="closed"):
            await chan.command("GET FULL VARIABLE ${DIALSTATUS}")

    server = await start_server()
    server.add_route("incoming-call-policy", route)
    await asyncio.wait_for(FakeAsterisk(server.port, {"ANSWER": ["(silence)"]}).run(), 5)
    await server.close()


async def measure_lag(stop: asyncio.Event, samples: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.01)
        samples.append(loop.time() - start - 0.01)


async def test_connections_that_close_at_once_or_send_garbage_neither_spin_nor_block():
    """panoramisk's handler loops forever on a client that closes before the blank line."""
    calls = []

    async def route(chan: AgiChannel) -> None:
        calls.append(chan.args)
        await chan.answer()

    server = await start_server(header_timeout=0.3)
    server.add_route("incoming-call-policy", route)
    stop, lag = asyncio.Event(), []
    ticker = asyncio.create_task(measure_lag(stop, lag))
    started = time.process_time()
    for i in range(100):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        if i % 4 == 1:
            writer.write(b"agi_network: yes\nagi_network_scr")      # half a request, then gone
        elif i % 4 == 2:
            writer.write(b"\x00\xff garbage \xfe\n\n")                # not AGI at all
        elif i % 4 == 3:
            writer.write(b"GET / HTTP/1.0\n\n")                        # an HTTP health check
        writer.close()
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)  # says nothing
    huge_reader, huge_writer = await asyncio.open_connection("127.0.0.1", server.port)
    huge_writer.write(b"agi_x: " + b"y" * 100_000)
    # A real request still works meanwhile.
    await asyncio.wait_for(FakeAsterisk(server.port).run(), 5)
    assert await asyncio.wait_for(huge_reader.read(), 2) == b""        # closed: too long
    assert await asyncio.wait_for(silent_reader.read(), 2) == b""      # closed after header_timeout
    deadline = time.monotonic() + 3
    while server.rejected < 102 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await ticker
    cpu = time.process_time() - started
    huge_writer.close()
    silent_writer.close()
    await server.close()
    assert calls == [["+12125550100", "+14155550123"]]
    assert server.rejected == 102 and server.served == 1
    assert max(lag) < 0.25, max(lag)   # a spinning handler never yields: the loop would stall
    assert cpu < 1.5, cpu     # a spinning handler would burn a whole core until the end


async def test_close_cancels_running_sessions():
    started = asyncio.Event()

    async def route(chan: AgiChannel) -> None:
        started.set()
        await asyncio.sleep(60)

    server = await start_server()
    server.add_route("incoming-call-policy", route)
    client = asyncio.create_task(FakeAsterisk(server.port).run())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(server.close(), 5)
    await asyncio.wait_for(client, 5)   # the connection was closed
    assert not server.sessions


# -- who may use the server: Asterisk's addresses, with the install's secret -------------------

ROUTES = ("incoming-call-policy", "leg-answered", "leg-ended", "notification", "health")


async def exchange(port: int, data: bytes, host: str = "127.0.0.1", local: str | None = None) -> bytes:
    """Send ``data`` and read everything until the server closes (a route here answers one NOOP).
    A server that closes without reading what was sent resets the connection: that is a close too."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0) if local else None)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(4096), 3):
            received += chunk
            if received.endswith(b"\n"):
                writer.write(b"200 result=0\n")
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return received


async def test_every_route_needs_the_secret_and_sees_the_arguments_after_it():
    """Without the secret nobody forges a call's log, reads a Dial or fakes a leg's answer: the
    connection is closed before any route runs, whatever the route."""
    ran: list[tuple[str, list[str], str | None]] = []
    rejected: list[str] = []

    def route_for(name):
        async def route(chan: AgiChannel) -> None:
            ran.append((name, chan.args, chan.headers.get("agi_arg_3")))
            await chan.command('NOOP "ran"')
        return route

    server = await start_server(on_reject=rejected.append)
    for name in ROUTES:
        server.add_route(name, route_for(name))
    forged = 0
    for name in ROUTES:
        for args in ((), ("+12125550100", "+14155550123"),                  # no secret (the old dialplan)
                     ("wrong-secret-0123456789abcdef", "+12125550100"),     # a guess
                     (SECRET[:-1], "+12125550100"), (SECRET + "x", "+12125550100"),
                     ("", SECRET, "+12125550100"),                         # not the first argument
                     (SECRET.upper(), "+12125550100")):
            assert await exchange(server.port, request(name, *args)) == b"", (name, args)
            forged += 1
    assert ran == [] and server.served == 0
    assert server.rejected == forged and len(rejected) == forged
    assert all("secret" in why for why in rejected)
    for name in ROUTES:
        assert await exchange(server.port, request(name, SECRET, "a", "b")) == b'NOOP "ran"\n'
    await server.close()
    # The routes see the arguments the dialplan passed after the secret, never the secret itself.
    assert ran == [(name, ["a", "b"], None) for name in ROUTES]
    assert server.served == len(ROUTES) and server.rejected == forged


async def test_the_secret_is_compared_in_constant_time(monkeypatch):
    compared = []
    real = agi.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(agi.hmac, "compare_digest", spy)
    server = await start_server()
    server.add_route("health", _noop_route)
    assert await exchange(server.port, request("health", "guess-0123456789abcdef")) == b""
    assert await exchange(server.port, request("health", SECRET)) == b'NOOP "ran"\n'
    await server.close()
    assert compared == [(b"guess-0123456789abcdef", SECRET.encode()), (SECRET.encode(), SECRET.encode())]


async def _noop_route(chan: AgiChannel) -> None:
    await chan.command('NOOP "ran"')


async def test_a_peer_that_is_not_allowed_is_closed_before_it_is_read():
    rejected: list[str] = []
    server = await start_server(allowed_peers=["192.0.2.0/24", "2001:db8::/32"], on_reject=rejected.append)
    server.add_route("health", _noop_route)
    # A full, valid request with the secret: refused all the same.
    assert await exchange(server.port, request("health", SECRET)) == b""
    # One that says nothing is closed at once, not after the 5 s allowed for the AGI variables.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert time.monotonic() - started < 1.0
    writer.close()
    await server.close()
    assert server.served == 0 and server.rejected == 2
    assert rejected == ["its address is not in agi.allowed_peers"] * 2


async def test_by_default_only_this_machine_may_connect():
    server = await start_server()
    server.add_route("health", _noop_route)
    assert await exchange(server.port, request("health", SECRET)) == b'NOOP "ran"\n'
    # Another loopback address is another machine's in a container or a network namespace.
    assert await exchange(server.port, request("health", SECRET), local="127.0.0.2") == b""
    await server.close()
    assert server.served == 1 and server.rejected == 1


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_loopback_is_allowed_by_default():
    server = await start_server(host="::1")
    server.add_route("health", _noop_route)
    assert await exchange(server.port, request("health", SECRET), host="::1") == b'NOOP "ran"\n'
    await server.close()


async def test_refused_connections_are_counted_but_not_logged_one_by_one(caplog):
    """A network neighbour knocking at the port must not flood the log: one line per LOG_EVERY
    seconds, which says how many more there were."""
    counted = []
    server = await start_server(allowed_peers=["192.0.2.1"], on_reject=counted.append)
    with caplog.at_level(logging.INFO, logger="ivr.asterisk.agi"):
        for _ in range(40):
            await exchange(server.port, request("health", SECRET))
        server._last_reject_log -= server.LOG_EVERY       # the next line is due
        await exchange(server.port, request("health", SECRET))
    await server.close()
    lines = [r for r in caplog.records if "closed a connection" in r.getMessage()]
    assert len(counted) == server.rejected == 41
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in lines)
    assert "agi.allowed_peers" in lines[0].getMessage()
    assert "and 39 more since the last such line" in lines[1].getMessage()


async def test_a_server_without_a_usable_secret_or_with_bad_peers_is_not_made():
    for secret in ("", "short"):
        with pytest.raises(ConfigError, match="agi.secret"):
            AgiServer("127.0.0.1", 0, secret=secret)
    with pytest.raises(ConfigError, match="agi.allowed_peers: 'asterisk.internal' is not an IP address"):
        AgiServer("127.0.0.1", 0, secret=SECRET, allowed_peers=["127.0.0.1", "asterisk.internal"])
