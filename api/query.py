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


@dataclass(frozen=True, slots=True)
class Condition:
    """One checked ``query`` condition: its field, its operator, and its values as the database takes them
    (in the order the SQL binds them). ``shape`` is what the SQL text depends on; ``params`` are what a
    request binds to it (``api/listing.py`` compiles the SQL once per shape)."""

    field: ApiField
    op: str                  # isnull notnull eq ne in between like gt ge lt le
    params: tuple = ()
    or_null: bool = False    # in: null was among the values ("or empty")

    @property
    def shape(self) -> tuple:
        return (self.field.name, self.op, len(self.params), self.or_null)

    def node(self, bind=None) -> peewee.Node:
        """The peewee expression; ``bind(k)`` gives the node of ``params[k]`` (a compiled query's placeholder),
        by default the value itself."""
        column = self.field.column
        values = [bind(k) if bind else Value(v, converter=False) for k, v in enumerate(self.params)]
        op = self.op
        if op == "isnull":
            return column.is_null(True)
        if op == "notnull":
            return column.is_null(False)
        if op == "eq":
            return column == values[0]
        if op == "ne":
            # NotEqual keeps rows where the field is empty, as a person reading "not X" expects.
            return (column != values[0]) | column.is_null(True)
        if op == "in":
            condition = column.in_(values)
            return condition | column.is_null(True) if self.or_null else condition
        if op == "between":
            return column.between(values[0], values[1])
        if op == "like":  # case-insensitive, the pattern escaped with '!'
            return NodeList((fn.LOWER(column), SQL("LIKE"), values[0], SQL("ESCAPE '!'")))
        return _COMPARISONS[op](column, values[0])


_COMPARISONS = {
    "gt": lambda c, v: c > v,
    "ge": lambda c, v: c >= v,
    "lt": lambda c, v: c < v,
    "le": lambda c, v: c <= v,
}
_COMPARISON_OPS = {"GreaterThan": "gt", "GreaterThanOrEqual": "ge", "LessThan": "lt", "LessThanOrEqual": "le"}


def _db(api_field: ApiField, value: Any) -> Any:
    return api_field.column.db_value(value)


def _like(api_field: ApiField, raw: str, op: str) -> Condition:
    # Case-insensitive, with the client's % and _ taken literally.
    escaped = raw.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    pattern = {"Search": f"%{escaped}%", "StartsWith": f"{escaped}%", "EndsWith": f"%{escaped}"}[op]
    return Condition(api_field, "like", (pattern,))


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


def _any_of(api_field: ApiField, values: list, where: str) -> Condition:
    if len(values) > MAX_QUERY_LIST:
        raise BadRequest(f"{where}: at most {MAX_QUERY_LIST} values")
    present = tuple(_db(api_field, _value(api_field, v, where)) for v in values if v is not None)
    # null in the list means "or empty", as null alone does
    return Condition(api_field, "in", present, or_null=len(present) < len(values))


def _condition(api_field: ApiField, spec: Any, where: str) -> Condition:
    if spec is None:
        return Condition(api_field, "isnull")
    if isinstance(spec, list):
        return _any_of(api_field, spec, where)
    if not isinstance(spec, dict):
        return Condition(api_field, "eq", (_db(api_field, _value(api_field, spec, where)),))
    if "_type" not in spec:
        if "_id" in spec and api_field.kind == "id":
            return Condition(api_field, "eq", (_db(api_field, _value(api_field, spec, where)),))
        raise BadRequest(f"{where}: an operator object needs a _type, one of {', '.join(OPERATORS)}")
    op = spec["_type"]
    if op == "IsNull":
        return Condition(api_field, "isnull")
    if op == "NotNull":
        return Condition(api_field, "notnull")
    if op == "InBetween":
        if "startValue" not in spec or "endValue" not in spec:
            raise BadRequest(f"{where}: InBetween needs startValue and endValue")
        if api_field.kind in ("boolean",):
            raise BadRequest(f"{where}: InBetween does not apply to a boolean")
        return Condition(api_field, "between", (
            _db(api_field, _value(api_field, spec["startValue"], where + ".startValue")),
            _db(api_field, _value(api_field, spec["endValue"], where + ".endValue"))))
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
        return _like(api_field, raw, op)
    value = _value(api_field, raw, f"{where}.value")
    if op == "EqualTo":
        return Condition(api_field, "isnull") if value is None else Condition(api_field, "eq", (_db(api_field, value),))
    if op == "NotEqual":
        return Condition(api_field, "notnull") if value is None else Condition(api_field, "ne", (_db(api_field, value),))
    if value is None:
        raise BadRequest(f"{where}: {op} needs a non-null value")
    if api_field.kind == "boolean":
        raise BadRequest(f"{where}: {op} does not apply to a boolean")
    return Condition(api_field, _COMPARISON_OPS[op], (_db(api_field, value),))


def parse_query(schema: ModelSchema, query: Any) -> list[Condition]:
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


#: A checked ``sort``: (field name, descending) pairs, ending with ``_id`` (a stable order for paging).
Order = tuple[tuple[str, bool], ...]


def parse_sort(schema: ModelSchema, sort: Any) -> Order:
    if sort is None or sort == {}:
        return (("createdAt", True), ("_id", True))
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
            order.append((name, False))
        elif direction in (-1, "DESC", "desc", "Descending"):
            order.append((name, True))
        else:
            raise BadRequest(f"sort.{name}: must be 1, -1, \"ASC\" or \"DESC\"")
    order.append(("_id", False))  # a stable order for pagination
    return tuple(order)


def order_nodes(schema: ModelSchema, order: Order) -> list[peewee.Node]:
    return [schema.fields[name].column.desc() if descending else schema.fields[name].column.asc()
            for name, descending in order]


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
