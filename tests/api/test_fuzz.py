"""Property-based fuzzing of the served API from its own OpenAPI document (schemathesis).

The app runs on a real loopback port (an ``aiohttp`` ``AppRunner`` in a thread with its
own event loop), on each database backend, with a project full of real rows and an
owner key. Schemathesis draws requests from ``/api/openapi.json`` (valid ones and
invalid ones; half the path ids are the project's real rows) and checks every
response: never a 5xx, only documented status codes and content types, bodies that
match the documented schemas (also read strictly as JSON Schema 2020-12), every error
shaped ``{"error": "..."}``, 401 without the key. A deterministic test also checks
full rows, with every field and relation, against the document.

Deliberately not checked (the reasons are properties of the API, not of the fuzz):

- ``positive_data_acceptance``: a schema-valid body can still break a domain rule the
  document cannot express (a valid phone number, exactly one escalation target, an id
  that exists in your project); those are 400s, which the checks above still cover.
- ``unsupported_method`` and ``allow_header_conformance``: the seeds' GET aliases of
  get-list, count, get-item, update-item and delete-item are served but, like in the
  seed documents, not listed in the OpenAPI document; and ``/{id}`` routes also match
  ``/get-list`` as an id, so the ``Allow`` header of such a path names their methods.

Bounded and deterministic: a fixed seed, derandomized generation, no example database,
``MAX_EXAMPLES`` per operation and mode in the fuzzing phase (more for create and
update), and the (boundary-value) coverage phase for create, update and delete.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import aiohttp
import jsonschema
import pytest
import schemathesis
from aiohttp import web
from hypothesis import strategies as st

from api.app import create_app
from api.registry import BY_PATH, RESOURCES
from ivr.config import load_config
from ivr.store.db import open_database
from tests.api.conftest import NO_TWILIO, TWILIO_ENCRYPTION_KEY, ApiClient
from tests.api.factories import build_graph

MAX_EXAMPLES = 10          # per operation and generation mode (valid and invalid data)
MAX_WRITE_EXAMPLES = 50    # create and update reach the domain rules: they get more
SEED = 20240501
DISABLED_CHECKS = ("positive_data_acceptance", "unsupported_method", "allow_header_conformance")


class ServedApp:
    """The API on 127.0.0.1:<free port>, served from a thread with its own event loop.

    Like ``web.run_app``, one long-lived task sets the app up, serves until told to stop, and cleans
    up; the listening socket is closed by ``stop()`` whatever happened, so the port is free again.
    """

    def __init__(self, database_url: str, config, pool_size: int = 4):
        self.database_url = database_url
        self.config = config
        self.pool_size = pool_size
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="served-api", daemon=True)
        self.db = None
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._served = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro, timeout: float = 60):
        """Runs ``coro`` on the server's loop (where the models' database lives) and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner = None
        try:
            self.db = open_database(self.database_url, pool_size=self.pool_size)
            runner = web.AppRunner(create_app(self.config, db=self.db), handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._error = exc
        self._ready.set()
        try:
            if self._error is None:
                await self._stopping.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            if self.db is not None:
                await self.db.close_pool()

    def start(self) -> "ServedApp":
        self.thread.start()
        self._served = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        if not self._ready.wait(60) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        try:
            if self._served is not None:
                if self._stopping is not None:
                    self.loop.call_soon_threadsafe(self._stopping.set)
                self._served.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()

    async def client(self, fn):
        """``fn(api)`` with an ``ApiClient`` speaking HTTP to the served app (on the server's loop)."""
        async with aiohttp.ClientSession(base_url=self.base_url) as session:
            return await fn(ApiClient(session, self.db))


def _config(tmp_path_factory):
    return load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path_factory.mktemp("served")),
                            "HOTLINE_API_RATE_LIMIT": "0", "HOTLINE_TWILIO_ENCRYPTION_KEY": TWILIO_ENCRYPTION_KEY,
                            "HOTLINE_TWILIO_API_BASE_URL": NO_TWILIO})


@pytest.fixture(scope="module")
def served(database_url, tmp_path_factory):
    """The served app, and a project with a row of every resource (its owner key fuzzes)."""
    app = ServedApp(database_url, _config(tmp_path_factory)).start()
    try:
        # The policy does not use the project's Twilio account (a made-up one): its phone-number routes then
        # answer 400 (no Twilio account) instead of reaching for api.twilio.com. They are exercised against a
        # Twilio stand-in in tests/twilio/test_phone_numbers_api.py.
        graph = app.run(app.client(lambda api: build_graph(api, "Fuzz", policy_uses_sms_config=False)))
        graph.ccai_calls = app.run(app.client(lambda api: api.db.run(_contact_center_calls, graph.project_id)))
        yield app, graph
    finally:
        app.stop()


def _contact_center_calls(project_id: str) -> list[int]:
    """Calls of the calls API in the fuzz project (their numericIds): one finished, with every date and a
    recording that is gone, and its scheduled child. No agent, menu or end user: the OneUptime resources
    of the project stay as build_graph made them."""
    from ivr.store import models as m

    at = dt.datetime(2024, 5, 1, 12, 0, 0)
    first = m.ContactCenterCall.create(
        project=project_id, callType="Voice Outbound (API)", status="finished", queuedAt=at, assignedAt=at,
        connectedAt=at, endsAt=at + dt.timedelta(seconds=42), callDuration=42, endUserNumber="+18596579625",
        outboundNumber="+13392195276", supportNumber="+13392195276", recordingFile="gone.wav", rating=4,
        disconnectedBy="disconnected_by_agent", failDetails="none", offerType="cascade",
        offerEvents=[{"casting_time": "2024-05-01T12:00:00.000Z", "group": "Group 1"}])
    m.ContactCenterParticipant.create(project=project_id, call=first.id, type="end_user", status="finished",
                                      address="+18596579625", callDuration=42, holdDuration=0, connectedAt=at,
                                      endedAt=at + dt.timedelta(seconds=42))
    child = m.ContactCenterCall.create(project=project_id, callType="Voice Scheduled (API)", status="scheduled",
                                       parentCallId=first.id, scheduledAt=at + dt.timedelta(days=1),
                                       endUserNumber="+18596579625")
    m.ContactCenterParticipant.create(project=project_id, call=child.id, type="end_user", address="+18596579625")
    return [first.numericId, child.numericId]


def error_shape(ctx, response, case):
    """Every error is a JSON object {"error": "<message>"} (DESIGN.md), documented or not; the calls API's
    (/apps/...) are {"message": "<message>"}, as the CCAI seed's."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        key = "message" if case.operation.path.startswith("/apps/") else "error"
        assert isinstance(body, dict) and list(body) == [key] and isinstance(body[key], str) \
            and body[key], f"error body {body!r}"
    return None


def auth_headers(graph) -> dict[str, str]:
    """The OneUptime API's header and the calls API's HTTP Basic (project id, key), for the same key."""
    basic = base64.b64encode(f"{graph.project_id}:{graph.key}".encode()).decode()
    return {"ApiKey": graph.key, "Authorization": f"Basic {basic}"}


def _load(served, phases: tuple[str, ...]):
    app, graph = served
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "suppress-health-check": ["all"],
        "headers": auth_headers(graph),
        # NUL characters: always a 400 (tested elsewhere), which would hide the rules behind them.
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                       "allow-x00": "coverage" in phases},
        "phases": {name: {"enabled": name in phases} for name in ("examples", "coverage", "fuzzing", "stateful")},
        "checks": {name: {"enabled": False} for name in DISABLED_CHECKS},
        "operations": [{"include-operation-id-regex": "^(create|update)[A-Z]",
                        "generation": {"max-examples": MAX_WRITE_EXAMPLES}}],
    })
    schema = schemathesis.openapi.from_url(f"{app.base_url}/api/openapi.json", config=config)

    @schema.hook
    def before_generate_path_parameters(context, strategy):
        # Half the time, an id that exists (so update, delete and get-item reach the domain rules);
        # the rows are the fuzz project's own, so deletes eat into them in a fixed order.
        if context.operation.path.startswith("/apps/"):  # the calls API: integer ids
            return st.one_of(st.fixed_dictionaries({"id": st.sampled_from(graph.ccai_calls)}), strategy)
        resource = context.operation.path.split("/")[2]
        known = graph.ids.get(resource)
        if not known:
            return strategy
        return st.one_of(st.fixed_dictionaries({"id": st.sampled_from(known)}), strategy)

    @schema.hook
    def before_generate_query(context, strategy):
        # A drawn skip is almost always past the last row, so lists would come back empty and their rows'
        # schema unchecked: half the time, a valid skip is dropped (the default, 0, applies instead).
        def first_page(query):
            skip = query.get("skip") if isinstance(query, dict) else None
            if isinstance(skip, int) and not isinstance(skip, bool) and skip >= 0:
                return {k: v for k, v in query.items() if k != "skip"}
            return query

        return st.one_of(strategy.map(first_page), strategy)

    return schema


@pytest.fixture(scope="module")
def fuzzed_schema(served):
    return _load(served, ("fuzzing",))


@pytest.fixture(scope="module")
def covered_schema(served):
    return _load(served, ("coverage",))


# Runs before the module's served app exists: it opens a database of its own (the models' database
# is process-wide, so the two must not overlap).
def test_one_connection_pool_serves(database_url, tmp_path_factory):
    """With database.pool_size 1 the served app still answers (the startup check gives its connection back)."""
    app = ServedApp(database_url, _config(tmp_path_factory), pool_size=1).start()
    try:
        async def go(api):
            tenant = await api.tenant("Tiny", roles=("owner",))
            await app.db.aclose()  # this task's own connection, so that the one left is the app's
            for _ in range(3):
                assert await api.post("/api/label/count", tenant.owner, {}) == {"count": 0}

        app.run(app.client(go), timeout=30)
    finally:
        app.stop()


def fetch_document(app: ServedApp) -> dict:
    with urllib.request.urlopen(f"{app.base_url}/api/openapi.json", timeout=10) as response:
        return json.load(response)


def _inline(node, document):
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return _inline(document["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]], document)
        return {k: _inline(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, document) for v in node]
    return node


def strict_validate(document: dict, op_path: str, body) -> None:
    """JSON Schema 2020-12 to the letter (schemathesis forgives a nullable ``enum`` without null in
    responses; a generated client would not)."""
    schema = document["paths"][op_path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(_inline(schema, document)).validate(body)


@pytest.mark.parametrize("path", [r.path for r in RESOURCES])
def test_full_rows_conform_to_the_document(fuzzed_schema, served, path):
    """Every field and every relation of real rows, as documented (before the fuzz deletes any)."""
    app, graph = served
    resource = BY_PATH[path]
    everything = {**{name: True for name in resource.schema.fields},
                  **{name: True for name in resource.schema.relations}}
    ids_only = {name: {"_id": True} for name in resource.schema.relations}
    requests = [(f"/api/{path}/get-list", {}, body, {"limit": 100}) for body in
                ({"select": everything}, {"select": ids_only}, {"select": everything, "sort": {"updatedAt": "ASC"}})]
    requests += [(f"/api/{path}/{{id}}/get-item", {"id": item_id}, {"select": everything}, {})
                 for item_id in graph.ids[path]]
    requests.append((f"/api/{path}/count", {}, {"query": {"_id": graph.ids[path]}}, {}))
    document = fetch_document(app)
    for op_path, path_parameters, body, query in requests:
        case = fuzzed_schema[op_path]["POST"].Case(path_parameters=path_parameters, body=body, query=query,
                                                   media_type="application/json")
        response = case.call(headers={"ApiKey": graph.key})
        assert response.status_code == 200, response.text
        case.validate_response(response, headers={"ApiKey": graph.key})
        data = response.json()
        strict_validate(document, op_path, data)
        rows = data["data"] if "data" in data else [data] if "_id" in data else []
        expected = {"get-list": len(graph.ids[path]), "get-item": 1, "count": 0}[op_path.rsplit("/", 1)[1]]
        assert len(rows) == expected, data
        for row in rows:
            for name in resource.schema.relations:
                assert name in row


def _request_is_valid(document: dict, op_path: str, body, query: dict) -> bool:
    """Whether the document says this request is well formed (body and query parameters)."""
    operation = document["paths"][op_path]["post"]
    checks = [(operation["requestBody"]["content"]["application/json"]["schema"], body)]
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter["name"] in query:
            checks.append((parameter["schema"], query[parameter["name"]]))
    return all(jsonschema.Draft202012Validator(_inline(schema, document),
                                               format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
               .is_valid(value) for schema, value in checks)


EDGES = [  # (operation, body, query, status): the server's answer and the document agree on each
    ("/api/label/get-list", {"sort": {"name": True}}, {}, 400),
    ("/api/label/get-list", {"sort": {"name": "DESC"}}, {}, 200),
    ("/api/label/get-list", {"select": None, "query": None, "sort": None}, {}, 200),
    ("/api/label/get-list", {"select": {"project": {"nope": True}}}, {}, 400),
    ("/api/label/get-list", {"select": {"project": {"name": True}}}, {}, 200),
    ("/api/label/get-list", {"select": {"project": None}}, {}, 200),
    ("/api/label/get-list", {"query": {"name": None}}, {}, 200),
    ("/api/label/get-list", {"query": {"name": [None, "x"]}}, {}, 200),
    ("/api/label/get-list", {}, {"skip": 10**9 + 1}, 400),
    ("/api/label/get-list", {}, {"skip": 10**9}, 200),
    ("/api/label/get-list", {}, {"limit": 101}, 400),
    ("/api/call-log/count", {"query": {"status": None}}, {}, 200),
    ("/api/call-log/count", {"query": {"status": "Sent"}}, {}, 400),
    ("/api/label", {"data": {"name": "edge-1", "projectId": "not-an-id"}}, {}, 400),
    ("/api/label", {"data": {"name": "edge-2", "projectId": None}}, {}, 400),
    ("/api/label", {"data": {"name": "edge-3", "projectId": "8f14e45f-ceea-467f-a0f6-2b5d2b9e1a1a"}}, {}, 200),
]


@pytest.mark.parametrize(("op_path", "body", "query", "status"),
                         [pytest.param(*edge, id=f"{edge[0]}:{json.dumps(edge[1])}:{edge[2]}") for edge in EDGES])
def test_document_and_server_agree(served, op_path, body, query, status):
    """Edge cases where the document and the server once disagreed (found by the fuzz)."""
    app, graph = served
    document = fetch_document(app)
    request = urllib.request.Request(
        f"{app.base_url}{op_path}?{urllib.parse.urlencode(query)}", data=json.dumps(body).encode(),
        headers={"ApiKey": graph.key, "Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            got = response.status
    except urllib.error.HTTPError as exc:
        got = exc.code
        assert list(json.load(exc)) == ["error"]
    assert got == status
    assert _request_is_valid(document, op_path, body, query) == (status == 200)


# POST /{id}/update-item and /{id}/delete-item are PUT /{id} and DELETE /{id} under another name (one
# handler each): fuzzing them again would double the time for nothing (test_isolation calls them all).
fuzzed = schemathesis.pytest.from_fixture("fuzzed_schema").exclude(operation_id_regex="^(updateItem|deleteItem)")
# The coverage phase enumerates boundary values of every property: seconds for the small write bodies,
# minutes for the select and query documents of the reads (which the fuzzing phase covers).
covered = schemathesis.pytest.from_fixture("covered_schema").include(
    operation_id_regex="^(create|update|delete)[A-Z]")


@pytest.fixture(scope="module")
def strict_schema(served):
    document = fetch_document(served[0])

    def strict_schema(ctx, response, case):
        """A 200 body matches the documented schema read as plain JSON Schema 2020-12."""
        if response.status_code == 200:
            schema = document["paths"][case.operation.path][case.method.lower()]["responses"]["200"]
            body = json.loads(response.content)
            jsonschema.Draft202012Validator(_inline(schema["content"]["application/json"]["schema"],
                                                    document)).validate(body)
        return None

    return strict_schema


@fuzzed.parametrize()
def test_fuzz(case, strict_schema):
    case.call_and_validate(additional_checks=[error_shape, strict_schema])


@covered.parametrize()
def test_coverage(case, strict_schema):
    case.call_and_validate(additional_checks=[error_shape, strict_schema])


# -- the served app itself ------------------------------------------------------------------------


def test_openapi_document_is_valid_and_complete(served):
    app, _ = served
    schema = schemathesis.openapi.from_url(f"{app.base_url}/api/openapi.json")
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert all(op.ok() for op in schema.get_all_operations())
    for resource in RESOURCES:
        base = f"/api/{resource.path}"
        reads = {f"POST {base}/get-list", f"POST {base}/count", f"POST {base}/{{id}}/get-item"}
        writes = {f"POST {base}", f"PUT {base}/{{id}}", f"DELETE {base}/{{id}}",
                  f"POST {base}/{{id}}/update-item", f"POST {base}/{{id}}/delete-item"}
        assert reads <= labels
        assert (writes <= labels) if resource.writable else not (writes & labels)
