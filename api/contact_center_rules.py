"""The domain rules of the contact center's configuration resources (menus, their queues of agents,
end users, CRM tickets, outbound numbers), and the one rule they share with Incoming Call Policies: a
routing phone number routes to one thing, a root IVR menu or a policy (never both, in any project).

The resources themselves are listed in ``api/registry.py``; the calls API (``api/ccai.py``) reads the
rows these rules keep consistent.
"""

from __future__ import annotations

import re
import uuid
import zlib
from typing import Any

from peewee import PostgresqlDatabase

from api.errors import BadRequest, Conflict
from api.resources import SCHEMA_TITLES, Context, Rules
from ivr.core import oncall
from ivr.core.contact_center.vocabulary import MenuType, is_language
from ivr.core.phone import InvalidNumber, to_e164
from ivr.store import models as m

_URL = re.compile(r"^https?://[^\s/]+\S*$", re.I)


def require_text(values: dict[str, Any], name: str) -> None:
    if name in values and isinstance(values[name], str) and not values[name].strip():
        raise BadRequest(f"data.{name}: must not be empty")


def normalize_phone(ctx: Context, values: dict[str, Any], name: str) -> None:
    """``values[name]`` in E.164 (national formats read in the server's default region)."""
    if values.get(name) is None:
        return
    try:
        values[name] = to_e164(values[name], ctx.default_region)
    except InvalidNumber as exc:
        raise BadRequest(f"data.{name}: {exc}") from None


def check_url(values: dict[str, Any], name: str) -> None:
    """A link shown to people (a ticket, an avatar): http or https only, never javascript: or data:."""
    value = values.get(name)
    if value is not None and not _URL.match(value):
        raise BadRequest(f"data.{name}: {value!r} is not an http:// or https:// URL")


def in_project(model: type[m.BaseModel], row_id, ctx: Context, name: str) -> m.BaseModel:
    """The row ``row_id`` of the caller's project, or the 400 every reference gives."""
    row = model.get_or_none(model.id == row_id, model.project == ctx.project_id)
    if row is None:
        raise BadRequest(f"data.{name}: no {SCHEMA_TITLES.get(model, model.__name__)} with id {row_id} "
                         "in your project")
    return row


def _is_postgres() -> bool:
    return isinstance(m.database.obj, PostgresqlDatabase)


# -- routing numbers: one number, one destination ----------------------------------------------------


def check_routing_number_free(ctx: Context, number: str | None, *, own_menu=None, own_policy=None) -> None:
    """409 when ``number`` already routes to a menu or a policy (other than the row being written).

    The two tables are checked in the writing transaction; on PostgreSQL a transaction-scoped advisory
    lock on the number serializes concurrent writers of the same number (SQLite writes are serial)."""
    if number is None:
        return
    if _is_postgres():
        m.database.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)",
                               (0x484C, zlib.crc32(number.encode()) - 2**31))
    Menu, Policy = m.CallMenu, m.IncomingCallPolicy
    menus = Menu.select(Menu.name, Menu.project).where(Menu.routingPhoneNumber == number)
    if own_menu is not None:
        menus = menus.where(Menu.id != own_menu)
    policies = Policy.select(Policy.name, Policy.project).where(Policy.routingPhoneNumber == number)
    if own_policy is not None:
        policies = policies.where(Policy.id != own_policy)
    for title, article, rows in (("Call Menu", "a", menus), ("Incoming Call Policy", "an", policies)):
        row = rows.first()
        if row is None:
            continue
        # Numbers are unique across projects; another project's object is not named.
        holder = (f"the {title} {row.name!r}" if row.projectId == ctx.project_id
                  else f"{article} {title} of another project")
        raise Conflict(f"The routing phone number {number} is already used by {holder}: a number routes to "
                       "one Call Menu or Incoming Call Policy.")


# -- menus -----------------------------------------------------------------------------------------


class CallMenuRules(Rules):
    """The menu tree: a child has its parent's type and lives in the same project, the tree has no
    cycle, a leaf targets a queue of agents or an Incoming Call Policy (not both, and a menu handing
    calls to a policy has no children), only a root IVR menu has a routing number."""

    @staticmethod
    def _check_fields(ctx: Context, values: dict[str, Any]) -> None:
        require_text(values, "name")
        if "languages" in values:
            raw = values["languages"]
            if not isinstance(raw, list) or not raw:
                raise BadRequest('data.languages: must be a non-empty list of ISO 639-1 codes, e.g. ["en", "fr"]')
            for code in raw:
                if not is_language(code):
                    shown = code if isinstance(code, str) else repr(code)
                    raise BadRequest(f"data.languages: Language {shown!r} is not found: give ISO 639-1 codes "
                                     '(two lowercase letters, e.g. "en", "fr")')
            values["languages"] = list(dict.fromkeys(raw))
        if "openingHours" in values:
            try:
                windows = oncall.parse_restrictions(values["openingHours"])
            except oncall.FormatError as exc:
                raise BadRequest(f"data.openingHours{exc.where}: {exc.message}") from None
            values["openingHours"] = oncall.restrictions_to_json(windows)
        if values.get("timeZone") is not None:
            try:
                oncall.time_zone(values["timeZone"])
            except ValueError as exc:
                raise BadRequest(f"data.timeZone: {exc}") from None
        normalize_phone(ctx, values, "redirectionNumber")
        normalize_phone(ctx, values, "routingPhoneNumber")
        seconds = values.get("cascadeGroupDelaySeconds")
        if seconds is not None and not 1 <= seconds <= 3600:
            raise BadRequest("data.cascadeGroupDelaySeconds: must be between 1 and 3600 seconds")
        for name, low, high in (("maxWaitSeconds", 5, 3600), ("voicemailMaxSeconds", 5, 600),
                                ("callbackDelaySeconds", 5, 7 * 86400)):
            if values.get(name) is not None and not low <= values[name] <= high:
                raise BadRequest(f"data.{name}: must be between {low} and {high} seconds")
        position = values.get("position")
        if position is not None and position < 0:
            raise BadRequest("data.position: must be 0 or more (the key that selects a menu is position + 1)")
        for name, model in (("redirectionMenuId", m.CallMenu), ("incomingCallPolicyId", m.IncomingCallPolicy),
                            ("outboundPhoneNumberId", m.OutboundPhoneNumber)):
            if values.get(name) is not None:
                in_project(model, values[name], ctx, name)

    @staticmethod
    def _check_shape(ctx: Context, merged: dict[str, Any], parent: m.CallMenu | None, own_id=None) -> None:
        """The rules that involve several fields, on the row as it would be."""
        menu_type = merged["menuType"]
        if parent is not None:
            if menu_type != parent.menuType:
                raise BadRequest(f"data.menuType: a child menu has its parent's type: the parent "
                                 f"{parent.name!r} is {parent.menuType}, so this menu cannot be {menu_type}")
            if parent.incomingCallPolicyId is not None:
                raise BadRequest(f"data.parentId: the menu {parent.name!r} hands its calls to an Incoming Call "
                                 "Policy (incomingCallPolicyId), so it cannot have child menus")
        if merged["routingPhoneNumber"] is not None:
            if parent is not None:
                raise BadRequest("data.routingPhoneNumber: only a root menu (without parentId) has a routing "
                                 "phone number")
            if menu_type != MenuType.IVR.value:
                raise BadRequest(f"data.routingPhoneNumber: only an {MenuType.IVR.value} menu has a routing "
                                 f"phone number (this one is {menu_type})")
        if own_id is not None and merged["redirectionMenuId"] == own_id:
            raise BadRequest("data.redirectionMenuId: a menu cannot redirect its calls to itself")

    def prepare_create(self, ctx, values, resource):
        self._check_fields(ctx, values)
        parent = in_project(m.CallMenu, values["parentId"], ctx, "parentId") \
            if values.get("parentId") is not None else None
        if parent is not None and values.get("menuType") is None:
            values["menuType"] = parent.menuType
        merged = {"menuType": values.get("menuType") or MenuType.IVR.value,
                  "routingPhoneNumber": values.get("routingPhoneNumber"),
                  "redirectionMenuId": values.get("redirectionMenuId")}
        self._check_shape(ctx, merged, parent)
        check_routing_number_free(ctx, values.get("routingPhoneNumber"))

    def prepare_update(self, ctx, row, values, resource):
        self._check_fields(ctx, values)
        parent_id = values.get("parentId", row.parentId)
        parent = None
        if parent_id is not None:
            parent = in_project(m.CallMenu, parent_id, ctx, "parentId")
            if "parentId" in values:
                self._check_no_cycle(row, parent)
                if "menuType" not in values:
                    values["menuType"] = parent.menuType  # a moved menu takes its new parent's type
        merged = {name: values.get(name, getattr(row, name))
                  for name in ("menuType", "routingPhoneNumber", "redirectionMenuId", "incomingCallPolicyId")}
        self._check_shape(ctx, merged, parent, own_id=row.id)
        Menu = m.CallMenu
        if values.get("incomingCallPolicyId") is not None:
            children = Menu.select().where(Menu.parent == row.id).count()
            if children:
                raise BadRequest(f"data.incomingCallPolicyId: this menu has {children} child menu(s): a menu that "
                                 "hands its calls to an Incoming Call Policy is a leaf (move or delete them first)")
            agents = m.CallMenuAgent.select().where(m.CallMenuAgent.callMenu == row.id).count()
            if agents:
                raise BadRequest(f"data.incomingCallPolicyId: this menu has {agents} agent(s) in its queue: a menu "
                                 "hands its calls either to its queue or to an Incoming Call Policy (remove the "
                                 "agents first)")
        if values.get("routingPhoneNumber") is not None and values["routingPhoneNumber"] != row.routingPhoneNumber:
            check_routing_number_free(ctx, values["routingPhoneNumber"], own_menu=row.id)

    @staticmethod
    def _check_no_cycle(row: m.CallMenu, parent: m.CallMenu) -> None:
        Menu = m.CallMenu
        seen = set()
        current = parent
        while current is not None:
            if current.id == row.id:
                raise BadRequest("data.parentId: a menu cannot be moved under itself or one of its own "
                                 "descendants (the menus would form a cycle)")
            if current.id in seen:  # never stored, but never loop
                break
            seen.add(current.id)
            current = Menu.get_or_none(Menu.id == current.parentId) if current.parentId is not None else None

    def after_update(self, ctx, row, values, resource):
        if values.get("menuType") is None:
            return
        Menu = m.CallMenu
        level = [row.id]
        while level:  # breadth first: the subtree follows its root's type
            children = [c for (c,) in Menu.select(Menu.id).where(Menu.parent.in_(level)).tuples()]
            if children:
                Menu.update(menuType=values["menuType"], updatedAt=m.utcnow()).where(
                    Menu.id.in_(children), Menu.menuType != values["menuType"]).execute()
            level = children

    def before_delete(self, ctx, row, resource):
        Menu = m.CallMenu
        children = Menu.select().where(Menu.parent == row.id).count()
        if children:
            raise Conflict(f"The Call Menu {row.name!r} has {children} child menu(s): delete or move them first "
                           "(a menu is deleted only once it is a leaf).")

    def conflict_message(self, values, error, resource):
        return (f"The routing phone number {values.get('routingPhoneNumber')} is already used by another Call Menu."
                if values.get("routingPhoneNumber") else "This Call Menu conflicts with an existing one.")


class CallMenuAgentRules(Rules):
    """An agent in a menu's queue: a user of the project who is an agent, once per menu."""

    def prepare_create(self, ctx, values, resource):
        self._check_group(values)
        if values.get("callMenuId") is not None:
            menu = in_project(m.CallMenu, values["callMenuId"], ctx, "callMenuId")
            if menu.incomingCallPolicyId is not None:
                raise BadRequest(f"data.callMenuId: the menu {menu.name!r} hands its calls to an Incoming Call "
                                 "Policy (incomingCallPolicyId), so it has no queue of agents")
        if values.get("userId") is not None:
            user = in_project(m.User, values["userId"], ctx, "userId")
            if not user.isAgent:
                raise BadRequest(f"data.userId: the user {user.name!r} is not an agent: set isAgent to true on the "
                                 "user first")

    def prepare_update(self, ctx, row, values, resource):
        self._check_group(values)

    @staticmethod
    def _check_group(values):
        group = values.get("groupNumber")
        if group is not None and group < 1:
            raise BadRequest("data.groupNumber: must be 1 or more (the cascade group, from 1)")

    def conflict_message(self, values, error, resource):
        return "This user is already an agent of this menu's queue."


# -- end users, tickets, outbound numbers -----------------------------------------------------------------


class EndUserRules(Rules):
    def prepare_create(self, ctx, values, resource):
        normalize_phone(ctx, values, "phoneNumber")

    def prepare_update(self, ctx, row, values, resource):
        normalize_phone(ctx, values, "phoneNumber")


class CrmTicketRules(Rules):
    def _check(self, values):
        require_text(values, "ticketId")
        check_url(values, "url")

    def prepare_create(self, ctx, values, resource):
        self._check(values)

    def prepare_update(self, ctx, row, values, resource):
        self._check(values)

    def conflict_message(self, values, error, resource):
        return f"A CRM Ticket with the ticketId {values.get('ticketId')!r} already exists in this project."


def lock_project(project_id: uuid.UUID) -> None:
    """On PostgreSQL, the project's row locked until the transaction ends (SQLite writes are serial).
    ``FOR NO KEY UPDATE``: two lockers wait for each other, but the project's other inserts (whose
    foreign keys take a key-share lock on the row) do not wait for them."""
    if _is_postgres():
        m.Project.select(m.Project.id).where(m.Project.id == project_id).for_update("FOR NO KEY UPDATE").first()


class OutboundPhoneNumberRules(Rules):
    """E.164, unique per project; at most one default: setting one unsets the others, in the same
    transaction (the project's row is locked meanwhile, so two concurrent defaults cannot both win)."""

    def prepare_create(self, ctx, values, resource):
        normalize_phone(ctx, values, "phoneNumber")
        if values.get("isDefault"):
            lock_project(ctx.project_id)

    def prepare_update(self, ctx, row, values, resource):
        normalize_phone(ctx, values, "phoneNumber")
        if values.get("isDefault"):
            lock_project(ctx.project_id)

    @staticmethod
    def _unset_others(ctx, row, values):
        if values.get("isDefault"):
            number = m.OutboundPhoneNumber
            number.update(isDefault=False, updatedAt=m.utcnow()).where(
                number.project == ctx.project_id, number.id != row.id, number.isDefault == True  # noqa: E712
            ).execute()

    def after_create(self, ctx, row, values, resource):
        self._unset_others(ctx, row, values)

    def after_update(self, ctx, row, values, resource):
        self._unset_others(ctx, row, values)

    def conflict_message(self, values, error, resource):
        return f"The outbound phone number {values.get('phoneNumber')} already exists in this project."
