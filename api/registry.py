"""Every resource the API serves: the single list the routes and the OpenAPI document are built from."""

from __future__ import annotations

from api.domain import (
    EscalationRuleRules,
    IncomingCallNumberRules,
    LayerRules,
    LayerUserRules,
    NamedRules,
    OverrideRules,
    PolicyRules,
    ScheduleRules,
    TeamMemberRules,
    UserRules,
)
from api.resources import SCHEMA_TITLES, Resource, register_schema
from api.schema import Relation, build_schema
from ivr.store import models as m

register_schema(build_schema(m.Project))

_policy_labels = Relation(
    "labels", m.Label, many=True, through=m.IncomingCallPolicyLabel,
    through_source=m.IncomingCallPolicyLabel.incomingCallPolicy,
    through_target=m.IncomingCallPolicyLabel.label,
    description="Relation to Labels Array where this object is categorized in.",
)


def _policy_schema():
    schema = build_schema(
        m.IncomingCallPolicy,
        read_only={"slug"},
        required={"name"},
    )
    schema.relations["labels"] = _policy_labels
    return register_schema(schema)


RESOURCES: list[Resource] = [
    Resource(
        "incoming-call-policy", "Incoming Call Policy",
        "Manage incoming call routing policies with escalation rules for on-call teams",
        _policy_schema(), PolicyRules(), extra_writable={"labels": _policy_labels},
    ),
    Resource(
        "incoming-call-policy-escalation-rule", "Incoming Call Policy Escalation Rule",
        "The ordered escalation rules of an Incoming Call Policy: who is rung, and for how long.",
        register_schema(build_schema(
            m.IncomingCallPolicyEscalationRule,
            create_only={"incomingCallPolicyId"},
            required={"incomingCallPolicyId"},
        )),
        EscalationRuleRules(),
    ),
    Resource(
        "incoming-call-log", "Incoming Call Log",
        "Parent log for each incoming call instance. Groups all escalation attempts together.",
        register_schema(build_schema(
            m.IncomingCallLog,
            id_relations={"incomingCallPolicyId": ("incomingCallPolicy", m.IncomingCallPolicy),
                          "answeredByUserId": ("answeredByUser", m.User)},
        )),
        writable=False,
    ),
    Resource(
        "incoming-call-log-item", "Incoming Call Log Item",
        "One ring attempt of an incoming call: which rule rang which user's number, and what happened.",
        register_schema(build_schema(
            m.IncomingCallLogItem,
            id_relations={"userId": ("user", m.User),
                          "incomingCallPolicyEscalationRuleId": ("incomingCallPolicyEscalationRule",
                                                                 m.IncomingCallPolicyEscalationRule)},
        )),
        writable=False,
    ),
    Resource(
        "call-log", "Call Log",
        "Logs of all the Call sent out to all users and subscribers for this project.",
        register_schema(build_schema(m.CallLog, id_relations={"teamId": ("team", m.Team)})),
        writable=False,
    ),
    Resource(
        "user", "User", "The people of a project: who can be rung.",
        register_schema(build_schema(m.User, required={"name"})), UserRules(),
    ),
    Resource(
        "user-incoming-call-number", "User Incoming Call Number",
        "The numbers (E.164 phone numbers or SIP URIs) on which a user can be rung. Only verified numbers ring.",
        register_schema(build_schema(m.UserIncomingCallNumber, create_only={"userId"}, required={"userId"})),
        IncomingCallNumberRules(),
    ),
    Resource(
        "team", "Team", "Teams of users; an escalation rule targeting a team rings all its members at once.",
        register_schema(build_schema(m.Team, required={"name"})), NamedRules(),
    ),
    Resource(
        "team-member", "Team Member", "Membership of a user in a team.",
        register_schema(build_schema(m.TeamMember, create_only={"teamId", "userId"},
                                     required={"teamId", "userId"})),
        TeamMemberRules(),
    ),
    Resource(
        "label", "Label", "Labels to categorize policies.",
        register_schema(build_schema(m.Label, required={"name"})), NamedRules(),
    ),
    Resource(
        "on-call-duty-policy-schedule", "On-Call Duty Policy Schedule",
        "On-call schedules: layers of rotations, and overrides, that say who is on call at any moment "
        "(GET .../{id}/on-call). An escalation rule targeting a schedule rings whoever is on call.",
        register_schema(build_schema(m.OnCallDutyPolicySchedule, required={"name"})), ScheduleRules(),
    ),
    Resource(
        "on-call-duty-policy-schedule-layer", "On-Call Duty Policy Schedule Layer",
        "The ordered layers of a schedule: users taking turns in shifts of N hours, days or weeks, handing off "
        "at a local time, optionally only within restriction windows. A later layer wins over an earlier one.",
        register_schema(build_schema(m.OnCallDutyPolicyScheduleLayer, create_only={"onCallDutyPolicyScheduleId"},
                                     required={"onCallDutyPolicyScheduleId", "startsAt"})),
        LayerRules(),
    ),
    Resource(
        "on-call-duty-policy-schedule-layer-user", "On-Call Duty Policy Schedule Layer User",
        "The users of a layer, in rotation order.",
        register_schema(build_schema(m.OnCallDutyPolicyScheduleLayerUser,
                                     create_only={"onCallDutyPolicyScheduleLayerId"},
                                     required={"onCallDutyPolicyScheduleLayerId", "userId"})),
        LayerUserRules(),
    ),
    Resource(
        "on-call-duty-policy-schedule-override", "On-Call Duty Policy Schedule Override",
        "Overrides of a schedule (swaps, sick days): a user on call from a start to an end, whatever the layers say.",
        register_schema(build_schema(m.OnCallDutyPolicyScheduleOverride, create_only={"onCallDutyPolicyScheduleId"},
                                     required={"onCallDutyPolicyScheduleId", "userId", "startsAt", "endsAt"})),
        OverrideRules(),
    ),
]

BY_PATH = {r.path: r for r in RESOURCES}
for _resource in RESOURCES:  # how messages name the objects a reference points at
    SCHEMA_TITLES.setdefault(_resource.model, _resource.title)
