"""get-list and count, compiled once per query shape.

Generating SQL was the largest part of a get-list (peewee builds the page and its count from
expression trees on every request). The SQL text depends only on the request's *shape*: the
resource, the selected fields (in order), each condition's field, operator and number of values,
and the sort. ``plan_for`` compiles both statements for a shape once (per database) with
placeholders, and a request binds its own values: the key's project, its conditions' values, the
limit and the skip. Rows come from the driver as tuples and go to JSON with the field renderers of
``api.schema`` (no model instances).

Every resource's get-list and count go through here; a get-list that selects relations still
builds its rows with ``Resource._fetch`` (one query per relation), its count compiled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from peewee import SQL, fn

from api.query import Condition, Order, order_nodes
from api.schema import ApiField, render_function
from ivr.store.db import Statement, slot

#: Shapes kept at most; a client sending ever new shapes (IN lists of every length) empties it now and then.
MAX_PLANS = 1024


class ListPlan:
    """The compiled page and count of one query shape on one database.

    Values of a run, in slot order: the project's id, each condition's ``params``, then (the page
    only) the limit and the skip.
    """

    __slots__ = ("db", "page", "count", "names", "render")

    def __init__(self, db, page: Statement, count: Statement, fields: Sequence[ApiField]):
        self.db = db
        self.page = page
        self.count = count
        self.names = tuple(f.name for f in fields)
        #: Driver rows (tuples or asyncpg records) -> the API's JSON-ready objects.
        self.render = row_renderer(fields)


#: The common driver values of a kind, rendered inline (exactly as the kind's renderer in ``api.schema``
#: does, which takes every other value): SQLite keeps a UUID as 32 hex digits and a date as
#: "YYYY-MM-DD HH:MM:SS[.ffffff]" (naive UTC); asyncpg gives UUID objects and naive datetimes. A page
#: of a hundred rows is otherwise mostly calls.
_INLINE = {
    "id": "(None if (v{i} := r[{i}]) is None else "
          "f'{{v{i}[:8]}}-{{v{i}[8:12]}}-{{v{i}[12:16]}}-{{v{i}[16:20]}}-{{v{i}[20:]}}' "
          "if v{i}.__class__ is str and len(v{i}) == 32 else R{i}(v{i}) if v{i}.__class__ is str else str(v{i}))",
    "date": "(None if (v{i} := r[{i}]) is None else "
            "v{i}.replace(' ', 'T') + '.000Z' if v{i}.__class__ is str and len(v{i}) == 19 and v{i}[10] == ' ' "
            "else f'{{v{i}[:10]}}T{{v{i}[11:23]}}Z' if v{i}.__class__ is str and len(v{i}) == 26 and v{i}[10] == ' ' "
            "else v{i}.isoformat(timespec='milliseconds') + 'Z' if v{i}.__class__ is datetime and v{i}.tzinfo is None "
            "else R{i}(v{i}))",
}


def row_renderer(fields: Sequence[ApiField]):
    """A function rendering a page's rows for these fields: one comprehension, generated once per plan
    from the fields' kinds (the names are the schema's, written as literals; nothing a client sends)."""
    items, scope = [], {"datetime": dt.datetime}
    for i, api_field in enumerate(fields):
        render = render_function(api_field)
        if render is None:
            value = f"r[{i}]"
        else:
            scope[f"R{i}"] = render
            value = _INLINE[api_field.kind].format(i=i) if api_field.kind in _INLINE else f"R{i}(r[{i}])"
        items.append(f"{api_field.name!r}: {value}")
    source = "def render(rows):\n    return [{" + ", ".join(items) + "} for r in rows]\n"
    exec(compile(source, "<api.listing row renderer>", "exec"), scope)
    return scope["render"]


_PLANS: dict[tuple, ListPlan] = {}


def shape_of(resource_path: str, fields: Sequence[str], conditions: Sequence[Condition], order: Order) -> tuple:
    """What the SQL of a get-list or count depends on (never a value a client sends)."""
    return (resource_path, tuple(fields), tuple(c.shape for c in conditions), order)


def plan_for(resource, db, fields: Sequence[str], conditions: Sequence[Condition], order: Order) -> ListPlan:
    """The compiled statements of this shape on ``db`` (``resource``: an ``api.resources.Resource``)."""
    key = (id(db), shape_of(resource.path, fields, conditions, order))
    plan = _PLANS.get(key)
    if plan is not None and plan.db is db:
        return plan
    plan = _compile(resource, db, fields, conditions, order)
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _compile(resource, db, fields: Sequence[str], conditions: Sequence[Condition], order: Order) -> ListPlan:
    schema = resource.schema
    model = resource.model
    api_fields = [schema.fields[name] for name in fields]
    where = [model.project == slot(0)]
    index = 1
    for condition in conditions:
        first = index
        where.append(condition.node(lambda k, first=first: slot(first + k)))
        index += len(condition.params)
    page = (model.select(*[f.column for f in api_fields]).where(*where)
            .order_by(*order_nodes(schema, order)).limit(slot(index)).offset(slot(index + 1)))
    count = model.select(fn.COUNT(SQL("*"))).where(*where)
    return ListPlan(db, Statement(page, db), Statement(count, db), api_fields)


def values_of(project_db_value: Any, conditions: Sequence[Condition]) -> list:
    """A run's values before the paging: the project, then each condition's."""
    values = [project_db_value]
    for condition in conditions:
        values.extend(condition.params)
    return values

