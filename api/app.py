"""The aiohttp application: ``create_app(config)`` builds it for ``hotline serve`` and the tests."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from api import auth, ccai, dashboard
from api.actions import ACTIONS, Action
from api.actions import Request as ActionRequest
from api.errors import BadRequest, Unauthorized, error_middleware
from api.openapi import build_openapi
from api.query import parse_paging
from api.registry import RESOURCES
from api.resources import Context, Resource
from ivr.config import Config
from ivr.runtime import CONFIG, DB, READ, READINESS, database_context, new_app
from ivr.store.db import on_reader
from ivr.store.models import Project

log = logging.getLogger(__name__)

KEYS = web.AppKey("keys", auth.KeyCache)
LIMITER = web.AppKey("limiter", auth.RateLimiter)
OPENAPI = web.AppKey("openapi", dict)
CONTEXT_SETTINGS = web.AppKey("context_settings", tuple)
MAX_BODY = 1024 * 1024
MAX_DEPTH = 32  # levels of objects and lists in a body (a get-list with an Includes query needs 4)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: Any, status: int = 200) -> web.Response:
    """``value`` as compact UTF-8 JSON: orjson (C, a page of 100 rows in microseconds); what it refuses
    (an integer past 64 bits or a non-string key, from a JSON field) goes through the standard library."""
    try:
        body = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return web.Response(text=_dumps(value), status=status, content_type="application/json")
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


async def read_body(request: web.Request) -> dict:
    """The JSON object of a request (GET may carry one too); an absent body is ``{}``."""
    if not request.body_exists:
        return {}
    raw = await request.read()
    if not raw:
        return {}  # no body; whitespace alone is not JSON (a 400 below)
    too_deep = f"The request body is nested too deeply: at most {MAX_DEPTH} levels of objects and lists"
    try:
        # orjson reads integers past 64 bits as floats: a body with such a run of digits goes to the standard
        # library, as does what orjson refuses (NaN, lone surrogates); it decides as it always did.
        if _LONG_DIGITS.search(raw):
            raise orjson.JSONDecodeError("", "", 0)
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            body = json.loads(raw)
        except RecursionError:  # deeper than Python's stack: json.loads gives up
            raise BadRequest(too_deep) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    # What the parser accepts can still exhaust the stack later (rendering it, storing a JSON field).
    # Nesting deeper than MAX_DEPTH needs more than MAX_DEPTH brackets: most bodies need no walk.
    if isinstance(body, (dict, list)) and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH \
            and _depth_exceeds(body, MAX_DEPTH):
        raise BadRequest(too_deep)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and lists nest in ``value`` more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


async def principal_of(request: web.Request) -> auth.Principal:
    key = request.headers.get("ApiKey")
    if not key:
        raise Unauthorized("Missing API key: send it in the ApiKey header.")
    if len(key) > 200 or not key.isascii():
        raise Unauthorized("Invalid API key.")
    return await principal_for_key(request, key)


async def principal_for_key(request: web.Request, key: str, project_id=None) -> auth.Principal:
    """The principal of an API key (cached a few seconds), not expired, within its rate limit;
    ``project_id``: the key must be one of that project's (the calls API's HTTP Basic username)."""
    principal = await principal_for_hash(request.app, auth.hash_key(key), limit=False)
    if project_id is not None and principal.project_id != project_id:
        raise Unauthorized("Invalid credentials: this API key is not one of that project's.")
    request.app[LIMITER].check(principal.key_id)
    return principal


async def principal_for_hash(app: web.Application, key_hash: str, *, limit: bool = True) -> auth.Principal:
    """The principal of the key with this hash (cached a few seconds), not expired; ``limit``: within its
    rate limit (the dashboard's session keeps the hash of its key)."""
    principal = app[KEYS].get(key_hash)
    if principal is None:
        principal = await app[READ](auth.load_principal_by_hash, key_hash)
        app[KEYS].put(key_hash, principal)
    auth.check_not_expired(principal)
    if limit:
        app[LIMITER].check(principal.key_id)
    return principal


def context_of(app: web.Application, principal: auth.Principal) -> Context:
    return Context(principal, *app[CONTEXT_SETTINGS])


def _context_settings(config: Config) -> tuple:
    """What every request's ``Context`` takes from the configuration (read once: per request it showed
    in the profile)."""
    return (config.sip.default_region, tuple(config.sip.allowed_hosts), config.notify.verification_codes_per_day,
            config.twilio.encryption_key)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def resource_routes(resource: Resource) -> list[web.RouteDef]:
    base = f"/api/{resource.path}"

    async def context(request: web.Request, verb: str) -> Context:
        principal = await principal_of(request)
        if verb != "read":
            resource.check_writable(verb)  # 405 before 403: no permission makes a log writable
        principal.require(verb, resource.title)
        return context_of(request.app, principal)

    async def get_list(request: web.Request) -> web.Response:
        ctx = await context(request, "read")
        body = await read_body(request)
        skip, limit = parse_paging(request.query, body)
        selection = resource.selection(body.get("select"), ctx.principal)
        conditions = resource.conditions(body.get("query"))
        order = resource.order(body.get("sort"))
        count, rows = await resource.alist(request.app[READ], ctx, selection, conditions, order, skip, limit)
        return json_response({"count": count, "limit": limit, "skip": skip, "data": rows})

    async def get_item(request: web.Request) -> web.Response:
        ctx = await context(request, "read")
        body = await read_body(request)
        selection = resource.selection(body.get("select"), ctx.principal)
        row = await request.app[READ](resource.get, ctx, request.match_info["id"], selection)
        return json_response(row)

    async def count(request: web.Request) -> web.Response:
        ctx = await context(request, "read")
        body = await read_body(request)
        conditions = resource.conditions(body.get("query"))
        return json_response({"count": await resource.acount(request.app[READ], ctx, conditions)})

    async def create(request: web.Request) -> web.Response:
        ctx = await context(request, "create")
        body = await read_body(request)
        if "data" not in body:
            raise BadRequest("The request body needs a data object: {\"data\": {...}}")
        return json_response(await request.app[DB].run(resource.create, ctx, body["data"]))

    async def update(request: web.Request) -> web.Response:
        ctx = await context(request, "update")
        body = await read_body(request)
        if "data" not in body:
            raise BadRequest("The request body needs a data object: {\"data\": {...}}")
        await request.app[DB].run(resource.update, ctx, request.match_info["id"], body["data"])
        return json_response({})

    async def delete(request: web.Request) -> web.Response:
        ctx = await context(request, "delete")
        await read_body(request)
        await request.app[DB].run(resource.delete, ctx, request.match_info["id"])
        return json_response({})

    return [
        web.get(f"{base}/get-list", get_list, allow_head=False),
        web.post(f"{base}/get-list", get_list),
        web.post(f"{base}/count", count),
        web.get(f"{base}/count", count, allow_head=False),
        web.get(base + "/{id}/get-item", get_item, allow_head=False),
        web.post(base + "/{id}/get-item", get_item),
        web.post(base, create),
        web.put(base + "/{id}", update),
        web.post(base + "/{id}/update-item", update),
        web.get(base + "/{id}/update-item", update, allow_head=False),
        web.delete(base + "/{id}", delete),
        web.post(base + "/{id}/delete-item", delete),
        web.get(base + "/{id}/delete-item", delete, allow_head=False),
    ]


def action_routes(action: Action) -> list[web.RouteDef]:
    """The route of one of a resource's extra operations (api/actions.py)."""

    async def handle(request: web.Request) -> web.Response:
        principal = await principal_of(request)
        principal.require(action.verb, action.resource.title)
        ctx = context_of(request.app, principal)
        body = await read_body(request) if action.method != "GET" else {}
        call = ActionRequest(dict(request.match_info), request.query, body)
        if action.handler is not None:  # an operation that needs more than the database (places a call)
            answer = await action.handler(request, ctx, call)
            return answer if isinstance(answer, web.StreamResponse) else json_response(answer)
        run = request.app[DB].run if action.writes else request.app[READ]
        return json_response(await run(action.run, ctx, call))

    if action.method == "GET":
        return [web.get(action.path, handle, allow_head=False)]
    return [web.route(action.method, action.path, handle)]


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def health(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return json_response({"status": "ok"})


def _ping_database() -> None:
    list(on_reader(Project.select(Project.id).limit(1)))


async def ready(request: web.Request) -> web.Response:
    """Readiness: the database answers, and what this process runs is connected (ARI, AMI, FastAGI:
    each service that runs here registers its probe in ``READINESS``)."""
    app = request.app
    checks: dict[str, dict] = {}
    try:
        await asyncio.wait_for(app[READ](_ping_database), 2.0)
        checks["database"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = {"ok": False, "detail": str(exc) or type(exc).__name__}
    for name, probe in app[READINESS].items():
        ok, detail = probe()
        checks[name] = {"ok": ok, **({} if ok else {"detail": detail})}
    failing = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "not ready" if failing else "ready", "checks": checks}
    if failing:
        body["error"] = "Not ready: " + ", ".join(f"{name} ({checks[name].get('detail', 'failing')})"
                                                  for name in failing)
    return json_response(body, status=503 if failing else 200)


def create_app(config: Config, db=None, *, api: bool = True) -> web.Application:
    """The application with the REST API (``api=False``: only health and readiness, for a process
    that runs the call services alone). The composition root (``ivr.main``) adds the call services.

    ``db``: an already open database (tests); otherwise opened from the configuration.
    """
    app = new_app(config, middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[KEYS] = auth.KeyCache()
    app[CONTEXT_SETTINGS] = _context_settings(config)
    app[LIMITER] = auth.RateLimiter(config.api.rate_limit)
    app[OPENAPI] = build_openapi(RESOURCES, ACTIONS, ccai.openapi())
    app.cleanup_ctx.append(database_context(config, db))
    app.router.add_get("/api/health", health, allow_head=False)
    app.router.add_get("/api/ready", ready, allow_head=False)
    if api:
        app.router.add_get("/api/openapi.json", openapi_document, allow_head=False)
        for action in ACTIONS:
            app.router.add_routes(action_routes(action))
        for resource in RESOURCES:
            app.router.add_routes(resource_routes(resource))
        app.router.add_routes(ccai.routes(ccai.Hooks(principal_for_key, read_body, context_of)))
        dashboard.setup(app, dashboard.Hooks(principal_for_hash, context_of))
    return app
