"""How a model looks through the API: its fields, their kinds, and its relations.

Built by introspecting the peewee model, so a column added to ``ivr/store/models.py``
(and its migration) appears in the routes, the validation and the OpenAPI
document at once. A field's kind decides how values are validated, converted
for the database, rendered in JSON and documented.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import peewee

from api.errors import BadRequest
from ivr.core.clock import OutOfRange, parse_instant
from ivr.store import models as m

INT32_MAX = 2**31 - 1

# What one request may ask the database to do: the limits of text, here for every resource.
MAX_LONG_TEXT = 10_000   # a long text field (a description, a message the caller hears) on create and update
MAX_QUERY_TEXT = 200     # a text a query compares with (Search, StartsWith, EqualTo, ...): a LIKE over long
                         # texts costs their length times the pattern's
MAX_QUERY_LIST = 1000    # the values of a list (any-of) or of Includes


@dataclass
class ApiField:
    name: str
    column: peewee.Field
    kind: str  # id | text | longtext | phone | email | slug | enum | integer | number | boolean | date | json
    description: str = ""
    nullable: bool = True
    read_only: bool = False      # never written by clients
    create_only: bool = False    # written on create, never changed after
    required: bool = False       # must be given on create
    enum: tuple[str, ...] | None = None
    max_length: int | None = None
    references: type[m.BaseModel] | None = None  # for id fields: which model the id points at
    default: Any = None

    @property
    def sortable(self) -> bool:
        return self.kind != "json"

    @property
    def textual(self) -> bool:
        return self.kind in ("text", "longtext", "phone", "email", "slug", "enum")

    @property
    def query_max_length(self) -> int:
        """The longest text a query may compare this field with: what a short column holds (a 255-character
        SIP URI can still be found), ``MAX_QUERY_TEXT`` for a long text."""
        if self.kind == "longtext" or not self.max_length:
            return MAX_QUERY_TEXT
        return self.max_length

    # -- values in ------------------------------------------------------------------

    def coerce(self, value: Any, where: str) -> Any:
        """A JSON value from a client, checked and converted for the database."""
        if value is None:
            return None
        kind = self.kind
        if kind == "id":
            if isinstance(value, dict) and "_id" in value:  # OneUptime also accepts {"_id": ...}
                value = value["_id"]
            if not isinstance(value, str):
                raise BadRequest(f"{where}: must be an ID (a UUID string)")
            try:
                return uuid.UUID(value)
            except ValueError:
                raise BadRequest(f"{where}: {value!r} is not a valid ID (a UUID)") from None
        if self.textual:
            if not isinstance(value, str):
                raise BadRequest(f"{where}: must be a string")
            if "\x00" in value:
                raise BadRequest(f"{where}: must not contain NUL characters")
            if self.max_length and len(value) > self.max_length:
                raise BadRequest(f"{where}: at most {self.max_length} characters")
            if self.enum and value not in self.enum:
                raise BadRequest(f"{where}: must be one of {', '.join(self.enum)}")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise BadRequest(f"{where}: must be true or false")
            return value
        if kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(f"{where}: must be a number")
            if kind == "integer":
                if isinstance(value, float):
                    if not value.is_integer():
                        raise BadRequest(f"{where}: must be a whole number")
                    value = int(value)
                if not -INT32_MAX <= value <= INT32_MAX:
                    raise BadRequest(f"{where}: out of range")
            elif abs(value) > 1e15:
                raise BadRequest(f"{where}: out of range")
            return value
        if kind == "date":
            return parse_datetime(value, where)
        if kind == "json":
            return value
        raise AssertionError(kind)

    # -- values out -----------------------------------------------------------------

    def render(self, value: Any) -> Any:
        return render_value(value)


def render_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    return str(value)


def _render_id(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps UUIDs as 32 hex digits
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}" if len(value) == 32 else value
    return str(value)


def _render_date(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS[.ffffff]", naive UTC
        day, _, time = value.partition(" ")
        if not time:
            return value
        whole, _, fraction = time.partition(".")
        return f"{day}T{whole}.{(fraction + '000')[:3]}Z"
    return format_datetime(value)


def _render_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _render_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


_RENDERERS = {"id": _render_id, "date": _render_date, "boolean": _render_bool, "json": _render_json}


def render_function(api_field: "ApiField"):
    """How a driver's value of this field becomes its JSON value (None: it already is)."""
    return _RENDERERS.get(api_field.kind)


def fetch_rendered(query, fields: list["ApiField"]) -> list[dict]:
    """Run ``query`` (selecting ``fields``' columns, in order) and render its rows as JSON-ready dicts.

    The driver's values go straight to their JSON form (no model instances, no UUID or datetime
    objects in between): a page of a hundred rows is most of an API request's time otherwise.
    """
    sql, params = query.sql()
    cursor = query._database.execute_sql(sql, params)
    names = [f.name for f in fields]
    renderers = [_RENDERERS.get(f.kind) for f in fields]
    if not any(renderers):
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    pairs = list(zip(names, renderers))
    return [{name: (render(value) if render is not None else value) for (name, render), value in zip(pairs, row)}
            for row in cursor.fetchall()]


def format_datetime(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def parse_datetime(value: Any, where: str) -> dt.datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: must be an ISO 8601 date-time string")
    try:
        return parse_instant(value)
    except OutOfRange:
        raise BadRequest(f"{where}: {value!r} is out of range") from None
    except ValueError:
        raise BadRequest(f"{where}: {value!r} is not an ISO 8601 date-time") from None


@dataclass
class Relation:
    """A related object that ``select`` can expand one level deep."""

    name: str                      # "project", "answeredByUser", "labels"
    target: type[m.BaseModel]
    id_field: str | None = None    # the API id field holding the reference ("projectId")
    many: bool = False             # labels: through a link table
    through: type[m.BaseModel] | None = None
    through_source: peewee.Field | None = None
    through_target: peewee.Field | None = None
    description: str = ""


KIND_BY_FIELD: list[tuple[type[peewee.Field], str]] = [
    (m.IdField, "id"),
    (peewee.UUIDField, "id"),
    (m.PhoneField, "phone"),
    (m.EmailField, "email"),
    (m.SlugField, "slug"),
    (m.EnumField, "enum"),
    (m.LongTextField, "longtext"),
    (m.JSONField, "json"),
    (peewee.CharField, "text"),
    (peewee.TextField, "longtext"),
    (peewee.BooleanField, "boolean"),
    (peewee.IntegerField, "integer"),
    (peewee.FloatField, "number"),
    (peewee.DateTimeField, "date"),
]


def kind_of(column: peewee.Field) -> str:
    for klass, kind in KIND_BY_FIELD:
        if isinstance(column, klass):
            return kind
    raise AssertionError(f"no API kind for {column!r}")


@dataclass
class ModelSchema:
    model: type[m.BaseModel]
    fields: dict[str, ApiField] = field(default_factory=dict)
    relations: dict[str, Relation] = field(default_factory=dict)
    #: Fields a client writes and nothing ever reads (a secret: a Twilio auth token). Kept apart from
    #: ``fields``, which every read, query, sort, select and relation is built from.
    write_only: dict[str, ApiField] = field(default_factory=dict)

    def field(self, name: str, where: str) -> ApiField:
        try:
            return self.fields[name]
        except KeyError:
            raise BadRequest(
                f"{where}: unknown field {name!r}. Fields: {', '.join(sorted(self.fields))}") from None


SERVER_MANAGED = {"_id", "createdAt", "updatedAt", "projectId"}


def build_schema(
    model: type[m.BaseModel],
    *,
    read_only: set[str] = frozenset(),
    create_only: set[str] = frozenset(),
    required: set[str] = frozenset(),
    hidden: set[str] = frozenset(),
    write_only: set[str] = frozenset(),
    id_relations: dict[str, tuple[str, type[m.BaseModel]]] | None = None,
) -> ModelSchema:
    """The API view of ``model``; ``id_relations`` names relations kept as bare ids; ``write_only`` fields
    are written by clients and never shown (``ModelSchema.write_only``)."""
    schema = ModelSchema(model)
    id_relations = id_relations or {}
    for column in model._meta.sorted_fields:
        if isinstance(column, peewee.ForeignKeyField):
            name = column.object_id_name
            relation = Relation(column.name, column.rel_model, id_field=name,
                                description=f"Relation to {column.rel_model.__name__}")
            schema.relations[relation.name] = relation
            references = column.rel_model
            kind = "id"
        else:
            name = "_id" if column.name == "id" else column.name
            kind = kind_of(column)
            references = None
            if name in id_relations:
                rel_name, target = id_relations[name]
                references = target
                schema.relations[rel_name] = Relation(rel_name, target, id_field=name,
                                                      description=f"Relation to {target.__name__}")
        if name in hidden:
            continue
        default = column.default if not callable(column.default) else None
        if isinstance(default, m.enum.Enum):
            default = default.value
        max_length = None if kind == "id" else getattr(column, "max_length", None)
        if kind == "longtext":
            max_length = MAX_LONG_TEXT  # the column has no limit: the API sets one
        api_field = ApiField(
            name=name,
            column=column,
            kind=kind,
            description=column.help_text or "",
            nullable=column.null,
            read_only=name in SERVER_MANAGED - {"projectId"} or name in read_only,
            create_only=name in create_only or name == "projectId",
            required=name in required,
            enum=tuple(column.choices_values) if isinstance(column, m.EnumField) else None,
            max_length=max_length,
            references=references,
            default=default,
        )
        if name in write_only:
            schema.write_only[name] = api_field
        else:
            schema.fields[name] = api_field
    return schema
