"""Twilio's webhooks: who may send them (X-Twilio-Signature) and the TwiML answered to them.

Every request Twilio makes carries ``X-Twilio-Signature``: an HMAC-SHA1, keyed by the account's
auth token, of the full URL Twilio requested followed by the POST parameters sorted by name. The
twilio SDK's :class:`RequestValidator` computes it; this module only decides *which* URL and
*which* token:

* the URL is ``twilio.public_url`` followed by the request's path and query: what Twilio was told
  to request, whatever proxies rewrote on the way. ``X-Forwarded-Proto``/``X-Forwarded-Host`` are
  read only with ``twilio.trust_forwarded_headers`` (a proxy that sets them); otherwise a
  neighbour could choose the URL a signature is checked against;
* the token is that of the account the request names (``AccountSid``): the global account or a
  project's stored configuration (several configurations may hold the same account: any of their
  tokens will do). An account Hotline does not know is refused like a bad signature.

A request that fails the check is answered 403 and changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

log = logging.getLogger(__name__)

TWIML = "application/xml"
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")


class WebhookAuth:
    """Checks the signature of Twilio's webhooks; ``tokens_for`` gives an account's auth tokens (none: unknown)."""

    def __init__(self, public_url: str, tokens_for: Callable[[str], Awaitable[list[str]]],
                 trust_forwarded_headers: bool = False):
        self.public_url = public_url.rstrip("/")
        self.tokens_for = tokens_for
        self.trust_forwarded_headers = trust_forwarded_headers

    def url_of(self, request: web.Request) -> str:
        """The URL Twilio requested, as it signed it."""
        if self.trust_forwarded_headers and request.headers.get("X-Forwarded-Host"):
            proto = request.headers.get("X-Forwarded-Proto", "https").split(",")[0].strip()
            host = request.headers["X-Forwarded-Host"].split(",")[0].strip()
            return f"{proto}://{host}{request.path_qs}"
        # A public URL with a path (https://example.com/hotline): the proxy strips it before Hotline.
        return self.public_url + request.path_qs

    async def check(self, request: web.Request) -> dict[str, str]:
        """The request's POST parameters if Twilio signed them; HTTP 403 otherwise (503 when Hotline
        cannot know the URL Twilio signed)."""
        if not self.public_url and not self.trust_forwarded_headers:
            log.error("a Twilio webhook reached %s, but twilio.public_url is not set: refusing it", request.path)
            raise web.HTTPServiceUnavailable(text="twilio.public_url is not set\n")
        form = await request.post()
        params = {key: str(value) for key, value in form.items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        account = params.get("AccountSid", "")
        tokens = await self.tokens_for(account) if signature and ACCOUNT_SID.fullmatch(account) else []
        url = self.url_of(request)
        if not any(RequestValidator(token).validate(url, params, signature) for token in tokens):
            why = ("no X-Twilio-Signature" if not signature else
                   f"unknown account {account!r}" if not tokens else "a signature that does not match")
            log.warning("refused a Twilio webhook to %s from %s: %s (checked against %s)", request.path,
                        request.remote, why, url)
            raise web.HTTPForbidden(text="invalid Twilio signature\n")
        return params


def twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type=TWIML)
