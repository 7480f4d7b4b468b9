"""Twilio's REST API, asynchronously, through the twilio SDK (``twilio.rest.Client`` on its
``AsyncTwilioHttpClient``, and the SDK's ``*_async`` methods).

What Hotline asks of Twilio: a call's outcome and price, placing and steering calls (notification calls,
the escalation's legs), and the numbers of an account (search, buy, list, point at Hotline, release).
Every failure is one exception, ``TwilioError``: Twilio's HTTP status and its own message and code, or
(``status`` None) no answer at all within the timeout. Every request has a timeout: none can hang its
caller.

``base_url`` is the setting ``twilio.api_base_url`` (``https://api.twilio.com``; the tests point it at
their stand-in, tests/twilio/rest_standin.py). The auth token is given to the SDK and never logged.

    async with TwilioRest(account_sid, auth_token, base_url=config.twilio.api_base_url) as twilio:
        sid = await twilio.create_call(to="+14155550100", from_="+14155550199", url=".../twilio/voice")
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_TIMEOUT = 10.0   # seconds for one request to Twilio, answer included
T = TypeVar("T")


class TwilioError(Exception):
    """Twilio refused a request (``status``: its HTTP status; ``code``, ``message``: Twilio's error) or did
    not answer (``status`` None). ``str()`` is a sentence for a person; it never contains a token."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None,
                 more_info: str | None = None):
        self.message = message
        self.status = status
        self.code = code
        self.more_info = more_info
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.status is None:
            return f"Twilio did not answer: {self.message}"
        code = f", error {self.code}" if self.code is not None and self.code != self.status else ""
        return f"Twilio answered {self.status}{code}: {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class CallInfo:
    """A call as Twilio reports it."""

    sid: str
    status: str                 # queued | ringing | in-progress | completed | busy | failed | no-answer | canceled
    price: str | None           # a negative decimal string (what the call cost), None until Twilio prices it
    price_unit: str | None      # ISO 4217, e.g. USD
    duration: int | None        # seconds
    parent_call_sid: str | None

    @property
    def cost_cents(self) -> int:
        """What the call cost in USD cents (``round(abs(price) * 100)``); 0 when it is not priced yet, or
        priced in another currency (logged: Hotline's costs are USD cents)."""
        return cost_in_usd_cents(self.price, self.price_unit, self.sid)


@dataclass(frozen=True)
class AvailableNumber:
    """A number Twilio offers to buy."""

    phone_number: str           # E.164
    friendly_name: str | None
    locality: str | None
    region: str | None
    postal_code: str | None
    iso_country: str | None


@dataclass(frozen=True)
class OwnedNumber:
    """A number of the account (an IncomingPhoneNumber)."""

    sid: str                    # PN...
    phone_number: str           # E.164
    friendly_name: str | None
    voice_url: str | None
    voice_method: str | None
    status_callback: str | None


def cost_in_usd_cents(price: Any, price_unit: str | None, call_sid: str = "") -> int:
    if price is None or price == "":
        return 0
    try:
        amount = abs(Decimal(str(price)))
    except InvalidOperation:
        log.warning("Twilio call %s: unreadable price %r; counted 0", call_sid, price)
        return 0
    if (price_unit or "").upper() != "USD":
        log.warning("Twilio call %s: priced %s %s, not in USD; counted 0", call_sid, price, price_unit)
        return 0
    return int(round(amount * 100))


def _error_of(exc: BaseException) -> TwilioError:
    if isinstance(exc, TwilioRestException):
        message = exc.msg or ""
        # The SDK prefixes Twilio's message ("Unable to fetch record: <Twilio's message>").
        for prefix in ("Unable to fetch record: ", "Unable to update record: ", "Unable to delete record: ",
                       "Unable to create record: ", "Unable to fetch page: "):
            message = message.removeprefix(prefix)
        code = exc.code if isinstance(exc.code, int) else None
        more_info = f"https://www.twilio.com/docs/errors/{code}" if code and code != exc.status else None
        return TwilioError(message or "error", exc.status, code, more_info)
    if isinstance(exc, TwilioException) and len(exc.args) == 2 and hasattr(exc.args[1], "status_code"):
        # A list's page: the SDK raises TwilioException("Unable to fetch page", response).
        response = exc.args[1]
        try:
            body = json.loads(response.text)
        except (TypeError, ValueError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = body.get("code") if isinstance(body.get("code"), int) else None
        return TwilioError(str(body.get("message") or exc.args[0]), response.status_code, code,
                           body.get("more_info"))
    if isinstance(exc, TwilioException) and hasattr(exc, "status"):  # RFC 9457 errors of newer APIs
        return TwilioError(getattr(exc, "detail", None) or getattr(exc, "title", None) or str(exc),
                           getattr(exc, "status", None), getattr(exc, "code", None))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TwilioError("no answer within the timeout")
    if isinstance(exc, aiohttp.ClientError):
        return TwilioError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, TwilioException):
        return TwilioError(str(exc))
    if isinstance(exc, ValueError):  # an answer that is not JSON
        return TwilioError(f"an unreadable answer ({exc})")
    raise exc


def _owned(record) -> OwnedNumber:
    return OwnedNumber(record.sid, record.phone_number, record.friendly_name, record.voice_url,
                       record.voice_method, record.status_callback)


class TwilioRest:
    """One account's REST client. Use it as an async context manager (or ``close()`` it): it owns an
    aiohttp session."""

    def __init__(self, account_sid: str, auth_token: str, *, base_url: str = DEFAULT_BASE_URL,
                 timeout: float = DEFAULT_TIMEOUT):
        self.account_sid = account_sid
        self.timeout = timeout
        self._http = AsyncTwilioHttpClient(timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")

    def __repr__(self) -> str:  # never the token
        return f"TwilioRest({self.account_sid!r}, base_url={self._client.api.base_url!r})"

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _call(self, operation: Awaitable[T]) -> T:
        """``operation`` within the timeout (the SDK hands its own to aiohttp as a bare number, which aiohttp
        does not apply: this bound is the one that holds), its failures as ``TwilioError``."""
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except TwilioError:
            raise
        except (TwilioException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _error_of(exc) from None

    # -- calls -----------------------------------------------------------------------------------------

    async def fetch_call(self, call_sid: str) -> CallInfo:
        """A call's status, price (``cost_cents``), duration and parent."""
        record = await self._call(self._client.calls(call_sid).fetch_async())
        duration = int(record.duration) if record.duration not in (None, "") else None
        return CallInfo(record.sid, record.status, record.price, record.price_unit, duration,
                        record.parent_call_sid)

    async def call_cost_cents(self, call_sid: str) -> int:
        """What a call cost in USD cents (0 until Twilio prices it)."""
        return (await self.fetch_call(call_sid)).cost_cents

    async def create_call(self, *, to: str, from_: str, url: str, status_callback: str | None = None,
                          status_callback_event: Sequence[str] = ("initiated", "ringing", "answered", "completed"),
                          timeout: int | None = None, method: str = "POST") -> str:
        """Places a call from ``from_`` to ``to`` whose TwiML comes from ``url``; returns its sid (CA...).
        ``timeout``: seconds it rings before it is no-answer."""
        kwargs: dict[str, Any] = {"to": to, "from_": from_, "url": url, "method": method}
        if status_callback:
            kwargs["status_callback"] = status_callback
            kwargs["status_callback_event"] = list(status_callback_event)
            kwargs["status_callback_method"] = "POST"
        if timeout is not None:
            kwargs["timeout"] = int(timeout)
        record = await self._call(self._client.calls.create_async(**kwargs))
        return record.sid

    async def update_call(self, call_sid: str, *, status: str | None = None, twiml: str | None = None,
                          url: str | None = None) -> str:
        """Steers a live call: ``status="completed"`` hangs it up (``"canceled"``: one still ringing),
        ``twiml`` or ``url`` replaces what it runs. Returns its status."""
        kwargs: dict[str, Any] = {}
        if status is not None:
            kwargs["status"] = status
        if twiml is not None:
            kwargs["twiml"] = twiml
        if url is not None:
            kwargs["url"] = url
            kwargs["method"] = "POST"
        if not kwargs:
            raise ValueError("update_call needs status, twiml or url")
        record = await self._call(self._client.calls(call_sid).update_async(**kwargs))
        return record.status

    async def hang_up(self, call_sid: str) -> None:
        """Ends a call; one already over is fine."""
        try:
            await self.update_call(call_sid, status="completed")
        except TwilioError as exc:
            if exc.status not in (400, 404):  # 21220: not in progress (already ended)
                raise

    # -- numbers ---------------------------------------------------------------------------------------

    async def search_local_numbers(self, country: str, *, area_code: int | str | None = None,
                                   contains: str | None = None, limit: int = 20) -> list[AvailableNumber]:
        """Local numbers of ``country`` (ISO 3166, e.g. US) that can be bought."""
        kwargs: dict[str, Any] = {"limit": limit, "page_size": limit}
        if area_code not in (None, ""):
            kwargs["area_code"] = int(area_code)
        if contains:
            kwargs["contains"] = contains
        records = await self._call(self._client.available_phone_numbers(country.upper()).local.list_async(**kwargs))
        return [AvailableNumber(r.phone_number, r.friendly_name, r.locality, r.region, r.postal_code, r.iso_country)
                for r in records]

    async def buy_number(self, phone_number: str, *, voice_url: str, status_callback: str | None = None,
                         friendly_name: str | None = None) -> OwnedNumber:
        """Buys ``phone_number``, its calls sent to ``voice_url`` (POST)."""
        kwargs: dict[str, Any] = {"phone_number": phone_number, "voice_url": voice_url, "voice_method": "POST"}
        if status_callback:
            kwargs["status_callback"] = status_callback
            kwargs["status_callback_method"] = "POST"
        if friendly_name:
            kwargs["friendly_name"] = friendly_name
        return _owned(await self._call(self._client.incoming_phone_numbers.create_async(**kwargs)))

    async def list_numbers(self, *, phone_number: str | None = None, limit: int = 1000) -> list[OwnedNumber]:
        """The account's numbers (``phone_number``: only that one)."""
        kwargs: dict[str, Any] = {"limit": limit, "page_size": min(limit, 1000)}
        if phone_number:
            kwargs["phone_number"] = phone_number
        records = await self._call(self._client.incoming_phone_numbers.list_async(**kwargs))
        return [_owned(r) for r in records]

    async def update_number(self, number_sid: str, *, voice_url: str,
                            status_callback: str | None = None) -> OwnedNumber:
        """Points an owned number's calls at ``voice_url`` (POST), and its status callback."""
        kwargs: dict[str, Any] = {"voice_url": voice_url, "voice_method": "POST"}
        if status_callback is not None:
            kwargs["status_callback"] = status_callback
            kwargs["status_callback_method"] = "POST"
        return _owned(await self._call(self._client.incoming_phone_numbers(number_sid).update_async(**kwargs)))

    async def release_number(self, number_sid: str) -> bool:
        """Releases a number; True if it was released now, False if it was already gone (404)."""
        try:
            await self._call(self._client.incoming_phone_numbers(number_sid).delete_async())
        except TwilioError as exc:
            if exc.not_found:
                return False
            raise
        return True
