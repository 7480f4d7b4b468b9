"""Hotline's domain, as peewee models (OneUptime's model, extended).

Field names are the API's camelCase names: the REST layer exposes them as they
are, so there is no second naming to keep in sync. Every table has a UUID
primary key (``_id`` in the API and in the database), ``createdAt`` and
``updatedAt``. ``help_text`` is the description the OpenAPI document shows.

The schema is created and upgraded only by the migrations in
``ivr/migrations`` (``hotline migrate``); these classes never create tables.

Logs reference their policy by id without a foreign-key constraint: a policy
can be deleted while its logs stay, still saying which policy they belonged to.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import json
import uuid

from peewee import (
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
    UUIDField,
)
from playhouse.pwasyncio import AsyncModelMixin

from ivr.core.contact_center import vocabulary as cc
from ivr.core.engine import TERMINAL_STATUSES, CallStatus  # noqa: F401 - the one status enum, re-exported
from ivr.core.oncall import RotationInterval

#: The database the running operation is bound to instead of the one ``database`` was initialized with
#: (None: that one): the synchronous reader of ``ivr.store.db.Reads``, or the writer thread's connection
#: of ``ivr.store.db.Writer``. Set for the operation's duration only.
bound_database: contextvars.ContextVar = contextvars.ContextVar("hotline_bound_database", default=None)


class RoutedDatabaseProxy(DatabaseProxy):
    """The models' database: the one ``initialize`` set, unless the running operation is bound to
    another (``bound_database``). Every query, transaction and ``database.obj`` resolves it when it runs."""

    __slots__ = ("_initialized",)

    def initialize(self, obj):
        object.__setattr__(self, "_initialized", obj)
        for callback in self._callbacks:
            callback(obj)

    @property
    def obj(self):
        bound = bound_database.get()
        return self._initialized if bound is None else bound

    def __setattr__(self, attr, value):
        object.__setattr__(self, attr, value)


database = RoutedDatabaseProxy()


def utcnow() -> dt.datetime:
    """Naive UTC: the same on SQLite and PostgreSQL, rendered with a Z by the API."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)




class CallLogStatus(str, enum.Enum):
    """Status of an outbound notification call (the Call Log seed)."""

    SUCCESS = "Success"
    ERROR = "Error"
    LOW_BALANCE = "Low Balance"
    MISSED_CALL = "Missed Call"
    BUSY = "Busy"


class Role(str, enum.Enum):
    OWNER = "Project Owner"
    ADMIN = "Project Admin"
    MEMBER = "Project Member"
    VIEWER = "Project Viewer"


# -- custom field types --------------------------------------------------------------


class PhoneField(CharField):
    """A phone number, stored in E.164 (validated by the API with phonenumbers)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 32)
        super().__init__(*args, **kwargs)


class SlugField(CharField):
    pass


class EmailField(CharField):
    pass


class LongTextField(TextField):
    pass


class JSONField(TextField):
    """JSON kept as text: portable between SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)


class EnumField(CharField):
    """A text column limited to an enum's values (the API validates and documents them)."""

    def __init__(self, enum_class: type[enum.Enum], *args, **kwargs):
        self.enum_class = enum_class
        kwargs.setdefault("max_length", 32)
        super().__init__(*args, **kwargs)

    def db_value(self, value):
        if isinstance(value, enum.Enum):
            value = value.value
        return value

    @property
    def choices_values(self) -> list[str]:
        return [member.value for member in self.enum_class]


class IdField(UUIDField):
    """A reference to another row kept as a bare UUID (no constraint), e.g. a log's policy."""


# -- base ----------------------------------------------------------------------------


class BaseModel(AsyncModelMixin, Model):
    id = UUIDField(primary_key=True, default=uuid.uuid4, column_name="_id", help_text="ID of this object")
    createdAt = DateTimeField(default=utcnow, help_text="Date and Time when the object was created.")
    updatedAt = DateTimeField(default=utcnow, help_text="Date and Time when the object was updated.")

    class Meta:
        database = database
        legacy_table_names = False

    def save(self, *args, **kwargs):
        self.updatedAt = utcnow()
        return super().save(*args, **kwargs)


class Project(BaseModel):
    name = CharField(max_length=200, help_text="Name of the project")


class ProjectScoped(BaseModel):
    project = ForeignKeyField(
        Project, column_name="projectId", object_id_name="projectId", on_delete="CASCADE",
        help_text="ID of your Project in which this object belongs",
    )


class NumberSequence(Model):
    """The last integer id given to each kind of row the contact-center calls API shows. Never exposed."""

    name = CharField(max_length=64, primary_key=True)
    value = IntegerField(default=0)

    class Meta:
        database = database
        table_name = "number_sequence"


class NumericIdField(IntegerField):
    """The integer id the contact-center calls API (``/apps/api/v1/calls``) shows for a row, as CCAI's
    ids are integers. Given at insert from ``number_sequence``, in the inserting transaction."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("unique", True)
        kwargs.setdefault("null", True)  # only until the row is saved: every saved row has one
        kwargs.setdefault("help_text", "The integer id of this object in the contact-center calls API "
                                       "(/apps/api/v1/calls)")
        super().__init__(*args, **kwargs)


def next_number(name: str) -> int:
    """The next integer id of ``name`` (a table), one per call, never reused. Inside a write
    transaction the row lock (PostgreSQL) or the database lock (SQLite) orders concurrent inserts."""
    seq = NumberSequence
    for _ in range(2):
        rows = list(seq.update(value=seq.value + 1).where(seq.name == name).returning(seq.value).tuples())
        if rows:
            return rows[0][0]
        seq.insert(name=name, value=0).on_conflict_ignore().execute()
    raise RuntimeError(f"could not number a new {name} row")


class Numbered:
    """A model whose rows carry a ``numericId`` (the contact-center calls API's integer ids)."""

    def save(self, *args, **kwargs):
        if kwargs.get("force_insert") and self.numericId is None:  # an insert (Model.create): number it
            self.numericId = next_number(self._meta.table_name)
        return super().save(*args, **kwargs)


# -- people --------------------------------------------------------------------------


class User(Numbered, ProjectScoped):
    name = CharField(max_length=200, help_text="Full name of the user")
    email = EmailField(max_length=254, null=True, help_text="Email address of the user")
    timeZone = CharField(max_length=64, default="UTC", help_text="IANA time zone of the user, e.g. Europe/Paris")
    numericId = NumericIdField()
    isAgent = BooleanField(default=False, help_text="The user is a contact-center agent: calls of the calls API "
                                                    "(/apps/api/v1/calls) may be assigned to them, on their "
                                                    "verified number")
    agentNumber = CharField(max_length=64, null=True, help_text="The agent's number in the contact center "
                                                                "(CCAI's agent_number), if it uses one")
    canMakeOutboundCalls = BooleanField(default=True, help_text="The agent may be assigned outbound calls")
    agentAvailability = EnumField(cc.AgentAvailability, default=cc.AgentAvailability.AVAILABLE.value,
                                  help_text="Available or Unavailable; an Available agent on a call is busy "
                                            "until it ends")
    avatarUrl = CharField(max_length=500, null=True, help_text="URL of the user's picture (CCAI's avatar_url)")

    class Meta:
        indexes = ((("project", "email"), True),)


class UserIncomingCallNumber(ProjectScoped):
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", on_delete="CASCADE",
                           help_text="ID of the user this number rings")
    phoneNumber = PhoneField(null=True, help_text="Phone number in E.164, dialed through the outbound trunk")
    sipUri = CharField(max_length=255, null=True,
                       help_text="SIP URI dialed directly, e.g. sip:alice@10.0.0.5:5060")
    isVerified = BooleanField(default=False,
                              help_text="Only verified numbers are ever rung. Read-only, except that a Project "
                                        "Owner or Admin may create a number already verified.")


class UserIncomingCallNumberVerification(BaseModel):
    """The pending verification code of a number (ivr/store/verification.py). Never exposed by the API.
    Wrong codes and the lock are counted per destination, in VerificationGuard."""

    userIncomingCallNumber = ForeignKeyField(
        UserIncomingCallNumber, column_name="userIncomingCallNumberId", object_id_name="userIncomingCallNumberId",
        unique=True, on_delete="CASCADE", help_text="ID of the number being verified")
    codeHash = CharField(max_length=64, help_text="SHA-256 of the salt and the code: the code is checked against this")
    codeSalt = CharField(max_length=32, help_text="Random salt of codeHash")
    undeliveredCode = CharField(max_length=16, null=True,
                                help_text="The code itself, kept only until it has been delivered to the number")
    expiresAt = DateTimeField(help_text="The code stops working at this time")


class VerificationGuard(ProjectScoped):
    """Wrong codes, the lock and the codes sent, per destination of a project
    (ivr/store/verification.py). Not tied to a number row: deleting and re-creating a number
    neither unlocks it nor resets its counts. Never exposed by the API."""

    destination = CharField(max_length=255, help_text="E.164 number or SIP URI, as ivr.core.phone.destination_key "
                                                      "writes it")
    attempts = IntegerField(default=0, help_text="Wrong codes tried since the last unlock")
    lockedAt = DateTimeField(null=True, help_text="Locked after too many wrong codes; an admin re-sending unlocks")
    codesSentAt = JSONField(default=list, help_text="When the latest codes were sent (naive UTC, ISO 8601), "
                                                    "for the limit of codes per day")

    class Meta:
        indexes = ((("project", "destination"), True),)


class Team(ProjectScoped):
    name = CharField(max_length=200, help_text="Name of the team")
    description = LongTextField(null=True, help_text="Description of the team")


class TeamMember(ProjectScoped):
    team = ForeignKeyField(Team, column_name="teamId", object_id_name="teamId", on_delete="CASCADE",
                           help_text="ID of the team")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", on_delete="CASCADE",
                           help_text="ID of the member")

    class Meta:
        indexes = ((("team", "user"), True),)


class Label(ProjectScoped):
    name = CharField(max_length=100, help_text="Name of the label")
    color = CharField(max_length=16, null=True, help_text="Color of the label, e.g. #ff0000")
    description = LongTextField(null=True, help_text="Description of the label")

    class Meta:
        indexes = ((("project", "name"), True),)


class ApiKey(ProjectScoped):
    name = CharField(max_length=200, help_text="What the key is for")
    keyHash = CharField(max_length=64, unique=True, help_text="SHA-256 of the key; the key itself is never stored")
    keyPrefix = CharField(max_length=16, help_text="First characters of the key, to recognise it")
    role = EnumField(Role, null=True, help_text="Role of the key")
    permissions = JSONField(default=list, help_text="Fine-grained permissions granted besides the role")
    expiresAt = DateTimeField(null=True, help_text="The key stops working at this time")


# -- on-call schedules (semantics: ivr/core/oncall.py) -------------------------------------


class OnCallDutyPolicySchedule(ProjectScoped):
    name = CharField(max_length=200, help_text="Name of the schedule (unique in the project)")
    description = LongTextField(null=True, help_text="Description of the schedule")
    timeZone = CharField(max_length=64, default="UTC",
                         help_text="IANA time zone in which the schedule's hand-off times, rotation lengths and "
                                   "restriction windows are read, e.g. America/New_York")

    class Meta:
        indexes = ((("project", "name"), True),)


class OnCallDutyPolicyScheduleLayer(ProjectScoped):
    onCallDutyPolicySchedule = ForeignKeyField(
        OnCallDutyPolicySchedule, column_name="onCallDutyPolicyScheduleId", object_id_name="onCallDutyPolicyScheduleId",
        on_delete="CASCADE", help_text="ID of the On-Call Duty Policy Schedule this layer belongs to")
    name = CharField(max_length=200, null=True, help_text="Name of the layer")
    description = LongTextField(null=True, help_text="Description of the layer")
    order = IntegerField(help_text="Position of the layer in the schedule, from 1; where several layers cover a "
                                   "moment, the later one wins. Missing: last. Inserting at N shifts the layers at N "
                                   "and after.")
    startsAt = DateTimeField(help_text="When the layer starts covering: the first user's first shift starts here")
    rotationInterval = EnumField(RotationInterval, default=RotationInterval.WEEK.value,
                                 help_text="Unit of the rotation length: Hour, Day or Week")
    rotationIntervalCount = IntegerField(default=1, help_text="Length of one shift, in rotationInterval units "
                                                              "(1 to 1000)")
    handOffTime = CharField(max_length=8, null=True,
                            help_text="Local time of day (HH:MM, in the schedule's time zone) at which shifts hand "
                                      "off. Missing: the local time of startsAt")
    restrictionTimes = JSONField(
        default=list,
        help_text='Windows of local time outside which the layer covers no one (empty: always covers). A list of '
                  '{"type": "Daily", "startTime": "09:00", "endTime": "17:00", "days": ["Monday", ...]} (days '
                  'optional: the days on which the window opens) and {"type": "Weekly", "startDay": "Monday", '
                  '"startTime": "09:00", "endDay": "Friday", "endTime": "17:00"}. An end not after the start wraps '
                  'past midnight or the end of the week.')

    class Meta:
        indexes = ((("onCallDutyPolicySchedule", "order"), False),)


class OnCallDutyPolicyScheduleLayerUser(ProjectScoped):
    onCallDutyPolicyScheduleLayer = ForeignKeyField(
        OnCallDutyPolicyScheduleLayer, column_name="onCallDutyPolicyScheduleLayerId",
        object_id_name="onCallDutyPolicyScheduleLayerId", on_delete="CASCADE",
        help_text="ID of the On-Call Duty Policy Schedule Layer whose rotation this user is in")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", on_delete="RESTRICT",
                           help_text="ID of the user")
    order = IntegerField(help_text="Position of the user in the layer's rotation, from 1. Missing: last. "
                                   "Inserting at N shifts the users at N and after.")

    class Meta:
        indexes = ((("onCallDutyPolicyScheduleLayer", "order"), False),)


class OnCallDutyPolicyScheduleOverride(ProjectScoped):
    onCallDutyPolicySchedule = ForeignKeyField(
        OnCallDutyPolicySchedule, column_name="onCallDutyPolicyScheduleId", object_id_name="onCallDutyPolicyScheduleId",
        on_delete="CASCADE", help_text="ID of the On-Call Duty Policy Schedule this override belongs to")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", on_delete="CASCADE",
                           help_text="ID of the user on call during the override, whatever the layers say")
    startsAt = DateTimeField(help_text="Start of the override (inclusive)")
    endsAt = DateTimeField(help_text="End of the override (exclusive); after startsAt")
    description = LongTextField(null=True, help_text="Why, e.g. a swap or a sick day")

    class Meta:
        indexes = ((("onCallDutyPolicySchedule", "endsAt"), False),)


# -- incoming call policies --------------------------------------------------------


class ProjectCallSMSConfig(ProjectScoped):
    """A project's own Twilio account (OneUptime's Project Call & SMS Config): the policies that name it
    use it instead of the global one (the settings twilio.*). The auth token is kept encrypted (Fernet,
    under twilio.encryption_key: ivr/store/twilio_accounts.py) and the API never returns it."""

    name = CharField(max_length=100, help_text="Any friendly name of this configuration")
    description = LongTextField(null=True, help_text="Friendly description that will help you remember")
    twilioAccountSID = CharField(max_length=64, help_text="The Twilio account SID (AC followed by 32 hex digits)")
    twilioAuthToken = TextField(help_text="The Twilio auth token. Write-only: stored encrypted, never returned")
    twilioPrimaryPhoneNumber = PhoneField(help_text="The phone number (E.164, one of the account's) calls are "
                                                    "made from")

    class Meta:
        table_name = "project_call_sms_config"
        indexes = ((("twilioAccountSID",), False),)


class IncomingCallPolicy(ProjectScoped):
    name = CharField(max_length=200, help_text="Any friendly name of this policy")
    description = LongTextField(null=True, help_text="Friendly description that will help you remember")
    slug = SlugField(max_length=220, unique=True, help_text="Friendly globally unique name for your object")
    routingPhoneNumber = PhoneField(null=True, unique=True,
                                    help_text="The phone number for incoming calls to this policy")
    callProviderPhoneNumberId = CharField(max_length=100, null=True,
                                          help_text="The call provider's ID for the phone number (e.g., Twilio SID)")
    phoneNumberCountryCode = CharField(max_length=8, null=True,
                                       help_text="Country code of the phone number (US, GB, etc.)")
    phoneNumberAreaCode = CharField(max_length=16, null=True, help_text="Area code of the phone number")
    phoneNumberPurchasedAt = DateTimeField(null=True, help_text="When the phone number was purchased")
    greetingMessage = LongTextField(default="Please wait while we connect you to the on-call engineer.",
                                    help_text="Custom TTS greeting message for incoming calls")
    noAnswerMessage = LongTextField(default="No one is available. Please try again later.",
                                    help_text="Message when escalation is exhausted and no one answers")
    noOneAvailableMessage = LongTextField(
        default="We are sorry, but no on-call engineer is currently available. "
                "Please try again later or contact support.",
        help_text="Message when no one is on-call or reachable")
    isEnabled = BooleanField(default=True, help_text="Enable or disable this incoming call policy")
    repeatPolicyIfNoOneAnswers = BooleanField(default=False, help_text="Restart from first rule if all fail")
    repeatPolicyIfNoOneAnswersTimes = IntegerField(default=1, help_text="Maximum repeat attempts if no one answers")
    requireAnswerConfirmation = BooleanField(
        default=True, help_text="An on-call engineer who answers must press 1 to accept the call; a voicemail "
                                "box that answers is then not mistaken for a person")
    businessHours = JSONField(default=list, help_text="When the policy takes calls (empty: always), in "
                                                      "businessHoursTimeZone: windows in the format of a schedule "
                                                      "layer's restrictionTimes, e.g. [{\"type\": \"Daily\", "
                                                      "\"startTime\": \"09:00\", \"endTime\": \"17:00\", "
                                                      "\"days\": [\"Monday\", \"Friday\"]}]. Outside them the "
                                                      "caller hears afterHoursMessage and nobody is rung")
    businessHoursTimeZone = CharField(max_length=64, default="UTC", help_text="IANA time zone of businessHours")
    afterHoursMessage = LongTextField(default="We are closed. Please call again during business hours.",
                                      help_text="Message played outside businessHours before hanging up")
    callerBlockList = JSONField(default=list, help_text="Callers refused: E.164 numbers and prefix patterns like "
                                                        "\"+1415*\" (at most 1000); a blocked caller hears "
                                                        "blockedCallerMessage and nobody is rung")
    callerAllowList = JSONField(default=list, help_text="If not empty, the only callers taken: E.164 numbers and "
                                                        "prefix patterns like \"+1415*\" (at most 1000); an "
                                                        "anonymous caller matches no entry")
    blockedCallerMessage = LongTextField(default="This number cannot take your call.",
                                         help_text="Message played to a caller refused by callerBlockList or "
                                                   "callerAllowList before hanging up")
    voicemailOnNoAnswer = BooleanField(default=False, help_text="When no one answered, the caller hears "
                                                                "noAnswerMessage, then is asked to leave a voicemail "
                                                                "after a tone, which is recorded (the log stays "
                                                                "NoAnswer and keeps it in voicemailFile). ARI "
                                                                "controller only: over FastAGI the call hangs up")
    voicemailMaxSeconds = IntegerField(default=120, help_text="The longest voicemail recorded, in seconds (5 to 600)")
    projectCallSMSConfigId = IdField(
        null=True, help_text="ID of the project-level Twilio configuration. If set, uses this config instead of "
                             "global config and billing does not apply.")
    createdByUser = ForeignKeyField(User, column_name="createdByUserId", object_id_name="createdByUserId",
                                    null=True, on_delete="SET NULL",
                                    help_text="User ID who created this object (if this object was created by a User)")


class IncomingCallPolicyLabel(BaseModel):
    """The labels of a policy (many to many)."""

    incomingCallPolicy = ForeignKeyField(IncomingCallPolicy, column_name="incomingCallPolicyId",
                                         object_id_name="incomingCallPolicyId", on_delete="CASCADE")
    label = ForeignKeyField(Label, column_name="labelId", object_id_name="labelId", on_delete="CASCADE")

    class Meta:
        indexes = ((("incomingCallPolicy", "label"), True),)


class IncomingCallPolicyEscalationRule(ProjectScoped):
    incomingCallPolicy = ForeignKeyField(IncomingCallPolicy, column_name="incomingCallPolicyId",
                                         object_id_name="incomingCallPolicyId", on_delete="CASCADE",
                                         help_text="ID of the Incoming Call Policy this rule belongs to")
    name = CharField(max_length=200, null=True, help_text="Name of the escalation rule")
    description = LongTextField(null=True, help_text="Description of the escalation rule")
    order = IntegerField(help_text="Position of the rule in the policy, from 1. Missing: last. "
                                   "Inserting at N shifts the rules at N and after.")
    escalateAfterSeconds = IntegerField(default=30, help_text="Seconds the rule rings before escalating to the next")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", null=True, on_delete="RESTRICT",
                           help_text="User to ring (exactly one of userId, onCallDutyPolicyScheduleId, teamId)")
    onCallDutyPolicySchedule = ForeignKeyField(
        OnCallDutyPolicySchedule, column_name="onCallDutyPolicyScheduleId", object_id_name="onCallDutyPolicyScheduleId",
        null=True, on_delete="RESTRICT", help_text="On-call schedule whose current on-call user is rung")
    team = ForeignKeyField(Team, column_name="teamId", object_id_name="teamId", null=True, on_delete="RESTRICT",
                           help_text="Team whose members are all rung at once")

    class Meta:
        indexes = ((("incomingCallPolicy", "order"), False),)


# -- logs ----------------------------------------------------------------------------


class IncomingCallLog(ProjectScoped):
    incomingCallPolicyId = IdField(help_text="ID of the Incoming Call Policy")
    callerPhoneNumber = PhoneField(null=True, help_text="Incoming caller's phone number")
    routingPhoneNumber = PhoneField(null=True, help_text="The routing number that was called")
    callProviderCallId = CharField(max_length=128, null=True, help_text="Call provider's call identifier")
    status = EnumField(CallStatus, default=CallStatus.INITIATED.value, help_text="Current status of the incoming call")
    statusMessage = LongTextField(null=True, help_text="Additional status information")
    callDurationInSeconds = IntegerField(null=True, help_text="Total call duration in seconds")
    callCostInUSDCents = IntegerField(default=0, help_text="Total cost for this call in USD cents")
    incomingCallCostInUSDCents = IntegerField(default=0, help_text="Cost for incoming leg in USD cents")
    outgoingCallCostInUSDCents = IntegerField(default=0, help_text="Cost for all forwarding attempts in USD cents")
    startedAt = DateTimeField(null=True, help_text="When the call started")
    endedAt = DateTimeField(null=True, help_text="When the call ended")
    answeredByUserId = IdField(null=True, help_text="User ID who answered the call")
    callerIdRaw = LongTextField(null=True, help_text="The caller ID as the network sent it, when it was not a "
                                                     "phone number that fits callerPhoneNumber (which then holds "
                                                     "its first 32 printable characters)")
    currentEscalationRuleOrder = IntegerField(null=True, help_text="The current escalation rule order being processed")
    repeatCount = IntegerField(default=0, help_text="Number of times the policy has been repeated")
    voicemailFile = CharField(max_length=255, null=True,
                              help_text="The voicemail the caller left after no one answered (its name in the "
                                        "recordings directory; fetched with GET /api/incoming-call-log/:id/voicemail)")
    voicemailReceivedAt = DateTimeField(null=True, help_text="When the voicemail was kept")

    class Meta:
        indexes = (
            (("project", "createdAt"), False),
            (("project", "status", "createdAt"), False),
            (("incomingCallPolicyId", "createdAt"), False),
            (("callProviderCallId",), False),
        )


class IncomingCallLogItem(ProjectScoped):
    incomingCallLog = ForeignKeyField(IncomingCallLog, column_name="incomingCallLogId",
                                      object_id_name="incomingCallLogId", on_delete="CASCADE",
                                      help_text="ID of the Incoming Call Log this ring attempt belongs to")
    incomingCallPolicyEscalationRuleId = IdField(null=True, help_text="ID of the escalation rule that rang")
    escalationRuleOrder = IntegerField(null=True, help_text="Order of that rule when it rang")
    userId = IdField(null=True, help_text="ID of the user who was rung")
    userIncomingCallNumberId = IdField(null=True, help_text="ID of the number that was rung")
    numberDialed = CharField(max_length=255, null=True, help_text="The phone number or SIP URI that was rung")
    callProviderCallId = CharField(max_length=128, null=True, help_text="Call provider's identifier of this leg")
    status = EnumField(CallStatus, default=CallStatus.RINGING.value, help_text="Status of this ring attempt")
    statusMessage = LongTextField(null=True, help_text="Additional status information")
    isAnswered = BooleanField(default=False, help_text="Whether this leg accepted the call")
    dialDurationInSeconds = FloatField(null=True, help_text="Seconds from dialing to answer or give-up")
    callCostInUSDCents = IntegerField(default=0, help_text="Cost of this attempt in USD cents")
    startedAt = DateTimeField(null=True, help_text="When this attempt started ringing")
    endedAt = DateTimeField(null=True, help_text="When this attempt ended")

    class Meta:
        indexes = (
            (("incomingCallLog", "startedAt"), False),
            (("project", "createdAt"), False),
            (("project", "status", "createdAt"), False),
            (("callProviderCallId",), False),
        )


class CallLog(ProjectScoped):
    toNumber = PhoneField(help_text="Phone Number Call was sent to")
    fromNumber = PhoneField(null=True, help_text="Phone Number Call was sent from")
    callData = JSONField(default=dict, help_text="Content of the data that was sent in the call")
    statusMessage = LongTextField(null=True, help_text="Status Message (if any)")
    status = EnumField(CallLogStatus, null=True, help_text="Status of the Call sent")
    callCostInUSDCents = IntegerField(default=0, help_text="Call Cost in USD Cents")
    incidentId = IdField(null=True, help_text="ID of Incident associated with this Call (if any)")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", null=True, on_delete="SET NULL",
                           help_text="ID of User who initiated this Call (if any)")
    alertId = IdField(null=True, help_text="ID of Alert associated with this Call (if any)")
    monitorId = IdField(null=True, help_text="ID of Monitor associated with this Call (if any)")
    scheduledMaintenanceId = IdField(null=True, help_text="ID of Scheduled Maintenance associated with this Call (if any)")
    statusPageId = IdField(null=True, help_text="ID of Status Page associated with this Call (if any)")
    statusPageAnnouncementId = IdField(null=True,
                                       help_text="ID of Status Page Announcement associated with this Call (if any)")
    onCallDutyPolicyId = IdField(null=True, help_text="ID of On-Call Duty Policy associated with this Call (if any)")
    onCallDutyPolicyEscalationRuleId = IdField(
        null=True, help_text="ID of On-Call Duty Policy Escalation Rule associated with this Call (if any)")
    onCallDutyPolicyScheduleId = IdField(
        null=True, help_text="ID of On-Call Duty Policy Schedule associated with this Call (if any)")
    teamId = IdField(null=True, help_text="ID of Team associated with this Call (if any)")

    class Meta:
        indexes = (
            (("project", "createdAt"), False),
            (("project", "status", "createdAt"), False),
        )


# -- the contact center (the calls API of ivr/core/contact_center) -----------------------------


class OutboundPhoneNumber(ProjectScoped):
    phoneNumber = PhoneField(help_text="The number (E.164) a contact-center call shows to the end user it calls")
    name = CharField(max_length=200, null=True, help_text="What the number is for, e.g. Sales US")
    isDefault = BooleanField(default=False, help_text="Used when a call names no outbound number; at most one "
                                                      "number of a project is the default (setting one unsets "
                                                      "the others)")

    class Meta:
        indexes = ((("project", "phoneNumber"), True),)


class CallMenu(Numbered, ProjectScoped):
    numericId = NumericIdField()
    name = CharField(max_length=200, help_text="Name of the menu (what the caller selects)")
    parent = ForeignKeyField("self", column_name="parentId", object_id_name="parentId", null=True,
                             on_delete="RESTRICT", backref="children",
                             help_text="ID of the parent menu; none for a root menu")
    position = IntegerField(default=0, help_text="Position among its siblings, from 0: the key that selects it is "
                                                 "position + 1")
    menuType = EnumField(cc.MenuType, default=cc.MenuType.IVR.value,
                         help_text="ivr_menu (phone), mobile_menu or web_menu; a child has its parent's type")
    outputMessage = LongTextField(null=True, help_text="What the menu says when it is reached")
    languages = JSONField(default=lambda: ["en"], help_text="The languages of the menu (ISO 639-1 codes); a call "
                                                           "in another language is refused")
    state = EnumField(cc.MenuState, default=cc.MenuState.OPEN.value,
                      help_text="open, after_hours or manual_redirection. With openingHours, an open menu is "
                                "after_hours outside them by itself")
    timeZone = CharField(max_length=64, default="UTC", help_text="IANA time zone of openingHours")
    openingHours = JSONField(default=list, help_text="When the menu is open (empty: always), in timeZone: windows "
                                                     "in the format of a schedule layer's restrictionTimes, e.g. "
                                                     '[{"type": "Daily", "startTime": "09:00", "endTime": "17:00", '
                                                     '"days": ["Monday", "Tuesday"]}]')
    redirectionNumber = PhoneField(null=True, help_text="Where calls go in manual_redirection (E.164)")
    redirectionMenu = ForeignKeyField("self", column_name="redirectionMenuId", object_id_name="redirectionMenuId",
                                      null=True, on_delete="SET NULL", backref="redirected_from",
                                      help_text="The menu calls go to in manual_redirection (instead of a number)")
    routingPhoneNumber = PhoneField(null=True, unique=True,
                                    help_text="The number callers dial to reach this menu (root IVR menus only)")
    incomingCallPolicy = ForeignKeyField(IncomingCallPolicy, column_name="incomingCallPolicyId",
                                         object_id_name="incomingCallPolicyId", null=True, on_delete="RESTRICT",
                                         help_text="A leaf's target: the Incoming Call Policy the call is handed "
                                                   "to (instead of the menu's queue of agents)")
    offerType = EnumField(cc.OfferType, default=cc.OfferType.MULTICAST.value,
                          help_text="How the queue offers a call: multicast (all agents at once) or cascade "
                                    "(group by group)")
    cascadeGroupDelaySeconds = IntegerField(default=30, help_text="Cascade: seconds before the next group is added")
    recordingOption = EnumField(cc.RecordingOption, default=cc.RecordingOption.NEVER.value,
                                help_text="never, always, or ask (recorded only if the call's "
                                          "recording_permission is recording_permission_granted)")
    outboundPhoneNumber = ForeignKeyField(OutboundPhoneNumber, column_name="outboundPhoneNumberId",
                                          object_id_name="outboundPhoneNumberId", null=True, on_delete="SET NULL",
                                          help_text="The number the queue's calls show (else the default one)")
    hidden = BooleanField(default=False, help_text="Hidden from callers (not offered in the walk)")
    noAgentDeflection = EnumField(cc.MenuDeflection, default=cc.MenuDeflection.VOICEMAIL.value,
                                  help_text="A queue: where a caller goes whom no agent took within maxWaitSeconds "
                                            "(or when no agent is available): voicemail, message or scheduled_call "
                                            "(called back after callbackDelaySeconds)")
    afterHoursDeflection = EnumField(cc.MenuDeflection, default=cc.MenuDeflection.VOICEMAIL.value,
                                     help_text="Where a caller goes who reaches this menu after hours: voicemail, "
                                               "message or scheduled_call")
    deflectionMessage = LongTextField(null=True, help_text="Said to a deflected caller (before the voicemail beep, "
                                                           "or as the message before goodbye)")
    maxWaitSeconds = IntegerField(default=120, help_text="A queue: seconds a caller waits for an agent before "
                                                         "being deflected")
    voicemailMaxSeconds = IntegerField(default=120, help_text="The longest voicemail recorded, in seconds")
    callbackDelaySeconds = IntegerField(default=900, help_text="A caller deflected to scheduled_call is called back "
                                                               "this many seconds later")

    class Meta:
        indexes = ((("parent", "position"), False),)


class CallMenuAgent(ProjectScoped):
    callMenu = ForeignKeyField(CallMenu, column_name="callMenuId", object_id_name="callMenuId", on_delete="CASCADE",
                               help_text="ID of the menu whose queue the agent answers")
    user = ForeignKeyField(User, column_name="userId", object_id_name="userId", on_delete="CASCADE",
                           help_text="ID of the agent (a user with isAgent)")
    groupNumber = IntegerField(default=1, help_text="Cascade group of the agent in this queue, from 1")

    class Meta:
        indexes = ((("callMenu", "user"), True),)


class EndUser(Numbered, ProjectScoped):
    numericId = NumericIdField()
    identifier = CharField(max_length=200, null=True, help_text="The end user's identifier in your systems")
    phoneNumber = PhoneField(null=True, help_text="The end user's phone number (E.164)")
    outContactId = CharField(max_length=200, null=True, help_text="The end user's contact id in the CRM")
    name = CharField(max_length=200, null=True, help_text="Name of the end user")

    class Meta:
        indexes = ((("project", "phoneNumber"), False),)


class CrmTicket(ProjectScoped):
    ticketId = CharField(max_length=200, help_text="The ticket's id in the CRM (the calls API's ticket_id)")
    endUser = ForeignKeyField(EndUser, column_name="endUserId", object_id_name="endUserId", on_delete="CASCADE",
                              help_text="The end user the ticket belongs to: a call for the ticket dials them")
    url = CharField(max_length=1000, null=True, help_text="The ticket's URL in the CRM (out_ticket_url)")

    class Meta:
        indexes = ((("project", "ticketId"), True),)


class ContactCenterCall(Numbered, ProjectScoped):
    """A call of the calls API. Shown by ``api/ccai.py`` in the seed's shape; written by the API (its
    creation) and by the call services (what happens)."""

    numericId = NumericIdField()
    callType = CharField(max_length=32)
    status = EnumField(cc.CallStatus)
    lang = CharField(max_length=8, default="en")
    parentCallId = IdField(null=True)
    menu = ForeignKeyField(CallMenu, column_name="callMenuId", object_id_name="callMenuId", null=True,
                           on_delete="SET NULL")
    agentId = IdField(null=True)              # the user assigned
    endUser = ForeignKeyField(EndUser, column_name="endUserId", object_id_name="endUserId", null=True,
                              on_delete="SET NULL")
    endUserNumber = PhoneField(null=True)     # E.164 that is dialed
    outboundNumber = PhoneField(null=True)    # E.164 shown to the end user; null until chosen
    outboundChoices = JSONField(default=list)  # E.164 numbers the agent chooses from on the keypad (202)
    ticketId = CharField(max_length=200, null=True)
    ticketUrl = CharField(max_length=1000, null=True)
    queuedAt = DateTimeField(null=True)
    assignedAt = DateTimeField(null=True)
    connectedAt = DateTimeField(null=True)
    endsAt = DateTimeField(null=True)
    scheduledAt = DateTimeField(null=True)
    waitDuration = IntegerField(default=0)    # seconds
    callDuration = IntegerField(default=0)
    holdDuration = IntegerField(default=0)
    recordingPermission = EnumField(cc.RecordingPermission, default=cc.RecordingPermission.NOT_ASKED.value)
    recordRequested = BooleanField(default=False)  # the menu/queue's option and the permission say: record
    recordingFile = CharField(max_length=500, null=True)  # name under the recordings directory, once saved
    voicemailReason = EnumField(cc.VoicemailReason, default=cc.VoicemailReason.NOT_VOICEMAIL.value)
    deflection = EnumField(cc.Deflection, default=cc.Deflection.NO_DEFLECTION.value)
    disconnectedBy = EnumField(cc.DisconnectedBy, default=cc.DisconnectedBy.UNKNOWN.value)
    failReason = EnumField(cc.FailReason, default=cc.FailReason.NOTHING.value, max_length=40)
    failDetails = LongTextField(null=True)
    supportNumber = PhoneField(null=True)
    offerType = EnumField(cc.OfferType, null=True)
    offerEvents = JSONField(default=list)     # [{"casting_time": ISO, "group": "Group 1"}]
    answerType = CharField(max_length=16, default=cc.AnswerType.MANUAL.value)
    voipProvider = CharField(max_length=32, default=cc.VOIP_PROVIDER_ASTERISK)
    verifiedCustomer = BooleanField(default=False)
    badActor = BooleanField(default=False)
    repeatCustomer = BooleanField(default=False)
    rating = IntegerField(null=True)
    hasFeedback = BooleanField(default=False)
    incomingCallLogId = IdField(null=True)    # a leaf handing the call to an Incoming Call Policy
    channelPrefix = CharField(max_length=64, null=True)  # the call's channel ids start so (reconciliation)

    class Meta:
        indexes = (
            (("project", "createdAt"), False),
            (("project", "status", "createdAt"), False),
            (("agentId", "status"), False),
            (("status", "scheduledAt"), False),   # the scheduled calls due (ivr/store/scheduled.py)
        )


class ContactCenterParticipant(Numbered, ProjectScoped):
    numericId = NumericIdField()
    call = ForeignKeyField(ContactCenterCall, column_name="callId", object_id_name="callId", on_delete="CASCADE")
    type = EnumField(cc.ParticipantType)
    status = EnumField(cc.ParticipantStatus, default=cc.ParticipantStatus.WAITING.value)
    userId = IdField(null=True)
    endUser = ForeignKeyField(EndUser, column_name="endUserId", object_id_name="endUserId", null=True,
                              on_delete="SET NULL")
    address = CharField(max_length=255, null=True)   # the number or SIP URI rung
    channelId = CharField(max_length=128, null=True)
    callDuration = IntegerField(null=True)
    holdDuration = IntegerField(null=True)
    connectedAt = DateTimeField(null=True)
    endedAt = DateTimeField(null=True)
    failReason = EnumField(cc.FailReason, default=cc.FailReason.NOTHING.value, max_length=40)

    class Meta:
        indexes = ((("call", "type"), False),)


class OutboxMessage(BaseModel):
    """Work handed from one process to another through the database (ivr/store/outbox.py): a
    notification call to place, an acknowledgement to deliver to the webhook. Never exposed by the API."""

    kind = CharField(max_length=32)
    payload = JSONField(default=dict)
    availableAt = DateTimeField(default=utcnow)   # not to be taken before
    attempts = IntegerField(default=0)
    leaseUntil = DateTimeField(null=True)         # taken by a worker until then
    lastError = TextField(null=True)

    class Meta:
        indexes = ((("kind", "availableAt"), False),)


MODELS = (
    Project, User, UserIncomingCallNumber, UserIncomingCallNumberVerification, VerificationGuard, Team, TeamMember,
    Label, ApiKey,
    OnCallDutyPolicySchedule, OnCallDutyPolicyScheduleLayer, OnCallDutyPolicyScheduleLayerUser,
    OnCallDutyPolicyScheduleOverride,
    ProjectCallSMSConfig, IncomingCallPolicy, IncomingCallPolicyLabel, IncomingCallPolicyEscalationRule,
    IncomingCallLog, IncomingCallLogItem, CallLog, OutboxMessage, NumberSequence,
    OutboundPhoneNumber, CallMenu, CallMenuAgent, EndUser, CrmTicket, ContactCenterCall, ContactCenterParticipant,
)
