"""The compiled get-list and count (api/listing.py): one SQL text per query shape, the values bound per
request, rows rendered as the API always rendered them."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from peewee import SqliteDatabase

from api import listing
from api.app import json_response
from api.registry import BY_PATH
from api.schema import _RENDERERS
from ivr.store.db import Statement, dollar_placeholders, slot

LOGS = BY_PATH["incoming-call-log"]


def shape(select=("_id",), query=None, sort=None):
    return listing.shape_of(LOGS.path, select, LOGS.conditions(query), LOGS.order(sort))


def test_the_shape_holds_what_the_sql_depends_on_and_no_value():
    base = shape(query={"status": "NoAnswer"})
    assert shape(query={"status": "Busy"}) == base                       # another value, same SQL
    assert shape(query={"status": {"_type": "NotEqual", "value": "Busy"}}) != base    # another operator
    assert shape(query={"callerPhoneNumber": "+14155550100"}) != base    # another field
    assert shape(query={"status": ["Busy", "Failed"]}) != shape(query={"status": ["Busy"]})  # list length
    assert shape(query={"status": ["Busy", None]}) != shape(query={"status": ["Busy", "Failed"]})  # "or empty"
    assert shape(query={"status": None}) != base
    assert shape(("_id", "status"), {"status": "Busy"}) != shape(("_id",), {"status": "Busy"})
    assert shape(("_id", "status", "startedAt")) != shape(("_id", "startedAt", "status"))  # the keys' order
    assert shape(sort={"createdAt": 1}) != shape(sort={"createdAt": -1})
    assert listing.shape_of("call-log", ("_id",), [], LOGS.order(None)) != shape()


def test_one_plan_per_shape_and_database():
    db, other = SqliteDatabase(":memory:"), SqliteDatabase(":memory:")
    busy, failed = LOGS.conditions({"status": "Busy"}), LOGS.conditions({"status": "Failed"})
    order = LOGS.order(None)
    plan = listing.plan_for(LOGS, db, ["_id", "status"], busy, order)
    assert listing.plan_for(LOGS, db, ["_id", "status"], failed, order) is plan
    assert listing.plan_for(LOGS, other, ["_id", "status"], busy, order) is not plan
    assert listing.plan_for(LOGS, db, ["_id"], busy, order) is not plan
    # The values bind in the SQL's order: the project, the conditions', then limit and skip.
    project = uuid.uuid4()
    values = listing.values_of(LOGS.model.project.db_value(project), failed)
    assert plan.page.params([*values, 10, 20]) == [project.hex, "Failed", 10, 20]
    assert plan.count.params(values) == [project.hex, "Failed"]
    assert plan.page.sql.count("?") == 4 and "Failed" not in plan.page.sql


def test_statement_keeps_constants_peewee_binds():
    from ivr.store.models import IncomingCallLog as Log
    query = Log.select(Log.id).where(Log.status == slot(1), Log.callDurationInSeconds > 5, Log.project == slot(0))
    statement = Statement(query, SqliteDatabase(":memory:"))
    assert statement.params(["p", "Busy"]) == ["Busy", 5, "p"]


def test_dollar_placeholders():
    assert dollar_placeholders("a = %s AND b LIKE '5%%' AND c IN (%s, %s)") == "a = $1 AND b LIKE '5%' AND c IN ($2, $3)"


def test_rows_render_as_the_field_renderers_do():
    schema = BY_PATH["incoming-call-policy"].schema
    fields = [schema.fields[n] for n in ("_id", "isEnabled", "createdAt", "name")]
    fields += [BY_PATH["call-log"].schema.fields["callData"], schema.fields["repeatPolicyIfNoOneAnswers"]]
    assert [f.kind for f in fields] == ["id", "boolean", "date", "text", "json", "boolean"]
    plan = listing.ListPlan(None, None, None, fields)
    rows = [
        (uuid.uuid4().hex, 1, "2026-01-02 03:04:05.678901", "Ops", '{"a":[1,2]}', 0),
        (str(uuid.uuid4()), 0, "2026-01-02 03:04:05", "é", None, None),
        (uuid.uuid4(), None, None, None, "[]", 1),
        # Not what peewee writes, but what a column may hold: the renderers' own answer, never a guess.
        (uuid.uuid4().hex.upper()[:31], 1, "2026-01-02T03:04:05", "x", "{}", 1),
        (uuid.uuid4().hex, 1, dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc), "x", "{}", 1),
        # What asyncpg gives: UUID objects, naive datetimes (with and without microseconds).
        (uuid.uuid4(), 1, dt.datetime(2026, 1, 2, 3, 4, 5, 678901), "x", "{}", 1),
        (uuid.uuid4(), 1, dt.datetime(2026, 1, 2, 3, 4, 5), "x", "{}", 1),
    ]
    expected = [{f.name: (_RENDERERS[f.kind](v) if f.kind in _RENDERERS else v) for f, v in zip(fields, row)}
                for row in rows]
    assert plan.render(rows) == expected
    assert expected[0]["createdAt"] == "2026-01-02T03:04:05.678Z" and expected[0]["isEnabled"] is True
    assert len(expected[0]["_id"]) == 36 and expected[0]["callData"] == {"a": [1, 2]}


def test_json_answers_are_the_same_json():
    value = {"count": 2, "data": [{"name": "é ☎", "n": 1.5, "x": None, "ok": True, "big": 2**70}], "skip": 0}
    response = json_response(value)
    assert json.loads(response.body) == value  # 2**70: past orjson's 64 bits, the stdlib's JSON
    assert response.content_type == "application/json" and response.charset == "utf-8"
    plain = json_response({"a": "é", "b": [1, 2.5, None]})
    assert plain.body == '{"a":"é","b":[1,2.5,null]}'.encode()
    assert plain.charset == "utf-8"


class _Body:
    """What ``read_body`` reads of a request."""

    def __init__(self, raw: bytes):
        self.raw, self.body_exists = raw, True

    async def read(self) -> bytes:
        return self.raw


async def test_request_bodies_read_as_the_standard_library_reads_them():
    from api.app import read_body

    for raw in (b'{"query": {"status": "NoAnswer"}, "limit": 10, "x": [1.5, null, true, "\\u00e9"]}',
                b'{"big": 100000000000000000000000000000, "negative": -18446744073709551616}',  # past 64 bits
                b'{"number": 18446744073709551615, "phone": "+1 4155550100"}',
                b'{"nan": NaN}'):
        body = await read_body(_Body(raw))
        assert repr(body) == repr(json.loads(raw)), raw  # repr: 10**29 stays an int, not 1e29
