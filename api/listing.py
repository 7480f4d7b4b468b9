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

    __slots__ = ("db", "page", "count", "names", "renderers")

    def __init__(self, db, page: Statement, count: Statement, fields: Sequence[ApiField]):
        self.db = db
        self.page = page
        self.count = count
        self.names = tuple(f.name for f in fields)
        self.renderers = tuple((i, render) for i, render in enumerate(render_function(f) for f in fields) if render)

    def render(self, rows: Sequence[Sequence[Any]]) -> list[dict]:
        """Driver rows (tuples or asyncpg records) as the API's JSON-ready objects."""
        names = self.names
        renderers = self.renderers
        if not renderers:
            return [dict(zip(names, row)) for row in rows]
        out = []
        for row in rows:
            values = list(row)
            for i, render in renderers:
                value = values[i]
                if value is not None:
                    values[i] = render(value)
            out.append(dict(zip(names, values)))
        return out


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

