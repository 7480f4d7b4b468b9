"""The phone number of an Incoming Call Policy, provisioned at Twilio (OneUptime keeps these under a
policy's phone number too). The routes (``api/actions.py`` lists them):

- ``POST /api/incoming-call-policy/:id/phone-number/search {countryCode, areaCode?, contains?, limit?}``:
  local numbers Twilio offers to buy.
- ``POST /api/incoming-call-policy/:id/phone-number/purchase {phoneNumber}``: buys it, its calls sent to
  ``{twilio.public_url}/twilio/voice`` (POST) and its status callbacks to ``.../twilio/status``; the
  policy gets routingPhoneNumber, callProviderPhoneNumberId (the PN... sid), phoneNumberCountryCode,
  phoneNumberAreaCode and phoneNumberPurchasedAt.
- ``GET /api/incoming-call-policy/:id/phone-number/owned``: the numbers the account owns (less those
  routing to another project's policy or menu, on a shared account), and which policy of the project
  each routes to.
- ``POST /api/incoming-call-policy/:id/phone-number/assign {phoneNumberId | phoneNumber}``: gives the
  policy a number the account already owns (its webhooks pointed at Hotline).
- ``POST /api/incoming-call-policy/:id/phone-number/release {}``: releases the policy's number at Twilio
  and clears those fields; releasing again (or a number Twilio no longer has) is fine.

The account is the policy's project-level configuration, else the global one
(``ivr.store.twilio_accounts.twilio_account_for``). These run in the API process; every request to
Twilio is bounded by ``TWILIO_TIMEOUT``. Errors: no account or no public URL: 400 saying what to set;
Twilio refused: 502 with Twilio's message; Twilio did not answer: 504.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from api.contact_center_rules import check_routing_number_free
from api.errors import ApiError, BadRequest, Conflict, NotFound
from api.resources import Context
from api.schema import format_datetime
from ivr.config import Config
from ivr.core.phone import InvalidNumber, area_code_of, region_of, to_e164
from ivr.runtime import CONFIG, DB, READ
from ivr.store import models as m
from ivr.store.db import on_reader, write_transaction
from ivr.store.twilio_accounts import TokenKeyError, TwilioAccount, twilio_account_for
from ivr.twilio.rest import OwnedNumber, TwilioError, TwilioRest

#: Seconds one request to Twilio may take, its answer included.
TWILIO_TIMEOUT = 10.0
VOICE_PATH, STATUS_PATH = "/twilio/voice", "/twilio/status"
MAX_SEARCH = 50

_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_AREA = re.compile(r"^[0-9]{1,6}$")
_CONTAINS = re.compile(r"^[0-9A-Za-z*%+$]{2,16}$")
_NUMBER_SID = re.compile(r"^PN[0-9a-fA-F]{32}$")


class BadGateway(ApiError):
    status = 502


class GatewayTimeout(ApiError):
    status = 504


def _twilio_failed(exc: TwilioError) -> ApiError:
    if exc.status is None:
        return GatewayTimeout(f"Twilio did not answer in time ({exc.message}); nothing was changed in Hotline. "
                              "Retry in a moment.")
    return BadGateway(str(exc))


@dataclass
class PolicyNumber:
    id: uuid.UUID
    routing: str | None
    sid: str | None
    answer: dict | None = None    # the policy's number fields, as the routes answer them


def _check_keys(body: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}. Fields: {', '.join(allowed)}")


def _policy_number(ctx: Context, raw_id: str) -> PolicyNumber:
    try:
        policy_id = uuid.UUID(raw_id)
    except (ValueError, TypeError):
        raise NotFound(f"No Incoming Call Policy with id {raw_id}.") from None
    Policy = m.IncomingCallPolicy
    row = on_reader(Policy.select(Policy.id, Policy.routingPhoneNumber, Policy.callProviderPhoneNumberId,
                                  Policy.phoneNumberCountryCode, Policy.phoneNumberAreaCode,
                                  Policy.phoneNumberPurchasedAt)
                    .where(Policy.id == policy_id, Policy.project == ctx.project_id)).first()
    if row is None:
        raise NotFound(f"No Incoming Call Policy with id {raw_id}.")
    return PolicyNumber(row.id, row.routingPhoneNumber, row.callProviderPhoneNumberId, _answer(row))


def _account(ctx: Context, policy_id: uuid.UUID, config: Config) -> TwilioAccount:
    try:
        account = twilio_account_for(ctx.project_id, policy_id, config)
    except TokenKeyError as exc:
        raise BadRequest(f"The policy's Project Call SMS Config cannot be used: {exc}") from None
    if account is None:
        raise BadRequest("No Twilio account for this policy: set the global account (twilio.account_sid and "
                         "twilio.auth_token: HOTLINE_TWILIO_ACCOUNT_SID, HOTLINE_TWILIO_AUTH_TOKEN), or give the "
                         "policy a projectCallSMSConfigId (a Project Call SMS Config of your project).")
    return account


def _webhooks(config: Config) -> tuple[str, str]:
    base = (config.twilio.public_url or "").rstrip("/")
    if not base:
        raise BadRequest("twilio.public_url is not set (HOTLINE_TWILIO_PUBLIC_URL): it is the address Twilio sends "
                         "a number's calls to (https://hotline.example.com), needed to point a number at Hotline.")
    return base + VOICE_PATH, base + STATUS_PATH


async def _prepare(request, ctx: Context, call) -> tuple[PolicyNumber, TwilioAccount, Config]:
    config = request.app[CONFIG]
    policy = await request.app[READ](_policy_number, ctx, call.path["id"])
    account = await request.app[DB].run(_account, ctx, policy.id, config)
    return policy, account, config


def _client(account: TwilioAccount, config: Config) -> TwilioRest:
    return TwilioRest(account.account_sid, account.auth_token, base_url=config.twilio.api_base_url,
                      timeout=TWILIO_TIMEOUT)


def _answer(row: m.IncomingCallPolicy, **extra: Any) -> dict:
    purchased = row.phoneNumberPurchasedAt
    if isinstance(purchased, str):  # SQLite, read without conversion
        purchased = dt.datetime.fromisoformat(purchased)
    return {"_id": str(row.id), "routingPhoneNumber": row.routingPhoneNumber,
            "callProviderPhoneNumberId": row.callProviderPhoneNumberId,
            "phoneNumberCountryCode": row.phoneNumberCountryCode, "phoneNumberAreaCode": row.phoneNumberAreaCode,
            "phoneNumberPurchasedAt": format_datetime(purchased) if purchased else None, **extra}


def _no_number_yet(policy: PolicyNumber) -> None:
    if policy.routing or policy.sid:
        raise Conflict(f"This Incoming Call Policy already has the phone number {policy.routing or policy.sid}: "
                       "release it first (POST .../phone-number/release), or clear its routingPhoneNumber.")


def _record_number(ctx: Context, policy_id: uuid.UUID, number: str, sid: str, purchased: bool) -> dict:
    """The policy's fields for its new number, once no other policy or menu routes it and the policy still
    has none (checked again in the writing transaction: a concurrent request may have been first)."""
    Policy = m.IncomingCallPolicy
    with write_transaction():
        row = Policy.get_or_none(Policy.id == policy_id, Policy.project == ctx.project_id)
        if row is None:
            raise NotFound(f"No Incoming Call Policy with id {policy_id}.")
        _no_number_yet(PolicyNumber(row.id, row.routingPhoneNumber, row.callProviderPhoneNumberId))
        check_routing_number_free(ctx, number, own_policy=row.id)
        row.routingPhoneNumber = number
        row.callProviderPhoneNumberId = sid
        row.phoneNumberCountryCode = region_of(number)
        row.phoneNumberAreaCode = area_code_of(number)
        row.phoneNumberPurchasedAt = m.utcnow() if purchased else None
        row.save()
    return _answer(row)


def _clear_number(ctx: Context, policy_id: uuid.UUID, sid: str) -> dict:
    Policy = m.IncomingCallPolicy
    with write_transaction():
        Policy.update(routingPhoneNumber=None, callProviderPhoneNumberId=None, phoneNumberCountryCode=None,
                      phoneNumberAreaCode=None, phoneNumberPurchasedAt=None, updatedAt=m.utcnow()).where(
            Policy.id == policy_id, Policy.project == ctx.project_id,
            Policy.callProviderPhoneNumberId == sid).execute()
        row = Policy.get_or_none(Policy.id == policy_id, Policy.project == ctx.project_id)
    if row is None:
        raise NotFound(f"No Incoming Call Policy with id {policy_id}.")
    return _answer(row)


# -- the handlers ---------------------------------------------------------------------------------------


async def search(request, ctx: Context, call) -> dict:
    body = call.body
    _check_keys(body, ("countryCode", "areaCode", "contains", "limit"))
    country = body.get("countryCode")
    if not isinstance(country, str) or not _COUNTRY.match(country):
        raise BadRequest("countryCode: missing or not a country (ISO 3166 alpha-2, e.g. US, GB)")
    area = body.get("areaCode")
    if isinstance(area, int) and not isinstance(area, bool):
        area = str(area)
    if area is not None and (not isinstance(area, str) or not _AREA.match(area)):
        raise BadRequest("areaCode: must be digits, e.g. 415")
    contains = body.get("contains")
    if contains is not None and (not isinstance(contains, str) or not _CONTAINS.match(contains)):
        raise BadRequest("contains: 2 to 16 digits or letters (Twilio's pattern: * matches one character)")
    limit = body.get("limit", 20)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH:
        raise BadRequest(f"limit: a whole number from 1 to {MAX_SEARCH}")
    _, account, config = await _prepare(request, ctx, call)
    try:
        async with _client(account, config) as twilio:
            found = await twilio.search_local_numbers(country, area_code=area, contains=contains, limit=limit)
    except TwilioError as exc:
        raise _twilio_failed(exc) from None
    data = [{"phoneNumber": n.phone_number, "friendlyName": n.friendly_name, "locality": n.locality,
             "region": n.region, "postalCode": n.postal_code, "countryCode": n.iso_country} for n in found]
    return {"count": len(data), "data": data}


def _phone_number(body: dict, ctx: Context, name: str = "phoneNumber") -> str:
    raw = body.get(name)
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest(f"{name}: missing (the number, E.164)")
    try:
        return to_e164(raw, ctx.default_region)
    except InvalidNumber as exc:
        raise BadRequest(f"{name}: {exc}") from None


async def purchase(request, ctx: Context, call) -> dict:
    _check_keys(call.body, ("phoneNumber",))
    number = _phone_number(call.body, ctx)
    policy, account, config = await _prepare(request, ctx, call)
    _no_number_yet(policy)
    voice_url, status_url = _webhooks(config)
    await request.app[DB].run(_check_free, ctx, number, policy.id)
    async with _client(account, config) as twilio:
        try:
            bought = await twilio.buy_number(number, voice_url=voice_url, status_callback=status_url)
        except TwilioError as exc:
            raise _twilio_failed(exc) from None
        try:
            return await request.app[DB].run(_record_number, ctx, policy.id, bought.phone_number, bought.sid, True)
        except BaseException:
            # Not recorded (a concurrent request was first, or the database failed): give the number back
            # rather than keep paying for a number nothing routes.
            try:
                await twilio.release_number(bought.sid)
            except TwilioError:
                pass
            raise


def _check_free(ctx: Context, number: str, policy_id: uuid.UUID) -> None:
    check_routing_number_free(ctx, number, own_policy=policy_id)


def _routes(ctx: Context, numbers: list[str]) -> dict[str, tuple[str, str | None]]:
    """For each number that routes somewhere: ("own", policy id) in the caller's project, ("other", None)
    elsewhere (a policy or a menu)."""
    if not numbers:
        return {}
    Policy, Menu = m.IncomingCallPolicy, m.CallMenu
    out: dict[str, tuple[str, str | None]] = {}
    for number, project, policy_id in on_reader(Policy.select(Policy.routingPhoneNumber, Policy.project, Policy.id)
                                                .where(Policy.routingPhoneNumber.in_(numbers)).tuples()):
        own = str(project) == str(ctx.project_id)
        out[number] = ("own", str(policy_id)) if own else ("other", None)
    for number, project in on_reader(Menu.select(Menu.routingPhoneNumber, Menu.project)
                                     .where(Menu.routingPhoneNumber.in_(numbers)).tuples()):
        out.setdefault(number, ("menu", None) if str(project) == str(ctx.project_id) else ("other", None))
    return out


def _owned_row(number: OwnedNumber, route: tuple[str, str | None] | None) -> dict:
    return {"phoneNumberId": number.sid, "phoneNumber": number.phone_number, "friendlyName": number.friendly_name,
            "voiceUrl": number.voice_url, "statusCallback": number.status_callback,
            "incomingCallPolicyId": route[1] if route and route[0] == "own" else None,
            "inUse": route is not None}


async def owned(request, ctx: Context, call) -> dict:
    _, account, config = await _prepare(request, ctx, call)
    try:
        async with _client(account, config) as twilio:
            numbers = await twilio.list_numbers()
    except TwilioError as exc:
        raise _twilio_failed(exc) from None
    routes = await request.app[READ](_routes, ctx, [n.phone_number for n in numbers])
    data = [_owned_row(n, routes.get(n.phone_number)) for n in numbers
            if routes.get(n.phone_number, ("",))[0] != "other"]   # another project's numbers stay unseen
    return {"count": len(data), "data": data}


async def assign(request, ctx: Context, call) -> dict:
    body = call.body
    _check_keys(body, ("phoneNumberId", "phoneNumber"))
    sid = body.get("phoneNumberId")
    if sid is not None and (not isinstance(sid, str) or not _NUMBER_SID.match(sid)):
        raise BadRequest("phoneNumberId: not a Twilio phone number SID (PN followed by 32 hexadecimal digits)")
    number = _phone_number(body, ctx) if sid is None else None
    if sid is not None and "phoneNumber" in body:
        raise BadRequest("Give phoneNumberId or phoneNumber, not both")
    policy, account, config = await _prepare(request, ctx, call)
    _no_number_yet(policy)
    voice_url, status_url = _webhooks(config)
    async with _client(account, config) as twilio:
        try:
            candidates = await twilio.list_numbers(phone_number=number)
        except TwilioError as exc:
            raise _twilio_failed(exc) from None
        found = next((n for n in candidates if (n.sid == sid if sid else n.phone_number == number)), None)
        if found is None:
            raise BadRequest(f"The Twilio account {account.account_sid} owns no number {sid or number} "
                             "(GET .../phone-number/owned lists its numbers).")
        await request.app[DB].run(_check_free, ctx, found.phone_number, policy.id)
        try:
            await twilio.update_number(found.sid, voice_url=voice_url, status_callback=status_url)
        except TwilioError as exc:
            raise _twilio_failed(exc) from None
    return await request.app[DB].run(_record_number, ctx, policy.id, found.phone_number, found.sid, False)


async def release(request, ctx: Context, call) -> dict:
    _check_keys(call.body, ())
    config = request.app[CONFIG]
    policy = await request.app[READ](_policy_number, ctx, call.path["id"])
    if policy.sid is None:
        if policy.routing is not None:
            raise BadRequest(f"The policy's number {policy.routing} was not provisioned at Twilio (it has no "
                             "callProviderPhoneNumberId): clear its routingPhoneNumber with an update instead.")
        return {**policy.answer, "released": False}   # nothing to release: releasing twice is fine
    if policy.routing is None:
        raise BadRequest(f"The policy names the Twilio number {policy.sid} (callProviderPhoneNumberId) but has no "
                         "routingPhoneNumber: it is not released. Clear callProviderPhoneNumberId with an update.")
    account = await request.app[DB].run(_account, ctx, policy.id, config)
    try:
        async with _client(account, config) as twilio:
            # Only the number the policy routes is released: the SID must be that number's at Twilio (a
            # routing number belongs to one policy of one project; a SID alone proves nothing).
            at_twilio = await twilio.list_numbers(phone_number=policy.routing)
            if at_twilio and policy.sid not in {n.sid for n in at_twilio}:
                raise Conflict(f"At Twilio, {policy.routing} is not the number {policy.sid} "
                               "(callProviderPhoneNumberId): nothing was released.")
            released = bool(at_twilio) and await twilio.release_number(policy.sid)
    except TwilioError as exc:
        raise _twilio_failed(exc) from None
    return {**await request.app[DB].run(_clear_number, ctx, policy.id, policy.sid), "released": released}


# -- the OpenAPI shapes -----------------------------------------------------------------------------------

_TEXT = {"type": ["string", "null"]}
POLICY_NUMBER = {
    "type": "object", "additionalProperties": False,
    "required": ["_id", "routingPhoneNumber", "callProviderPhoneNumberId", "phoneNumberCountryCode",
                 "phoneNumberAreaCode", "phoneNumberPurchasedAt"],
    "properties": {
        "_id": {"type": "string", "format": "uuid", "description": "ID of the Incoming Call Policy"},
        "routingPhoneNumber": {**_TEXT, "description": "The policy's number (E.164)"},
        "callProviderPhoneNumberId": {**_TEXT, "description": "Twilio's SID of the number (PN...)"},
        "phoneNumberCountryCode": {**_TEXT, "description": "Its country (US, GB, ...)"},
        "phoneNumberAreaCode": {**_TEXT, "description": "Its area code"},
        "phoneNumberPurchasedAt": {"type": ["string", "null"], "format": "date-time",
                                   "description": "When Hotline bought it (null: assigned, not bought)"},
        "released": {"type": "boolean", "description": "release: whether Twilio released a number now (false: "
                                                       "there was none, or Twilio no longer had it)"},
    },
}
SEARCH_BODY = {
    "type": "object", "additionalProperties": False, "required": ["countryCode"],
    "properties": {
        "countryCode": {"type": "string", "description": "ISO 3166 alpha-2, e.g. US"},
        "areaCode": {"type": ["string", "integer"], "description": "Digits, e.g. 415 (US and Canada)"},
        "contains": {"type": "string", "description": "2 to 16 digits or letters; * matches one character"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH, "description": "Default 20"},
    },
}
SEARCH_RESPONSE = {
    "type": "object", "additionalProperties": False, "required": ["count", "data"],
    "properties": {"count": {"type": "integer"}, "data": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["phoneNumber", "friendlyName", "locality", "region", "postalCode", "countryCode"],
        "properties": {"phoneNumber": {"type": "string"}, "friendlyName": _TEXT, "locality": _TEXT,
                       "region": _TEXT, "postalCode": _TEXT, "countryCode": _TEXT}}}},
}
PURCHASE_BODY = {
    "type": "object", "additionalProperties": False, "required": ["phoneNumber"],
    "properties": {"phoneNumber": {"type": "string", "description": "A number the search offered (E.164)"}},
}
ASSIGN_BODY = {
    "type": "object", "additionalProperties": False,
    "properties": {"phoneNumberId": {"type": "string", "description": "Twilio's SID of an owned number (PN...)"},
                   "phoneNumber": {"type": "string", "description": "Or the owned number itself (E.164)"}},
}
OWNED_RESPONSE = {
    "type": "object", "additionalProperties": False, "required": ["count", "data"],
    "properties": {"count": {"type": "integer"}, "data": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["phoneNumberId", "phoneNumber", "friendlyName", "voiceUrl", "statusCallback",
                     "incomingCallPolicyId", "inUse"],
        "properties": {"phoneNumberId": {"type": "string"}, "phoneNumber": {"type": "string"},
                       "friendlyName": _TEXT, "voiceUrl": _TEXT, "statusCallback": _TEXT,
                       "incomingCallPolicyId": {"type": ["string", "null"], "format": "uuid",
                                                "description": "The policy of your project it routes to"},
                       "inUse": {"type": "boolean", "description": "It routes to a policy or a menu"}}}}},
}
EMPTY_BODY = {"type": "object", "additionalProperties": False}
