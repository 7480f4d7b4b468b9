"""One generic resource mechanism for every OneUptime-style resource.

A ``Resource`` is a model, its API schema, its permission noun and optional
domain rules (``Rules``). Its operations are plain synchronous peewee code run
through the asyncio database's bridge (``db.run``), one bridge crossing per
request, inside a ``write_transaction`` when they write (on SQLite it waits for
the write lock rather than fail). The project of the caller's API key is
applied here, in one place, to every read and every write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import peewee

from api.auth import Principal
from api.errors import BadRequest, Conflict, MethodNotAllowed, NotFound
from api.listing import plan_for, values_of
from api.query import Condition, Order, Selection, order_nodes, parse_query, parse_select, parse_sort
from api.schema import ApiField, ModelSchema, Relation, fetch_rendered
from ivr.config import setting_default
from ivr.store import models as m
from ivr.store.db import Reads, on_reader, reading_database, write_transaction
from ivr.store.verification import CODES_PER_DAY


@dataclass
class Context:
    """What an operation knows about its caller and the server."""

    principal: Principal
    default_region: str = "US"
    #: The hosts a SIP URI may point at (the setting sip.allowed_hosts).
    allowed_sip_hosts: tuple[str, ...] = tuple(setting_default("sip.allowed_hosts"))
    codes_per_day: int = CODES_PER_DAY   # notify.verification_codes_per_day: codes to one destination in 24 h
    #: twilio.encryption_key: the Fernet key of project-level Twilio auth tokens ("": none configured).
    twilio_encryption_key: str = ""

    @property
    def project_id(self) -> uuid.UUID:
        return self.principal.project_id


class Rules:
    """Domain rules of a resource; the defaults do nothing."""

    def prepare_create(self, ctx: Context, values: dict[str, Any], resource: "Resource") -> None:
        """Validate and complete the values of a new row (API names -> database values)."""

    def after_create(self, ctx: Context, row: m.BaseModel, values: dict[str, Any], resource: "Resource") -> None:
        pass

    def prepare_update(self, ctx: Context, row: m.BaseModel, values: dict[str, Any], resource: "Resource") -> None:
        pass

    def after_update(self, ctx: Context, row: m.BaseModel, values: dict[str, Any], resource: "Resource") -> None:
        pass

    def before_delete(self, ctx: Context, row: m.BaseModel, resource: "Resource") -> None:
        pass

    def after_delete(self, ctx: Context, row: m.BaseModel, resource: "Resource") -> None:
        pass

    def conflict_message(self, values: dict[str, Any], error: Exception, resource: "Resource") -> str:
        return f"This {resource.title} conflicts with an existing one (a value that must be unique is taken)."


@dataclass
class Resource:
    path: str                       # "incoming-call-policy"
    title: str                      # "Incoming Call Policy" (permissions and messages)
    description: str
    schema: ModelSchema
    rules: Rules = field(default_factory=Rules)
    writable: bool = True           # logs: False (405 on create, update, delete)
    extra_writable: dict[str, Relation] = field(default_factory=dict)  # many-to-many relations set by id lists

    @property
    def model(self) -> type[m.BaseModel]:
        return self.schema.model

    # -- reading --------------------------------------------------------------------

    def scoped(self, ctx: Context, *columns) -> peewee.ModelSelect:
        model = self.model
        return on_reader(model.select(*columns).where(model.project == ctx.project_id))

    # get-list and count run statements compiled once per query shape (api/listing.py); a page that selects
    # relations is built by ``_fetch`` (its count still compiled).

    def list(self, ctx: Context, selection: Selection, conditions: list[Condition], order: Order,
             skip: int, limit: int) -> tuple[int, list[dict]]:
        """The count and the page (synchronous: run through ``app[READ]``)."""
        db = reading_database()
        plan = plan_for(self, db, selection.fields, conditions, order)
        values = values_of(self.model.project.db_value(ctx.project_id), conditions)
        count = db.execute_sql(plan.count.sql, plan.count.params(values)).fetchone()[0]
        if limit == 0 or skip >= count:
            return count, []
        if selection.relations:
            return count, self._fetch(ctx, selection, [c.node() for c in conditions],
                                      order_nodes(self.schema, order), skip, limit)
        rows = db.execute_sql(plan.page.sql, plan.page.params([*values, limit, skip])).fetchall()
        return count, plan.render(rows)

    async def alist(self, reads: Reads, ctx: Context, selection: Selection, conditions: list[Condition],
                    order: Order, skip: int, limit: int) -> tuple[int, list[dict]]:
        """``list`` from the event loop, straight to the driver (``Reads.session``)."""
        if selection.relations:
            return await reads(self.list, ctx, selection, conditions, order, skip, limit)
        values = values_of(self.model.project.db_value(ctx.project_id), conditions)
        async with reads.session() as (db, execute):
            plan = plan_for(self, db, selection.fields, conditions, order)
            count = (await execute(plan.count, plan.count.params(values)))[0][0]
            if limit == 0 or skip >= count:
                return count, []
            return count, plan.render(await execute(plan.page, plan.page.params([*values, limit, skip])))

    def count(self, ctx: Context, conditions: list[Condition]) -> int:
        db = reading_database()
        plan = plan_for(self, db, ["_id"], conditions, ())
        values = values_of(self.model.project.db_value(ctx.project_id), conditions)
        return db.execute_sql(plan.count.sql, plan.count.params(values)).fetchone()[0]

    async def acount(self, reads: Reads, ctx: Context, conditions: list[Condition]) -> int:
        values = values_of(self.model.project.db_value(ctx.project_id), conditions)
        async with reads.session() as (db, execute):
            plan = plan_for(self, db, ["_id"], conditions, ())
            return (await execute(plan.count, plan.count.params(values)))[0][0]

    def get(self, ctx: Context, item_id: str, selection: Selection) -> dict:
        key = self.parse_id(item_id)
        rows = self._fetch(ctx, selection, [self.model.id == key], [], 0, 1)
        if not rows:
            raise NotFound(f"No {self.title} with id {item_id}.")
        return rows[0]

    def parse_id(self, item_id: str) -> uuid.UUID:
        try:
            return uuid.UUID(item_id)
        except (ValueError, TypeError, AttributeError):
            raise NotFound(f"No {self.title} with id {item_id}.") from None

    def _fetch(self, ctx: Context, selection: Selection, conditions: list, order: list,
               skip: int, limit: int) -> list[dict]:
        fields = [self.schema.fields[name] for name in selection.fields]
        needed = list(fields)
        for rel_name in selection.relations:
            relation = self.schema.relations[rel_name]
            if relation.id_field and relation.id_field not in selection.fields:
                needed.append(self.schema.fields[relation.id_field])
        query = self.scoped(ctx, *[f.column for f in needed])
        if conditions:
            query = query.where(*conditions)
        if order:
            query = query.order_by(*order)
        rows = fetch_rendered(query.offset(skip).limit(limit), needed)
        if selection.relations:
            for rel_name, sub in selection.relations.items():
                self._attach_relation(ctx, rows, self.schema.relations[rel_name], sub)
            wanted = set(selection.fields) | set(selection.relations)
            rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
        return rows

    def _attach_relation(self, ctx: Context, rows: list[dict], relation: Relation, sub: list[str] | None) -> None:
        target_schema = SCHEMAS[relation.target]
        names = sub or list(target_schema.fields)
        target_fields = [target_schema.fields[n] for n in names]
        target = relation.target
        if relation.many:
            through = relation.through
            owner = ApiField("_owner", relation.through_source, "id")
            query = on_reader(target.select(relation.through_source, *[f.column for f in target_fields])
                              .join(through, on=(relation.through_target == target.id))
                              .where(relation.through_source.in_([uuid.UUID(row["_id"]) for row in rows]),
                                     target.project == ctx.project_id)  # never another project's rows
                              .order_by(target.createdAt))
            grouped: dict[str, list] = {}
            for related in fetch_rendered(query, [owner, *target_fields]):
                grouped.setdefault(related.pop("_owner"), []).append(related)
            for row in rows:
                row[relation.name] = grouped.get(row["_id"], [])
            return
        ids = {row[relation.id_field] for row in rows if row.get(relation.id_field) is not None}
        found: dict[str, dict] = {}
        if ids:
            key = ApiField("_key", target.id, "id")
            query = on_reader(target.select(target.id, *[f.column for f in target_fields])
                              .where(target.id.in_([uuid.UUID(i) for i in ids])))
            # A relation never reaches outside the caller's project.
            query = query.where(target.id == ctx.project_id) if target is m.Project else \
                query.where(target.project == ctx.project_id)
            for related in fetch_rendered(query, [key, *target_fields]):
                found[related.pop("_key")] = related
        for row in rows:
            row[relation.name] = found.get(row.get(relation.id_field))

    # -- writing --------------------------------------------------------------------

    def _forbid_writes(self, verb: str) -> None:
        if not self.writable:
            raise MethodNotAllowed(f"This resource cannot be {verb} via the API")

    def check_writable(self, verb: str) -> None:
        self._forbid_writes({"create": "created", "update": "updated", "delete": "deleted"}[verb])

    def _coerce_data(self, data: Any, creating: bool) -> tuple[dict[str, Any], dict[str, list]]:
        if not isinstance(data, dict):
            raise BadRequest("data must be an object of field: value")
        values: dict[str, Any] = {}
        links: dict[str, list] = {}
        for name, raw in data.items():
            if name in self.extra_writable:
                links[name] = self._coerce_links(name, raw)
                continue
            api_field = self.schema.write_only.get(name) or self.schema.field(name, "data")
            if name == "projectId" and creating:
                if api_field.coerce(raw, f"data.{name}") is None:  # validated like any ID, then
                    raise BadRequest(f"data.{name}: must not be null")
                continue  # forced to the key's project below
            if api_field.read_only:
                raise BadRequest(f"data.{name}: is read-only")
            if api_field.create_only and not creating:
                raise BadRequest(f"data.{name}: cannot be changed once the {self.title} is created")
            value = api_field.coerce(raw, f"data.{name}")
            if value is None and not api_field.nullable:
                raise BadRequest(f"data.{name}: must not be null")
            values[name] = value
        return values, links

    def _coerce_links(self, name: str, raw: Any) -> list[uuid.UUID]:
        if not isinstance(raw, list):
            raise BadRequest(f"data.{name}: must be a list of IDs")
        out = []
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                item = item.get("_id")
            try:
                out.append(uuid.UUID(item))
            except (ValueError, TypeError, AttributeError):
                raise BadRequest(f"data.{name}[{i}]: not a valid ID") from None
        return out

    def _check_references(self, ctx: Context, values: dict[str, Any]) -> None:
        for name, value in values.items():
            api_field = self.schema.fields.get(name) or self.schema.write_only[name]
            target = api_field.references
            if value is None or target is None or target is m.Project:
                continue
            exists = target.select(target.id).where(target.id == value, target.project == ctx.project_id).exists()
            if not exists:
                raise BadRequest(f"data.{name}: no {SCHEMA_TITLES.get(target, target.__name__)} "
                                 f"with id {value} in your project")

    def _set_links(self, ctx: Context, row: m.BaseModel, links: dict[str, list]) -> None:
        for name, ids in links.items():
            relation = self.extra_writable[name]
            target = relation.target
            unique_ids = list(dict.fromkeys(ids))
            if unique_ids:
                found = {r for (r,) in target.select(target.id).where(
                    target.id.in_(unique_ids), target.project == ctx.project_id).tuples()}
                missing = [str(i) for i in unique_ids if i not in found]
                if missing:
                    raise BadRequest(f"data.{name}: no {SCHEMA_TITLES.get(target, target.__name__)} "
                                     f"with id {', '.join(missing)} in your project")
            through = relation.through
            through.delete().where(relation.through_source == row.id).execute()
            for target_id in unique_ids:
                through.create(**{relation.through_source.name: row.id, relation.through_target.name: target_id})

    def _db_kwargs(self, values: dict[str, Any]) -> dict[str, Any]:
        fields = {**self.schema.fields, **self.schema.write_only}
        return {fields[name].column.name: value for name, value in values.items()}

    def create(self, ctx: Context, data: Any) -> dict:
        self.check_writable("create")
        values, links = self._coerce_data(data, creating=True)
        db = self.model._meta.database
        with write_transaction():
            self.rules.prepare_create(ctx, values, self)
            missing = [f.name for f in [*self.schema.fields.values(), *self.schema.write_only.values()]
                       if f.required and values.get(f.name) is None]
            if missing:
                raise BadRequest(f"data: missing required field{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(missing)}")
            self._check_references(ctx, values)
            kwargs = self._db_kwargs(values)
            kwargs["project"] = ctx.project_id
            try:
                with db.atomic():
                    row = self.model.create(**kwargs)
            except peewee.IntegrityError as exc:
                raise Conflict(self.rules.conflict_message(values, exc, self)) from None
            self._set_links(ctx, row, links)
            self.rules.after_create(ctx, row, values, self)
        # The saved object, as OneUptime's server answers: what was generated (slug, defaults, createdAt) too.
        return self._fetch(ctx, self.saved_selection(), [self.model.id == row.id], [], 0, 1)[0]

    def saved_selection(self) -> Selection:
        """Every field, and the ids of the many-to-many relations a client writes (a policy's labels): what a
        create answers."""
        return Selection(list(self.schema.fields), {name: ["_id"] for name in self.extra_writable})

    def _get_row(self, ctx: Context, item_id: str) -> m.BaseModel:
        key = self.parse_id(item_id)
        row = self.model.get_or_none(self.model.id == key, self.model.project == ctx.project_id)
        if row is None:
            raise NotFound(f"No {self.title} with id {item_id}.")
        return row

    def update(self, ctx: Context, item_id: str, data: Any) -> None:
        self.check_writable("update")
        values, links = self._coerce_data(data, creating=False)
        db = self.model._meta.database
        with write_transaction():
            row = self._get_row(ctx, item_id)
            self.rules.prepare_update(ctx, row, values, self)
            self._check_references(ctx, values)
            if values:
                kwargs = self._db_kwargs(values)
                kwargs["updatedAt"] = m.utcnow()
                try:
                    with db.atomic():
                        self.model.update(**kwargs).where(self.model.id == row.id).execute()
                except peewee.IntegrityError as exc:
                    raise Conflict(self.rules.conflict_message(values, exc, self)) from None
            self._set_links(ctx, row, links)
            self.rules.after_update(ctx, row, values, self)

    def delete(self, ctx: Context, item_id: str) -> None:
        self.check_writable("delete")
        db = self.model._meta.database
        with write_transaction():
            row = self._get_row(ctx, item_id)
            self.rules.before_delete(ctx, row, self)
            try:
                with db.atomic():
                    row.delete_instance()
            except peewee.IntegrityError:
                raise Conflict(
                    f"This {self.title} is still used by other objects (for example an escalation rule); "
                    "remove or change those first.") from None
            self.rules.after_delete(ctx, row, self)

    # -- request parsing helpers --------------------------------------------------------

    def selection(self, select: Any, principal: Principal) -> Selection:
        """The fields and relations ``select`` asks for; a relation shows rows of its target, so it needs
        the permission to read those (a key that may read logs only must not read users through them)."""
        related = {name: SCHEMAS[rel.target] for name, rel in self.schema.relations.items()}
        selection = parse_select(self.schema, select, related)
        for name in selection.relations:
            target = self.schema.relations[name].target
            title = SCHEMA_TITLES.get(target, target.__name__)
            principal.require("read", title, through=f"select.{name}")
        return selection

    def conditions(self, query: Any) -> list[Condition]:
        return parse_query(self.schema, query)

    def order(self, sort: Any) -> Order:
        return parse_sort(self.schema, sort)


# The schema of every model a relation can reach, and how messages name them.
SCHEMAS: dict[type[m.BaseModel], ModelSchema] = {}
SCHEMA_TITLES: dict[type[m.BaseModel], str] = {
    m.Project: "Project", m.User: "User", m.Team: "Team", m.Label: "Label",
    m.IncomingCallPolicy: "Incoming Call Policy", m.UserIncomingCallNumber: "User Incoming Call Number",
    m.IncomingCallPolicyEscalationRule: "Incoming Call Policy Escalation Rule",
    m.IncomingCallLog: "Incoming Call Log", m.TeamMember: "Team Member", m.CallLog: "Call Log",
    m.IncomingCallLogItem: "Incoming Call Log Item",
}


def register_schema(schema: ModelSchema) -> ModelSchema:
    SCHEMAS[schema.model] = schema
    return schema


def api_field(resource: Resource, name: str) -> ApiField:
    return resource.schema.fields[name]
