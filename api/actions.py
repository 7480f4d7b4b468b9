"""Operations of a resource beyond OneUptime's CRUD set: one list the routes and the OpenAPI document
are both built from (like ``api.registry.RESOURCES``).

- ``GET /api/on-call-duty-policy-schedule/:id/on-call?at=ISO8601&next=N``: who is on call at ``at``
  (default: now), until when, and the next N hand-offs.
- ``POST /api/user-incoming-call-number/verify {itemId, code}``: verifies a number with its code.
- ``POST /api/user-incoming-call-number/resend-verification-code {itemId}``: a new code (an admin's
  re-send also unlocks a number locked after too many wrong codes; codes per destination are limited
  per day: 429).
- ``POST /api/call-log/send {toNumber | userId, message, fromNumber?, incidentId?, ...}``: places a
  notification call ("press 1 to acknowledge", ivr/shells/notify.py); answers with the Call Log row at once.
- ``GET /api/incoming-call-log/:id/voicemail``: the voicemail a caller left after no one answered
  (audio/wav), from the recordings directory only.
- ``/api/incoming-call-policy/:id/phone-number/{search,purchase,owned,assign,release}``: the policy's
  phone number at Twilio (api/phone_numbers.py).

An action names its resource (the tag and permission noun) and the verb it needs; its ``run`` is
synchronous peewee code run through the database bridge (``writes``: the asyncio database, else the
read path), given the caller's ``Context`` and the request's parts. An action that needs more than the
database (placing a call) has an async ``handler(request, ctx, call)`` instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from api import phone_numbers
from api.domain import too_many_codes
from api.errors import ApiError, BadRequest, Forbidden, NotFound, TooManyRequests
from api.registry import BY_PATH
from api.resources import Context, Resource
from api.schema import format_datetime, parse_datetime
from ivr.core.notification import NotifyInputError
from ivr.runtime import CONFIG, DB, READ
from ivr.store import models as m
from ivr.store.calllogs import NotifyLimitReached, plan_notification, queue_notification
from ivr.store.db import run_and_release, write_transaction
from ivr.core import oncall
from ivr.store import callstore, schedules, verification


class Locked(ApiError):
    status = 423


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request an action reads."""

    path: Mapping[str, str]
    query: Mapping[str, str]
    body: dict


@dataclass(frozen=True)
class Action:
    resource: Resource
    verb: str                                   # the permission it needs on the resource: read, update...
    method: str                                 # GET | POST
    suffix: str                                 # after /api/<resource>, e.g. "/{id}/on-call"
    operation_id: str
    summary: str
    description: str
    run: Callable[[Context, Request], Any]
    writes: bool = False
    parameters: list[dict] = field(default_factory=list)
    body: dict | None = None                    # JSON schema of the request body
    response: dict = field(default_factory=dict)
    codes: tuple[str, ...] = ("400", "401", "403", "404", "429")
    handler: Callable[..., Awaitable[Any]] | None = None  # async (request, ctx, call), instead of run
    media_type: str = "application/json"        # what a 200 is: JSON, or a file the handler answers with

    @property
    def path(self) -> str:
        return f"/api/{self.resource.path}{self.suffix}"


def _check_keys(body: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}. Fields: {', '.join(allowed)}")


def _item_id(body: dict, resource: Resource) -> uuid.UUID:
    raw = body.get("itemId")
    if raw is None:
        raise BadRequest("itemId: missing (the ID of the number)")
    if not isinstance(raw, str):
        raise BadRequest("itemId: must be an ID (a UUID string)")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(f"itemId: {raw!r} is not a valid ID (a UUID)") from None


# -- who is on call ---------------------------------------------------------------------------

MAX_NEXT = 100


def _user(user: m.User | None, user_id: str | None) -> dict | None:
    if user_id is None:
        return None
    if user is None:
        return {"_id": user_id, "name": None, "email": None}
    return {"_id": user_id, "name": user.name, "email": user.email}


def _who(on_call, users) -> dict:
    return {
        "userId": on_call.user,
        "user": _user(users.get(on_call.user), on_call.user),
        "onCallDutyPolicyScheduleLayerId": on_call.layer.id if on_call.layer else None,
        "onCallDutyPolicyScheduleOverrideId": on_call.override.id if on_call.override else None,
    }


def on_call(ctx: Context, request: Request) -> dict:
    resource = BY_PATH["on-call-duty-policy-schedule"]
    schedule_id = resource.parse_id(request.path["id"])
    try:
        at = parse_datetime(request.query["at"], "at") if "at" in request.query else m.utcnow()
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00, before the first representable instant
        at = oncall.EARLIEST - dt.timedelta(days=1)
    if not oncall.in_range(at):
        raise BadRequest(f"at: must be between {oncall.EARLIEST.year} and {oncall.LATEST.year}")
    raw_next = request.query.get("next", "0")
    try:
        count = int(raw_next)
    except ValueError:
        raise BadRequest(f"next: {raw_next!r} is not a whole number") from None
    if not 0 <= count <= MAX_NEXT:
        raise BadRequest(f"next: must be between 0 and {MAX_NEXT}")
    schedule = schedules.load_schedule(schedule_id, ctx.project_id, overrides_ending_after=at)
    if schedule is None:
        raise NotFound(f"No {resource.title} with id {request.path['id']}.")
    report = schedules.report(schedule, ctx.project_id, at, count)
    return {
        "_id": schedule.id,
        "timeZone": schedule.time_zone,
        "at": format_datetime(report.at),
        **_who(report.on_call, report.users),
        "until": format_datetime(report.until) if report.until else None,
        "handoffs": [{"at": format_datetime(h.at), **_who(h.on_call, report.users)} for h in report.handoffs],
    }


_NULLABLE_ID = {"type": ["string", "null"], "format": "uuid"}
_WHO = {
    "userId": {**_NULLABLE_ID, "description": "ID of the user on call (null: no one)"},
    "user": {"anyOf": [{"type": "object", "required": ["_id", "name", "email"], "additionalProperties": False,
                        "properties": {"_id": {"type": "string", "format": "uuid"},
                                       "name": {"type": ["string", "null"]},
                                       "email": {"type": ["string", "null"]}}},
                       {"type": "null"}]},
    "onCallDutyPolicyScheduleLayerId": {**_NULLABLE_ID, "description": "The layer that puts them on call"},
    "onCallDutyPolicyScheduleOverrideId": {**_NULLABLE_ID, "description": "The override that puts them on call"},
}
_ON_CALL_RESPONSE = {
    "type": "object", "additionalProperties": False,
    "required": ["_id", "timeZone", "at", *_WHO, "until", "handoffs"],
    "properties": {
        "_id": {"type": "string", "format": "uuid"},
        "timeZone": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        **_WHO,
        "until": {"type": ["string", "null"], "format": "date-time",
                  "description": "When the person on call hands off (null: not within a year)"},
        "handoffs": {"type": "array", "description": "The next hand-offs (query parameter next)", "items": {
            "type": "object", "additionalProperties": False, "required": ["at", *_WHO],
            "properties": {"at": {"type": "string", "format": "date-time"}, **_WHO}}},
    },
}

# -- notification calls ---------------------------------------------------------------------------


async def send_call(request, ctx: Context, call: Request) -> dict:
    """Validate, then queue the call: its Call Log row and an outbox message, in one transaction,
    within the project's caps. Whichever process runs the call services places it (the API never
    waits for a call, nor the calls for the API); a client that goes away changes nothing."""
    return await queue_call(request.app, ctx, call.body)


async def queue_call(app, ctx: Context, body: dict) -> dict:
    """What ``POST /api/call-log/send`` does with its body (the dashboard's test calls too)."""
    cfg = app[CONFIG].notify
    try:
        note = await app[READ](plan_notification, ctx.project_id, body, ctx.default_region, cfg.from_number)
    except NotifyInputError as exc:
        raise BadRequest(str(exc)) from None
    try:
        await asyncio.shield(run_and_release(app[DB], queue_notification, note, int(cfg.max_calls_in_progress),
                                             int(cfg.max_calls_per_hour)))
    except NotifyLimitReached as exc:
        raise TooManyRequests(str(exc)) from None
    return note.response()


_NULLABLE_LINK = {"type": ["string", "null"], "format": "uuid"}
_SEND_BODY = {
    "type": "object", "additionalProperties": False, "required": ["message"],
    "oneOf": [{"required": ["toNumber"]}, {"required": ["userId"]}],
    "properties": {
        "toNumber": {"type": "string", "description": "Who to call: an E.164 number (national formats are read in "
                                                      "sip.default_region) or a sip: URI"},
        "userId": {"type": "string", "format": "uuid",
                   "description": "Or: a user of the project, called on their first verified number"},
        "message": {"type": "string", "minLength": 1, "maxLength": 1000, "description": "What the call says"},
        "fromNumber": {"type": "string", "description": "Caller ID (E.164); default notify.from_number"},
        **{name: {**_NULLABLE_LINK, "description": f"Stored on the Call Log ({name})"}
           for name in ("incidentId", "alertId", "monitorId", "scheduledMaintenanceId", "statusPageId",
                        "statusPageAnnouncementId", "onCallDutyPolicyId", "onCallDutyPolicyEscalationRuleId",
                        "onCallDutyPolicyScheduleId", "teamId")},
    },
}
_SEND_RESPONSE = {
    "type": "object", "additionalProperties": False, "required": ["_id", "toNumber", "fromNumber", "status", "callData"],
    "properties": {
        "_id": {"type": "string", "format": "uuid", "description": "ID of the Call Log row (get-item shows the outcome)"},
        "toNumber": {"type": "string"},
        "fromNumber": {"type": ["string", "null"]},
        "status": {"type": "null", "description": "null while the call is being placed"},
        "callData": {"type": "object"},
    },
}


# -- verification codes ---------------------------------------------------------------------------

_LOCKED = (f"This number is locked after {verification.MAX_ATTEMPTS} wrong codes. A Project Owner or Project "
           "Admin re-sending a code (POST /api/user-incoming-call-number/resend-verification-code) unlocks it.")


def _number(ctx: Context, number_id: uuid.UUID, resource: Resource) -> m.UserIncomingCallNumber:
    Number = m.UserIncomingCallNumber
    number = Number.get_or_none(Number.id == number_id, Number.project == ctx.project_id)
    if number is None:
        raise NotFound(f"No {resource.title} with id {number_id}.")
    return number


def verify(ctx: Context, request: Request) -> dict:
    resource = BY_PATH["user-incoming-call-number"]
    _check_keys(request.body, ("itemId", "code"))
    number_id = _item_id(request.body, resource)
    code = request.body.get("code")
    if code is None:
        raise BadRequest("code: missing (the code the number received)")
    if not isinstance(code, str):
        raise BadRequest("code: must be a string of digits")
    code = "".join(code.split()).replace("-", "")
    if not (code.isascii() and code.isdigit() and len(code) == verification.CODE_DIGITS):
        raise BadRequest(f"code: must be the {verification.CODE_DIGITS} digits the number received")
    with write_transaction():  # the count of wrong codes is kept: the errors are raised after the commit
        check = verification.check_code(_number(ctx, number_id, resource), code)
    outcome = check.outcome
    if outcome is verification.Outcome.VERIFIED:
        return {}
    if outcome is verification.Outcome.WRONG:
        if check.attempts_left == 0:
            raise Locked("Wrong code. " + _LOCKED)
        raise BadRequest(f"Wrong code: {check.attempts_left} tr{'y' if check.attempts_left == 1 else 'ies'} left "
                         "before the number is locked.")
    if outcome is verification.Outcome.LOCKED:
        raise Locked(_LOCKED)
    if outcome is verification.Outcome.EXPIRED:
        raise BadRequest("This code expired: re-send one "
                         "(POST /api/user-incoming-call-number/resend-verification-code).")
    if outcome is verification.Outcome.ALREADY_VERIFIED:
        raise BadRequest("This number is already verified.")
    raise BadRequest("No code was sent to this number: send one first "
                     "(POST /api/user-incoming-call-number/resend-verification-code).")


def resend(ctx: Context, request: Request) -> dict:
    resource = BY_PATH["user-incoming-call-number"]
    _check_keys(request.body, ("itemId",))
    number_id = _item_id(request.body, resource)
    with write_transaction():
        number = _number(ctx, number_id, resource)
        if number.isVerified:
            raise BadRequest("This number is already verified.")
        try:
            verification.issue_code(number, unlock=ctx.principal.is_admin, codes_per_day=ctx.codes_per_day)
        except verification.NumberLocked:
            raise Forbidden(f"This number is locked after {verification.MAX_ATTEMPTS} wrong codes: only a Project "
                            "Owner or Project Admin key can re-send a code, which unlocks it.") from None
        except verification.TooManyCodes as exc:
            raise too_many_codes(exc) from None
    return {}


async def voicemail(request, ctx: Context, call: Request) -> web.FileResponse:
    """The voicemail of a log of the key's project; 404 when there is none (or its file is gone). Never a
    file outside the recordings directory, whatever the column says."""
    log_id = BY_PATH["incoming-call-log"].parse_id(call.path["id"])
    name = await request.app[READ](callstore.voicemail_file, ctx.project_id, log_id)
    if not name:
        raise NotFound(f"The Incoming Call Log {log_id} has no voicemail.")
    base = request.app[CONFIG].recordings_dir.resolve()
    path = (base / name).resolve()
    if base not in path.parents or not path.is_file():
        raise NotFound(f"The Incoming Call Log {log_id} has no voicemail.")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


_ITEM_ID = {"type": "string", "format": "uuid", "description": "ID of the User Incoming Call Number"}
_EMPTY = {"type": "object", "additionalProperties": False}

ACTIONS: list[Action] = [
    Action(
        BY_PATH["on-call-duty-policy-schedule"], "read", "GET", "/{id}/on-call",
        "getOnCallDutyPolicyScheduleOnCall", "Who is on call",
        "Who is on call on the schedule at a moment (default: now), what puts them there (a layer or an "
        "override), until when, and the next hand-offs.",
        on_call,
        parameters=[
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "ID of the schedule"},
            {"name": "at", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
             "description": "The moment, ISO 8601 (without an offset: UTC), between 1970 and 2200. Default: now"},
            {"name": "next", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_NEXT},
             "description": f"How many of the next hand-offs to list (0 to {MAX_NEXT}, default 0)"},
        ],
        response=_ON_CALL_RESPONSE,
    ),
    Action(
        BY_PATH["user-incoming-call-number"], "update", "POST", "/verify",
        "verifyUserIncomingCallNumber", "Verify a number with its code",
        "Verifies a number with the 6-digit code it received; a number is rung only once verified. Wrong codes "
        f"are counted per destination (the project and the E.164 number or SIP URI, whatever number row points "
        f"at it): after {verification.MAX_ATTEMPTS} the destination is locked (423), even for a number deleted "
        "and created again, until a Project Owner or Admin re-sends a code.",
        verify, writes=True,
        body={"type": "object", "additionalProperties": False, "required": ["itemId", "code"],
              "properties": {"itemId": _ITEM_ID,
                             "code": {"type": "string", "description": "The 6 digits the number received"}}},
        response=_EMPTY, codes=("400", "401", "403", "404", "423", "429"),
    ),
    Action(
        BY_PATH["user-incoming-call-number"], "update", "POST", "/resend-verification-code",
        "resendUserIncomingCallNumberVerificationCode", "Send a new verification code",
        "Sends the number a new code (replacing the previous one), which the call controller delivers by a "
        "phone call that speaks it (an administrator can also read it on the server with `hotline number "
        "code` until then). From a Project Owner or Admin key it also unlocks a number locked after too many "
        "wrong codes. At most `notify.verification_codes_per_day` codes (5 by default) are sent to one "
        "destination in 24 hours, whoever asks: one more is a 429 saying when to try again (and Retry-After).",
        resend, writes=True,
        body={"type": "object", "additionalProperties": False, "required": ["itemId"],
              "properties": {"itemId": _ITEM_ID}},
        response=_EMPTY,
    ),
    Action(
        BY_PATH["call-log"], "create", "POST", "/send",
        "sendCallLog", "Place a notification call",
        "Calls a number (or a user's first verified number), speaks the message, then \"Press 1 to acknowledge, "
        "press 9 to hear this again\". Answers at once with the created Call Log row, whose status is null while "
        "the call is placed; it then becomes Success (answered and heard; callData.keyPressed and "
        "callData.acknowledged say whether 1 was pressed), Missed Call, Busy or Error (statusMessage says why), "
        "with its cost from the rate table. An acknowledgement is also posted to the configured webhook. Only "
        "verified numbers of the project are called, from one of its numbers; 429 beyond the project's caps "
        "(notify.max_calls_in_progress, notify.max_calls_per_hour).",
        None, writes=True, body=_SEND_BODY, response=_SEND_RESPONSE, codes=("400", "401", "403", "429"),
        handler=send_call,
    ),
    Action(
        BY_PATH["incoming-call-log"], "read", "GET", "/{id}/voicemail",
        "getIncomingCallLogVoicemail", "The voicemail of an incoming call",
        "The voicemail the caller left after no one answered (an Incoming Call Policy with voicemailOnNoAnswer), "
        "as audio/wav (8 kHz, 16-bit mono). 404 when the call has no voicemail. Recorded on the ARI controller "
        "only (a call over FastAGI hangs up after the no-answer message).",
        None, parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                           "description": "ID of the Incoming Call Log"}],
        response={"type": "string", "format": "binary"}, codes=("401", "403", "404", "429"),
        handler=voicemail, media_type="audio/wav",
    ),
    *[Action(
        BY_PATH["incoming-call-policy"], verb, method, f"/{{id}}/phone-number/{name}", operation_id, summary,
        description, None, parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                                        "description": "ID of the Incoming Call Policy"}],
        body=body, response=response, codes=codes, handler=handler)
      for verb, method, name, operation_id, summary, description, body, response, codes, handler in (
        ("read", "POST", "search", "searchIncomingCallPolicyPhoneNumbers", "Search numbers to buy",
         "Local numbers Twilio offers to buy in a country (optionally in an area code, or containing a pattern), "
         "on the policy's Twilio account: its Project Call SMS Config, else the global account. 400 when there "
         "is no account; 502 with Twilio's message when Twilio refuses, 504 when it does not answer.",
         phone_numbers.SEARCH_BODY, phone_numbers.SEARCH_RESPONSE, ("400", "401", "403", "404", "429", "502", "504"),
         phone_numbers.search),
        ("update", "POST", "purchase", "purchaseIncomingCallPolicyPhoneNumber", "Buy the policy's number",
         "Buys the number at Twilio, its calls sent to {twilio.public_url}/twilio/voice (POST) and its status "
         "callbacks to {twilio.public_url}/twilio/status, and makes it the policy's routingPhoneNumber (with "
         "callProviderPhoneNumberId, phoneNumberCountryCode, phoneNumberAreaCode, phoneNumberPurchasedAt). 409 "
         "when the policy already has a number or another policy or menu routes this one; 400 without a Twilio "
         "account or twilio.public_url; 502 with Twilio's message when Twilio refuses (e.g. the number is no "
         "longer available).",
         phone_numbers.PURCHASE_BODY, phone_numbers.POLICY_NUMBER,
         ("400", "401", "403", "404", "409", "429", "502", "504"), phone_numbers.purchase),
        ("read", "GET", "owned", "listIncomingCallPolicyOwnedPhoneNumbers", "The account's numbers",
         "The numbers the policy's Twilio account owns (numbers routing to another project are left out of a "
         "shared account's list), each with the policy of your project it routes to, if any.",
         None, phone_numbers.OWNED_RESPONSE, ("400", "401", "403", "404", "429", "502", "504"), phone_numbers.owned),
        ("update", "POST", "assign", "assignIncomingCallPolicyPhoneNumber", "Give the policy an owned number",
         "Makes a number the account already owns (by phoneNumberId, its PN... SID, or phoneNumber) the policy's "
         "routingPhoneNumber, and points its voice webhook and status callback at Hotline.",
         phone_numbers.ASSIGN_BODY, phone_numbers.POLICY_NUMBER,
         ("400", "401", "403", "404", "409", "429", "502", "504"), phone_numbers.assign),
        ("update", "POST", "release", "releaseIncomingCallPolicyPhoneNumber", "Release the policy's number",
         "Releases the policy's number at Twilio and clears its phone number fields. Idempotent: a policy "
         "without a number, or a number Twilio no longer has, answers 200 (released: false).",
         phone_numbers.EMPTY_BODY, phone_numbers.POLICY_NUMBER, ("400", "401", "403", "404", "429", "502", "504"),
         phone_numbers.release),
      )],
]
