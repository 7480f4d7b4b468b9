"""FastAGI: result parsing on lines recorded from Asterisk 22, and the server over real sockets
(what panoramisk's own handler does not survive: clients that close early, garbage, silence)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.asterisk.agi import (
    AgiChannel,
    AgiHangup,
    AgiServer,
    AgiTimeout,
    agi_args,
    parse_headers,
    parse_result,
    quote,
    route_of,
)

# Recorded from the lab Asterisk (22.10): a trunk call falling back to FastAGI.
HEADERS = (b"agi_network: yes\nagi_network_script: incoming-call-policy\n"
           b"agi_request: agi://127.0.0.1:15273/incoming-call-policy\nagi_channel: PJSIP/hotline-trunk-00000022\n"
           b"agi_language: en\nagi_type: PJSIP\nagi_uniqueid: hotline-e2e7-1795417573.34\n"
           b"agi_version: 22.10.1+dfsg+~cs6.17.60671434-1\nagi_callerid: +14155550123\n"
           b"agi_calleridname: Test Caller\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
           b"agi_callingtns: 0\nagi_dnid: +12125550100\nagi_rdnis: unknown\nagi_context: hotline-fallback\n"
           b"agi_extension: s\nagi_priority: 2\nagi_enhanced: 0.0\nagi_accountcode: \n"
           b"agi_threadid: 140417836857024\nagi_arg_1: +12125550100\nagi_arg_2: +14155550123\n\n")


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
    assert agi_args(headers) == ["+12125550100", "+14155550123"]
    assert route_of(headers) == "incoming-call-policy"
    assert route_of({"agi_network_script": "notification?x=1"}) == "notification"
    assert agi_args({"agi_arg_10": "j", "agi_arg_2": "b", "agi_arg_1": "a"}) == ["a", "b", "j"]


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\nHost: x\n\n", b"hello\n\n", b"agi_x: 1\n\n",
                                  b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\n\n"])
def test_what_is_not_an_agi_request(data):
    with pytest.raises(ValueError):
        parse_headers(data)


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


async def start_server(**kwargs) -> AgiServer:
    server = AgiServer("127.0.0.1", 0, **kwargs)
    await server.start()
    server.port = server.server.sockets[0].getsockname()[1]
    return server


async def test_sync_routes_are_refused():
    server = AgiServer("127.0.0.1", 0)

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
