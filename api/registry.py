"""Every resource the API serves: the single list the routes and the OpenAPI document are built from."""

from __future__ import annotations

from api.call_sms_config import ProjectCallSMSConfigRules
from api.contact_center_rules import (
    CallMenuAgentRules,
    CallMenuRules,
    CrmTicketRules,
    EndUserRules,
    OutboundPhoneNumberRules,
)
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
        id_relations={"projectCallSMSConfigId": ("projectCallSMSConfig", m.ProjectCallSMSConfig)},
    )
    schema.relations["labels"] = _policy_labels
    schema.relations["projectCallSMSConfig"].description = (
        "Optional project-level Twilio configuration. If set, uses this config instead of global config and "
        "billing does not apply.")
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
        "user", "User", "The people of a project: who can be rung. With isAgent, a user is also a contact-center agent "
        "(agentNumber, canMakeOutboundCalls, agentAvailability, avatarUrl); numericId is their id in the calls API.",
        register_schema(build_schema(m.User, required={"name"}, read_only={"numericId"})), UserRules(),
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
    Resource(
        "project-call-sms-config", "Project Call SMS Config",
        "A project's own Twilio account: the Incoming Call Policies that name it (projectCallSMSConfigId) take "
        "their calls and numbers through it instead of the global account. twilioAuthToken is write-only: "
        "stored encrypted (twilio.encryption_key), never returned",
        register_schema(build_schema(
            m.ProjectCallSMSConfig, write_only={"twilioAuthToken"},
            required={"name", "twilioAccountSID", "twilioAuthToken", "twilioPrimaryPhoneNumber"})),
        ProjectCallSMSConfigRules(),
    ),
    # -- the contact center's configuration (the calls API, api/ccai.py, reads it) --------------------
    Resource(
        "outbound-phone-number", "Outbound Phone Number",
        "The numbers (E.164) a contact-center call may show to the end user it calls; at most one is the "
        "project's default (setting isDefault unsets the others)",
        register_schema(build_schema(m.OutboundPhoneNumber, required={"phoneNumber"})),
        OutboundPhoneNumberRules(),
    ),
    Resource(
        "call-menu", "Call Menu",
        "The contact center's menu tree: a root IVR menu is reached on its routing phone number; a caller walks "
        "down by keys (position + 1); a leaf hands the call to its queue of agents (Call Menu Agent) or to an "
        "Incoming Call Policy. A child has its parent's menuType; a menu with children cannot be deleted",
        register_schema(build_schema(m.CallMenu, required={"name"}, read_only={"numericId"})),
        CallMenuRules(),
    ),
    Resource(
        "call-menu-agent", "Call Menu Agent",
        "The agents of a menu's queue (users with isAgent), each in a cascade group (groupNumber, from 1)",
        register_schema(build_schema(m.CallMenuAgent, create_only={"callMenuId", "userId"},
                                     required={"callMenuId", "userId"})),
        CallMenuAgentRules(),
    ),
    Resource(
        "end-user", "End User",
        "The people the contact center calls or is called by (customers): a phone number (E.164) and their ids "
        "in your systems; numericId is their id in the calls API",
        register_schema(build_schema(m.EndUser, read_only={"numericId"})),
        EndUserRules(),
    ),
    Resource(
        "crm-ticket", "CRM Ticket",
        "Tickets of your CRM, each belonging to an end user: a call for a ticket dials its end user. ticketId is "
        "unique in a project",
        register_schema(build_schema(m.CrmTicket, required={"ticketId", "endUserId"})),
        CrmTicketRules(),
    ),
]

BY_PATH = {r.path: r for r in RESOURCES}
for _resource in RESOURCES:  # how messages name the objects a reference points at
    SCHEMA_TITLES.setdefault(_resource.model, _resource.title)
