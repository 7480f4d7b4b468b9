"""The lab Asterisk's security properties: only the trunk's addresses reach the dialplan,
and no caller can make Asterisk dial out, whether the controller is connected or not."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.e2e.ari_helpers import AriClient
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e

INTERNATIONAL = "9011441234567"


class FastAgiStub:
    """A FastAGI server that records requests and hangs the call up."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.requests: list[dict[str, str]] = []
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> "FastAgiStub":
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers: dict[str, str] = {}
        try:
            while True:
                line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.strip()] = value.strip()
            self.requests.append(headers)
            writer.write(b"HANGUP\n")
            await writer.drain()
            await asyncio.wait_for(reader.readline(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def _observer(lab_config) -> AriClient:
    """An ARI client of another application that sees every channel (not the controller)."""
    client = AriClient(lab_config, app="e2e-observer", subscribe_all=True)
    await client.connect()
    return client


async def test_invite_from_an_address_that_is_not_the_trunk_is_rejected(lab, ari, sip_target, lab_config):
    observer = await _observer(lab_config)
    try:
        caller = Caller("4155550100", sip_target, ip="127.0.0.2", max_wait=5)
        await caller.start()
        result = await caller.wait(10)
        await asyncio.sleep(0.3)
    finally:
        await observer.close()
    assert result.final_status is not None and result.final_status >= 400, result
    assert not result.answered
    assert not ari.find("StasisStart"), "an untrusted INVITE reached the controller"
    assert not observer.find("ChannelCreated"), "an untrusted INVITE created a channel"


async def test_international_number_with_controller_connected_never_dials_out(
        lab, ari, sip_target, lab_config, carrier_port):
    observer = await _observer(lab_config)
    async with Phone.answer(port=carrier_port, max_wait=15) as carrier:
        caller = Caller(INTERNATIONAL, sip_target, max_wait=10)
        await caller.start()
        start = await ari.wait_event("StasisStart", timeout=5)
        assert start["args"] == ["incoming", INTERNATIONAL]
        await asyncio.sleep(1.0)
        channels = await ari.get("/channels")
        assert [c["id"] for c in channels] == [start["channel"]["id"]]
        await ari.hangup(start["channel"]["id"])
        await caller.wait(5)
        carrier_result = await carrier.stop()
    await observer.close()
    assert not carrier_result.received_call, carrier_result
    created = observer.find("ChannelCreated")
    assert [e["channel"]["id"] for e in created] == [start["channel"]["id"]]


async def test_controller_down_and_fastagi_down_apologise_and_never_dial_out(
        lab, sip_target, lab_config, carrier_port):
    """STASISSTATUS=FAILED -> FastAGI (nothing listens) -> the spoken apology; not silence,
    not an outbound leg."""
    observer = await _observer(lab_config)
    async with Phone.answer(port=carrier_port, max_wait=20) as carrier:
        caller = Caller(INTERNATIONAL, sip_target, max_wait=15)
        await caller.start()
        result = await caller.wait(20)
        carrier_result = await carrier.stop()
    await observer.close()
    assert result.answered and result.hung_up_by == "remote", result
    # The apology is several seconds of prompts: the caller is not hung up on in silence.
    assert result.call.talk_time > 3.0, result
    assert not carrier_result.received_call, carrier_result
    assert len(observer.find("ChannelCreated")) == 1


async def test_controller_down_falls_back_to_fastagi(lab, sip_target, lab_config, carrier_port):
    async with FastAgiStub("127.0.0.1", lab_config.agi.port) as agi:
        caller = Caller("4155550100", sip_target, caller_id="15550002222", max_wait=10)
        await caller.start()
        result = await caller.wait(10)
    assert len(agi.requests) == 1, agi.requests
    request = agi.requests[0]
    assert request["agi_network_script"] == "incoming-call-policy"
    # The install's secret first (Hotline's server refuses a request without it), then the call.
    assert request["agi_arg_1"] == lab_config.agi.secret
    assert request["agi_arg_2"] == "4155550100"
    assert request["agi_arg_3"] == "15550002222"
    assert request["agi_callerid"] == "15550002222"
    # The stub hung the call up (before answering it): nothing was played after it.
    assert not result.answered and result.final_status is not None and result.final_status >= 400, result


# `_[+*#0-9]!` lets anything follow the first character: a ',' in the dialed number or the caller ID
# would add or shift arguments of Stasis() and AGI(). Asterisk's FILTER keeps digits, '+', '*', '#' of
# the number and digits and '+' of the caller ID, cut at 32 characters.
FORGED_NUMBER, FORGED_CALLER_ID = "4155550100,evil(x)", "1555000,2222abc"


async def test_the_dialed_number_is_filtered_before_it_becomes_a_stasis_argument(lab, ari, sip_target):
    caller = Caller(FORGED_NUMBER, sip_target, caller_id=FORGED_CALLER_ID, max_wait=10)
    await caller.start()
    start = await ari.wait_event("StasisStart", timeout=5)
    await ari.hangup(start["channel"]["id"])
    await caller.wait(5)
    assert start["args"] == ["incoming", "4155550100"], start["args"]


async def test_the_dialed_number_and_caller_id_are_filtered_before_they_become_agi_arguments(
        lab, sip_target, lab_config):
    long_number, long_caller = "+" + "1" * 40, "2" * 40
    # A ')' then ':' makes Asterisk read what follows as the cut of ${FILTER(...)}: fewer of the
    # caller's own characters, never other ones.
    cutting_number, cutting_caller = "+1415):-3,x", "1555):1,x"
    async with FastAgiStub("127.0.0.1", lab_config.agi.port) as agi:
        for number, caller_id in ((FORGED_NUMBER, FORGED_CALLER_ID), (long_number, long_caller),
                                  (cutting_number, cutting_caller)):
            caller = Caller(number, sip_target, caller_id=caller_id, max_wait=10)
            await caller.start()
            await caller.wait(10)
    assert len(agi.requests) == 3, agi.requests
    first, second, third = agi.requests
    assert [first.get(f"agi_arg_{n}") for n in (1, 2, 3, 4)] == [lab_config.agi.secret, "4155550100",
                                                                "15550002222", None]
    assert [second.get(f"agi_arg_{n}") for n in (1, 2, 3, 4)] == [lab_config.agi.secret, long_number[:32],
                                                                 long_caller[:32], None]
    assert third["agi_arg_1"] == lab_config.agi.secret and "agi_arg_4" not in third, third
    assert re.fullmatch(r"[0-9+*#]{0,32}", third["agi_arg_2"]) and set(third["agi_arg_2"]) <= set("+1415"), third
    assert re.fullmatch(r"[0-9+]{0,32}", third["agi_arg_3"]) and set(third["agi_arg_3"]) <= set("1555"), third


async def test_trunk_cannot_reach_the_lab_test_routes(lab, ari, sip_target, carrier_port):
    async with Phone.answer(port=carrier_port, max_wait=10) as carrier:
        caller = Caller(f"dial-{carrier_port}", sip_target, max_wait=5)
        await caller.start()
        result = await caller.wait(10)
        carrier_result = await carrier.stop()
    assert result.final_status == 404, result
    assert not carrier_result.received_call
    assert not ari.find("StasisStart")


def test_no_dialplan_route_dials_a_number_the_caller_chose(lab):
    """Every Dial() in the running dialplan goes to the configured fallback or to the
    lab's loopback phones; no module that could dial or transfer otherwise is loaded."""
    dialplan = lab.cli("dialplan show")
    dials = re.findall(r"Dial\(([^)]*)\)", dialplan)
    assert dials, dialplan
    for target in dials:
        assert target.startswith("${HOTLINE_FALLBACK_DIAL}") or \
            target.startswith("PJSIP/hotline-direct/sip:lab-phone@127.0.0.1:${EXTEN:5}"), target
    for app in ("Originate", "ChannelRedirect", "Transfer", "System", "DISA"):
        assert f"{app}(" not in dialplan
    modules = lab.cli("module show")
    for module in ("res_pjsip_refer.so", "app_originate.so", "res_pjsip_registrar.so",
                   "res_pjsip_endpoint_identifier_user.so", "app_system.so", "res_clioriginate.so"):
        assert module not in modules, module
    endpoints = lab.cli("pjsip show endpoints")
    trunk = lab.cli("pjsip show endpoint hotline-trunk")
    assert re.search(r"context\s*:\s*hotline-inbound", trunk)
    for name in ("hotline-direct", "lab-carrier"):
        assert name in endpoints
        detail = lab.cli(f"pjsip show endpoint {name}")
        assert re.search(r"context\s*:\s*hotline-no-dialing", detail), detail
        assert re.search(r"allow_transfer\s*:\s*false", detail), detail
