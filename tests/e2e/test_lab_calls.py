"""The lab Asterisk end to end: a call from the trunk reaches the controller (Stasis), the
controller rings on-call phones, the SIP parties behave and report truthfully, and the
lab carries load."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.asterisk.dialplan import LAB_CALLER_ADDRESS
from tests.e2e.ari_helpers import AriClient, on_channel
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e


def test_status_reports_a_running_asterisk_22(lab):
    status = lab.status()
    assert status["running"] and status["pid"]
    assert status["version"].startswith("22."), status
    assert status["ari"]["ok"] and status["ami"]["ok"] and status["sip"]["ok"], status
    assert "Asterisk 22" in lab.cli("core show version")


def test_second_up_keeps_the_running_asterisk_and_takes_seconds(lab):
    pid = lab.pid
    started = time.monotonic()
    lab.up(test_routes=True)
    assert time.monotonic() - started < 3.0
    assert lab.pid == pid


async def test_ari_refuses_wrong_credentials(lab, lab_config):
    bad = AriClient(lab_config.replace(ari__password="not-the-password"))
    with pytest.raises(Exception):
        await bad.connect()
    await bad.close()


async def test_trunk_call_reaches_stasis_and_the_controller_rings_a_phone(lab, ari, sip_target):
    caller = Caller("4155550100", sip_target, caller_id="15550001111", max_wait=15)
    await caller.start()
    start = await ari.wait_event("StasisStart", timeout=5)
    inbound = start["channel"]
    assert start["args"] == ["incoming", "4155550100"]
    assert inbound["caller"]["number"] == "15550001111"
    assert inbound["dialplan"]["context"] == "hotline-inbound"
    assert inbound["name"].startswith("PJSIP/hotline-trunk-")
    await ari.post(f"/channels/{inbound['id']}/answer")
    await caller.wait_for("answered", timeout=5)

    async with Phone.answer() as phone:
        leg = await ari.originate(phone.endpoint("alice"), app_args="leg", caller_id="Hotline <4155550100>")
        await ari.wait_event("StasisStart", on_channel(leg), timeout=5)
        answered = await phone.wait_for("answered", timeout=5)
        assert answered.dialed == "alice"
        assert answered.caller_number == "4155550100"

        bridge = (await ari.post("/bridges", type="mixing"))["id"]
        await ari.post(f"/bridges/{bridge}/addChannel", channel=f"{inbound['id']},{leg}")
        await ari.wait_event("ChannelEnteredBridge", on_channel(leg), timeout=5)
        # The on-call engineer hangs up... (from ARI here): the phone sees the far end leave.
        await ari.hangup(leg)
        phone_result = await phone.wait(5)
    await ari.hangup(inbound["id"])
    await ari.delete(f"/bridges/{bridge}")
    caller_result = await caller.wait(5)

    assert phone_result.answered and phone_result.hung_up_by == "remote", phone_result
    assert caller_result.answered and caller_result.hung_up_by == "remote", caller_result
    assert caller_result.final_status == 200
    assert caller_result.call.talk_time > 0


async def test_phone_behaviours_as_seen_through_asterisk(lab, ari):
    """Every kind of on-call phone, rung concurrently from ARI, reports what happened."""
    busy = Phone.busy()
    unanswered = Phone.never_answer()
    presses = Phone.answer_and_press("1", delay=0.3)
    silent = Phone.answer_silent()
    late = Phone.answer_after(1.0)
    phones = [busy, unanswered, presses, silent, late]
    await asyncio.gather(*(p.start() for p in phones))

    legs = {}
    for phone in phones:
        legs[phone] = await ari.originate(phone.endpoint(), timeout=2 if phone is unanswered else 10)

    # Busy: the leg never enters Stasis; Asterisk reports cause 17 (user busy).
    destroyed = await ari.wait_event("ChannelDestroyed", on_channel(legs[busy]), timeout=5)
    assert destroyed["cause"] == 17
    # No answer within the originate timeout: Asterisk cancels the INVITE.
    await ari.wait_event("ChannelDestroyed", on_channel(legs[unanswered]), timeout=6)
    # Answer and press 1: the digit arrives as RFC 4733 DTMF on the leg.
    await ari.wait_event("StasisStart", on_channel(legs[presses]), timeout=5)
    dtmf = await ari.wait_event("ChannelDtmfReceived", on_channel(legs[presses]), timeout=5)
    assert dtmf["digit"] == "1"
    # Answer after 1 s.
    await ari.wait_event("StasisStart", on_channel(legs[late]), timeout=5)
    # Answer silently: answered, and no key press at all.
    await ari.wait_event("StasisStart", on_channel(legs[silent]), timeout=5)
    await asyncio.sleep(0.5)
    assert not ari.find("ChannelDtmfReceived", on_channel(legs[silent]))

    for phone in (presses, silent, late):
        await ari.hangup(legs[phone])
    results = {p: await p.wait(10) for p in phones}

    assert results[busy].final_status == 486 and not results[busy].answered
    assert results[unanswered].canceled and results[unanswered].final_status == 487
    assert not results[unanswered].answered
    assert results[presses].answered and results[presses].digits == "1"
    assert results[presses].hung_up_by == "remote"
    assert results[silent].answered and results[silent].digits == ""
    assert results[late].answered and results[late].call.setup_time >= 0.9


async def test_caller_hangs_up_first(lab, ari, sip_target):
    caller = Caller("4155550101", sip_target, hangup_after=0.5)
    await caller.start()
    start = await ari.wait_event("StasisStart", timeout=5)
    await ari.post(f"/channels/{start['channel']['id']}/answer")
    await ari.wait_event("StasisEnd", on_channel(start["channel"]["id"]), timeout=5)
    result = await caller.wait(5)
    assert result.answered and result.hung_up_by == "local"
    assert 0.4 < result.call.talk_time < 2.0


async def test_caller_gives_up_while_ringing(lab, ari, sip_target):
    caller = Caller("4155550102", sip_target, cancel_after=0.5)
    await caller.start()
    start = await ari.wait_event("StasisStart", timeout=5)
    await ari.post(f"/channels/{start['channel']['id']}/ring")
    await ari.wait_event("StasisEnd", on_channel(start["channel"]["id"]), timeout=5)
    result = await caller.wait(5)
    assert not result.answered and result.canceled and result.final_status == 487


async def test_load_100_calls_50_at_a_time_through_a_plain_route(lab, sip_target):
    """100 calls, at most 50 at once, from the lab caller address to the plain test route
    that dials a lab phone: every call is answered and ends normally."""
    phone = Phone.answer(calls=100, max_wait=30)
    await phone.start()
    caller = Caller(f"dial-{phone.port}", sip_target, ip=LAB_CALLER_ADDRESS, calls=100, concurrency=50,
                    rate=100, hangup_after=1.0, cancel_after=5.0, max_wait=30)
    started = time.monotonic()
    await caller.start()
    caller_result = await caller.wait(40)
    phone_result = await phone.wait(10)
    elapsed = time.monotonic() - started

    assert caller_result.returncode == 0, caller_result
    assert caller_result.successful == 100 and caller_result.failed == 0, caller_result
    assert len(caller_result.calls) == 100
    assert all(c.final_status == 200 and c.hung_up_by == "local" for c in caller_result.calls), caller_result
    assert phone_result.answered_count == 100 and phone_result.failed == 0, phone_result
    assert all(c.hung_up_by == "remote" for c in phone_result.calls)
    setup = sorted(c.setup_time for c in caller_result.calls)
    print(f"\n100 calls in {elapsed:.1f} s; setup time median {setup[50] * 1000:.0f} ms, "
          f"max {setup[-1] * 1000:.0f} ms")
    deadline = time.monotonic() + 5
    while "0 active channels" not in lab.cli("core show channels count"):
        assert time.monotonic() < deadline, lab.cli("core show channels")
        await asyncio.sleep(0.1)


async def test_prompts_from_the_sounds_directory_and_ringback_tones_play(lab, lab_config, ari, sip_target):
    """A prompt written to config.sounds_dir plays as sound:<config.asterisk_sounds_dir>/name,
    and tone:ring (ringback) plays from the indications."""
    import shutil
    import subprocess
    import uuid

    assert shutil.which("sox"), "sox is missing: `make test` installs it"
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    path = lab_config.sounds_dir / f"{name}.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", "0.3", "sine", "440"],
                   check=True)
    try:
        caller = Caller("4155550100", sip_target, max_wait=10)
        await caller.start()
        channel = (await ari.wait_event("StasisStart", timeout=5))["channel"]["id"]
        await ari.post(f"/channels/{channel}/answer")
        for media in ("tone:ring;tonezone=us", f"sound:{lab_config.asterisk_sounds_dir}/{name}"):
            playback = f"pb-{uuid.uuid4().hex[:8]}"
            await ari.post(f"/channels/{channel}/play/{playback}", media=media)
            if media.startswith("tone:"):
                await ari.wait_event("PlaybackStarted", lambda e: e["playback"]["id"] == playback, timeout=5)
                await ari.delete(f"/playbacks/{playback}")
            finished = await ari.wait_event("PlaybackFinished", lambda e: e["playback"]["id"] == playback,
                                            timeout=5)
            assert finished["playback"]["state"] in ("done", "cancelled"), finished
            if media.startswith("sound:"):
                assert finished["playback"]["state"] == "done", finished
        await ari.hangup(channel)
        result = await caller.wait(5)
        assert result.answered and result.hung_up_by == "remote"
    finally:
        path.unlink(missing_ok=True)
