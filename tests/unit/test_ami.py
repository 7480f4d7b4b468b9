"""The AMI client over a fake Asterisk Manager: login, keep-alive, bounded actions, Originate tracking,
and what panoramisk gets wrong (a refused login, re-sending an Originate after a reconnect)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from panoramisk.message import Message

from ivr.asterisk.ami import (
    REASON_ANSWERED,
    AmiClient,
    AmiConnectionLost,
    AmiError,
    AmiTimeout,
    AmiUnavailable,
)
from ivr.asterisk.causes import cause_text

EOL = "\r\n"


def message(**fields) -> bytes:
    return (EOL.join(f"{k}: {v}" for k, v in fields.items()) + EOL + EOL).encode()


class FakeAmi:
    """Speaks enough AMI: banner, Login, Ping, Originate (queued, then OriginateResponse), CoreStatus.

    ``on_originate``: "answer" (queued + OriginateResponse), "queue" (queued only), "drop" (close
    the connection before answering), "drop-after-queue" (queued, then close), "ignore" (no answer).
    """

    def __init__(self, secret: str = "s3cret"):
        self.secret = secret
        self.actions: list[dict] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.logins = 0
        self.on_originate = "answer"
        self.answer_pings = True
        self.answer_core_status = True
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> "FakeAmi":
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.drop_all()
        self.server.close()

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.get("Action") == action)

    async def session(self, reader, writer) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                action: dict = {}
                for line in block.decode().split(EOL):
                    if ": " in line:
                        key, value = line.split(": ", 1)
                        action.setdefault(key, value)
                self.actions.append(action)
                await self.reply(action, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def reply(self, action: dict, writer) -> None:
        name, action_id = action.get("Action"), action.get("ActionID")
        if name == "Login":
            if action.get("Secret") == self.secret:
                self.logins += 1
                writer.write(message(Response="Success", ActionID=action_id, Message="Authentication accepted"))
                writer.write(message(Event="FullyBooted", Privilege="system,all", Status="Fully Booted"))
            else:
                writer.write(message(Response="Error", ActionID=action_id, Message="Authentication failed"))
        elif name == "Ping":
            if self.answer_pings:
                writer.write(message(Response="Success", ActionID=action_id, Ping="Pong"))
        elif name == "CoreStatus":
            if self.answer_core_status:
                writer.write(message(Response="Success", ActionID=action_id, CoreCurrentCalls="0"))
        elif name == "Originate":
            if self.on_originate == "drop":
                writer.close()
                return
            if self.on_originate == "ignore":
                return
            writer.write(message(Response="Success", ActionID=action_id, Message="Originate successfully queued"))
            if self.on_originate == "drop-after-queue":
                await writer.drain()
                writer.close()
                return
            if self.on_originate == "answer":
                uid = action.get("ChannelId")
                writer.write(message(Event="Newstate", Channel="PJSIP/hotline-direct-00000009", ChannelState="6",
                                     Uniqueid=uid))
                writer.write(message(Event="OriginateResponse", ActionID=action_id, Response="Success",
                                     Channel="PJSIP/hotline-direct-00000009", Context="hotline-notify", Exten="s",
                                     Reason="4", Uniqueid=uid))
        else:
            writer.write(message(Response="Error", ActionID=action_id, Message="Invalid/unknown command"))
        await writer.drain()


@pytest.fixture
async def fake():
    server = await FakeAmi().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client_of():
    clients = []

    async def make(fake: FakeAmi, secret: str = "s3cret", **kwargs) -> AmiClient:
        kwargs = {"action_timeout": 0.3, "ping_interval": 5.0, "reconnect_max_delay": 0.2, **kwargs}
        client = AmiClient("127.0.0.1", fake.port, "hotline", secret, **kwargs)
        task = asyncio.create_task(client.run())
        clients.append((client, task))
        return client

    yield make
    for client, task in clients:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_connects_logs_in_and_answers_actions(fake, client_of):
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    response = await client.send({"Action": "CoreStatus"})
    assert response.response == "Success" and response["CoreCurrentCalls"] == "0"
    with pytest.raises(AmiError, match="Invalid/unknown command"):
        await client.send({"Action": "Frobnicate"})


async def test_a_refused_login_is_an_error_and_is_logged(fake, client_of, caplog):
    caplog.set_level(logging.ERROR)
    client = await client_of(fake, secret="wrong")
    await wait_until(lambda: client.last_error is not None)
    assert not client.connected.is_set()
    assert "login refused" in client.last_error
    assert any("refused the login of user 'hotline'" in r.getMessage() for r in caplog.records)
    with pytest.raises(AmiUnavailable):
        await client.send({"Action": "CoreStatus"})


async def test_every_action_is_bounded_in_time(fake, client_of):
    fake.answer_core_status = False
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    started = time.monotonic()
    with pytest.raises(AmiUnavailable, match="did not answer CoreStatus"):
        await client.send({"Action": "CoreStatus"})
    assert time.monotonic() - started < 1.0


async def test_keep_alive_pings_and_a_dead_connection_is_replaced(fake, client_of):
    client = await client_of(fake, ping_interval=0.1)
    await asyncio.wait_for(client.connected.wait(), 3)
    await wait_until(lambda: fake.count("Ping") >= 2)
    fake.answer_pings = False          # the connection is up but Asterisk no longer answers
    await wait_until(lambda: fake.logins >= 2, timeout=5)
    assert client.connections >= 2


async def test_survives_a_lost_connection(fake, client_of):
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    fake.drop_all()
    await wait_until(lambda: fake.logins >= 2)
    await asyncio.wait_for(client.connected.wait(), 3)
    assert (await client.send({"Action": "CoreStatus"})).response == "Success"


async def test_originate_is_tracked_to_its_response_and_events_reach_listeners(fake, client_of):
    client = await client_of(fake)
    seen: list[Message] = []
    client.add_listener(seen.append)
    await asyncio.wait_for(client.connected.wait(), 3)
    handle = await client.originate(channel="PJSIP/hotline-direct/sip:a@127.0.0.1:5062", context="hotline-notify",
                                    timeout=20, caller_id='"Hotline" <+14155550000>',
                                    variables={"HOTLINE_CALL_LOG": "abc"}, channel_id="chan-1")
    response = await asyncio.wait_for(handle.response, 3)
    assert int(response.reason) == REASON_ANSWERED and response.uniqueid == "chan-1"
    sent = [a for a in fake.actions if a.get("Action") == "Originate"][0]
    assert sent["Async"] == "true" and sent["ChannelId"] == "chan-1" and sent["Timeout"] == "20000"
    assert sent["Context"] == "hotline-notify" and sent["Variable"] == "HOTLINE_CALL_LOG=abc"
    assert any(e.event == "Newstate" and e.uniqueid == "chan-1" for e in seen)


@pytest.mark.parametrize("when", ["drop", "drop-after-queue"])
async def test_an_originate_is_never_sent_twice_after_a_reconnect(fake, client_of, when):
    """panoramisk re-sends unanswered actions at the next FullyBooted: an Originate must not be."""
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    fake.on_originate = when
    with pytest.raises(AmiConnectionLost):
        handle = await client.originate(channel="PJSIP/hotline-direct/sip:a@127.0.0.1:5062",
                                        context="hotline-notify", timeout=20)
        await asyncio.wait_for(handle.response, 3)   # queued, then the connection dropped
    await wait_until(lambda: fake.logins >= 2)       # reconnected; the fake sent FullyBooted again
    await asyncio.sleep(0.2)
    assert fake.count("Originate") == 1


async def test_an_originate_left_unanswered_is_a_timeout_whose_outcome_is_unknown(fake, client_of):
    """Not "refused": Asterisk may still place it, so the caller must not treat it as never sent."""
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    fake.on_originate = "ignore"
    with pytest.raises(AmiTimeout, match="did not answer Originate"):
        await client.originate(channel="PJSIP/hotline-direct/sip:a@127.0.0.1:5062", context="hotline-notify",
                               timeout=20)
    assert fake.count("Originate") == 1 and not client._originates


async def test_a_shutdown_event_means_reconnecting(fake, client_of):
    client = await client_of(fake)
    await asyncio.wait_for(client.connected.wait(), 3)
    for writer in fake.writers:
        writer.write(message(Event="Shutdown", Privilege="system,all", Shutdown="Cleanly", Restart="True"))
    await wait_until(lambda: fake.logins >= 2)


async def test_unreachable_ami_keeps_retrying_and_says_why(client_of):
    dead = FakeAmi()
    dead.port = 9   # discard: nothing listens
    client = await client_of(dead)
    await wait_until(lambda: client.last_error is not None)
    assert "cannot connect" in client.last_error and not client.connected.is_set()


def test_cause_texts():
    assert cause_text(17) == "User busy (cause 17)"
    assert cause_text(None) == "unknown cause"
    assert cause_text(999) == "cause 999"
