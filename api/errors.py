"""Errors are data: a status and a message, rendered as ``{"error": message}`` by one middleware
(``{"message": message}`` under ``/apps/``, the CCAI-style calls API's shape)."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ivr.store.db import lock_wait_expired

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class Conflict(ApiError):
    status = 409


class TooManyRequests(ApiError):
    status = 429


CCAI_PREFIX = "/apps/"   # the calls API (api/ccai.py): its errors are {"message": ...}


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   key: str = "error") -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({key: message}),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler):
    key = "message" if request.path.startswith(CCAI_PREFIX) else "error"
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers, key)
    except web.HTTPException as exc:
        # aiohttp's own 404/405 for unknown routes and methods, rendered in our shape.
        if exc.status >= 400:
            message = {
                404: "Resource not found" if key == "message" else f"No route {request.method} {request.path}",
                405: f"Method {request.method} is not allowed on {request.path}",
            }.get(exc.status, exc.reason)
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(exc.status, message, headers, key)
        raise
    except Exception as exc:
        if lock_wait_expired(exc):  # writers queued past busy_timeout: the server is overloaded, not broken
            log.warning("database write lock busy serving %s %s", request.method, request.path)
            return error_response(503, "The database is busy with other writes; retry in a moment.",
                                  {"Retry-After": "1"}, key)
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "Internal server error; the server log has the details.", key=key)
