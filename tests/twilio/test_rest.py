"""ivr/twilio/rest.py, the twilio SDK's async client, against the REST stand-in."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ivr.twilio.rest import TwilioError, TwilioRest, cost_in_usd_cents


@pytest.fixture
def account(twilio_standin):
    return twilio_standin.account()


@pytest.fixture
async def rest(twilio_standin, account):
    async with TwilioRest(account.sid, account.token, base_url=twilio_standin.base_url, timeout=2.0) as client:
        yield client


async def test_calls_create_fetch_cost_and_update(twilio_standin, account, rest):
    created = []

    async def on_created(params, sid):
        created.append((params, sid))

    twilio_standin.on_call_created = on_created
    sid = await rest.create_call(to="+14155550100", from_="+14155550199", url="https://h.example/twilio/voice",
                                 status_callback="https://h.example/twilio/status", timeout=25)
    assert sid.startswith("CA") and len(sid) == 34
    await twilio_standin.settle()
    [(params, hook_sid)] = created
    assert hook_sid == sid
    assert params == {"To": "+14155550100", "From": "+14155550199", "Url": "https://h.example/twilio/voice",
                      "Method": "POST", "StatusCallback": "https://h.example/twilio/status",
                      "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
                      "StatusCallbackMethod": "POST", "Timeout": "25"}
    [request] = twilio_standin.requests_to("POST", "/Calls.json")
    assert request.path == f"/2010-04-01/Accounts/{account.sid}/Calls.json" and request.account_sid == account.sid

    info = await rest.fetch_call(sid)
    assert (info.status, info.price, info.cost_cents, info.duration) == ("queued", None, 0, None)
    account.set_call(sid, status="completed", price="-0.01300", price_unit="USD", duration="42",
                     parent_call_sid="CA" + "0" * 32)
    info = await rest.fetch_call(sid)
    assert (info.status, info.cost_cents, info.duration, info.parent_call_sid) == \
        ("completed", 1, 42, "CA" + "0" * 32)
    account.set_call(sid, price="-0.2650")
    assert await rest.call_cost_cents(sid) == 26   # round(26.5): half to even

    live = await rest.create_call(to="+14155550101", from_="+14155550199", url="https://h.example/twilio/voice")
    updated = []

    async def on_updated(params, sid):
        updated.append((params, sid))

    twilio_standin.on_call_updated = on_updated
    assert await rest.update_call(live, twiml="<Response><Hangup/></Response>") == "queued"
    assert await rest.update_call(live, status="completed") == "completed"
    await twilio_standin.settle()
    assert updated == [({"Twiml": "<Response><Hangup/></Response>"}, live), ({"Status": "completed"}, live)]
    await rest.hang_up(live)    # already over: fine
    with pytest.raises(TwilioError) as caught:
        await rest.update_call(live, status="completed")
    assert caught.value.status == 400 and caught.value.code == 21220
    assert "Call is not in-progress" in caught.value.message


def test_cost_in_usd_cents(caplog):
    assert cost_in_usd_cents("-0.0130", "USD") == 1
    assert cost_in_usd_cents("-1.005", "usd") == 100
    assert cost_in_usd_cents(None, "USD") == 0 and cost_in_usd_cents("", None) == 0
    with caplog.at_level(logging.WARNING):
        assert cost_in_usd_cents("-0.50", "EUR", "CA1") == 0
        assert cost_in_usd_cents("n/a", "USD", "CA2") == 0
    assert "CA1: priced -0.50 EUR, not in USD" in caplog.text and "CA2: unreadable price" in caplog.text


async def test_numbers_search_buy_list_update_release(twilio_standin, account, rest):
    account.add_available("US", "415", ["+14155550100", "+14155550123", "+14155557777"])
    account.add_available("US", "212", ["+12125550100"])
    account.add_available("GB", "", ["+442071838750"])
    found = await rest.search_local_numbers("us", area_code="415", contains="555*1")
    assert [n.phone_number for n in found] == ["+14155550100", "+14155550123"]
    assert found[0].friendly_name == "(415) 555-0100" and found[0].iso_country == "US"
    assert [n.phone_number for n in await rest.search_local_numbers("US", limit=2)] == \
        ["+14155550100", "+14155550123"]
    assert [n.phone_number for n in await rest.search_local_numbers("GB")] == ["+442071838750"]
    [search] = twilio_standin.requests_to("GET", "/AvailablePhoneNumbers/US/Local.json")[:1]
    assert search.query["AreaCode"] == "415" and search.query["Contains"] == "555*1"

    bought = await rest.buy_number("+14155550123", voice_url="https://h.example/twilio/voice",
                                   status_callback="https://h.example/twilio/status")
    assert bought.sid.startswith("PN") and bought.phone_number == "+14155550123"
    assert (bought.voice_url, bought.voice_method, bought.status_callback) == \
        ("https://h.example/twilio/voice", "POST", "https://h.example/twilio/status")
    [buy] = twilio_standin.requests_to("POST", "/IncomingPhoneNumbers.json")
    assert buy.form == {"PhoneNumber": "+14155550123", "VoiceUrl": "https://h.example/twilio/voice",
                        "VoiceMethod": "POST", "StatusCallback": "https://h.example/twilio/status",
                        "StatusCallbackMethod": "POST"}
    with pytest.raises(TwilioError) as caught:   # bought already: no longer available
        await rest.buy_number("+14155550123", voice_url="https://h.example/twilio/voice")
    assert (caught.value.status, caught.value.code) == (400, 21422)
    assert str(caught.value) == "Twilio answered 400, error 21422: PhoneNumber +14155550123 is not available."

    other = account.add_owned("+12125550199")
    assert {n.sid for n in await rest.list_numbers()} == {bought.sid, other["sid"]}
    assert [n.sid for n in await rest.list_numbers(phone_number="+12125550199")] == [other["sid"]]
    moved = await rest.update_number(other["sid"], voice_url="https://h2.example/twilio/voice",
                                     status_callback="https://h2.example/twilio/status")
    assert (moved.voice_url, moved.status_callback) == ("https://h2.example/twilio/voice",
                                                         "https://h2.example/twilio/status")
    assert await rest.release_number(bought.sid) is True
    assert await rest.release_number(bought.sid) is False   # already released: not an error
    assert account.released == [bought.sid]
    with pytest.raises(TwilioError) as caught:
        await rest.update_number(bought.sid, voice_url="https://h.example/twilio/voice")
    assert caught.value.not_found and caught.value.code == 20404


async def test_wrong_token_is_a_401_error_without_the_token(twilio_standin, account, caplog):
    async with TwilioRest(account.sid, "wrong-token-value", base_url=twilio_standin.base_url) as rest:
        with caplog.at_level(logging.DEBUG), pytest.raises(TwilioError) as caught:
            await rest.list_numbers()
    assert (caught.value.status, caught.value.code, caught.value.message) == (401, 20003, "Authenticate")
    assert "wrong-token-value" not in str(caught.value) and "wrong-token-value" not in caplog.text
    assert "wrong-token-value" not in repr(rest)
    assert twilio_standin.requests[-1].status == 401


async def test_a_twilio_that_does_not_answer_times_out(twilio_standin, account):
    twilio_standin.stall = 5.0
    async with TwilioRest(account.sid, account.token, base_url=twilio_standin.base_url, timeout=0.3) as rest:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TwilioError) as caught:
            await rest.fetch_call("CA" + "1" * 32)
    assert caught.value.status is None and str(caught.value).startswith("Twilio did not answer")
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_an_unreachable_twilio_is_an_error():
    async with TwilioRest("AC" + "1" * 32, "token", base_url="http://127.0.0.1:9", timeout=1.0) as rest:
        with pytest.raises(TwilioError) as caught:
            await rest.list_numbers()
    assert caught.value.status is None
