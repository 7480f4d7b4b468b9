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

import phonenumbers
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
MAX_OFFSET = 10**9


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
    if not e164:
        return None
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


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
    page = _whole(query, "page", 1, 1, MAX_OFFSET // per + 1)
    sort_column = query.get("sort_column", "id")
    if sort_column not in ("id", "created_at", "ends_at"):
        raise BadRequest("sort_column must be one of id, created_at, ends_at")
    direction = query.get("sort_direction", "DESC")
    if direction.upper() not in ("ASC", "DESC"):
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
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    return [
        web.post(PREFIX, create),
        web.get(PREFIX, list_calls, allow_head=False),
        web.get(PREFIX + "/{id}", get_call, allow_head=False),
        web.get(PREFIX + "/{id}/customer_flag", get_flags, allow_head=False),
        web.patch(PREFIX + "/{id}/customer_flag", patch_flags),
        web.get(PREFIX + "/{id}/recording", recording, allow_head=False),
    ]
