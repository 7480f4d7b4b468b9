"""A local stand-in for Twilio's REST API (2010-04-01), for tests: exactly the endpoints ``ivr.twilio.rest``
uses, as the twilio SDK calls them (form-encoded POST bodies, ``.json`` paths) and answers shaped like
Twilio's (records with Twilio's field names, list pages with ``next_page_uri``, errors as
``{code, message, more_info, status}``).

    standin = TwilioStandIn()
    account = standin.account("AC...", "token")          # any number of accounts, each with its own token
    account.add_available("US", "415", ["+14155550100"])
    await standin.start()                                 # 127.0.0.1, a free port: standin.base_url
    ...                                                   # point twilio.api_base_url at standin.base_url
    standin.requests                                      # every request: method, path, form, query, account
    await standin.stop()

Every request must carry HTTP basic auth (AccountSid, its token) of the account in its path: otherwise 401.
Calls: ``on_call_created(params, sid)`` and ``on_call_updated(params, sid)`` (async callables, set by a test
or a call simulator) run after the answer is sent, as tasks; ``await standin.settle()`` waits for them.
Tests set a call's price or status with ``account.set_call(sid, ...)``; ``standin.stall`` makes every
answer wait that many seconds (a Twilio that does not answer).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any

from aiohttp import web

API = "/2010-04-01"
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
Hook = Callable[[dict[str, Any], str], Awaitable[Any]]


def _now() -> str:
    return format_datetime(dt.datetime.now(dt.UTC), usegmt=False)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, Any]          # a repeated key (StatusCallbackEvent) is a list
    account_sid: str | None       # the basic-auth user
    status: int = 0               # what the stand-in answered


@dataclass
class Account:
    sid: str
    token: str
    #: (country, area code) -> numbers (E.164) that can be bought; area code "" for countries without one.
    available: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    owned: dict[str, dict] = field(default_factory=dict)    # PN... -> record
    calls: dict[str, dict] = field(default_factory=dict)    # CA... -> record
    released: list[str] = field(default_factory=list)       # PN... released

    def add_available(self, country: str, area_code: str, numbers: list[str]) -> None:
        self.available.setdefault((country.upper(), area_code), []).extend(numbers)

    def add_owned(self, phone_number: str, **fields: Any) -> dict:
        """A number the account already owns (bought elsewhere)."""
        record = _number_record(self.sid, phone_number, fields)
        self.owned[record["sid"]] = record
        return record

    def add_call(self, **fields: Any) -> dict:
        """A call Twilio knows of (an inbound call, say): fields as Twilio names them."""
        record = _call_record(self.sid, fields.pop("sid", None) or _sid("CA"), fields)
        self.calls[record["sid"]] = record
        return record

    def set_call(self, sid: str, **fields: Any) -> dict:
        """Changes a call's fields: price="-0.0130", price_unit="USD", status="completed", duration="42"..."""
        record = self.calls[sid]
        record.update(fields)
        record["date_updated"] = _now()
        return record

    def number(self, phone_number: str) -> dict | None:
        return next((r for r in self.owned.values() if r["phone_number"] == phone_number), None)


def _number_record(account_sid: str, phone_number: str, fields: dict) -> dict:
    sid = fields.pop("sid", None) or _sid("PN")
    return {
        "sid": sid, "account_sid": account_sid, "phone_number": phone_number,
        "friendly_name": fields.pop("friendly_name", None) or _friendly(phone_number),
        "voice_url": None, "voice_method": "POST", "voice_fallback_url": None, "status_callback": None,
        "status_callback_method": "POST", "sms_url": None, "capabilities": {"voice": True, "sms": True,
                                                                            "mms": False, "fax": False},
        "date_created": _now(), "date_updated": _now(), "api_version": "2010-04-01",
        "uri": f"{API}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json", **fields,
    }


def _call_record(account_sid: str, sid: str, fields: dict) -> dict:
    return {
        "sid": sid, "account_sid": account_sid, "parent_call_sid": None, "to": None, "from": None,
        "status": "queued", "start_time": None, "end_time": None, "duration": None, "price": None,
        "price_unit": "USD", "direction": "outbound-api", "answered_by": None, "api_version": "2010-04-01",
        "date_created": _now(), "date_updated": _now(),
        "uri": f"{API}/Accounts/{account_sid}/Calls/{sid}.json", **fields,
    }


def _friendly(number: str) -> str:
    digits = number.lstrip("+")
    if number.startswith("+1") and len(digits) == 11:
        return f"({digits[1:4]}) {digits[4:7]}-{digits[7:]}"
    return number


def _contains(pattern: str, number: str) -> bool:
    """Twilio's Contains, for digits and the * wildcard (one character)."""
    regex = "".join("." if c == "*" else re.escape(c) for c in pattern.strip("%$+"))
    return re.search(regex, number.lstrip("+")) is not None


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "status": status,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status)


class TwilioStandIn:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.requests: list[Recorded] = []
        self.on_call_created: Hook | None = None
        self.on_call_updated: Hook | None = None
        #: Calls the stand-in did not create (a call simulator's): ``calls_elsewhere(sid)`` gives their
        #: fields as Twilio names them (status, duration, price, parent_call_sid...), or None.
        self.calls_elsewhere: Callable[[str], dict | None] | None = None
        self.stall: float = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def account(self, sid: str | None = None, token: str | None = None) -> Account:
        sid = sid or _sid("AC")
        if sid not in self.accounts:
            self.accounts[sid] = Account(sid, token or secrets.token_hex(16))
        return self.accounts[sid]

    def requests_to(self, method: str, suffix: str) -> list[Recorded]:
        """The recorded requests of ``method`` whose path ends with ``suffix`` (e.g. "/IncomingPhoneNumbers.json")."""
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # -- serving --------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        base = API + "/Accounts/{account}"
        app.router.add_get(base + "/Calls/{call}.json", self.fetch_call)
        app.router.add_post(base + "/Calls.json", self.create_call)
        app.router.add_post(base + "/Calls/{call}.json", self.update_call)
        app.router.add_get(base + "/AvailablePhoneNumbers/{country}/Local.json", self.available_local)
        app.router.add_get(base + "/IncomingPhoneNumbers.json", self.list_numbers)
        app.router.add_post(base + "/IncomingPhoneNumbers.json", self.buy_number)
        app.router.add_post(base + "/IncomingPhoneNumbers/{number}.json", self.update_number)
        app.router.add_delete(base + "/IncomingPhoneNumbers/{number}.json", self.release_number)
        return app

    async def start(self) -> TwilioStandIn:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def settle(self) -> None:
        """Waits for the hooks the requests so far started."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, hook: Hook | None, params: dict, sid: str) -> None:
        if hook is None:
            return
        task = asyncio.get_running_loop().create_task(hook(params, sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        form: dict[str, Any] = {}
        if request.method == "POST":
            posted = await request.post()
            for key in posted.keys():
                values = posted.getall(key)
                form[key] = values[0] if len(values) == 1 else list(values)
        user = self._basic_user(request)
        record = Recorded(request.method, request.path, dict(request.query), form, user)
        self.requests.append(record)
        if self.stall:
            try:  # cut short when the stand-in stops
                await asyncio.wait_for(self._stopping.wait(), self.stall)
            except TimeoutError:
                pass
        account = self.accounts.get(request.match_info.get("account", ""))
        if account is None or user != account.sid or self._basic_password(request) != account.token:
            response = _error(401, 20003, "Authenticate")
        else:
            request["account"] = account
            request["form"] = form
            try:
                response = await handler(request)
            except web.HTTPNotFound:
                response = _error(404, 20404, f"The requested resource {request.path} was not found")
        record.status = response.status
        return response

    @staticmethod
    def _credentials(request: web.Request) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def _basic_user(self, request: web.Request) -> str | None:
        creds = self._credentials(request)
        return creds[0] if creds else None

    def _basic_password(self, request: web.Request) -> str | None:
        creds = self._credentials(request)
        return creds[1] if creds else None

    # -- calls ----------------------------------------------------------------------------------------

    def _call_of(self, account: Account, sid: str) -> dict | None:
        fields = self.calls_elsewhere(sid) if self.calls_elsewhere is not None else None
        if fields is not None:  # always current: the simulator's call moves on
            account.calls[sid] = _call_record(account.sid, sid, {**account.calls.get(sid, {}), **fields})
        return account.calls.get(sid)

    async def fetch_call(self, request: web.Request) -> web.Response:
        record = self._call_of(request["account"], request.match_info["call"])
        if record is None:
            raise web.HTTPNotFound()
        return web.json_response(record)

    async def create_call(self, request: web.Request) -> web.Response:
        account, form = request["account"], request["form"]
        for name in ("To", "From"):
            if not form.get(name):
                return _error(400, 21201 if name == "To" else 21213, f"No '{name}' number is specified")
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            return _error(400, 21205, "Url parameter is required.")
        record = account.add_call(to=form["To"], **{"from": form["From"]})
        self._spawn(self.on_call_created, dict(form), record["sid"])
        return web.json_response(record, status=201)

    async def update_call(self, request: web.Request) -> web.Response:
        account, form = request["account"], request["form"]
        record = self._call_of(account, request.match_info["call"])
        if record is None:
            raise web.HTTPNotFound()
        if record["status"] in TERMINAL:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        status = form.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return _error(400, 21218, f"Invalid Status: {status}")
            record["status"] = status
            record["end_time"] = _now()
        record["date_updated"] = _now()
        self._spawn(self.on_call_updated, dict(form), record["sid"])
        return web.json_response(record)

    # -- numbers --------------------------------------------------------------------------------------

    async def available_local(self, request: web.Request) -> web.Response:
        account, country = request["account"], request.match_info["country"].upper()
        area = request.query.get("AreaCode", "")
        contains = request.query.get("Contains", "")
        size = int(request.query.get("PageSize", "50"))
        found = []
        for (c, a), numbers in account.available.items():
            if c != country or (area and a != area):
                continue
            for number in numbers:
                if contains and not _contains(contains, number):
                    continue
                found.append({"friendly_name": _friendly(number), "phone_number": number, "lata": None,
                              "locality": "San Francisco" if a == "415" else None, "rate_center": None,
                              "latitude": None, "longitude": None, "region": "CA" if a == "415" else None,
                              "postal_code": None, "iso_country": c, "address_requirements": "none",
                              "beta": False, "capabilities": {"voice": True, "SMS": True, "MMS": False}})
        uri = request.path_qs
        return web.json_response({"available_phone_numbers": found[:size], "uri": uri})

    async def list_numbers(self, request: web.Request) -> web.Response:
        account = request["account"]
        wanted = request.query.get("PhoneNumber")
        rows = [r for r in account.owned.values() if not wanted or r["phone_number"] == wanted]
        size = int(request.query.get("PageSize", "50"))
        return web.json_response({"incoming_phone_numbers": rows[:size], "uri": request.path_qs, "page": 0,
                                  "page_size": size, "start": 0, "end": max(0, min(size, len(rows)) - 1),
                                  "first_page_uri": request.path_qs, "next_page_uri": None,
                                  "previous_page_uri": None})

    async def buy_number(self, request: web.Request) -> web.Response:
        account, form = request["account"], request["form"]
        number = form.get("PhoneNumber")
        if not number:
            return _error(400, 21421, "PhoneNumber is required.")
        for numbers in account.available.values():
            if number in numbers:
                numbers.remove(number)
                break
        else:
            return _error(400, 21422, f"PhoneNumber {number} is not available.")
        record = account.add_owned(number, **self._number_fields(form))
        return web.json_response(record, status=201)

    async def update_number(self, request: web.Request) -> web.Response:
        record = request["account"].owned.get(request.match_info["number"])
        if record is None:
            raise web.HTTPNotFound()
        record.update(self._number_fields(request["form"]))
        record["date_updated"] = _now()
        return web.json_response(record)

    async def release_number(self, request: web.Request) -> web.Response:
        account = request["account"]
        record = account.owned.pop(request.match_info["number"], None)
        if record is None:
            raise web.HTTPNotFound()
        account.released.append(record["sid"])
        return web.Response(status=204)

    @staticmethod
    def _number_fields(form: dict) -> dict:
        names = {"VoiceUrl": "voice_url", "VoiceMethod": "voice_method", "StatusCallback": "status_callback",
                 "StatusCallbackMethod": "status_callback_method", "FriendlyName": "friendly_name"}
        return {names[k]: v for k, v in form.items() if k in names}
