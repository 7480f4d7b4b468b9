"""The dashboard's routes: pages, forms and the live calls' event stream (mounted under /dashboard)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from api import auth
from api.actions import queue_call
from api.dashboard import charts, data
from api.dashboard.session import Session, Sessions, csrf_ok, load_secret, new_session, same_origin
from api.errors import ApiError, BadRequest, Forbidden, TooManyRequests, Unauthorized
from api.registry import BY_PATH
from api.resources import Context
from ivr.runtime import CONFIG, DB, READ
from ivr.store import models as m
from ivr.store.db import lock_wait_expired

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"
#: How often the live page's stream reads the open calls.
POLL_SECONDS = 0.5
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 100

TEMPLATES = Environment(loader=PackageLoader("api.dashboard", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(value: str | None, seconds: bool = True) -> str:
    """An API date-time (ISO 8601, UTC) as the pages show it: 2026-12-06 14:30:05."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(str(value).rstrip("Z"))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _input_time(value: str | None) -> str:
    """An API date-time as a datetime-local input's value."""
    return _when(value, seconds=False).replace(" ", "T")


def _seconds(value) -> str:
    if value is None:
        return ""
    value = float(value)
    if value < 60:
        return f"{value:.0f} s" if value >= 10 or value == int(value) else f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60):02d} s"


TEMPLATES.filters.update(when=_when, input_time=_input_time, seconds=_seconds)


@dataclass(frozen=True)
class Hooks:
    """What the dashboard borrows from api.app (which imports this package)."""

    principal_for_hash: Callable[..., Awaitable[auth.Principal]]
    context_of: Callable[[web.Application, auth.Principal], Context]


HOOKS = web.AppKey("dashboard_hooks", Hooks)
SESSIONS = web.AppKey("dashboard_sessions", Sessions)
STREAMS = web.AppKey("dashboard_streams", set)
STOPPING = web.AppKey("dashboard_stopping", asyncio.Event)

#: The pages of the navigation: path, label, the resource the key must read.
NAV = [
    ("/live", "Live", "incoming-call-log"),
    ("/calls", "Calls", "incoming-call-log"),
    ("/policies", "Policies", "incoming-call-policy"),
    ("/schedules", "On call", "on-call-duty-policy-schedule"),
    ("/users", "Users", "user"),
    ("/menus", "Menus", "call-menu"),
    ("/charts", "Charts", "incoming-call-log"),
]
#: Messages shown after a form succeeded (?ok=...): fixed texts, nothing from the request is echoed.
DONE = {
    "signed-in": "Signed in.", "policy-created": "Policy created.", "policy-saved": "Policy saved.",
    "policy-enabled": "Policy enabled.", "policy-disabled": "Policy disabled.", "rule-created": "Rule added.",
    "rule-saved": "Rule saved.", "rule-moved": "Rule moved.", "rule-deleted": "Rule deleted.",
    "test-call": "Test call queued.", "override-created": "Override added.", "override-deleted": "Override removed.",
}


class SignIn(Exception):
    """No valid session: the visitor is sent to the sign-in form."""


@dataclass
class Viewer:
    session: Session
    principal: auth.Principal
    ctx: Context

    def can(self, verb: str, path: str) -> bool:
        return self.principal.grants(verb, BY_PATH[path].title)

    @property
    def who(self) -> str:
        if self.principal.role is not None:
            return self.principal.role.value
        return ", ".join(sorted(self.principal.permissions)) or "no permissions"


# -- plumbing ------------------------------------------------------------------------------------

def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                   "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def render(request: web.Request, template: str, viewer: Viewer | None, status: int = 200,
           session: Session | None = None, **values: Any) -> web.Response:
    session = session or (viewer.session if viewer else None)
    nav = [(PREFIX + path, label, path == "/" + request.path[len(PREFIX):].strip("/").split("/")[0])
           for path, label, resource in NAV if viewer and viewer.can("read", resource)]
    ok = DONE.get(request.query.get("ok", ""))
    body = TEMPLATES.get_template(template).render(
        viewer=viewer, nav=nav, csrf=session.csrf if session else "", prefix=PREFIX, done=ok,
        can=(viewer.can if viewer else (lambda verb, path: False)), **values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=_headers())


def error_page(request: web.Request, viewer: Viewer | None, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
    response = render(request, "error.html", viewer, status=status, status_code=status, message=message)
    response.headers.update(headers or {})
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser GETs the page again (a reload does not re-post)."""
    return web.Response(status=303, headers={**_headers(), "Location": location})


Handler = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]


def page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A signed-in page: the session's key (still valid) as a ``Viewer``; errors as pages; a POST checked
    for its origin and CSRF token before the handler runs."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        viewer = None
        try:
            viewer = await signed_in(request)
            if request.method == "POST":
                await check_form(request, viewer.session)
            return await handler(request, viewer)
        except SignIn:
            if request.method == "POST":
                return error_page(request, None, 401, "You are not signed in (or your session expired): "
                                                      "sign in again.")
            return redirect(f"{PREFIX}/sign-in?next={quote(request.path_qs)}")
        except web.HTTPException:
            raise
        except ApiError as exc:
            return error_page(request, viewer, exc.status, exc.message, exc.headers)
        except Exception as exc:  # noqa: BLE001 - rendered as a page, logged with its trace
            if lock_wait_expired(exc):
                return error_page(request, viewer, 503, "The database is busy with other writes; retry in a moment.",
                                  {"Retry-After": "1"})
            log.exception("dashboard: unexpected error serving %s %s", request.method, request.path)
            return error_page(request, viewer, 500, "Internal server error; the server log has the details.")

    return wrapped


async def signed_in(request: web.Request) -> Viewer:
    session = request.app[SESSIONS].read(request)
    if session is None or session.key_hash is None:
        raise SignIn()
    hooks = request.app[HOOKS]
    try:
        principal = await hooks.principal_for_hash(request.app, session.key_hash)
    except Unauthorized:
        raise SignIn() from None
    return Viewer(session, principal, hooks.context_of(request.app, principal))


async def check_form(request: web.Request, session: Session | None):
    form = await request.post()
    if not same_origin(request) or not csrf_ok(session, form.get("csrf")):
        raise Forbidden("This form's security token is missing or out of date (CSRF check): reload the page "
                        "and try again.")
    return form


async def read(request: web.Request, fn, *args):
    return await request.app[READ](fn, *args)


async def write(request: web.Request, fn, *args):
    return await request.app[DB].run(fn, *args)


def now() -> dt.datetime:
    return m.utcnow().replace(tzinfo=None)


# -- forms ---------------------------------------------------------------------------------------

def text(form, name: str, *, required: bool = False, label: str | None = None) -> str | None:
    value = form.get(name, "")
    value = value.strip() if isinstance(value, str) else ""
    if not value:
        if required:
            raise BadRequest(f"{label or name}: required")
        return None
    return value


def number(form, name: str, label: str, low: int, high: int, default: int | None = None) -> int:
    raw = text(form, name)
    if raw is None:
        if default is not None:
            return default
        raise BadRequest(f"{label}: required")
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{label}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{label}: must be between {low} and {high}")
    return value


def moment(form_or_query, name: str, label: str) -> dt.datetime | None:
    """A date and time typed in a form (UTC), e.g. 2026-12-06T14:30."""
    raw = text(form_or_query, name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.rstrip("Z"))
    except ValueError:
        raise BadRequest(f"{label}: {raw!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if not 1970 <= value.year <= 2200:
        raise BadRequest(f"{label}: must be between 1970 and 2200")
    return value


def policy_data(form) -> dict:
    repeat = number(form, "repeat", "Repeat the policy", 0, 10, default=0)
    return {
        "name": text(form, "name", required=True, label="Name"),
        "description": text(form, "description"),
        "routingPhoneNumber": text(form, "routingPhoneNumber"),
        "greetingMessage": text(form, "greetingMessage") or "",
        "noAnswerMessage": text(form, "noAnswerMessage") or "No one is available. Please try again later.",
        "isEnabled": form.get("isEnabled") == "on",
        "requireAnswerConfirmation": form.get("requireAnswerConfirmation") == "on",
        "repeatPolicyIfNoOneAnswers": repeat > 0,
        "repeatPolicyIfNoOneAnswersTimes": max(repeat, 1),
    }


TARGET_FIELDS = {"user": "userId", "team": "teamId", "schedule": "onCallDutyPolicyScheduleId"}


def rule_data(form) -> dict:
    target = text(form, "target", required=True, label="Who is rung")
    kind, _, target_id = target.partition(":")
    if kind not in TARGET_FIELDS or not target_id:
        raise BadRequest("Who is rung: choose a user, a team or an on-call schedule")
    values = {"name": text(form, "name"),
              "escalateAfterSeconds": number(form, "escalateAfterSeconds", "Ring for (seconds)", 1, 3600, 30)}
    for name, field in TARGET_FIELDS.items():
        values[field] = target_id if name == kind else None
    return values


# -- signing in and out --------------------------------------------------------------------------

def _next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


async def sign_in_form(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    session = sessions.read(request)
    if session is None:
        session = new_session()
    response = render(request, "sign_in.html", None, session=session, error=None,
                      next=_next(request.query.get("next")))
    sessions.write(request, response, Session(session.csrf))
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    session = sessions.read(request)
    form = await request.post()
    target = _next(form.get("next"))

    def again(status: int, message: str) -> web.Response:
        fresh = session if session is not None else new_session()
        response = render(request, "sign_in.html", None, status=status, session=fresh, error=message, next=target)
        sessions.write(request, response, Session(fresh.csrf))
        return response

    if not same_origin(request) or not csrf_ok(session, form.get("csrf")):
        return again(403, "This form's security token is missing or out of date (CSRF check): try again.")
    key = form.get("apiKey", "")
    key = key.strip() if isinstance(key, str) else ""
    if not key or len(key) > 200 or not key.isascii():
        return again(401, "Invalid API key.")
    try:
        principal = await request.app[HOOKS].principal_for_hash(request.app, auth.hash_key(key))
    except Unauthorized as exc:
        return again(401, exc.message)
    except TooManyRequests as exc:
        return again(429, exc.message)
    fresh = new_session(auth.hash_key(key))  # a new CSRF token with every sign-in
    response = redirect(target + ("&" if "?" in target else "?") + "ok=signed-in")
    sessions.write(request, response, fresh)
    log.info("dashboard: key %s of project %s signed in", principal.key_id, principal.project_id)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    session = sessions.read(request)
    form = await request.post()
    if not same_origin(request) or not csrf_ok(session, form.get("csrf")):
        return error_page(request, None, 403, "This form's security token is missing or out of date (CSRF check).")
    response = redirect(f"{PREFIX}/sign-in")
    sessions.write(request, response, new_session())
    return response


# -- pages ---------------------------------------------------------------------------------------

@page
async def home(request, viewer):
    pages = [(PREFIX + path, label) for path, label, resource in NAV if viewer.can("read", resource)]
    return render(request, "home.html", viewer, pages=pages)


@page
async def live(request, viewer):
    snapshot = await read(request, data.live, viewer.ctx, now())
    return render(request, "live.html", viewer, snapshot=snapshot)


@page
async def live_events(request, viewer):
    """Server-sent events: the live calls, sent again whenever they change (read every 0.5 s)."""
    app = request.app
    await read(request, data.live, viewer.ctx, now())  # 403 before the stream starts
    if len(app[STREAMS]) >= MAX_STREAMS:
        raise TooManyRequests("Too many live pages are open on this server; close some and reload.")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    task = asyncio.current_task()
    app[STREAMS].add(task)
    last, quiet = None, 0.0
    try:
        while not app[STOPPING].is_set():
            try:  # the key may have been deleted or expired since: the stream ends
                principal = await app[HOOKS].principal_for_hash(app, viewer.session.key_hash, limit=False)
            except Unauthorized:
                await response.write(b"event: signed-out\ndata: {}\n\n")
                break
            snapshot = await read(request, data.live, app[HOOKS].context_of(app, principal), now())
            payload = json.dumps(snapshot, separators=(",", ":"))
            if payload != last:
                await response.write(f"data: {payload}\n\n".encode())
                last, quiet = payload, 0.0
            elif quiet >= KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            quiet += POLL_SECONDS
            try:
                await asyncio.wait_for(app[STOPPING].wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
    except (ConnectionResetError, ConnectionError):
        pass  # the page was closed
    except ApiError as exc:  # a permission withdrawn while the page was open
        await response.write(f"event: failed\ndata: {json.dumps({'error': exc.message})}\n\n".encode())
    finally:
        app[STREAMS].discard(task)
    return response


STATUS_CHOICES = data.STATUSES


@page
async def calls(request, viewer):
    q = request.query
    query: dict[str, Any] = {}
    status = q.get("status") or None
    if status is not None:
        if status not in STATUS_CHOICES:
            raise BadRequest(f"status: one of {', '.join(STATUS_CHOICES)}")
        query["status"] = status
    policy = q.get("policy") or None
    if policy is not None:
        BY_PATH["incoming-call-policy"].parse_id(policy)
        query["incomingCallPolicyId"] = policy
    since, until = moment(q, "since", "From"), moment(q, "until", "To")
    if since and until:
        query["createdAt"] = {"_type": "InBetween", "startValue": data.iso(since), "endValue": data.iso(until)}
    elif since:
        query["createdAt"] = {"_type": "GreaterThanOrEqual", "value": data.iso(since)}
    elif until:
        query["createdAt"] = {"_type": "LessThanOrEqual", "value": data.iso(until)}
    page_size = 50
    try:
        skip = max(0, min(int(q.get("skip", "0")), 10**6))
    except ValueError:
        raise BadRequest("skip: a whole number") from None

    def load(ctx):
        count, rows = data.call_list(ctx, query, skip, page_size)
        policies = data.all_rows(ctx, "incoming-call-policy", ["name"], sort={"name": 1}) \
            if data.can(ctx, "incoming-call-policy") else []
        return count, rows, policies

    count, rows, policies = await read(request, load, viewer.ctx)
    base = {k: v for k, v in (("status", status), ("policy", policy), ("since", q.get("since")),
                              ("until", q.get("until"))) if v}
    links = {"prev": f"?{urlencode({**base, 'skip': max(0, skip - page_size)})}" if skip else None,
             "next": f"?{urlencode({**base, 'skip': skip + page_size})}" if skip + page_size < count else None}
    return render(request, "calls.html", viewer, calls=rows, count=count, skip=skip, links=links,
                  statuses=STATUS_CHOICES, policies=policies,
                  filters={"status": status or "", "policy": policy or "", "since": q.get("since", ""),
                           "until": q.get("until", "")})


@page
async def call(request, viewer):
    detail = await read(request, data.call_detail, viewer.ctx, request.match_info["id"])
    return render(request, "call.html", viewer, call=detail)


@page
async def policies(request, viewer):
    return render(request, "policies.html", viewer, policies=await read(request, data.policy_list, viewer.ctx))


@page
async def policy_new(request, viewer):
    viewer.principal.require("create", BY_PATH["incoming-call-policy"].title)
    return render(request, "policy_new.html", viewer)


@page
async def policy_create(request, viewer):
    form = await request.post()
    viewer.principal.require("create", BY_PATH["incoming-call-policy"].title)
    row = await write(request, BY_PATH["incoming-call-policy"].create, viewer.ctx, policy_data(form))
    return redirect(f"{PREFIX}/policies/{row['_id']}?ok=policy-created")


@page
async def policy(request, viewer):
    detail = await read(request, data.policy_detail, viewer.ctx, request.match_info["id"])
    return render(request, "policy.html", viewer, **detail)


@page
async def policy_edit(request, viewer):
    form = await request.post()
    viewer.principal.require("update", BY_PATH["incoming-call-policy"].title)
    policy_id = request.match_info["id"]
    await write(request, BY_PATH["incoming-call-policy"].update, viewer.ctx, policy_id, policy_data(form))
    return redirect(f"{PREFIX}/policies/{policy_id}?ok=policy-saved")


@page
async def policy_enabled(request, viewer):
    form = await request.post()
    viewer.principal.require("update", BY_PATH["incoming-call-policy"].title)
    policy_id, enabled = request.match_info["id"], form.get("enabled") == "1"
    await write(request, BY_PATH["incoming-call-policy"].update, viewer.ctx, policy_id, {"isEnabled": enabled})
    return redirect(f"{PREFIX}/policies/{policy_id}?ok=policy-{'enabled' if enabled else 'disabled'}")


@page
async def rule_create(request, viewer):
    form = await request.post()
    resource = BY_PATH["incoming-call-policy-escalation-rule"]
    viewer.principal.require("create", resource.title)
    policy_id = request.match_info["id"]
    BY_PATH["incoming-call-policy"].parse_id(policy_id)
    await write(request, resource.create, viewer.ctx, {"incomingCallPolicyId": policy_id, **rule_data(form)})
    return redirect(f"{PREFIX}/policies/{policy_id}?ok=rule-created")


async def _rule(request, viewer) -> dict:
    return await read(request, data.rule_row, viewer.ctx, request.match_info["id"])


@page
async def rule_edit(request, viewer):
    form = await request.post()
    resource = BY_PATH["incoming-call-policy-escalation-rule"]
    viewer.principal.require("update", resource.title)
    rule = await _rule(request, viewer)
    await write(request, resource.update, viewer.ctx, rule["_id"], rule_data(form))
    return redirect(f"{PREFIX}/policies/{rule['incomingCallPolicyId']}?ok=rule-saved")


@page
async def rule_move(request, viewer):
    form = await request.post()
    resource = BY_PATH["incoming-call-policy-escalation-rule"]
    viewer.principal.require("update", resource.title)
    direction = form.get("direction")
    if direction not in ("up", "down"):
        raise BadRequest("direction: up or down")
    rule = await _rule(request, viewer)
    order = rule["order"] - 1 if direction == "up" else rule["order"] + 1
    if order >= 1:  # past the last: the rules' order keeps it last
        await write(request, resource.update, viewer.ctx, rule["_id"], {"order": order})
    return redirect(f"{PREFIX}/policies/{rule['incomingCallPolicyId']}?ok=rule-moved#rules")


@page
async def rule_delete(request, viewer):
    resource = BY_PATH["incoming-call-policy-escalation-rule"]
    viewer.principal.require("delete", resource.title)
    rule = await _rule(request, viewer)
    await write(request, resource.delete, viewer.ctx, rule["_id"])
    return redirect(f"{PREFIX}/policies/{rule['incomingCallPolicyId']}?ok=rule-deleted#rules")


TEST_MESSAGE = "This is a test call from Hotline for the policy {policy}, rule {order}. No action is needed."


@page
async def rule_test_call(request, viewer):
    """A notification call to each user the rule would ring now (their first verified number), queued as
    ``POST /api/call-log/send`` queues it: within the project's caps; needs Create Call Log."""
    viewer.principal.require("create", BY_PATH["call-log"].title)
    rule, users = await read(request, data.rule_users, viewer.ctx, request.match_info["id"], now())
    if not users:
        raise BadRequest("This rule rings no one right now: none of its users has a verified number (or no one "
                         "is on call on its schedule).")
    policy_name = await read(request, lambda ctx: data.names(ctx, "incoming-call-policy",
                                                             [rule["incomingCallPolicyId"]]), viewer.ctx)
    message = TEST_MESSAGE.format(policy=policy_name.get(rule["incomingCallPolicyId"], "")[:200] or "unnamed",
                                  order=rule["order"])
    for user_id, _ in users:
        await queue_call(request.app, viewer.ctx, {"userId": user_id, "message": message})
    return redirect(f"{PREFIX}/policies/{rule['incomingCallPolicyId']}?ok=test-call#rules")


@page
async def schedules(request, viewer):
    return render(request, "schedules.html", viewer, schedules=await read(request, data.schedule_list,
                                                                          viewer.ctx, now()))


@page
async def schedule(request, viewer):
    detail = await read(request, data.schedule_detail, viewer.ctx, request.match_info["id"], now())
    return render(request, "schedule.html", viewer, **detail)


@page
async def override_create(request, viewer):
    form = await request.post()
    resource = BY_PATH["on-call-duty-policy-schedule-override"]
    viewer.principal.require("create", resource.title)
    schedule_id = request.match_info["id"]
    BY_PATH["on-call-duty-policy-schedule"].parse_id(schedule_id)
    starts, ends = moment(form, "startsAt", "From"), moment(form, "endsAt", "To")
    if starts is None or ends is None:
        raise BadRequest("From and To: both required (UTC)")
    await write(request, resource.create, viewer.ctx, {
        "onCallDutyPolicyScheduleId": schedule_id, "userId": text(form, "userId", required=True, label="User"),
        "startsAt": data.iso(starts), "endsAt": data.iso(ends), "description": text(form, "description")})
    return redirect(f"{PREFIX}/schedules/{schedule_id}?ok=override-created")


@page
async def override_delete(request, viewer):
    resource = BY_PATH["on-call-duty-policy-schedule-override"]
    viewer.principal.require("delete", resource.title)
    row = await read(request, data.get, viewer.ctx, "on-call-duty-policy-schedule-override",
                     request.match_info["id"], ["onCallDutyPolicyScheduleId"])
    await write(request, resource.delete, viewer.ctx, row["_id"])
    return redirect(f"{PREFIX}/schedules/{row['onCallDutyPolicyScheduleId']}?ok=override-deleted")


@page
async def users(request, viewer):
    return render(request, "users.html", viewer, **await read(request, data.people, viewer.ctx))


@page
async def menus(request, viewer):
    return render(request, "menus.html", viewer, **await read(request, data.menus, viewer.ctx))


@page
async def charts_page(request, viewer):
    found = await read(request, data.chart_data, viewer.ctx, now())
    slots, counts = charts.per_hour(found["logs"], found["start"], found["hours"])
    buckets = charts.wait_buckets(found["waits"])
    waits = found["waits"]
    summary = {"calls": len(found["logs"]), "answered": len(waits),
               "median": charts.percentile(waits, 0.5), "p90": charts.percentile(waits, 0.9)}
    return render(request, "charts.html", viewer, status_svg=charts.status_chart(slots, counts),
                  wait_svg=charts.wait_chart(buckets), counts=counts, slots=slots, buckets=buckets,
                  summary=summary, capped=found["capped"], colors=charts.COLORS)


@page
async def not_found(request, viewer):
    return error_page(request, viewer, 404, f"No page {request.path}.")


# -- mounting ------------------------------------------------------------------------------------

async def _start(app: web.Application) -> None:
    app[SESSIONS] = Sessions(load_secret(app[CONFIG].data_dir))


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()
    if app[STREAMS]:
        await asyncio.wait(list(app[STREAMS]), timeout=2 * POLL_SECONDS + 1)


def setup(app: web.Application, hooks: Hooks) -> None:
    """Mount the dashboard on the API's application under /dashboard."""
    app[HOOKS] = hooks
    app[STREAMS] = set()
    app[STOPPING] = asyncio.Event()
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop_streams)

    async def to_home(request):
        return redirect(PREFIX + "/")

    p = PREFIX
    app.router.add_get(p, to_home, allow_head=False)
    app.router.add_get(p + "/", home, allow_head=False)
    app.router.add_get(p + "/sign-in", sign_in_form, allow_head=False)
    app.router.add_post(p + "/sign-in", sign_in)
    app.router.add_post(p + "/sign-out", sign_out)
    app.router.add_get(p + "/live", live, allow_head=False)
    app.router.add_get(p + "/live/events", live_events, allow_head=False)
    app.router.add_get(p + "/calls", calls, allow_head=False)
    app.router.add_get(p + "/calls/{id}", call, allow_head=False)
    app.router.add_get(p + "/policies", policies, allow_head=False)
    app.router.add_post(p + "/policies", policy_create)
    app.router.add_get(p + "/policies/new", policy_new, allow_head=False)
    app.router.add_get(p + "/policies/{id}", policy, allow_head=False)
    app.router.add_post(p + "/policies/{id}/edit", policy_edit)
    app.router.add_post(p + "/policies/{id}/enabled", policy_enabled)
    app.router.add_post(p + "/policies/{id}/rules", rule_create)
    app.router.add_post(p + "/rules/{id}/edit", rule_edit)
    app.router.add_post(p + "/rules/{id}/move", rule_move)
    app.router.add_post(p + "/rules/{id}/delete", rule_delete)
    app.router.add_post(p + "/rules/{id}/test-call", rule_test_call)
    app.router.add_get(p + "/schedules", schedules, allow_head=False)
    app.router.add_get(p + "/schedules/{id}", schedule, allow_head=False)
    app.router.add_post(p + "/schedules/{id}/overrides", override_create)
    app.router.add_post(p + "/overrides/{id}/delete", override_delete)
    app.router.add_get(p + "/users", users, allow_head=False)
    app.router.add_get(p + "/menus", menus, allow_head=False)
    app.router.add_get(p + "/charts", charts_page, allow_head=False)
    app.router.add_static(p + "/static", STATIC)
    app.router.add_get(p + "/{tail:.*}", not_found, allow_head=False)
