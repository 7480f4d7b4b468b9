"""The contact center's calls API, in CCAI Platform's shape (seed ``ccai-calls-api.txt``):

- ``POST /apps/api/v1/calls``: create an outbound, inbound or scheduled call (201 with the call object;
  202 with the request echoed when the agent must choose the outbound number on the keypad).
- ``GET /apps/api/v1/calls``: the project's calls, paged (``page``, ``per``), sorted and filtered; the
  headers Total, Per-Page, Page and Link say where the other pages are.
- ``GET /apps/api/v1/calls/{id}``: one call.
- ``GET|PATCH /apps/api/v1/calls/{id}/customer_flag``: the call's reserved data attributes.
- ``GET /apps/api/v1/calls/{id}/recording``: the call's recording (audio/wav), to the call's project only.

Ids are the integer ``numericId``\\s of the rows. Authentication is HTTP Basic: the username is the
project's id (CCAI's company key), the password an API key of that project (the same keys, roles,
permissions, expiry and rate limit as the rest of the API; the permission noun is "Contact Center
Call"). Every error is ``{"message": "..."}`` (api/errors.py renders ``/apps/`` paths so), in the seed's
words where it has some.

The rules live in ``ivr/store/contact_center.py`` (checking a request, creating its rows and, for an
outbound call, the outbox message the call services take); this module speaks HTTP and renders rows.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import BasicAuth, web

from api.auth import Principal
from api.errors import ApiError, BadRequest, NotFound, Unauthorized
from api.resources import Context
from api.schema import format_datetime
from ivr.core.contact_center.vocabulary import (
    CALL_TYPE_NAMES,
    CallStatus,
    RecordingOption,
    RecordingPermission,
)
from ivr.core.phone import display
from ivr.runtime import CONFIG, DB, READ
from ivr.store import contact_center as cc
from ivr.store import models as m
from ivr.store.db import run_and_release

PREFIX = "/apps/api/v1/calls"
TITLE = "Contact Center Call"          # the permission noun: Read / Create / Edit Contact Center Call
NOT_FOUND = "Resource not found"
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="Hotline calls API", charset="UTF-8"'}
MAX_PER = 100
DEFAULT_PER = 25
MAX_PAGE = 10**7
DIRECTIONS = ("DESC", "ASC", "desc", "asc")


@dataclass(frozen=True)
class Hooks:
    """What this module borrows from the application (api/app.py): the key lookup (cache, expiry,
    rate limit), the body reader and the caller's Context."""

    authenticate: Callable[[web.Request, str], Awaitable[Principal]]
    read_body: Callable[[web.Request], Awaitable[dict]]
    context_of: Callable[[web.Application, Principal], Context]


class CallError(ApiError):
    """A refusal of ivr.store.contact_center, with its status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=_dumps(value), status=status, content_type="application/json", headers=headers)


# -- authentication -------------------------------------------------------------------------------


async def principal_of(request: web.Request, hooks: Hooks) -> Principal:
    """The key of HTTP Basic credentials (username: the project's id, password: its API key)."""
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("Authentication required: HTTP Basic, with your project's id as the username and an "
                           "API key of that project as the password.", headers=WWW_AUTHENTICATE)
    try:
        credentials = BasicAuth.decode(header, encoding="utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Invalid credentials: send HTTP Basic (Authorization: Basic base64(project id:API key)).",
                           headers=WWW_AUTHENTICATE) from None
    try:
        project_id = uuid.UUID(credentials.login)
    except ValueError:
        raise Unauthorized("Invalid credentials: the username is your project's id.", headers=WWW_AUTHENTICATE) \
            from None
    key = credentials.password
    if not key or len(key) > 200 or not key.isascii():
        raise Unauthorized("Invalid credentials.", headers=WWW_AUTHENTICATE)
    try:
        principal = await hooks.authenticate(request, key, project_id)
    except Unauthorized as exc:
        raise Unauthorized(exc.message, headers=WWW_AUTHENTICATE) from None
    return principal


# -- rendering ------------------------------------------------------------------------------------


def _date(value: dt.datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _phone(e164: str | None) -> str | None:
    return display(e164) if e164 else None


def _agent_info(user: m.User | None) -> dict | None:
    if user is None:
        return None
    name = user.name or ""
    first, _, last = name.rpartition(" ")
    if not first:  # one word: it is the first name
        first, last = last, ""
    return {"id": user.numericId, "agent_number": user.agentNumber, "name": user.name,
            "last_name": last or None, "first_name": first or None, "avatar_url": user.avatarUrl}


def _end_user(end_user: m.EndUser | None) -> dict | None:
    if end_user is None:
        return None
    return {"id": end_user.numericId, "identifier": end_user.identifier, "out_contact_id": end_user.outContactId}


def render_call(bundle: cc.CallBundle, call: m.ContactCenterCall, origin: str) -> dict:
    """One call in the seed's shape, every field in the seed's order."""
    menu = bundle.menus.get(call.callMenuId) if call.callMenuId else None
    selected = path = None
    if menu is not None:
        parent = bundle.menus.get(menu.parentId) if menu.parentId else None
        selected = {"id": menu.numericId, "name": menu.name, "parent_id": parent.numericId if parent else None,
                    "position": menu.position, "deleted": False, "menu_type": menu.menuType,
                    "output_msg": menu.outputMessage, "hidden": bool(menu.hidden)}
        menus = bundle.menu_path(menu.id)
        path = {"items_count": len(menus), "name": " / ".join(item.name for item in menus),
                "materialized_path": "/".join(str(item.numericId) for item in menus)}
    permission = call.recordingPermission
    if menu is not None and menu.recordingOption != RecordingOption.ASK:
        permission = RecordingPermission.NOT_ASKED.value  # only a menu that asks shows the caller's answer
    end_user = bundle.end_users.get(call.endUserId) if call.endUserId else None
    agent = bundle.users.get(call.agentId) if call.agentId else None
    participants = []
    for p in bundle.participants.get(call.id, []):
        user = bundle.users.get(p.userId) if p.userId else None
        who = bundle.end_users.get(p.endUserId) if p.endUserId else None
        participants.append({
            "id": p.numericId, "type": p.type, "status": p.status, "call_id": call.numericId,
            "user_id": user.numericId if user else None, "end_user_id": who.numericId if who else None,
            "call_duration": p.callDuration, "hold_duration": p.holdDuration,
            "connected_at": _date(p.connectedAt), "ended_at": _date(p.endedAt), "fail_reason": p.failReason,
        })
    return {
        "id": call.numericId,
        "parent_id": bundle.parents.get(call.parentCallId) if call.parentCallId else None,
        "lang": call.lang,
        "call_type": call.callType,
        "status": call.status,
        "created_at": _date(call.createdAt),
        "queued_at": _date(call.queuedAt),
        "assigned_at": _date(call.assignedAt),
        "connected_at": _date(call.connectedAt),
        "ends_at": _date(call.endsAt),
        "scheduled_at": _date(call.scheduledAt),
        "wait_duration": call.waitDuration,
        "call_duration": call.callDuration,
        "hold_duration": call.holdDuration,
        "rating": call.rating,
        "has_feedback": bool(call.hasFeedback),
        "voip_provider": call.voipProvider,
        "out_ticket_id": call.ticketId,
        "out_ticket_url": call.ticketUrl,
        "verified": bool(call.verifiedCustomer),
        "recording_url": f"{origin}{PREFIX}/{call.numericId}/recording" if call.recordingFile else None,
        "recording_permission": permission,
        "voicemail_reason": call.voicemailReason,
        "deflection": call.deflection,
        "disconnected_by": call.disconnectedBy,
        "fail_reason": call.failReason,
        "fail_details": call.failDetails,
        "support_number": _phone(call.supportNumber),
        "selected_menu": selected,
        "menu_path": path,
        "agent_info": _agent_info(agent),
        "end_user": _end_user(end_user),
        "photos": [],
        "videos": [],
        "transfers": [],
        "deflection_details": [],
        "participants": participants,
        "offer_type": call.offerType,
        "offer_events": list(call.offerEvents or []),
        "answer_type": call.answerType,
        "outbound_number": _phone(call.outboundNumber),
        # Not in the seed: a call a menu handed to an Incoming Call Policy names that call's log.
        "incoming_call_log_id": str(call.incomingCallLogId) if call.incomingCallLogId else None,
    }


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


def _numeric_id(request: web.Request) -> int:
    """The integer id in the URL; anything else is a 404, like an id of another project."""
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        raise NotFound(NOT_FOUND)
    value = int(raw)
    if not 0 < value <= cc.MAX_INT:
        raise NotFound(NOT_FOUND)
    return value


# -- the list's parameters ------------------------------------------------------------------------

LIST_PARAMETERS = ("page", "per", "sort_column", "sort_direction", "status", "call_type", "agent_id",
                   "end_user_id", "menu_id", "created_after", "created_before")


def _whole(query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _list_id(query, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 0 < int(raw) <= cc.MAX_INT:
        raise BadRequest(f"{name} is not well formed (an integer id)")
    return int(raw)


def _list_instant(query, name: str) -> dt.datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    parsed = cc._instant(raw)
    if parsed is None:
        raise BadRequest(f"{name} is not well formed (an ISO 8601 date-time, e.g. 2019-06-07T01:27:30.406Z)")
    return parsed


@dataclass(frozen=True)
class ListRequest:
    page: int
    per: int
    sort_column: str
    descending: bool
    filters: cc.CallFilter


def parse_list(query) -> ListRequest:
    unknown = sorted(set(query) - set(LIST_PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}. Parameters: {', '.join(LIST_PARAMETERS)}")
    for name in query:
        if len(query.getall(name)) > 1:
            raise BadRequest(f"{name} is given more than once")
    per = _whole(query, "per", DEFAULT_PER, 1, MAX_PER)
    page = _whole(query, "page", 1, 1, MAX_PAGE)
    sort_column = query.get("sort_column", "id")
    if sort_column not in ("id", "created_at", "ends_at"):
        raise BadRequest("sort_column must be one of id, created_at, ends_at")
    direction = query.get("sort_direction", "DESC")
    if direction not in DIRECTIONS:
        raise BadRequest("sort_direction must be ASC or DESC")
    status = query.get("status")
    if status is not None and status not in {s.value for s in CallStatus}:
        raise BadRequest(f"status {status[:40]!r} is not a call status: one of "
                         f"{', '.join(s.value for s in CallStatus)}")
    call_type = query.get("call_type")
    if call_type is not None:
        if call_type not in CALL_TYPE_NAMES:
            raise BadRequest("Invalid call type")
        call_type = CALL_TYPE_NAMES[call_type].value
    filters = cc.CallFilter(status=status, call_type=call_type, agent_id=_list_id(query, "agent_id"),
                            end_user_id=_list_id(query, "end_user_id"), menu_id=_list_id(query, "menu_id"),
                            created_after=_list_instant(query, "created_after"),
                            created_before=_list_instant(query, "created_before"))
    return ListRequest(page, per, sort_column, direction.upper() == "DESC", filters)


def _links(request: web.Request, page: int, per: int, total: int) -> str:
    last = max(1, -(-total // per))
    links = []

    def link(number: int, rel: str) -> None:
        url = request.url.update_query({"page": str(number), "per": str(per)})
        links.append(f'<{url}>; rel="{rel}"')

    if page < last:
        link(page + 1, "next")
    if page > 1:
        link(min(page - 1, last), "prev")
    link(1, "first")
    link(last, "last")
    return ", ".join(links)


# -- customer flags -------------------------------------------------------------------------------

FLAG_NAMES = {"verified_customer": "verified_customer", "bad_actor": "bad_actor",
              "repeat_customer": "repeat_customer", "repeat_customers": "repeat_customer"}  # the seed's alias


def parse_flags(body: dict) -> dict[str, bool]:
    changes: dict[str, bool] = {}
    for name, value in body.items():
        if name not in FLAG_NAMES:
            raise BadRequest(f"unknown field {name[:40]!r}. Fields: {', '.join(FLAG_NAMES)}")
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be a boolean (true or false)")
        flag = FLAG_NAMES[name]
        if flag in changes and changes[flag] != value:
            raise BadRequest("repeat_customer and repeat_customers (the same flag) disagree")
        changes[flag] = value
    return changes


# -- the routes -----------------------------------------------------------------------------------


def routes(hooks: Hooks) -> list[web.RouteDef]:

    async def caller(request: web.Request, verb: str) -> Context:
        principal = await principal_of(request, hooks)
        principal.require(verb, TITLE)
        return hooks.context_of(request.app, principal)

    async def read(request: web.Request, fn, *args):
        try:
            return await request.app[READ](fn, *args)
        except cc.CallRequestError as exc:
            raise CallError(exc.message, exc.status) from None

    async def create(request: web.Request) -> web.Response:
        ctx = await caller(request, "create")
        body = await hooks.read_body(request)
        app = request.app
        plan = await read(request, cc.plan_call, ctx.project_id, body, ctx.default_region, m.utcnow())
        try:
            call_id = await asyncio.shield(run_and_release(app[DB], cc.create_call, plan,
                                                           int(app[CONFIG].notify.max_calls_per_hour)))
        except cc.CallRequestError as exc:
            raise CallError(exc.message, exc.status) from None
        if plan.accepted:  # the seed's "Accepted : Need to choose an outbound number": the request, echoed
            return json_response(body, 202)
        bundle = await read(request, cc.bundle_of, ctx.project_id, call_id)
        return json_response(render_call(bundle, bundle.calls[0], _origin(request)), 201)

    async def list_calls(request: web.Request) -> web.Response:
        ctx = await caller(request, "read")
        wanted = parse_list(request.query)
        total, bundle = await read(request, cc.list_calls, ctx.project_id, wanted.filters, wanted.sort_column,
                                   wanted.descending, (wanted.page - 1) * wanted.per, wanted.per)
        origin = _origin(request)
        headers = {"Total": str(total), "Per-Page": str(wanted.per), "Page": str(wanted.page),
                   "Link": _links(request, wanted.page, wanted.per, total)}
        return json_response([render_call(bundle, call, origin) for call in bundle.calls], headers=headers)

    async def get_call(request: web.Request) -> web.Response:
        ctx = await caller(request, "read")
        bundle = await read(request, cc.get_call, ctx.project_id, _numeric_id(request))
        if bundle is None:
            raise NotFound(NOT_FOUND)
        return json_response(render_call(bundle, bundle.calls[0], _origin(request)))

    async def get_flags(request: web.Request) -> web.Response:
        ctx = await caller(request, "read")
        flags = await read(request, cc.read_flags, ctx.project_id, _numeric_id(request))
        if flags is None:
            raise NotFound(NOT_FOUND)
        return json_response(flags)

    async def patch_flags(request: web.Request) -> web.Response:
        ctx = await caller(request, "update")
        numeric_id = _numeric_id(request)
        changes = parse_flags(await hooks.read_body(request))
        flags = await asyncio.shield(run_and_release(request.app[DB], cc.set_flags, ctx.project_id, numeric_id,
                                                     changes))
        if flags is None:
            raise NotFound(NOT_FOUND)
        return json_response(flags)

    async def recording(request: web.Request) -> web.StreamResponse:
        ctx = await caller(request, "read")
        name = await read(request, cc.recording_file, ctx.project_id, _numeric_id(request))
        if name is None:
            raise NotFound(NOT_FOUND)
        base = request.app[CONFIG].recordings_dir.resolve()
        path = (base / name).resolve()
        if base not in path.parents or not path.is_file():  # never a file outside the recordings directory
            raise NotFound(NOT_FOUND)
        # A voicemail fetched is a voicemail listened to (the seed's "voicemail_read").
        await asyncio.shield(run_and_release(request.app[DB], cc.mark_voicemail_read, ctx.project_id,
                                             _numeric_id(request)))
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    return [
        web.post(PREFIX, create),
        web.get(PREFIX, list_calls, allow_head=False),
        web.get(PREFIX + "/{id}", get_call, allow_head=False),
        web.get(PREFIX + "/{id}/customer_flag", get_flags, allow_head=False),
        web.patch(PREFIX + "/{id}/customer_flag", patch_flags),
        web.get(PREFIX + "/{id}/recording", recording, allow_head=False),
    ]


# -- the OpenAPI document -------------------------------------------------------------------------

_NULL_INT = {"type": ["integer", "null"]}
_NULL_TEXT = {"type": ["string", "null"]}
_NULL_DATE = {"type": ["string", "null"], "format": "date-time"}


def _enum(enum_class, nullable: bool = False) -> dict:
    values = [member.value for member in enum_class]
    return {"type": ["string", "null"], "enum": [*values, None]} if nullable else {"type": "string", "enum": values}


def _object(properties: dict, nullable: bool = False) -> dict:
    schema = {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties}
    return {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def openapi() -> dict:
    """The calls API's paths and schemas for /api/openapi.json (merged by api/openapi.py)."""
    from ivr.core.contact_center import vocabulary as v

    menu_path = _object({"items_count": {"type": "integer"}, "name": {"type": "string"},
                         "materialized_path": {"type": "string", "description": "numericIds from the root, e.g. 1/5/9"}},
                        nullable=True)
    participant = _object({
        "id": {"type": "integer"}, "type": _enum(v.ParticipantType), "status": _enum(v.ParticipantStatus),
        "call_id": {"type": "integer"}, "user_id": _NULL_INT, "end_user_id": _NULL_INT,
        "call_duration": _NULL_INT, "hold_duration": _NULL_INT, "connected_at": _NULL_DATE, "ended_at": _NULL_DATE,
        "fail_reason": _enum(v.FailReason)})
    call = _object({
        "id": {"type": "integer"}, "parent_id": _NULL_INT, "lang": {"type": "string"},
        "call_type": _enum(v.CallType), "status": _enum(v.CallStatus),
        "created_at": {"type": "string", "format": "date-time"}, "queued_at": _NULL_DATE, "assigned_at": _NULL_DATE,
        "connected_at": _NULL_DATE, "ends_at": _NULL_DATE, "scheduled_at": _NULL_DATE,
        "wait_duration": {"type": "integer"}, "call_duration": {"type": "integer"},
        "hold_duration": {"type": "integer"}, "rating": _NULL_INT, "has_feedback": {"type": "boolean"},
        "voip_provider": {"type": "string"}, "out_ticket_id": _NULL_TEXT, "out_ticket_url": _NULL_TEXT,
        "verified": {"type": "boolean"},
        "recording_url": {**_NULL_TEXT, "description": "The recording route of this call, when it has a recording"},
        "recording_permission": _enum(v.RecordingPermission), "voicemail_reason": _enum(v.VoicemailReason),
        "deflection": _enum(v.Deflection), "disconnected_by": _enum(v.DisconnectedBy),
        "fail_reason": _enum(v.FailReason), "fail_details": _NULL_TEXT,
        "support_number": {**_NULL_TEXT, "description": "International format, e.g. +1 339-219-5276"},
        "selected_menu": _object({"id": {"type": "integer"}, "name": {"type": "string"}, "parent_id": _NULL_INT,
                                  "position": {"type": "integer"}, "deleted": {"type": "boolean"},
                                  "menu_type": _enum(v.MenuType), "output_msg": _NULL_TEXT,
                                  "hidden": {"type": "boolean"}}, nullable=True),
        "menu_path": menu_path,
        "agent_info": _object({"id": {"type": "integer"}, "agent_number": _NULL_TEXT, "name": _NULL_TEXT,
                               "last_name": _NULL_TEXT, "first_name": _NULL_TEXT, "avatar_url": _NULL_TEXT},
                              nullable=True),
        "end_user": _object({"id": {"type": "integer"}, "identifier": _NULL_TEXT, "out_contact_id": _NULL_TEXT},
                            nullable=True),
        "photos": {"type": "array", "maxItems": 0}, "videos": {"type": "array", "maxItems": 0},
        "transfers": {"type": "array", "maxItems": 0}, "deflection_details": {"type": "array", "maxItems": 0},
        "participants": {"type": "array", "items": participant},
        "offer_type": _enum(v.OfferType, nullable=True),
        "offer_events": {"type": "array", "items": {"type": "object"}},
        "answer_type": {"type": "string"},
        "outbound_number": {**_NULL_TEXT, "description": "International format; null until the agent chooses one (202)"},
        "incoming_call_log_id": {**_NULL_TEXT, "description": "Not in CCAI's object: the Incoming Call Log of the "
                                                              "policy a menu's leaf handed this call to"},
    })
    ref = {"$ref": "#/components/schemas/ContactCenterCall"}
    flags = {"type": "object", "additionalProperties": False,
             "required": ["verified_customer", "bad_actor", "repeat_customer"],
             "properties": {name: {"type": "boolean"} for name in ("verified_customer", "bad_actor", "repeat_customer")}}
    errors = {
        "400": "Bad input; the message is the seed's (e.g. \"Agent is not available to take this call\")",
        "401": "No credentials, or not an API key of the project named by the username (WWW-Authenticate: Basic)",
        "403": "The key lacks the permission; the message lists what would allow it",
        "404": "No such call in the project (\"Resource not found\")",
        "429": "Rate limit of the API key, or the project's cap of calls per hour",
        "503": "The database is busy with other writes: retry in a moment",
    }

    def responses(ok: dict, *codes: str) -> dict:
        out = dict(ok)
        for code in codes:
            out[code] = {"description": errors[code],
                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}}
        return out

    def allowed(verb: str) -> str:
        from api.auth import allowed_by
        return "Allowed for: " + ", ".join(allowed_by(verb, TITLE)) + "."

    security = [{"basic": []}]
    tag = [TITLE]
    id_param = [{"name": "id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": cc.MAX_INT},
                 "description": "The call's id (an integer)"}]
    number = {"type": ["string", "null"], "maxLength": 64}
    create_body = {
        "type": "object", "required": ["call_type"],
        "properties": {
            "call_type": {"type": "string", "enum": list(CALL_TYPE_NAMES)},
            "agent_email": {"type": ["string", "null"], "description": "Outbound: the agent assigned"},
            "ticket_id": {"type": ["string", "integer", "null"], "description": "A CRM ticket: its end user is dialed"},
            "end_user_number": {**number, "description": "The end user's number (ticket_id wins)"},
            "outbound_number": {**number, "description": "One of the project's outbound phone numbers"},
            "lang": {"type": ["string", "null"], "description": "ISO 639-1 (default en)"},
            "menu_id": {**_NULL_INT, "description": "Inbound and scheduled: the menu"},
            "call_id": {**_NULL_INT, "description": "Scheduled: the parent call (its menu when menu_id is absent)"},
            "scheduled_at": {"type": ["string", "null"], "description": "Scheduled: ISO 8601, in the future"},
            "recording_permission": {"type": ["string", "null"], "enum": [*v.RECORDING_PERMISSION_NAMES, None]},
        },
    }
    list_params = [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
         "description": "The page, from 1"},
        {"name": "per", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER},
         "description": f"Calls per page (default {DEFAULT_PER}, at most {MAX_PER})"},
        {"name": "sort_column", "in": "query", "schema": {"type": "string", "enum": ["id", "created_at", "ends_at"]}},
        {"name": "sort_direction", "in": "query", "schema": {"type": "string", "enum": list(DIRECTIONS)},
         "description": "Default DESC"},
        {"name": "status", "in": "query", "schema": _enum(v.CallStatus)},
        {"name": "call_type", "in": "query", "schema": {"type": "string", "enum": list(CALL_TYPE_NAMES)}},
        *({"name": name, "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": cc.MAX_INT},
           "description": description} for name, description in (
            ("agent_id", "The agent's id"), ("end_user_id", "The end user's id"), ("menu_id", "The menu's id"))),
        *({"name": name, "in": "query", "schema": {"type": "string"}, "description": "ISO 8601 date-time"}
          for name in ("created_after", "created_before")),
    ]
    page_headers = {name: {"schema": {"type": "string"}, "description": description} for name, description in (
        ("Total", "The number of calls that match"), ("Per-Page", "Calls per page"), ("Page", "This page"),
        ("Link", "The next, prev, first and last pages (RFC 8288)"))}
    json_of = lambda schema: {"application/json": {"schema": schema}}  # noqa: E731
    paths = {
        PREFIX: {
            "post": {
                "tags": tag, "operationId": "createContactCenterCall", "summary": "Create a call", "security": security,
                "description": "An outbound call (assigned to the agent, whose phone rings first), or an inbound or "
                               "scheduled call of a menu (stored; placed by the menu/queue engine). " + allowed("create"),
                "requestBody": {"required": False, "content": json_of(create_body)},
                "responses": responses({
                    "201": {"description": "The call", "content": json_of(ref)},
                    "202": {"description": "Created; the agent chooses the outbound number on the keypad. The request, "
                                           "echoed", "content": json_of({"type": "object"})},
                }, "400", "401", "403", "429", "503"),
            },
            "get": {
                "tags": tag, "operationId": "listContactCenterCalls", "summary": "List calls", "security": security,
                "description": allowed("read"), "parameters": list_params,
                "responses": responses({"200": {"description": "A page of calls", "headers": page_headers,
                                                "content": json_of({"type": "array", "items": ref})}},
                                       "400", "401", "403", "429"),
            },
        },
        PREFIX + "/{id}": {"get": {
            "tags": tag, "operationId": "getContactCenterCall", "summary": "Get a call", "security": security,
            "description": allowed("read"), "parameters": id_param,
            "responses": responses({"200": {"description": "The call", "content": json_of(ref)}},
                                   "401", "403", "404", "429")}},
        PREFIX + "/{id}/customer_flag": {
            "get": {"tags": tag, "operationId": "getContactCenterCallCustomerFlag", "security": security,
                    "summary": "Get the reserved data attributes of a call", "description": allowed("read"),
                    "parameters": id_param,
                    "responses": responses({"200": {"description": "The flags", "content": json_of(flags)}},
                                           "401", "403", "404", "429")},
            "patch": {"tags": tag, "operationId": "updateContactCenterCallCustomerFlag", "security": security,
                      "summary": "Update the reserved data attributes of a call",
                      "description": "repeat_customers is the seed's name of repeat_customer. " + allowed("update"),
                      "parameters": id_param,
                      "requestBody": {"required": False, "content": json_of({
                          "type": "object", "additionalProperties": False,
                          "properties": {name: {"type": "boolean"} for name in FLAG_NAMES}})},
                      "responses": responses({"200": {"description": "The flags after the change",
                                                      "content": json_of(flags)}},
                                             "400", "401", "403", "404", "429", "503")},
        },
        PREFIX + "/{id}/recording": {"get": {
            "tags": tag, "operationId": "getContactCenterCallRecording", "summary": "The recording of a call",
            "security": security, "description": allowed("read"), "parameters": id_param,
            "responses": responses({"200": {"description": "The recording",
                                            "content": {"audio/wav": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}},
                                   "401", "403", "404", "429")}},
    }
    schemas = {"ContactCenterCall": call,
               "Message": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}}
    return {"paths": paths, "schemas": schemas,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                                          "description": "The calls API: username your project's id, password an "
                                                         "API key of that project"}}}
