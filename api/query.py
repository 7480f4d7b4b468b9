"""OneUptime's query language: ``select``, ``query`` and ``sort`` to peewee.

- ``query``: ``{"field": value}`` means equals, ``null`` IS NULL, a list any-of;
  ``{"field": {"_type": "<Operator>", ...}}`` for the operators below.
- ``select``: ``{"field": true}``; a relation ``true`` or ``{"sub": true}``.
- ``sort``: ``{"field": 1 | -1 | "ASC" | "DESC"}``.

Every mistake is a ``BadRequest`` naming the field and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee
from peewee import SQL, NodeList, Value, fn

from api.errors import BadRequest
from api.schema import MAX_QUERY_LIST, ApiField, ModelSchema
from ivr.core.phone import normalize_loose

OPERATORS = (
    "EqualTo", "NotEqual", "Search", "StartsWith", "EndsWith", "GreaterThan", "GreaterThanOrEqual",
    "LessThan", "LessThanOrEqual", "InBetween", "Includes", "IsNull", "NotNull",
)
_COMPARISONS = {
    "GreaterThan": lambda c, v: c > v,
    "GreaterThanOrEqual": lambda c, v: c >= v,
    "LessThan": lambda c, v: c < v,
    "LessThanOrEqual": lambda c, v: c <= v,
}


def _like(column: peewee.Field, raw: str, op: str) -> peewee.Node:
    # Case-insensitive, with the client's % and _ taken literally.
    escaped = raw.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    pattern = {"Search": f"%{escaped}%", "StartsWith": f"{escaped}%", "EndsWith": f"%{escaped}"}[op]
    return NodeList((fn.LOWER(column), SQL("LIKE"), Value(pattern), SQL("ESCAPE '!'")))


def _check_length(api_field: ApiField, value: Any, where: str) -> None:
    if isinstance(value, str) and len(value) > api_field.query_max_length:
        raise BadRequest(f"{where}: at most {api_field.query_max_length} characters in a query "
                         f"(got {len(value)})")


def _value(api_field: ApiField, value: Any, where: str) -> Any:
    if api_field.kind == "json":
        raise BadRequest(f"{where}: JSON fields can only be filtered with IsNull or NotNull")
    if api_field.textual:
        _check_length(api_field, value, where)
    coerced = api_field.coerce(value, where)
    if api_field.kind == "phone" and isinstance(coerced, str):
        coerced = normalize_loose(coerced)
    return coerced


def _any_of(api_field: ApiField, values: list, where: str) -> peewee.Node:
    if len(values) > MAX_QUERY_LIST:
        raise BadRequest(f"{where}: at most {MAX_QUERY_LIST} values")
    present = [_value(api_field, v, where) for v in values if v is not None]
    condition = api_field.column.in_(present)
    if len(present) < len(values):  # null in the list means "or empty", as null alone does
        condition = condition | api_field.column.is_null(True)
    return condition


def _condition(api_field: ApiField, spec: Any, where: str) -> peewee.Node:
    column = api_field.column
    if spec is None:
        return column.is_null(True)
    if isinstance(spec, list):
        return _any_of(api_field, spec, where)
    if not isinstance(spec, dict):
        return column == _value(api_field, spec, where)
    if "_type" not in spec:
        if "_id" in spec and api_field.kind == "id":
            return column == _value(api_field, spec, where)
        raise BadRequest(f"{where}: an operator object needs a _type, one of {', '.join(OPERATORS)}")
    op = spec["_type"]
    if op == "IsNull":
        return column.is_null(True)
    if op == "NotNull":
        return column.is_null(False)
    if op == "InBetween":
        if "startValue" not in spec or "endValue" not in spec:
            raise BadRequest(f"{where}: InBetween needs startValue and endValue")
        if api_field.kind in ("boolean",):
            raise BadRequest(f"{where}: InBetween does not apply to a boolean")
        return column.between(_value(api_field, spec["startValue"], where + ".startValue"),
                              _value(api_field, spec["endValue"], where + ".endValue"))
    if op == "Includes":
        values = spec.get("value")
        if not isinstance(values, list):
            raise BadRequest(f"{where}: Includes needs a list in value")
        return _any_of(api_field, values, where)
    if op not in OPERATORS:
        raise BadRequest(f"{where}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if "value" not in spec:
        raise BadRequest(f"{where}: {op} needs a value")
    raw = spec["value"]
    if op in ("Search", "StartsWith", "EndsWith"):
        if not api_field.textual:
            raise BadRequest(f"{where}: {op} applies to text fields only")
        if not isinstance(raw, str) or "\x00" in raw:
            raise BadRequest(f"{where}: {op} needs a string value")
        _check_length(api_field, raw, f"{where}.value")
        return _like(column, raw, op)
    value = _value(api_field, raw, f"{where}.value")
    if op == "EqualTo":
        return column.is_null(True) if value is None else column == value
    if op == "NotEqual":
        # NotEqual keeps rows where the field is empty, as a person reading "not X" expects.
        return column.is_null(False) if value is None else ((column != value) | column.is_null(True))
    if value is None:
        raise BadRequest(f"{where}: {op} needs a non-null value")
    if api_field.kind == "boolean":
        raise BadRequest(f"{where}: {op} does not apply to a boolean")
    return _COMPARISONS[op](column, value)


def parse_query(schema: ModelSchema, query: Any) -> list[peewee.Node]:
    if query is None:
        return []
    if not isinstance(query, dict):
        raise BadRequest("query must be an object of field: condition")
    conditions = []
    for name, spec in query.items():
        api_field = schema.field(name, "query")
        conditions.append(_condition(api_field, spec, f"query.{name}"))
    return conditions


@dataclass
class Selection:
    fields: list[str]                          # API field names, "_id" first
    relations: dict[str, list[str] | None]     # relation -> sub-fields (None: the related object's fields)


def parse_select(schema: ModelSchema, select: Any, related: dict[str, ModelSchema]) -> Selection:
    """``related`` maps relation names to the schema of their target."""
    if select is None:
        return Selection(["_id"], {})
    if not isinstance(select, dict):
        raise BadRequest("select must be an object of field: true")
    fields = ["_id"]
    relations: dict[str, list[str] | None] = {}
    for name, wanted in select.items():
        if name in schema.relations:
            if wanted is False or wanted is None:
                continue
            target = related[name]
            if wanted is True:
                relations[name] = None
            elif isinstance(wanted, dict):
                sub = ["_id"]
                for sub_name, sub_wanted in wanted.items():
                    if isinstance(sub_wanted, dict):
                        raise BadRequest(f"select.{name}.{sub_name}: relations can be selected one level deep only")
                    if not isinstance(sub_wanted, bool):
                        raise BadRequest(f"select.{name}.{sub_name}: must be true or false")
                    target.field(sub_name, f"select.{name}")
                    if sub_wanted and sub_name not in sub:
                        sub.append(sub_name)
                relations[name] = sub
            else:
                raise BadRequest(f"select.{name}: must be true, false or an object of sub-fields")
            continue
        schema.field(name, "select")
        if not isinstance(wanted, bool):
            raise BadRequest(f"select.{name}: must be true or false")
        if wanted and name not in fields:
            fields.append(name)
    return Selection(fields, relations)


def parse_sort(schema: ModelSchema, sort: Any) -> list[peewee.Node]:
    default = [schema.fields["createdAt"].column.desc(), schema.fields["_id"].column.desc()]
    if sort is None or sort == {}:
        return default
    if not isinstance(sort, dict):
        raise BadRequest("sort must be an object of field: 1 | -1 | \"ASC\" | \"DESC\"")
    order = []
    for name, direction in sort.items():
        api_field = schema.field(name, "sort")
        if not api_field.sortable:
            raise BadRequest(f"sort.{name}: JSON fields cannot be sorted")
        if isinstance(direction, bool):  # JSON true is not 1 (Python says True == 1)
            raise BadRequest(f"sort.{name}: must be 1, -1, \"ASC\" or \"DESC\"")
        if direction in (1, "ASC", "asc", "Ascending"):
            order.append(api_field.column.asc())
        elif direction in (-1, "DESC", "desc", "Descending"):
            order.append(api_field.column.desc())
        else:
            raise BadRequest(f"sort.{name}: must be 1, -1, \"ASC\" or \"DESC\"")
    order.append(schema.fields["_id"].column.asc())  # a stable order for pagination
    return order


def parse_paging(request_query, body: dict) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = request_query.get(name, body.get(name, default))
        if isinstance(raw, bool):
            raise BadRequest(f"{name} must be a whole number")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"{name} must be a whole number, got {raw!r}") from None
        if isinstance(raw, float) and not raw.is_integer():
            raise BadRequest(f"{name} must be a whole number, got {raw!r}")
        return value

    skip = number("skip", 0)
    limit = number("limit", 10)
    if skip < 0:
        raise BadRequest("skip must be 0 or more")
    if skip > 10**9:
        raise BadRequest("skip is too large")
    if limit < 0:
        raise BadRequest("limit must be 0 or more")
    if limit > 100:
        raise BadRequest(f"limit must be at most 100 (got {limit}); page with skip to read more")
    return skip, limit
