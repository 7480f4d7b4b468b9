"""Which URL and which token a Twilio signature is checked against (ivr/twilio/webhooks.py)."""

from __future__ import annotations

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from ivr.twilio.webhooks import WebhookAuth

ACCOUNT = "AC" + "1" * 32
TOKENS = ["old-token-0000000000000000000000", "new-token-1111111111111111111111"]
PARAMS = {"CallSid": "CA" + "2" * 32, "AccountSid": ACCOUNT, "To": "+12125550100"}


async def tokens_for(account: str) -> list[str]:
    return TOKENS if account == ACCOUNT else []


async def client_for(aiohttp_client, public_url: str, trust: bool = False):
    auth = WebhookAuth(public_url, tokens_for, trust_forwarded_headers=trust)

    async def handler(request):
        params = await auth.check(request)
        return web.json_response(params)

    app = web.Application()
    app.router.add_post("/twilio/voice", handler)
    return await aiohttp_client(app)


def signed(url: str, token: str = TOKENS[1], params=PARAMS) -> dict:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


async def test_signed_for_the_public_url_by_any_token_of_the_account(aiohttp_client):
    client = await client_for(aiohttp_client, "https://hotline.example.com/")
    for token in TOKENS:
        resp = await client.post("/twilio/voice?x=1", data=PARAMS,
                                 headers=signed("https://hotline.example.com/twilio/voice?x=1", token))
        assert resp.status == 200 and (await resp.json())["CallSid"] == PARAMS["CallSid"]


@pytest.mark.parametrize("headers", [
    {},                                                                          # unsigned
    signed("https://hotline.example.com/twilio/voice", token="x" * 32),         # another token
    signed("https://elsewhere.example.com/twilio/voice"),                       # another URL
    signed("https://hotline.example.com/twilio/voice", params={**PARAMS, "To": "+19005550100"}),  # tampered
])
async def test_anything_else_is_refused_with_403(aiohttp_client, headers):
    client = await client_for(aiohttp_client, "https://hotline.example.com")
    resp = await client.post("/twilio/voice", data=PARAMS, headers=headers)
    assert resp.status == 403


async def test_an_unknown_account_is_refused(aiohttp_client):
    client = await client_for(aiohttp_client, "https://hotline.example.com")
    other = {**PARAMS, "AccountSid": "AC" + "9" * 32}
    resp = await client.post("/twilio/voice", data=other,
                             headers=signed("https://hotline.example.com/twilio/voice", params=other))
    assert resp.status == 403


async def test_forwarded_headers_count_only_when_trusted(aiohttp_client):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example.org",
                 **signed("https://proxy.example.org/twilio/voice")}
    untrusting = await client_for(aiohttp_client, "https://hotline.example.com")
    assert (await untrusting.post("/twilio/voice", data=PARAMS, headers=forwarded)).status == 403
    trusting = await client_for(aiohttp_client, "https://hotline.example.com", trust=True)
    assert (await trusting.post("/twilio/voice", data=PARAMS, headers=forwarded)).status == 200


async def test_without_a_public_url_webhooks_are_refused_with_503(aiohttp_client):
    client = await client_for(aiohttp_client, "")
    resp = await client.post("/twilio/voice", data=PARAMS, headers=signed("http://127.0.0.1/twilio/voice"))
    assert resp.status == 503 and "twilio.public_url" in await resp.text()
