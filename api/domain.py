"""The domain rules of each resource (validation that needs more than a field's type)."""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
import zoneinfo
from typing import Any

from peewee import PostgresqlDatabase

from api.contact_center_rules import check_routing_number_free, check_url
from api.errors import BadRequest, Conflict, Forbidden, TooManyRequests
from api.resources import SCHEMA_TITLES, Context, Resource, Rules
from ivr.store import models as m
from ivr.core import admission, oncall
from ivr.store import verification
from ivr.core.phone import InvalidNumber, area_code_of, region_of, sip_host_allowed, to_e164, validate_sip_uri

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:200]


def _require_text(values: dict[str, Any], name: str) -> None:
    if name in values and isinstance(values[name], str) and not values[name].strip():
        raise BadRequest(f"data.{name}: must not be empty")


#: The range of a policy's voicemailMaxSeconds (as a menu's).
VOICEMAIL_MIN_SECONDS, VOICEMAIL_MAX_SECONDS = 5, 600


class PolicyRules(Rules):
    def _normalize_number(self, ctx: Context, values: dict[str, Any]) -> None:
        number = values.get("routingPhoneNumber")
        if number is None:
            return
        try:
            values["routingPhoneNumber"] = to_e164(number, ctx.default_region)
        except InvalidNumber as exc:
            raise BadRequest(f"data.routingPhoneNumber: {exc}") from None
        values.setdefault("phoneNumberCountryCode", region_of(values["routingPhoneNumber"]))
        values.setdefault("phoneNumberAreaCode", area_code_of(values["routingPhoneNumber"]))

    @staticmethod
    def _check_number_free(ctx: Context, number: str | None, own_id=None) -> None:
        """A number routes to one thing: not another policy's, nor a Call Menu's (in any project)."""
        check_routing_number_free(ctx, number, own_policy=own_id)

    def _check_repeat(self, values: dict[str, Any]) -> None:
        times = values.get("repeatPolicyIfNoOneAnswersTimes")
        if times is not None and not 0 <= times <= 1000:
            raise BadRequest("data.repeatPolicyIfNoOneAnswersTimes: must be between 0 and 1000")
        seconds = values.get("voicemailMaxSeconds")
        if seconds is not None and not VOICEMAIL_MIN_SECONDS <= seconds <= VOICEMAIL_MAX_SECONDS:
            raise BadRequest(f"data.voicemailMaxSeconds: must be between {VOICEMAIL_MIN_SECONDS} and "
                             f"{VOICEMAIL_MAX_SECONDS} seconds")

    @staticmethod
    def _check_admission(ctx, values: dict[str, Any]) -> None:
        """Business hours and caller lists, checked and stored in their canonical forms
        (ivr.core.oncall's windows, ivr.core.admission's entries)."""
        if "businessHours" in values:
            try:
                windows = oncall.parse_restrictions(values["businessHours"])
            except oncall.FormatError as exc:
                raise BadRequest(f"data.businessHours{exc.where}: {exc.message}") from None
            values["businessHours"] = oncall.restrictions_to_json(windows)
        if values.get("businessHoursTimeZone") is not None:
            try:
                oncall.time_zone(values["businessHoursTimeZone"])
            except ValueError as exc:
                raise BadRequest(f"data.businessHoursTimeZone: {exc}") from None
        for name in (admission.BLOCK_LIST, admission.ALLOW_LIST):
            if name in values:
                try:
                    values[name] = admission.normalize_list(values[name], ctx.default_region)
                except admission.EntryError as exc:
                    raise BadRequest(f"data.{name}{exc.where}: {exc.message}") from None

    def prepare_create(self, ctx, values, resource):
        _require_text(values, "name")
        if not values.get("name"):
            return  # reported as a missing required field
        self._normalize_number(ctx, values)
        self._check_number_free(ctx, values.get("routingPhoneNumber"))
        self._check_repeat(values)
        self._check_admission(ctx, values)
        values["slug"] = self._unique_slug(values["name"])

    def prepare_update(self, ctx, row, values, resource):
        _require_text(values, "name")
        self._normalize_number(ctx, values)
        self._check_number_free(ctx, values.get("routingPhoneNumber"), own_id=row.id)
        self._check_repeat(values)
        self._check_admission(ctx, values)

    def before_delete(self, ctx, row, resource):
        menu = m.CallMenu.select(m.CallMenu.name).where(m.CallMenu.incomingCallPolicy == row.id).first()
        if menu is not None:
            raise Conflict(f"The Call Menu {menu.name!r} hands its calls to this Incoming Call Policy: change its "
                           "incomingCallPolicyId first.")

    @staticmethod
    def _unique_slug(name: str) -> str:
        base = slugify(name) or "policy"
        slug = base
        while m.IncomingCallPolicy.select().where(m.IncomingCallPolicy.slug == slug).exists():
            slug = f"{base}-{secrets.token_hex(3)}"
        return slug

    def conflict_message(self, values, error, resource):
        return ("This Incoming Call Policy conflicts with an existing one: its routing phone number "
                "or slug is already used.")


TARGETS = ("userId", "onCallDutyPolicyScheduleId", "teamId")


class DenseOrder:
    """``order`` as a dense 1..n sequence among the rows sharing a parent (a policy's rules, a schedule's
    layers, a layer's users): missing or past the end means last; inserting or moving to N shifts the
    rows in between; deleting closes the gap. The parent row is locked while its children move."""

    def __init__(self, parent: str):
        self.parent = parent  # the API name of the parent's id field, e.g. "incomingCallPolicyId"

    def _column(self, resource: Resource):
        return resource.schema.fields[self.parent].column

    def insert(self, ctx: Context, values: dict[str, Any], resource: Resource) -> None:
        parent_id = values.get(self.parent)
        if parent_id is None:
            return  # reported as missing
        column = self._column(resource)
        if not lock_row(column.rel_model, parent_id, ctx.project_id):
            title = SCHEMA_TITLES.get(column.rel_model, column.rel_model.__name__)
            raise BadRequest(f"data.{self.parent}: no {title} with id {parent_id} in your project")
        model = resource.model
        count = model.select().where(column == parent_id).count()
        order = values.get("order")
        if order is None or order > count + 1:
            order = count + 1
        if order < 1:
            raise BadRequest("data.order: must be 1 or more")
        model.update(order=model.order + 1).where(column == parent_id, model.order >= order).execute()
        values["order"] = order

    def move(self, ctx: Context, row: m.BaseModel, values: dict[str, Any], resource: Resource) -> None:
        if "order" not in values:
            return
        new = values["order"]
        if new is None:
            raise BadRequest("data.order: must not be null")
        if new < 1:
            raise BadRequest("data.order: must be 1 or more")
        column, model = self._column(resource), resource.model
        parent_id = getattr(row, self.parent)
        lock_row(column.rel_model, parent_id, ctx.project_id)
        new = min(new, model.select().where(column == parent_id).count())
        old = row.order
        if new > old:
            model.update(order=model.order - 1).where(
                column == parent_id, model.order > old, model.order <= new).execute()
        elif new < old:
            model.update(order=model.order + 1).where(
                column == parent_id, model.order >= new, model.order < old).execute()
        values["order"] = new

    def close_gap(self, ctx: Context, row: m.BaseModel, resource: Resource) -> None:
        column, model = self._column(resource), resource.model
        parent_id = getattr(row, self.parent)
        lock_row(column.rel_model, parent_id, ctx.project_id)
        model.update(order=model.order - 1).where(column == parent_id, model.order > row.order).execute()


class EscalationRuleRules(Rules):
    """Order is a dense 1..n sequence per policy; each rule has exactly one target."""

    order = DenseOrder("incomingCallPolicyId")

    def _check_timeout(self, values):
        seconds = values.get("escalateAfterSeconds")
        if seconds is not None and not 1 <= seconds <= 3600:
            raise BadRequest("data.escalateAfterSeconds: must be between 1 and 3600 seconds")

    @staticmethod
    def _check_targets(targets: dict[str, Any]) -> None:
        given = [name for name in TARGETS if targets.get(name) is not None]
        if not given:
            raise BadRequest("An escalation rule needs a target: give exactly one of userId, "
                             "onCallDutyPolicyScheduleId or teamId.")
        if len(given) > 1:
            raise BadRequest(f"An escalation rule has exactly one target, but this one would have "
                             f"{' and '.join(given)}: give only one (set the others to null).")

    def prepare_create(self, ctx, values, resource):
        self._check_timeout(values)
        self._check_targets(values)
        self.order.insert(ctx, values, resource)

    def prepare_update(self, ctx, row, values, resource):
        self._check_timeout(values)
        if any(name in values for name in TARGETS):
            merged = {name: values.get(name, getattr(row, name)) for name in TARGETS}
            self._check_targets(merged)
        self.order.move(ctx, row, values, resource)

    def after_delete(self, ctx, row, resource):
        self.order.close_gap(ctx, row, resource)


class UserRules(Rules):
    def _check(self, values):
        _require_text(values, "name")
        email = values.get("email")
        if email is not None:
            if not _EMAIL.match(email):
                raise BadRequest(f"data.email: {email!r} is not an email address")
            values["email"] = email.strip().lower()
        tz = values.get("timeZone")
        if tz is not None:
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise BadRequest(f"data.timeZone: {tz!r} is not an IANA time zone (e.g. Europe/Paris)") from None
        _require_text(values, "agentNumber")
        check_url(values, "avatarUrl")

    def prepare_create(self, ctx, values, resource):
        self._check(values)

    def prepare_update(self, ctx, row, values, resource):
        self._check(values)

    def conflict_message(self, values, error, resource):
        return f"A user with the email {values.get('email')} already exists in this project."


def too_many_codes(exc: verification.TooManyCodes) -> TooManyRequests:
    """The 429 of a code refused by the limit of codes per destination, saying when to try again."""
    seconds = max(1, math.ceil((exc.retry_at - m.utcnow()).total_seconds()))
    minutes = math.ceil(seconds / 60)
    wait = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    return TooManyRequests(
        f"Too many verification codes for {exc.destination}: at most {exc.limit} are sent to one number in "
        f"24 hours. Try again after {exc.retry_at.isoformat(timespec='seconds')}Z (in {wait}).",
        headers={"Retry-After": str(seconds)})


class IncomingCallNumberRules(Rules):
    """A number is a phone number (E.164) or a SIP URI, and stays unverified until proven."""

    def _normalize(self, ctx, values):
        if values.get("phoneNumber") is not None:
            try:
                values["phoneNumber"] = to_e164(values["phoneNumber"], ctx.default_region)
            except InvalidNumber as exc:
                raise BadRequest(f"data.phoneNumber: {exc}") from None
        if values.get("sipUri") is not None:
            try:
                values["sipUri"] = validate_sip_uri(values["sipUri"])
            except InvalidNumber as exc:
                raise BadRequest(f"data.sipUri: {exc}") from None
            if not sip_host_allowed(values["sipUri"], ctx.allowed_sip_hosts):
                raise BadRequest(f"data.sipUri: {values['sipUri']} points at a host Hotline may not call: "
                                 "sip.allowed_hosts lists the hosts SIP URIs may point at")

    @staticmethod
    def _check_one(phone, sip):
        if phone is None and sip is None:
            raise BadRequest("A number needs either phoneNumber (E.164) or sipUri.")
        if phone is not None and sip is not None:
            raise BadRequest("Give either phoneNumber or sipUri, not both.")

    def prepare_create(self, ctx, values, resource):
        if values.get("isVerified") and not ctx.principal.is_admin:
            raise Forbidden("Only a Project Owner or Project Admin key can create a number already verified; "
                            "other numbers are verified with a code.")
        self._normalize(ctx, values)
        self._check_one(values.get("phoneNumber"), values.get("sipUri"))

    def prepare_update(self, ctx, row, values, resource):
        if "isVerified" in values:
            raise BadRequest("data.isVerified: is read-only; a number is verified with the code it receives")
        self._normalize(ctx, values)
        phone = values.get("phoneNumber", row.phoneNumber)
        sip = values.get("sipUri", row.sipUri)
        self._check_one(phone, sip)
        if phone != row.phoneNumber or sip != row.sipUri:
            values["isVerified"] = False  # a changed number must be verified again

    @staticmethod
    def _issue_code(ctx, number_id) -> None:
        """A code for the number, delivered by a call (see ivr/store/verification.py). Too many codes
        to its destination today: 429, and the request changes nothing."""
        number = m.UserIncomingCallNumber.get_by_id(number_id)
        try:
            verification.issue_code(number, codes_per_day=ctx.codes_per_day)
        except verification.NumberLocked:
            pass  # its destination stays locked: only an admin's re-send unlocks it
        except verification.TooManyCodes as exc:
            raise too_many_codes(exc) from None

    def after_create(self, ctx, row, values, resource):
        if not row.isVerified:
            self._issue_code(ctx, row.id)

    def after_update(self, ctx, row, values, resource):
        if values.get("isVerified") is False:
            self._issue_code(ctx, row.id)  # a code for the new number


class NamedRules(Rules):
    def prepare_create(self, ctx, values, resource):
        _require_text(values, "name")

    def prepare_update(self, ctx, row, values, resource):
        _require_text(values, "name")

    def conflict_message(self, values, error, resource):
        return f"A {resource.title} named {values.get('name')!r} already exists in this project."


class TeamMemberRules(Rules):
    def conflict_message(self, values, error, resource):
        return "This user is already a member of this team."


# -- on-call schedules -----------------------------------------------------------------


def _check_time_zone(values):
    tz = values.get("timeZone")
    if tz is not None:
        try:
            oncall.time_zone(tz)
        except ValueError as exc:
            raise BadRequest(f"data.timeZone: {exc}") from None


class ScheduleRules(NamedRules):
    def conflict_message(self, values, error, resource):
        return f"An On-Call Duty Policy Schedule named {values.get('name')!r} already exists in this project."

    def prepare_create(self, ctx, values, resource):
        super().prepare_create(ctx, values, resource)
        _check_time_zone(values)

    def prepare_update(self, ctx, row, values, resource):
        super().prepare_update(ctx, row, values, resource)
        _check_time_zone(values)


def _check_instants(values, *names):
    for name in names:
        value = values.get(name)
        if value is not None and not oncall.in_range(value):
            raise BadRequest(f"data.{name}: must be between {oncall.EARLIEST.year} and {oncall.LATEST.year}")


class LayerRules(Rules):
    """A schedule's layers, in a dense order; rotation, hand-off time and restrictions checked and
    stored in their canonical form (ivr/core/oncall.py)."""

    order = DenseOrder("onCallDutyPolicyScheduleId")

    @staticmethod
    def _check(values):
        _check_instants(values, "startsAt")
        count = values.get("rotationIntervalCount")
        if count is not None and not 1 <= count <= 1000:
            raise BadRequest("data.rotationIntervalCount: must be between 1 and 1000")
        handoff = values.get("handOffTime")
        if handoff is not None:
            try:
                values["handOffTime"] = oncall.format_time_of_day(oncall.parse_time_of_day(handoff))
            except oncall.FormatError as exc:
                raise BadRequest(f"data.handOffTime: {exc.message}") from None
        if "restrictionTimes" in values:
            try:
                windows = oncall.parse_restrictions(values["restrictionTimes"])
            except oncall.FormatError as exc:
                raise BadRequest(f"data.restrictionTimes{exc.where}: {exc.message}") from None
            values["restrictionTimes"] = oncall.restrictions_to_json(windows)

    def prepare_create(self, ctx, values, resource):
        self._check(values)
        self.order.insert(ctx, values, resource)

    def prepare_update(self, ctx, row, values, resource):
        self._check(values)
        self.order.move(ctx, row, values, resource)

    def after_delete(self, ctx, row, resource):
        self.order.close_gap(ctx, row, resource)


class LayerUserRules(Rules):
    """The users of a layer, in rotation order (dense)."""

    order = DenseOrder("onCallDutyPolicyScheduleLayerId")

    def prepare_create(self, ctx, values, resource):
        self.order.insert(ctx, values, resource)

    def prepare_update(self, ctx, row, values, resource):
        self.order.move(ctx, row, values, resource)

    def after_delete(self, ctx, row, resource):
        self.order.close_gap(ctx, row, resource)


class OverrideRules(Rules):
    @staticmethod
    def _check(starts, ends):
        if starts is not None and ends is not None and ends <= starts:
            raise BadRequest("data.endsAt: must be after startsAt")

    def prepare_create(self, ctx, values, resource):
        _check_instants(values, "startsAt", "endsAt")
        self._check(values.get("startsAt"), values.get("endsAt"))

    def prepare_update(self, ctx, row, values, resource):
        _check_instants(values, "startsAt", "endsAt")
        self._check(values.get("startsAt", row.startsAt), values.get("endsAt", row.endsAt))


def lock_row(model: type[m.BaseModel], row_id, project_id) -> bool:
    """Whether the row exists in the project; on PostgreSQL also locks it until the transaction ends,
    so concurrent edits of its children keep their order dense (SQLite writes are serial anyway)."""
    query = model.select(model.id).where(model.id == row_id, model.project == project_id)
    if isinstance(model._meta.database.obj, PostgresqlDatabase):
        query = query.for_update()
    return query.first() is not None
