"""``hotline doctor``'s Twilio check against the REST stand-in: credentials, public URL, numbers' webhooks."""

from __future__ import annotations

from ivr.cli.doctor import FAIL, OK, WARN, check_twilio
from ivr.config import SETTINGS, Config

PUBLIC = "https://hotline.example.test"


def config(standin, account, **twilio) -> Config:
    values = {s.name: s.default for s in SETTINGS}
    settings = {"account_sid": account.sid, "auth_token": account.token, "public_url": PUBLIC,
                "api_base_url": standin.base_url, **twilio}
    return Config(values).replace(**{f"twilio__{key}": value for key, value in settings.items()})


async def test_no_twilio_no_check():
    assert await check_twilio(Config({s.name: s.default for s in SETTINGS})) == []


async def test_accepted_credentials_and_numbers_sent_to_hotline(twilio_standin):
    account = twilio_standin.account()
    account.add_owned("+14155550100", voice_url=PUBLIC + "/twilio/voice")
    [check] = await check_twilio(config(twilio_standin, account))
    assert check.status == OK and "1 number(s), all sent to https://hotline.example.test/twilio/voice" in check.detail


async def test_a_number_whose_calls_go_elsewhere_is_named(twilio_standin):
    account = twilio_standin.account()
    account.add_owned("+14155550100", voice_url=PUBLIC + "/twilio/voice")
    account.add_owned("+14155550101", voice_url="https://old.example.com/voice")
    [check] = await check_twilio(config(twilio_standin, account))
    assert check.status == WARN and "+14155550101" in check.detail and "+14155550100" not in check.detail


async def test_refused_credentials_and_missing_public_url_fail_with_their_fix(twilio_standin):
    account = twilio_standin.account()
    checks = await check_twilio(config(twilio_standin, account, auth_token="wrong", public_url=""))
    assert [c.status for c in checks] == [FAIL, FAIL]
    assert "twilio.public_url" in checks[0].fix
    assert "401" in checks[1].detail and "twilio.auth_token" in checks[1].fix


async def test_plain_http_is_a_warning(twilio_standin):
    account = twilio_standin.account()
    checks = await check_twilio(config(twilio_standin, account, public_url="http://hotline.example.test"))
    assert [c.status for c in checks] == [WARN, OK]
