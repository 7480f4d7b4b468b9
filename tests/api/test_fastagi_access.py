"""The FastAGI port of the application ``hotline serve`` builds (ivr.main.build_app), attacked as a
network neighbour would: a request without the install's secret forges no Incoming Call Log, and
hears no Dial of the on-call numbers. No Asterisk here: the test speaks FastAGI itself."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from ivr.main import AGI_CALLS, AGI_SERVER, build_app
from ivr.store import models as m
from ivr.store.db import open_database
from tests.api.conftest import ApiClient
from tests.api.factories import unique_phone

SECRET = "api-test-agi-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def serving(database_url, config, aiohttp_client, tmp_path):
    """The API with the call services (without ARI, as dialplan-first installations run them)."""
    db = open_database(database_url, pool_size=2)
    config = config.replace(controller__ari=False, ami__port=free_port(), ami__secret="not-used",
                            agi__port=free_port(), agi__secret=SECRET, tts__cache_dir=str(tmp_path / "sounds"))
    app = build_app(config, db=db)
    client = await aiohttp_client(app)
    try:
        yield ApiClient(client, db), app
    finally:
        await client.close()
        await db.close_pool()


async def incoming_call(port: int, uniqueid: str, *args: str, answer_for: float = 3.0) -> list[str]:
    """Play Asterisk for an ``incoming-call-policy`` request: every command answered ``200 result=0``
    for ``answer_for`` seconds; the commands the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = ["agi_network: yes", "agi_network_script: incoming-call-policy",
             f"agi_request: agi://127.0.0.1:{port}/incoming-call-policy", "agi_channel: PJSIP/forged-00000001",
             f"agi_uniqueid: {uniqueid}", "agi_callerid: 15550001111"]
    lines += [f"agi_arg_{n}: {value}" for n, value in enumerate(args, start=1)]
    writer.write(("\n".join(lines) + "\n\n").encode())
    commands: list[str] = []
    deadline = time.monotonic() + answer_for
    try:
        while (left := deadline - time.monotonic()) > 0:
            line = await asyncio.wait_for(reader.readline(), left)
            if not line:
                break
            commands.append(line.decode().strip())
            writer.write(b"200 result=0\n")
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
    return commands


async def test_a_request_without_the_secret_forges_no_call_and_reads_no_number(serving):
    api, app = serving
    server = app[AGI_SERVER]
    tenant = await api.tenant("FastAGI")
    user = await api.create("user", tenant.owner, {"name": "Ada"})
    await api.create("user-incoming-call-number", tenant.owner,
                     {"userId": user["_id"], "sipUri": "sip:ada@10.0.0.5:5060", "isVerified": True})
    routing = unique_phone()
    policy = await api.create("incoming-call-policy", tenant.owner, {"name": "Ops", "routingPhoneNumber": routing})
    await api.create("incoming-call-policy-escalation-rule", tenant.owner,
                     {"incomingCallPolicyId": policy["_id"], "name": "Ada", "userId": user["_id"]})

    def logs(uniqueid: str) -> list[m.IncomingCallLog]:
        return list(m.IncomingCallLog.select().where(m.IncomingCallLog.callProviderCallId == f"agi:{uniqueid}"))

    forged = f"forged-{uuid.uuid4().hex[:8]}"
    for args in ((routing, "+15550001111"), ("wrong-secret-0123456789", routing, "+15550001111")):
        assert await incoming_call(server.port, forged, *args, answer_for=1.0) == []
    assert await api.db.run(logs, forged) == []
    assert server.served == 0 and server.rejected == 2
    # The same request with the secret is a call: its log is written and the on-call number dialed.
    real = f"real-{uuid.uuid4().hex[:8]}"
    commands = await incoming_call(server.port, real, SECRET, routing, "+15550001111")
    assert server.served == 1
    assert any("sip:ada@10.0.0.5:5060" in command for command in commands), commands
    deadline = time.monotonic() + 5
    while not (rows := await api.db.run(logs, real)):
        assert time.monotonic() < deadline, "the call's log was never written"
        await asyncio.sleep(0.05)
    assert str(rows[0].incomingCallPolicyId) == policy["_id"] and rows[0].callerPhoneNumber == "+15550001111"
    # The call ends (its caller is gone) and its prompts are synthesized before the app stops: a
    # synthesis cancelled at shutdown would leave its subprocess to the next test's event loop.
    calls = app[AGI_CALLS]
    while calls.actors or len(calls.tasks) > 1:        # the one left: the reconciliation loop
        assert time.monotonic() < deadline + 20, "the call did not end"
        await asyncio.sleep(0.05)
