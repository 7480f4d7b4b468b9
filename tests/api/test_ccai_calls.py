"""The calls API (``/apps/api/v1/calls``, seed ``ccai-calls-api.txt``), on SQLite and PostgreSQL.

Every request and response example of the seed is here (the same fields and shapes, each error's
exact message and status); then what the seed leaves to us: the order of the checks, HTTP Basic,
permissions, isolation, the outbox message of an outbound call, the 202 keypad choice, lists,
customer flags, recordings, and two requests racing for one agent.

The configuration rows (agents, menus, end users, tickets, outbound numbers) are written with the
models, as the calls API only reads them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import secrets
import uuid
from dataclasses import dataclass, field

import pytest

from api.app import create_app
from ivr.core.contact_center.vocabulary import RecordingOption
from ivr.store import models as m
from ivr.store.contact_center import INBOUND_CALL, OUTBOUND_CALL, list_calls, CallFilter
from ivr.store.db import open_database
from tests.api.conftest import ApiClient
from tests.api.factories import unique_phone

CALLS = "/apps/api/v1/calls"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

#: The call object's fields, in the seed's order (its example object, with deflection_details, offer_type,
#: offer_events, answer_type and outbound_number from its example responses), then Hotline's one addition:
#: incoming_call_log_id (the log of the policy a menu's leaf handed the call to).
CALL_KEYS = [
    "id", "parent_id", "lang", "call_type", "status", "created_at", "queued_at", "assigned_at", "connected_at",
    "ends_at", "scheduled_at", "wait_duration", "call_duration", "hold_duration", "rating", "has_feedback",
    "voip_provider", "out_ticket_id", "out_ticket_url", "verified", "recording_url", "recording_permission",
    "voicemail_reason", "deflection", "disconnected_by", "fail_reason", "fail_details", "support_number",
    "selected_menu", "menu_path", "agent_info", "end_user", "photos", "videos", "transfers", "deflection_details",
    "participants", "offer_type", "offer_events", "answer_type", "outbound_number", "incoming_call_log_id",
]
PARTICIPANT_KEYS = ["id", "type", "status", "call_id", "user_id", "end_user_id", "call_duration", "hold_duration",
                    "connected_at", "ended_at", "fail_reason"]
FUTURE = "2999-09-15T00:19:14.421Z"


# -- the world of the seed's examples --------------------------------------------------------------


@dataclass
class Center:
    """A project with the seed's agents, outbound numbers, menus, end users and tickets."""

    api: ApiClient
    project_id: str
    keys: dict[str, str]
    rows: dict[str, object] = field(default_factory=dict)

    def auth(self, key: str | None = None, project_id: str | None = None) -> dict[str, str]:
        user = project_id or self.project_id
        token = base64.b64encode(f"{user}:{key or self.keys['owner']}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def request(self, method: str, path: str, body=None, *, params=None, key=None, headers=None,
                      expect: int | None = None, raw: bytes | None = None):
        all_headers = {**self.auth(key), **(headers or {})}
        kwargs = {"data": raw, "headers": {**all_headers, "Content-Type": "application/json"}} if raw is not None \
            else {"json": body, "headers": all_headers}
        resp = await self.api.client.request(method, path, params=params, **kwargs)
        payload = await resp.json(content_type=None)
        if expect is not None:
            assert resp.status == expect, f"{method} {path} -> {resp.status} {payload}"
        return resp, payload

    async def post(self, body, expect: int | None = None, **kw):
        resp, payload = await self.request("POST", CALLS, body, expect=expect, **kw)
        return payload if expect is not None else (resp.status, payload)

    async def refused(self, body, message: str, status: int = 400, **kw):
        got_status, payload = await self.post(body, **kw)
        assert (got_status, payload) == (status, {"message": message})

    async def get(self, path: str, expect: int = 200, **kw):
        resp, payload = await self.request("GET", path, expect=expect, **kw)
        return payload

    def run(self, fn, *args):
        return self.api.db.run(fn, *args)

    def __getitem__(self, name):
        return self.rows[name]


def _agent(project, name, email, *, verified=True, **fields) -> m.User:
    user = m.User.create(project=project, name=name, email=email, isAgent=True, **fields)
    m.UserIncomingCallNumber.create(project=project, user=user.id, phoneNumber=unique_phone(), isVerified=verified)
    return user


def _world(project_id: str) -> dict:
    p = uuid.UUID(project_id)
    rows: dict[str, object] = {}
    rows["admin"] = _agent(p, "Admin UJET", "admin@somedomain.com", avatarUrl="https://somedomain.com/avatar.jpg")
    rows["allen"] = _agent(p, "Allen Smith", "allen@somedomain.com")
    rows["busy_agent"] = _agent(p, "Agent Busy", "agent@somedomain.com", agentAvailability="Unavailable")
    rows["not_agent"] = m.User.create(project=p, name="Not Anagent", email="nobody@somedomain.com")
    rows["default_number"] = m.OutboundPhoneNumber.create(project=p, phoneNumber="+13392195276", isDefault=True)
    rows["other_number"] = m.OutboundPhoneNumber.create(project=p, phoneNumber="+17604108538")
    rows["contact"] = m.EndUser.create(project=p, phoneNumber="+18596579625", outContactId="381630957514")
    rows["ticket"] = m.CrmTicket.create(project=p, ticketId="71450", endUser=rows["contact"].id,
                                        url="https://crm.example.com/tickets/71450")
    rows["ticket_76517"] = m.CrmTicket.create(project=p, ticketId="76517", endUser=rows["contact"].id)
    rows["phoneless"] = m.EndUser.create(project=p, outContactId="no-phone")
    rows["ticket_phoneless"] = m.CrmTicket.create(project=p, ticketId="5", endUser=rows["phoneless"].id)
    rows["lock_star"] = m.CallMenu.create(project=p, name="Lock Star", outputMessage="You selected Lock Star.",
                                          menuType="ivr_menu", offerType="cascade")
    rows["mobile"] = m.CallMenu.create(project=p, name="Lock Star App", outputMessage="You selected Lock Star.",
                                       menuType="mobile_menu", offerType="cascade")
    rows["web"] = m.CallMenu.create(project=p, name="Web", menuType="web_menu")
    rows["redirected"] = m.CallMenu.create(project=p, name="Redirected", state="manual_redirection")
    rows["mobile_redirected"] = m.CallMenu.create(project=p, name="Redirected app", menuType="mobile_menu",
                                                  state="manual_redirection")
    rows["closed"] = m.CallMenu.create(project=p, name="Closed", state="after_hours")
    rows["mobile_closed"] = m.CallMenu.create(project=p, name="Closed app", menuType="mobile_menu",
                                              state="after_hours")
    # Opening hours that never contain now: open by its state, after hours by the clock.
    weekday = dt.datetime.now(dt.timezone.utc).strftime("%A")
    other_days = [d for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
                  if d != weekday]
    rows["out_of_hours"] = m.CallMenu.create(project=p, name="Office hours", openingHours=[
        {"type": "Daily", "startTime": "00:00", "endTime": "23:59", "days": other_days[:1]}])
    return rows


async def center(api: ApiClient, name: str = "Contact center") -> Center:
    tenant = await api.tenant(name)
    c = Center(api, tenant.project_id, dict(tenant.keys))
    c.rows = await api.db.run(_world, tenant.project_id)
    return c


@pytest.fixture
async def cc(api) -> Center:
    return await center(api)


async def call_row(c: Center, numeric_id: int) -> m.ContactCenterCall:
    return await c.run(lambda: m.ContactCenterCall.get(m.ContactCenterCall.project == uuid.UUID(c.project_id),
                                                       m.ContactCenterCall.numericId == numeric_id))


async def outbox_messages(c: Center, call_id: uuid.UUID, kind: str = OUTBOUND_CALL) -> list[m.OutboxMessage]:
    def find():
        return [msg for msg in m.OutboxMessage.select().where(m.OutboxMessage.kind == kind)
                if msg.payload.get("call") == str(call_id)]
    return await c.run(find)


def assert_shape(call: dict) -> None:
    assert list(call) == CALL_KEYS
    for participant in call["participants"]:
        assert list(participant) == PARTICIPANT_KEYS
        assert participant["call_id"] == call["id"]
    assert ISO_MS.match(call["created_at"])
    for name in ("queued_at", "assigned_at", "connected_at", "ends_at", "scheduled_at"):
        assert call[name] is None or ISO_MS.match(call[name]), (name, call[name])


# -- outbound calls: the seed's examples ---------------------------------------------------------------


async def test_create_an_outbound_call_with_end_user_number(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625", "outbound_number": "+1 339-219-5276", "lang": "en"}
    call = await cc.post({**body, "end_user_number": "+1 859-657-9999"}, expect=201)  # a number no end user has
    assert_shape(call)
    admin = cc["admin"]
    agent_part, user_part = call["participants"]
    assert call == {
        "id": call["id"], "parent_id": None, "lang": "en", "call_type": "Voice Outbound (API)",
        "status": "assigned", "created_at": call["created_at"], "queued_at": None,
        "assigned_at": call["assigned_at"], "connected_at": None, "ends_at": None, "scheduled_at": None,
        "wait_duration": 0, "call_duration": 0, "hold_duration": 0, "rating": None, "has_feedback": False,
        "voip_provider": "voip_provider_asterisk", "out_ticket_id": None, "out_ticket_url": None,
        "verified": False, "recording_url": None, "recording_permission": "not_asked",
        "voicemail_reason": "not_voicemail", "deflection": "no_deflection",
        "disconnected_by": "disconnected_by_unknown", "fail_reason": "nothing", "fail_details": None,
        "support_number": None, "selected_menu": None, "menu_path": None,
        "agent_info": {"id": admin.numericId, "agent_number": None, "name": "Admin UJET", "last_name": "UJET",
                       "first_name": "Admin", "avatar_url": "https://somedomain.com/avatar.jpg"},
        "end_user": None, "photos": [], "videos": [], "transfers": [], "deflection_details": [],
        "participants": [
            {"id": agent_part["id"], "type": "agent", "status": "waiting", "call_id": call["id"],
             "user_id": admin.numericId, "end_user_id": None, "call_duration": None, "hold_duration": None,
             "connected_at": None, "ended_at": None, "fail_reason": "nothing"},
            {"id": user_part["id"], "type": "end_user", "status": "waiting", "call_id": call["id"],
             "user_id": None, "end_user_id": None, "call_duration": None, "hold_duration": None,
             "connected_at": None, "ended_at": None, "fail_reason": "nothing"},
        ],
        "offer_type": None, "offer_events": [], "answer_type": "manual", "outbound_number": "+1 339-219-5276",
        "incoming_call_log_id": None,
    }
    assert isinstance(call["id"], int) and user_part["id"] == agent_part["id"] + 1
    assert call["created_at"] <= call["assigned_at"]
    # The end user of that number, when the project has one, is the call's.
    second = await cc.post({**body, "agent_email": "allen@somedomain.com"}, expect=201)
    contact = cc["contact"]
    assert second["end_user"] == {"id": contact.numericId, "identifier": None, "out_contact_id": "381630957514"}
    assert second["participants"][1]["end_user_id"] == contact.numericId


async def test_an_outbound_call_is_stored_and_queued_once_for_the_call_services(cc):
    call = await cc.post({"call_type": "OutboundCall", "agent_email": "ADMIN@somedomain.com",
                          "end_user_number": "(859) 657-9625", "recording_permission": "recording_permission_granted"},
                         expect=201)
    row = await call_row(cc, call["id"])
    assert (row.callType, row.status, row.agentId, row.endUserNumber, row.outboundNumber, row.outboundChoices,
            row.voipProvider, row.recordingPermission) == (
        "Voice Outbound (API)", "assigned", cc["admin"].id, "+18596579625", "+13392195276", [],
        "voip_provider_asterisk", "recording_permission_granted")
    messages = await outbox_messages(cc, row.id)
    assert [(msg.kind, msg.payload) for msg in messages] == [(OUTBOUND_CALL, {"call": str(row.id)})]
    participants = await cc.run(lambda: list(m.ContactCenterParticipant.select().where(
        m.ContactCenterParticipant.call == row.id).order_by(m.ContactCenterParticipant.numericId)))
    number = await cc.run(lambda: m.UserIncomingCallNumber.get(m.UserIncomingCallNumber.user == cc["admin"].id))
    assert [(p.type, p.status, p.userId, p.endUserId, p.address) for p in participants] == [
        ("agent", "waiting", cc["admin"].id, None, number.phoneNumber),
        ("end_user", "waiting", None, cc["contact"].id, "+18596579625")]


async def test_create_an_outbound_call_with_ticket_id(cc):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
                          "ticket_id": "71450", "outbound_number": "+1 339-219-5276", "lang": "en"}, expect=201)
    assert_shape(call)
    contact = cc["contact"]
    assert (call["status"], call["out_ticket_id"], call["out_ticket_url"]) == (
        "assigned", "71450", "https://crm.example.com/tickets/71450")
    assert call["end_user"] == {"id": contact.numericId, "identifier": None, "out_contact_id": "381630957514"}
    assert [(p["type"], p["user_id"], p["end_user_id"]) for p in call["participants"]] == [
        ("agent", cc["admin"].numericId, None), ("end_user", None, contact.numericId)]
    assert call["outbound_number"] == "+1 339-219-5276"
    row = await call_row(cc, call["id"])
    assert row.endUserNumber == "+18596579625" and row.endUserId == contact.id
    # An integer ticket id names the same ticket; the ticket wins over end_user_number.
    again = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                           "ticket_id": 71450, "end_user_number": "+1 760-867-5309"}, expect=201)
    assert (await call_row(cc, again["id"])).endUserNumber == "+18596579625"


async def test_error_agent_is_not_available_to_take_this_call(cc):
    await cc.refused({"call_type": "Voice Outbound (API)", "agent_email": "agent@somedomain.com",
                      "end_user_number": "+1 205-123-4567", "lang": "en"}, "Agent is not available to take this call")


async def test_an_agent_on_a_call_or_without_a_verified_number_is_not_available(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    await cc.post(body, expect=201)
    await cc.refused(body, "Agent is not available to take this call")  # busy: assigned to the first call
    unverified = await cc.run(_agent, uuid.UUID(cc.project_id), "No Number", "nonumber@somedomain.com")
    await cc.run(lambda: m.UserIncomingCallNumber.update(isVerified=False).where(
        m.UserIncomingCallNumber.user == unverified.id).execute())
    await cc.refused({**body, "agent_email": "nonumber@somedomain.com"}, "Agent is not available to take this call")
    # The first call over, the agent is available again.
    await cc.run(lambda: m.ContactCenterCall.update(status="finished").where(
        m.ContactCenterCall.agentId == cc["admin"].id).execute())
    await cc.post(body, expect=201)


async def test_error_ticket_id_or_end_user_number_required(cc):
    await cc.refused({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com", "lang": "en"},
                     "ticket_id or end_user_number required")


async def test_error_not_a_valid_agent_email(cc):
    body = {"call_type": "Voice Outbound (API)", "end_user_number": "+1 205-123-4567", "lang": "en"}
    for email in ("nobody@somedomain.com", "stranger@example.com", 42, ["admin@somedomain.com"], "x\x00y",
                  "a" * 300):
        await cc.refused({**body, "agent_email": email}, "Not a valid agent email")


async def test_error_agent_email_required(cc):
    await cc.refused({"call_type": "Voice Outbound (API)", "end_user_number": "+1 205-123-4567", "lang": "en"},
                     "Agent email required")
    await cc.refused({"call_type": "Voice Outbound (API)", "agent_email": "", "end_user_number": "+1 205-123-4567"},
                     "Agent email required")


async def test_error_agent_does_not_have_access_to_make_calls(cc):
    await cc.run(lambda: m.User.update(canMakeOutboundCalls=False).where(m.User.id == cc["allen"].id).execute())
    await cc.refused({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                      "end_user_number": "+1 205-123-4567", "lang": "en"}, "Agent does not have access to make calls")


async def test_error_end_user_number_is_not_well_formed(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
            "outbound_number": "+1 760-410-8538", "lang": "en"}
    for number in ("123123", "+1 205-123-4567", "", 8596579625, "x\x00"):
        await cc.refused({**body, "end_user_number": number}, "end_user_number is not well-formed")


async def test_premium_rate_numbers_are_never_called(cc):
    """Toll fraud: a key cannot make Hotline call a premium-rate or shared-cost number."""
    body = {"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com"}
    for number in ("+1 900-555-0199", "+44 909 879 0000", "+33 899 10 20 30"):
        await cc.refused({**body, "end_user_number": number},
                         "end_user_number is a premium-rate number: Hotline does not call those")


async def test_error_contact_not_found(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
            "outbound_number": "+1 760-410-8538", "lang": "en"}
    for ticket in (1, "1", "5", True, 1.5, {"id": 1}, "\x00"):  # "5": the ticket's end user has no phone
        await cc.refused({**body, "ticket_id": ticket}, "Contact not found")


async def test_outbound_number_errors(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    for number in ("123123", 17604108538, ""):
        await cc.refused({**body, "outbound_number": number}, "outbound_number is not well-formed")
    await cc.refused({**body, "outbound_number": "+1 760-867-5309"},
                     "outbound_number is not one of your outbound phone numbers")
    call = await cc.post({**body, "outbound_number": "(760) 410-8538"}, expect=201)
    assert call["outbound_number"] == "+1 760-410-8538"


async def test_outbound_language(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    await cc.refused({**body, "lang": "xy"}, "Language 'xy' is not found")
    await cc.refused({**body, "lang": 7}, "Language '7' is not found")
    call = await cc.post({**body, "lang": "fr"}, expect=201)
    assert call["lang"] == "fr"


async def test_error_invalid_call_type(cc):
    for call_type in ("InvalidCallType", "ScheduledCal", None, 3, ["OutboundCall"]):
        await cc.refused({"call_type": call_type, "agent_email": "allen@somedomain.com",
                          "outbound_number": "+1 760-410-8538", "end_user_number": "123123", "lang": "en"},
                         "Invalid call type")
    await cc.refused({"agent_email": "allen@somedomain.com"}, "Invalid call type")


async def test_the_first_problem_is_the_one_reported(cc):
    """A request with several problems gets the message of the first check, in the seed's order."""
    outbound = {"call_type": "Voice Outbound (API)"}
    cases = [
        ({"call_type": "Nope", "lang": "xy"}, "Invalid call type"),
        ({**outbound, "end_user_number": "123", "lang": "xy"}, "Agent email required"),
        ({**outbound, "agent_email": "nobody@somedomain.com", "end_user_number": "123"}, "Not a valid agent email"),
        ({**outbound, "agent_email": "agent@somedomain.com", "ticket_id": 1}, "Agent is not available to take this call"),
        ({**outbound, "agent_email": "allen@somedomain.com", "lang": "xy"}, "ticket_id or end_user_number required"),
        ({**outbound, "agent_email": "allen@somedomain.com", "ticket_id": 1, "end_user_number": "123"},
         "Contact not found"),
        ({**outbound, "agent_email": "allen@somedomain.com", "end_user_number": "123", "outbound_number": "1"},
         "end_user_number is not well-formed"),
        ({**outbound, "agent_email": "allen@somedomain.com", "end_user_number": "+18596579625",
          "outbound_number": "1", "lang": "xy"}, "outbound_number is not well-formed"),
        ({**outbound, "agent_email": "allen@somedomain.com", "end_user_number": "+18596579625", "lang": "xy",
          "recording_permission": "maybe"}, "Language 'xy' is not found"),
        ({**outbound, "agent_email": "allen@somedomain.com", "end_user_number": "+18596579625",
          "recording_permission": "maybe"}, "recording_permission is not valid"),
    ]
    inbound = {"call_type": "Voice Inbound (API)"}
    lock_star = cc["lock_star"].numericId
    cases += [
        ({**inbound, "menu_id": "menu_999", "lang": "xy"}, "menu_id is not well formed"),
        ({**inbound, "lang": "xy"}, "menu_id is required"),
        ({**inbound, "menu_id": 9999, "lang": "xy"}, "menu_id 9999 is not found"),
        ({**inbound, "menu_id": cc["web"].numericId, "lang": "xy"}, "Only IVR and mobile menu IDs are permitted"),
        ({**inbound, "menu_id": cc["redirected"].numericId, "lang": "xy"},
         "Menu is in 'manual redirection' state, can't accept calls"),
        ({**inbound, "menu_id": cc["closed"].numericId, "lang": "xy"},
         "Menu is in 'after hours' state, can't accept incoming calls"),
        ({**inbound, "menu_id": lock_star, "lang": "xy", "ticket_id": "nope"}, "Language 'xy' is not found"),
        ({**inbound, "menu_id": lock_star, "lang": "fr", "ticket_id": "nope"}, "Language 'fr' is not available"),
        ({**inbound, "menu_id": lock_star, "ticket_id": "nope"}, "Contact not found"),
        ({**inbound, "menu_id": lock_star, "recording_permission": "maybe"}, "end_user_number is required"),
        ({**inbound, "menu_id": lock_star, "end_user_number": "1", "recording_permission": "maybe"},
         "end_user_number is not well formed"),
    ]
    scheduled = {"call_type": "Voice Scheduled (API)", "menu_id": cc["mobile"].numericId,
                 "end_user_number": "+1 859-657-9625"}
    cases += [
        ({**scheduled, "call_id": 2_000_000_000}, "call_id 2000000000 is not found"),
        ({**scheduled, "scheduled_at": "soon"}, "scheduled_at is not well formed"),
        (scheduled, "scheduled_at is required"),
        ({**scheduled, "scheduled_at": "2001-01-01T00:00:00Z", "recording_permission": 1},
         "scheduled_at must be in the future"),
        ({**scheduled, "scheduled_at": FUTURE, "recording_permission": 1}, "recording_permission is not valid"),
    ]
    for body, message in cases:
        await cc.refused(body, message)


async def test_accepted_need_to_choose_an_outbound_number(cc):
    """Several outbound numbers, none the default: 202, the request echoed; the call is created and queued
    with the numbers to choose from (the agent picks one on the keypad when their phone rings)."""
    await cc.run(lambda: m.OutboundPhoneNumber.update(isDefault=False).where(
        m.OutboundPhoneNumber.project == uuid.UUID(cc.project_id)).execute())
    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625", "lang": "en"}
    assert await cc.post(body, expect=202) == body
    rows = await cc.run(lambda: list(m.ContactCenterCall.select().where(
        m.ContactCenterCall.project == uuid.UUID(cc.project_id))))
    assert len(rows) == 1
    call = rows[0]
    assert (call.status, call.outboundNumber, call.outboundChoices) == ("assigned", None,
                                                                        ["+13392195276", "+17604108538"])
    assert len(await outbox_messages(cc, call.id)) == 1
    shown = await cc.get(f"{CALLS}/{call.numericId}")
    assert shown["outbound_number"] is None and shown["status"] == "assigned"
    # Named, a number is used as it is.
    chosen = await cc.post({**body, "agent_email": "allen@somedomain.com", "outbound_number": "+1 760-410-8538"},
                           expect=201)
    assert chosen["outbound_number"] == "+1 760-410-8538"


async def test_one_number_is_used_and_none_is_an_error(api):
    c = await center(api, "One number")
    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    await c.run(lambda: m.OutboundPhoneNumber.delete().where(
        m.OutboundPhoneNumber.id == c["default_number"].id).execute())
    call = await c.post(body, expect=201)  # its only number, though not the default
    assert call["outbound_number"] == "+1 760-410-8538"
    await c.run(lambda: m.OutboundPhoneNumber.delete().where(
        m.OutboundPhoneNumber.project == uuid.UUID(c.project_id)).execute())
    await c.refused({**body, "agent_email": "allen@somedomain.com"}, "No outbound phone number is configured")


# -- inbound and scheduled calls ------------------------------------------------------------------------


async def test_create_an_incoming_call_with_end_user_number(cc):
    menu = cc["lock_star"]
    call = await cc.post({"call_type": "Voice Inbound (API)", "lang": "en", "menu_id": menu.numericId,
                          "end_user_number": "+82-10-6861-2345",
                          "recording_permission": "recording_permission_granted"}, expect=201)
    assert_shape(call)
    end_user = call["end_user"]
    assert end_user["id"] != cc["contact"].numericId and end_user["out_contact_id"] is None  # a new end user
    assert call == {
        **call, "parent_id": None, "lang": "en", "call_type": "Voice Inbound (API)", "status": "queued",
        "assigned_at": None, "connected_at": None, "ends_at": None, "scheduled_at": None, "wait_duration": 0,
        "call_duration": 0, "hold_duration": 0, "rating": None, "has_feedback": False, "out_ticket_id": None,
        "out_ticket_url": None, "verified": False, "recording_url": None, "recording_permission": "not_asked",
        "voicemail_reason": "not_voicemail", "deflection": "no_deflection",
        "disconnected_by": "disconnected_by_unknown", "fail_reason": "nothing", "fail_details": None,
        "support_number": None,
        "selected_menu": {"id": menu.numericId, "name": "Lock Star", "parent_id": None, "position": 0,
                          "deleted": False, "menu_type": "ivr_menu", "output_msg": "You selected Lock Star.",
                          "hidden": False},
        "menu_path": {"items_count": 1, "name": "Lock Star", "materialized_path": str(menu.numericId)},
        "agent_info": None, "photos": [], "videos": [], "transfers": [], "deflection_details": [],
        "participants": [{"id": call["participants"][0]["id"], "type": "end_user", "status": "waiting",
                          "call_id": call["id"], "user_id": None, "end_user_id": end_user["id"],
                          "call_duration": None, "hold_duration": None, "connected_at": None, "ended_at": None,
                          "fail_reason": "nothing"}],
        "offer_type": "cascade", "offer_events": [], "answer_type": "manual", "outbound_number": "+1 339-219-5276",
    }
    assert ISO_MS.match(call["queued_at"])
    row = await call_row(cc, call["id"])
    assert (row.endUserNumber, row.recordRequested) == ("+821068612345", False)
    assert await outbox_messages(cc, row.id) == []  # not an outbound call
    assert len(await outbox_messages(cc, row.id, INBOUND_CALL)) == 1  # the call services dial the end user
    # The same number again: the same end user.
    again = await cc.post({"call_type": "IncomingCall", "menu_id": menu.numericId,
                           "end_user_number": "+82 10 6861 2345"}, expect=201)
    assert again["end_user"]["id"] == end_user["id"]


async def test_create_an_incoming_call_with_ticket_id(cc):
    call = await cc.post({"call_type": "Voice Inbound (API)", "lang": "en", "menu_id": cc["lock_star"].numericId,
                          "ticket_id": "76517", "end_user_number": "+1 859-657-9625",
                          "recording_permission": "recording_permission_granted"}, expect=201)
    assert_shape(call)
    contact = cc["contact"]
    assert (call["status"], call["out_ticket_id"], call["out_ticket_url"]) == ("queued", "76517", None)
    assert call["end_user"] == {"id": contact.numericId, "identifier": None, "out_contact_id": "381630957514"}
    assert call["participants"][0]["end_user_id"] == contact.numericId


async def test_incoming_call_errors(cc):
    body = {"call_type": "Voice Inbound (API)", "lang": "en", "menu_id": cc["lock_star"].numericId,
            "end_user_number": "+1 859-657-9625", "recording_permission": "recording_permission_granted"}
    await cc.refused({**body, "end_user_number": "+1 999-657-12"}, "end_user_number is not well formed")
    await cc.refused({**body, "menu_id": cc["redirected"].numericId},
                     "Menu is in 'manual redirection' state, can't accept calls")
    await cc.refused({**body, "call_type": "InvalidCallType"}, "Invalid call type")
    await cc.refused({k: v for k, v in body.items() if k != "menu_id"}, "menu_id is required")
    await cc.refused({**body, "menu_id": cc["web"].numericId}, "Only IVR and mobile menu IDs are permitted")
    await cc.refused({**body, "menu_id": cc["closed"].numericId},
                     "Menu is in 'after hours' state, can't accept incoming calls")
    await cc.refused({**body, "menu_id": cc["out_of_hours"].numericId},
                     "Menu is in 'after hours' state, can't accept incoming calls")
    await cc.refused({**body, "lang": "fr"}, "Language 'fr' is not available")
    await cc.refused({**body, "lang": "xy"}, "Language 'xy' is not found")
    await cc.refused({**body, "menu_id": 9999}, "menu_id 9999 is not found")
    for menu_id in ("menu_999", "9", True, 9.0, [9]):
        await cc.refused({**body, "menu_id": menu_id}, "menu_id is not well formed")
    await cc.refused({k: v for k, v in body.items() if k != "end_user_number"}, "end_user_number is required")
    await cc.refused({**body, "recording_permission": "yes"}, "recording_permission is not valid")
    # A mobile menu takes incoming calls too; a menu of another project is not found.
    await cc.post({**body, "menu_id": cc["mobile"].numericId}, expect=201)
    other = await center(cc.api, "Other center")
    await cc.refused({**body, "menu_id": other["lock_star"].numericId},
                     f"menu_id {other['lock_star'].numericId} is not found")


async def test_recording_follows_the_menu_option_and_the_permission(cc):
    base = {"call_type": "Voice Inbound (API)", "end_user_number": "+1 859-657-9625"}

    async def record(option: str, permission: str | None) -> tuple[bool, str]:
        menu = await cc.run(lambda: m.CallMenu.create(project=uuid.UUID(cc.project_id), name=f"Rec {option}",
                                                      recordingOption=option))
        body = {**base, "menu_id": menu.numericId}
        if permission:
            body["recording_permission"] = permission
        call = await cc.post(body, expect=201)
        row = await call_row(cc, call["id"])
        return row.recordRequested, call["recording_permission"]

    granted = "recording_permission_granted"
    assert await record(RecordingOption.ALWAYS, None) == (True, "not_asked")
    assert await record(RecordingOption.NEVER, granted) == (False, "not_asked")
    assert await record(RecordingOption.ASK, granted) == (True, granted)
    assert await record(RecordingOption.ASK, "recording_permission_denied") == (False, "recording_permission_denied")
    assert await record(RecordingOption.ASK, "recording_permission_not_asked") == (False, "not_asked")


async def test_an_outbound_call_for_a_queue_takes_its_recording_option_and_outbound_number(cc):
    """Hotline's addition: an outbound call may name the queue (menu_id) it is made for."""
    base = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    await cc.refused({**base, "menu_id": 9999}, "menu_id 9999 is not found")
    await cc.refused({**base, "menu_id": "menu_999"}, "menu_id is not well formed")
    menu = await cc.run(lambda: m.CallMenu.create(project=uuid.UUID(cc.project_id), name="Outbound sales",
                                                  recordingOption="ask", outboundPhoneNumber=cc["other_number"].id))
    call = await cc.post({**base, "menu_id": menu.numericId, "recording_permission": "recording_permission_granted"},
                         expect=201)
    row = await call_row(cc, call["id"])
    assert row.recordRequested and call["selected_menu"]["id"] == menu.numericId
    assert call["outbound_number"] == "+1 760-410-8538"   # the queue's number, not the project's default
    assert call["recording_permission"] == "recording_permission_granted"
    without = await cc.post({**base, "agent_email": "allen@somedomain.com"}, expect=201)
    assert not (await call_row(cc, without["id"])).recordRequested   # no queue: never recorded


async def test_create_a_scheduled_call_with_menu_id(cc):
    menu = cc["mobile"]
    call = await cc.post({"call_type": "Voice Scheduled (API)", "lang": "en", "menu_id": menu.numericId,
                          "end_user_number": "+82-10-6861-2345", "scheduled_at": FUTURE,
                          "recording_permission": "recording_permission_granted"}, expect=201)
    assert_shape(call)
    assert (call["call_type"], call["status"], call["queued_at"], call["scheduled_at"], call["offer_type"]) == (
        "Voice Scheduled (API)", "scheduled", None, FUTURE, "cascade")
    assert call["selected_menu"]["menu_type"] == "mobile_menu"
    assert call["menu_path"] == {"items_count": 1, "name": "Lock Star App",
                                 "materialized_path": str(menu.numericId)}
    assert [p["type"] for p in call["participants"]] == ["end_user"]
    row = await call_row(cc, call["id"])
    assert await outbox_messages(cc, row.id) == []
    assert await outbox_messages(cc, row.id, INBOUND_CALL) == []  # written when it fires at scheduled_at
    # An offset is read as such; ScheduledCall is the deprecated name.
    later = await cc.post({"call_type": "ScheduledCall", "menu_id": cc["web"].numericId,
                           "end_user_number": "+1 859-657-9625", "scheduled_at": "2999-09-15T02:19:14.421+02:00"},
                          expect=201)
    assert later["scheduled_at"] == FUTURE


async def test_create_a_scheduled_call_with_call_id(cc):
    parent = await cc.post({"call_type": "Voice Inbound (API)", "menu_id": cc["mobile"].numericId,
                            "end_user_number": "+82-10-6861-2345"}, expect=201)
    call = await cc.post({"call_type": "Voice Scheduled (API)", "lang": "en", "call_id": parent["id"],
                          "end_user_number": "+82-10-6861-2345", "scheduled_at": FUTURE,
                          "recording_permission": "recording_permission_granted"}, expect=201)
    assert_shape(call)
    assert call["parent_id"] == parent["id"]
    assert call["selected_menu"]["id"] == cc["mobile"].numericId  # the parent call's menu
    assert call["end_user"] == parent["end_user"]
    # The parent of an IVR menu's call gives an IVR menu: refused like a menu_id would be.
    ivr = await cc.post({"call_type": "Voice Inbound (API)", "menu_id": cc["lock_star"].numericId,
                         "end_user_number": "+82-10-6861-2345"}, expect=201)
    await cc.refused({"call_type": "Voice Scheduled (API)", "call_id": ivr["id"], "scheduled_at": FUTURE,
                      "end_user_number": "+82-10-6861-2345"}, "Only mobile and web menu IDs are permitted")
    # An outbound parent has no menu; a missing parent is not found; a call id must be an integer.
    outbound = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                              "end_user_number": "+1 859-657-9625"}, expect=201)
    await cc.refused({"call_type": "Voice Scheduled (API)", "call_id": outbound["id"], "scheduled_at": FUTURE,
                      "end_user_number": "+1 859-657-9625"}, "menu_id is required")
    await cc.refused({"call_type": "Voice Scheduled (API)", "call_id": 2_000_000_001, "scheduled_at": FUTURE,
                      "end_user_number": "+1 859-657-9625"}, "call_id 2000000001 is not found")
    await cc.refused({"call_type": "Voice Scheduled (API)", "call_id": "514", "scheduled_at": FUTURE,
                      "end_user_number": "+1 859-657-9625"}, "call_id is not well formed")
    # Another project's call is not found.
    other = await center(cc.api, "Other scheduler")
    await other.refused({"call_type": "Voice Scheduled (API)", "call_id": parent["id"], "scheduled_at": FUTURE,
                         "end_user_number": "+1 859-657-9625"}, f"call_id {parent['id']} is not found")


async def test_scheduled_call_errors(cc):
    body = {"call_type": "Voice Scheduled (API)", "lang": "en", "menu_id": cc["mobile"].numericId,
            "end_user_number": "+1 859-657-9625", "scheduled_at": FUTURE,
            "recording_permission": "recording_permission_granted"}
    await cc.refused({**body, "end_user_number": "+1 999-657-12"}, "end_user_number is not well formed")
    await cc.refused({**body, "menu_id": cc["mobile_redirected"].numericId},
                     "Menu is in 'manual redirection' state, can't accept calls")
    await cc.refused({**body, "call_type": "InvalidCallType"}, "Invalid call type")
    await cc.refused({k: v for k, v in body.items() if k != "menu_id"}, "menu_id is required")
    await cc.refused({**body, "menu_id": cc["lock_star"].numericId}, "Only mobile and web menu IDs are permitted")
    await cc.refused({**body, "menu_id": cc["mobile_closed"].numericId},
                     "Menu is in 'after hours' state, can't accept incoming calls")
    await cc.refused({**body, "lang": "fr"}, "Language 'fr' is not available")
    await cc.refused({**body, "lang": "xy"}, "Language 'xy' is not found")
    await cc.refused({**body, "menu_id": 9999}, "menu_id 9999 is not found")
    await cc.refused({**body, "menu_id": "menu_999"}, "menu_id is not well formed")
    await cc.refused({k: v for k, v in body.items() if k != "end_user_number"}, "end_user_number is required")
    await cc.refused({k: v for k, v in body.items() if k != "scheduled_at"}, "scheduled_at is required")
    for when in ("tomorrow", "2019-13-01T00:00:00Z", 1568506754, "x" * 100):
        await cc.refused({**body, "scheduled_at": when}, "scheduled_at is not well formed")
    await cc.refused({**body, "scheduled_at": "2019-09-15T00:19:14.421Z"}, "scheduled_at must be in the future")


# -- the request itself: bodies, authentication, permissions ---------------------------------------------


async def test_bad_bodies_are_400_messages_never_500(cc):
    for raw in (b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b" "):
        resp, payload = await cc.request("POST", CALLS, raw=raw)
        assert resp.status == 400 and list(payload) == ["message"], (raw, payload)
    for body in ({"call_type": {"x": 1}}, {"call_type": "Voice Outbound (API)", "agent_email": {"a": 1}},
                 {"call_type": "Voice Inbound (API)", "menu_id": 10**30},
                 {"call_type": "Voice Inbound (API)", "menu_id": -5},
                 {"call_type": "Voice Scheduled (API)", "menu_id": cc["mobile"].numericId,
                  "end_user_number": "+18596579625", "scheduled_at": "9999-12-31T23:59:59-23:59"},
                 {"call_type": "Voice Scheduled (API)", "menu_id": cc["mobile"].numericId,
                  "end_user_number": "+18596579625", "scheduled_at": "0001-01-01T00:00:00+05:00"}):
        status, payload = await cc.post(body)
        assert status in (201, 400) and (status == 201 or list(payload) == ["message"]), (body, payload)


async def test_authentication(cc):
    body = {"call_type": "Nope"}
    no_auth = await cc.api.client.post(CALLS, json=body)
    assert no_auth.status == 401 and no_auth.headers["WWW-Authenticate"].startswith("Basic")
    assert list(await no_auth.json()) == ["message"]
    other = await cc.api.tenant("Stranger", roles=("owner",))
    for headers in (cc.auth("not-a-key"),                          # a wrong password
                    cc.auth(other.owner),                           # a key of another project
                    cc.auth(cc.keys["owner"], other.project_id),    # the right key, another project's id
                    cc.auth(cc.keys["owner"], "acme"),              # a username that is no project id
                    {"Authorization": "Basic !!!"}, {"Authorization": "Bearer abc"},
                    {"ApiKey": cc.keys["owner"]}):                  # the OneUptime API's header is not enough
        resp = await cc.api.client.post(CALLS, json=body, headers=headers)
        payload = await resp.json()
        assert resp.status == 401, (headers, payload)
        assert list(payload) == ["message"] and resp.headers["WWW-Authenticate"].startswith("Basic")
    expired = await cc.api.key(uuid.UUID(cc.project_id), m.Role.OWNER,
                               expires=m.utcnow() - dt.timedelta(minutes=1))
    resp = await cc.api.client.get(CALLS, headers=cc.auth(expired))
    assert resp.status == 401 and "expired" in (await resp.json())["message"]
    # The right credentials: the request reaches the checks.
    await cc.refused(body, "Invalid call type")


async def test_permissions(cc):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, expect=201)
    viewer = cc.keys["viewer"]
    await cc.get(CALLS, key=viewer)
    await cc.get(f"{CALLS}/{call['id']}/customer_flag", key=viewer)
    status, payload = await cc.post({"call_type": "Nope"}, key=viewer)
    assert status == 403 and "Create Contact Center Call" in payload["message"] and list(payload) == ["message"]
    resp, payload = await cc.request("PATCH", f"{CALLS}/{call['id']}/customer_flag", {"bad_actor": True},
                                     key=viewer, expect=403)
    assert "Edit Contact Center Call" in payload["message"]
    member = cc.keys["member"]
    await cc.request("PATCH", f"{CALLS}/{call['id']}/customer_flag", {"bad_actor": True}, key=member, expect=200)
    creator = await cc.api.key(uuid.UUID(cc.project_id), permissions=["Create Contact Center Call"])
    await cc.refused({"call_type": "Nope"}, "Invalid call type", key=creator)
    resp, payload = await cc.request("GET", CALLS, key=creator, expect=403)
    assert "Read Contact Center Call" in payload["message"]
    reader = await cc.api.key(uuid.UUID(cc.project_id), permissions=["Read All Project Resources"])
    await cc.get(f"{CALLS}/{call['id']}", key=reader)
    nothing = await cc.api.key(uuid.UUID(cc.project_id), permissions=["Read Incoming Call Log"])
    await cc.request("GET", f"{CALLS}/{call['id']}/recording", key=nothing, expect=403)


async def test_rate_limit_is_a_429_message(database_url, config, aiohttp_client):
    db = open_database(database_url, pool_size=2)
    client = await aiohttp_client(create_app(config.replace(api__rate_limit=2), db=db))
    try:
        api = ApiClient(client, db)
        c = await center(api, "Limited")
        statuses = [(await c.request("GET", CALLS))[0].status for _ in range(3)]
        resp, payload = await c.request("GET", CALLS)
        assert statuses[:2] == [200, 200] and resp.status == 429 and list(payload) == ["message"]
        assert "Retry-After" in resp.headers
    finally:
        await client.close()
        await db.close_pool()


async def test_calls_per_hour_are_capped_per_project(database_url, config, aiohttp_client):
    db = open_database(database_url, pool_size=2)
    client = await aiohttp_client(create_app(config.replace(notify__max_calls_per_hour=2), db=db))
    try:
        api = ApiClient(client, db)
        c = await center(api, "Capped")
        body = {"call_type": "Voice Inbound (API)", "menu_id": c["lock_star"].numericId,
                "end_user_number": "+1 859-657-9625"}
        await c.post(body, expect=201)
        await c.post(body, expect=201)
        status, payload = await c.post(body)
        assert status == 429 and "notify.max_calls_per_hour" in payload["message"] and list(payload) == ["message"]
        other = await center(api, "Not capped yet")
        await other.post({**body, "menu_id": other["lock_star"].numericId}, expect=201)
    finally:
        await client.close()
        await db.close_pool()


async def test_unknown_routes_and_ids_are_404_messages(cc):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, expect=201)
    for path in (f"{CALLS}/abc", f"{CALLS}/-1", f"{CALLS}/0", f"{CALLS}/99999999999999999999", f"{CALLS}/1.5",
                 f"{CALLS}/{2**31}", f"{CALLS}/{call['id']}/nothing", "/apps/api/v1/nothing",
                 f"{CALLS}/abc/customer_flag", f"{CALLS}/{call['id']}/recording"):
        payload = await cc.get(path, expect=404)
        assert payload == {"message": "Resource not found"}, path
    resp, payload = await cc.request("DELETE", f"{CALLS}/{call['id']}", expect=405)
    assert list(payload) == ["message"]


# -- isolation --------------------------------------------------------------------------------------


async def test_a_project_never_sees_another_projects_calls(api):
    mine, theirs = await center(api, "Mine"), await center(api, "Theirs")
    call = await mine.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                            "end_user_number": "+1 859-657-9625"}, expect=201)
    for path in (f"{CALLS}/{call['id']}", f"{CALLS}/{call['id']}/customer_flag", f"{CALLS}/{call['id']}/recording"):
        assert await theirs.get(path, expect=404) == {"message": "Resource not found"}
    await theirs.request("PATCH", f"{CALLS}/{call['id']}/customer_flag", {"bad_actor": True}, expect=404)
    assert (await mine.get(f"{CALLS}/{call['id']}/customer_flag"))["bad_actor"] is False
    assert await theirs.get(CALLS) == []
    assert [c["id"] for c in await mine.get(CALLS)] == [call["id"]]
    # Another project's agents, tickets and numbers are not this project's.
    await theirs.refused({"call_type": "Voice Outbound (API)", "agent_email": "nobody@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, "Not a valid agent email")
    m_ticket = await mine.run(lambda: m.CrmTicket.create(project=uuid.UUID(mine.project_id), ticketId="only-mine",
                                                         endUser=mine["contact"].id))
    await theirs.refused({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "ticket_id": m_ticket.ticketId}, "Contact not found")
    await mine.run(lambda: m.OutboundPhoneNumber.create(project=uuid.UUID(mine.project_id), phoneNumber="+17608675309"))
    await theirs.refused({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "end_user_number": "+1 859-657-9625", "outbound_number": "+1 760-867-5309"},
                         "outbound_number is not one of your outbound phone numbers")
    # Filters by another project's ids find nothing.
    assert await theirs.get(CALLS, params={"agent_id": str(mine["allen"].numericId)}) == []


# -- lists --------------------------------------------------------------------------------------------


def _many_calls(project_id: str, agent: m.User, other: m.User, end_user: m.EndUser, menu: m.CallMenu) -> list:
    p = uuid.UUID(project_id)
    start = dt.datetime(2024, 1, 1, 12, 0, 0)
    made = []
    for i in range(30):
        made.append(m.ContactCenterCall.create(
            project=p, callType=("Voice Outbound (API)" if i % 3 else "Voice Inbound (API)"),
            status=("finished" if i % 2 else "failed"), agentId=(agent.id if i % 5 == 0 else other.id),
            endUser=(end_user.id if i % 4 == 0 else None), menu=(menu.id if i % 3 == 0 else None),
            createdAt=start + dt.timedelta(minutes=i), endsAt=(start + dt.timedelta(hours=1, minutes=-i)
                                                               if i % 2 else None)))
    return made


async def test_lists_filter_sort_and_page(cc):
    made = await cc.run(_many_calls, cc.project_id, cc["admin"], cc["allen"], cc["contact"], cc["lock_star"])
    ids = [c.numericId for c in made]
    resp, first = await cc.request("GET", CALLS, expect=200)
    assert [c["id"] for c in first] == sorted(ids, reverse=True)[:25]
    assert (resp.headers["Total"], resp.headers["Per-Page"], resp.headers["Page"]) == ("30", "25", "1")
    assert 'rel="next"' in resp.headers["Link"] and 'rel="prev"' not in resp.headers["Link"]
    assert "page=2" in resp.headers["Link"].split(";")[0] and resp.headers["Link"].startswith("<http")
    for call in first:
        assert_shape(call)
    resp, second = await cc.request("GET", CALLS, params={"page": "2"}, expect=200)
    assert [c["id"] for c in second] == sorted(ids, reverse=True)[25:]
    assert 'rel="prev"' in resp.headers["Link"] and 'rel="next"' not in resp.headers["Link"]
    resp, beyond = await cc.request("GET", CALLS, params={"page": "9"}, expect=200)
    assert beyond == [] and resp.headers["Total"] == "30"
    assert [c["id"] for c in await cc.get(CALLS, params={"per": "3", "sort_direction": "ASC"})] == ids[:3]
    assert [c["id"] for c in await cc.get(CALLS, params={"per": "100", "sort_column": "created_at",
                                                         "sort_direction": "asc"})] == ids
    ends = await cc.get(CALLS, params={"per": "100", "sort_column": "ends_at", "sort_direction": "ASC"})
    ended = [c for c in ends if c["ends_at"] is not None]
    assert [c["ends_at"] for c in ended] == sorted(c["ends_at"] for c in ended)
    assert all(c["ends_at"] is None for c in ends[len(ended):])  # calls not ended come last

    async def ids_of(**params):
        return sorted(c["id"] for c in await cc.get(CALLS, params={"per": "100", **params}))

    assert await ids_of(status="failed") == sorted(c.numericId for c in made if c.status == "failed")
    assert await ids_of(call_type="IncomingCall") == sorted(c.numericId for c in made
                                                            if c.callType == "Voice Inbound (API)")
    assert await ids_of(call_type="Voice Outbound (API)", status="finished") == sorted(
        c.numericId for c in made if c.callType == "Voice Outbound (API)" and c.status == "finished")
    assert await ids_of(agent_id=str(cc["admin"].numericId)) == sorted(
        c.numericId for c in made if c.agentId == cc["admin"].id)
    assert await ids_of(end_user_id=str(cc["contact"].numericId)) == sorted(
        c.numericId for c in made if c.endUserId == cc["contact"].id)
    assert await ids_of(menu_id=str(cc["lock_star"].numericId)) == sorted(
        c.numericId for c in made if c.callMenuId == cc["lock_star"].id)
    assert await ids_of(created_after="2024-01-01T12:10:00Z", created_before="2024-01-01T12:12:00.000Z") == \
        sorted(ids[10:13])
    with_menu = await cc.get(CALLS, params={"menu_id": str(cc["lock_star"].numericId), "per": "1"})
    assert with_menu[0]["selected_menu"]["name"] == "Lock Star" and with_menu[0]["agent_info"] is not None


async def test_bad_list_parameters_are_400_messages(cc):
    for params in ({"per": "101"}, {"per": "0"}, {"per": "x"}, {"page": "0"}, {"page": "-1"}, {"page": "1e3"},
                   {"sort_column": "status"}, {"sort_direction": "UP"}, {"status": "lost"},
                   {"call_type": "Fax"}, {"agent_id": "abc"}, {"agent_id": str(2**40)}, {"end_user_id": "-2"},
                   {"menu_id": "1.5"}, {"created_after": "yesterday"}, {"created_before": "2024-02-30T00:00:00Z"},
                   {"colour": "red"}, {"page": "99999999999999999999"}):
        resp, payload = await cc.request("GET", CALLS, params=params)
        assert resp.status == 400 and list(payload) == ["message"], (params, payload)
    resp, payload = await cc.request("GET", f"{CALLS}?status=failed&status=finished")
    assert resp.status == 400


async def test_a_list_costs_the_same_queries_for_one_call_or_many(cc):
    """Rendering a page is a fixed number of queries, not one per call."""
    await cc.run(_many_calls, cc.project_id, cc["admin"], cc["allen"], cc["contact"], cc["lock_star"])
    child = await cc.run(lambda: m.CallMenu.create(project=uuid.UUID(cc.project_id), name="Child",
                                                   parent=cc["lock_star"].id))
    await cc.run(lambda: m.ContactCenterCall.update(menu=child.id).where(
        m.ContactCenterCall.project == uuid.UUID(cc.project_id), m.ContactCenterCall.callMenuId.is_null(False))
        .execute())
    db = cc.api.db
    counted = []
    execute_sql = db.execute_sql

    def counting(sql, *args, **kwargs):
        counted.append(sql)
        return execute_sql(sql, *args, **kwargs)

    def queries(limit: int) -> int:
        counted.clear()
        db.execute_sql = counting
        try:
            total, bundle = list_calls(uuid.UUID(cc.project_id), CallFilter(), "id", True, 0, limit)
        finally:
            del db.execute_sql
        assert len(bundle.calls) == limit
        return len(counted)

    # 12 calls already have agents, end users and menus two levels deep; 30 have more of each.
    assert await cc.run(queries, 12) == await cc.run(queries, 30) <= 8
    paged = await cc.get(CALLS, params={"menu_id": str(child.numericId), "per": "1"})
    assert paged[0]["menu_path"] == {"items_count": 2, "name": "Lock Star / Child",
                                     "materialized_path": f"{cc['lock_star'].numericId}/{child.numericId}"}
    assert paged[0]["selected_menu"]["parent_id"] == cc["lock_star"].numericId


# -- one call, flags, recordings ---------------------------------------------------------------------------


async def test_get_a_call_shows_what_the_call_services_wrote(cc):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, expect=201)
    row = await call_row(cc, call["id"])
    start = dt.datetime(2024, 5, 1, 12, 0, 0, 123000)

    def finish():
        m.ContactCenterCall.update(status="finished", connectedAt=start, endsAt=start + dt.timedelta(seconds=42),
                                   callDuration=42, waitDuration=3, disconnectedBy="disconnected_by_end_user",
                                   supportNumber="+13392195276", rating=5, hasFeedback=True,
                                   verifiedCustomer=True).where(m.ContactCenterCall.id == row.id).execute()
        m.ContactCenterParticipant.update(status="finished", connectedAt=start, callDuration=42, holdDuration=0,
                                          endedAt=start + dt.timedelta(seconds=42)).where(
            m.ContactCenterParticipant.call == row.id).execute()

    await cc.run(finish)
    shown = await cc.get(f"{CALLS}/{call['id']}")
    assert_shape(shown)
    assert {k: shown[k] for k in ("status", "connected_at", "ends_at", "call_duration", "wait_duration",
                                  "disconnected_by", "support_number", "rating", "has_feedback", "verified")} == {
        "status": "finished", "connected_at": "2024-05-01T12:00:00.123Z", "ends_at": "2024-05-01T12:00:42.123Z",
        "call_duration": 42, "wait_duration": 3, "disconnected_by": "disconnected_by_end_user",
        "support_number": "+1 339-219-5276", "rating": 5, "has_feedback": True, "verified": True}
    assert [(p["status"], p["call_duration"], p["ended_at"]) for p in shown["participants"]] == [
        ("finished", 42, "2024-05-01T12:00:42.123Z")] * 2
    assert shown["created_at"] == call["created_at"]


async def test_customer_flags(cc):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, expect=201)
    path = f"{CALLS}/{call['id']}/customer_flag"
    assert await cc.get(path) == {"verified_customer": False, "bad_actor": False, "repeat_customer": False}
    _, changed = await cc.request("PATCH", path, {"verified_customer": True, "bad_actor": True,
                                                  "repeat_customers": True}, expect=200)
    assert changed == {"verified_customer": True, "bad_actor": True, "repeat_customer": True}
    _, changed = await cc.request("PATCH", path, {"repeat_customer": False}, expect=200)
    assert changed == {"verified_customer": True, "bad_actor": True, "repeat_customer": False}
    assert await cc.get(path) == changed
    assert (await cc.get(f"{CALLS}/{call['id']}"))["verified"] is True
    _, same = await cc.request("PATCH", path, {}, expect=200)
    assert same == changed
    for body in ({"bad_actor": "boolean"}, {"bad_actor": 1}, {"bad_actor": None}, {"vip": True},
                 {"repeat_customer": True, "repeat_customers": False}):
        _, payload = await cc.request("PATCH", path, body, expect=400)
        assert list(payload) == ["message"]
    resp, payload = await cc.request("PATCH", path, raw=b"[true]")
    assert resp.status == 400 and list(payload) == ["message"]
    assert await cc.get(path) == changed


async def test_recordings_are_served_to_the_calls_project_only(cc, config):
    call = await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "allen@somedomain.com",
                          "end_user_number": "+1 859-657-9625"}, expect=201)
    path = f"{CALLS}/{call['id']}/recording"
    assert call["recording_url"] is None
    assert await cc.get(path, expect=404) == {"message": "Resource not found"}
    audio = b"RIFF" + secrets.token_bytes(64)
    directory = config.recordings_dir
    directory.mkdir(parents=True, exist_ok=True)
    name = f"call-{call['id']}.wav"
    (directory / name).write_bytes(audio)
    row = await call_row(cc, call["id"])
    await cc.run(lambda: m.ContactCenterCall.update(recordingFile=name).where(
        m.ContactCenterCall.id == row.id).execute())
    shown = await cc.get(f"{CALLS}/{call['id']}")
    assert shown["recording_url"].startswith("http") and shown["recording_url"].endswith(path)
    resp = await cc.api.client.get(path, headers=cc.auth())
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav" and await resp.read() == audio
    other = await center(cc.api, "Eavesdropper")
    resp = await cc.api.client.get(path, headers=other.auth())
    assert resp.status == 404 and await resp.json() == {"message": "Resource not found"}
    resp = await cc.api.client.get(path, headers=cc.auth(other.keys["owner"]))
    assert resp.status == 401
    # A name that points outside the recordings directory, or at a file that is gone, is a 404.
    (directory.parent / "secret.wav").write_bytes(b"secret")
    for bad in ("../secret.wav", "missing.wav", str(directory.parent / "secret.wav")):
        await cc.run(lambda: m.ContactCenterCall.update(recordingFile=bad).where(
            m.ContactCenterCall.id == row.id).execute())
        assert await cc.get(path, expect=404) == {"message": "Resource not found"}


# -- concurrency -------------------------------------------------------------------------------------------


async def test_two_requests_for_one_agent_assign_them_once(cc):
    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    for _ in range(3):
        results = await asyncio.gather(cc.post(body), cc.post(body))
        statuses = sorted(status for status, _ in results)
        assert statuses == [201, 400], results
        refused = next(payload for status, payload in results if status == 400)
        assert refused == {"message": "Agent is not available to take this call"}
        await cc.run(lambda: m.ContactCenterCall.update(status="finished").where(
            m.ContactCenterCall.agentId == cc["admin"].id).execute())
    calls = await cc.run(lambda: list(m.ContactCenterCall.select().where(
        m.ContactCenterCall.agentId == cc["admin"].id)))
    assert len(calls) == 3
    for call in calls:
        assert len(await outbox_messages(cc, call.id)) == 1


async def test_the_agent_is_checked_again_when_the_call_is_created(cc):
    """Two requests planned before either is created: the second finds the agent assigned, in its transaction."""
    from ivr.store.contact_center import CallRequestError, create_call, plan_call

    body = {"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
            "end_user_number": "+1 859-657-9625"}
    project = uuid.UUID(cc.project_id)
    first = await cc.run(plan_call, project, body, "US", m.utcnow())
    second = await cc.run(plan_call, project, body, "US", m.utcnow())
    await cc.run(create_call, first, 0)
    with pytest.raises(CallRequestError, match="Agent is not available to take this call"):
        await cc.run(create_call, second, 0)
    # An agent who became unavailable between the plan and the creation is not assigned either.
    planned = await cc.run(plan_call, project, {**body, "agent_email": "allen@somedomain.com"}, "US", m.utcnow())
    await cc.run(lambda: m.User.update(agentAvailability="Unavailable").where(m.User.id == cc["allen"].id).execute())
    with pytest.raises(CallRequestError, match="Agent is not available to take this call"):
        await cc.run(create_call, planned, 0)
    # Nor one whose right to make calls was revoked meanwhile.
    await cc.run(lambda: m.User.update(agentAvailability="Available").where(m.User.id == cc["allen"].id).execute())
    planned = await cc.run(plan_call, project, {**body, "agent_email": "allen@somedomain.com"}, "US", m.utcnow())
    await cc.run(lambda: m.User.update(canMakeOutboundCalls=False).where(m.User.id == cc["allen"].id).execute())
    with pytest.raises(CallRequestError, match="Agent does not have access to make calls"):
        await cc.run(create_call, planned, 0)


async def test_call_objects_match_the_openapi_document(cc):
    """Real calls (an agent, a ticket's end user, menus two levels deep) as /api/openapi.json documents them."""
    import jsonschema

    resp = await cc.api.client.get("/api/openapi.json")
    document = await resp.json()

    def inline(node):
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return inline(document["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    operations = document["paths"][CALLS]
    assert operations["post"]["security"] == [{"basic": []}]
    assert document["components"]["securitySchemes"]["basic"] == {**document["components"]["securitySchemes"]["basic"],
                                                                   "type": "http", "scheme": "basic"}
    created = inline(operations["post"]["responses"]["201"]["content"]["application/json"]["schema"])
    listed = inline(operations["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    child = await cc.run(lambda: m.CallMenu.create(project=uuid.UUID(cc.project_id), name="Child",
                                                   parent=cc["lock_star"].id, recordingOption="ask"))
    calls = [
        await cc.post({"call_type": "Voice Outbound (API)", "agent_email": "admin@somedomain.com",
                       "ticket_id": "71450"}, expect=201),
        await cc.post({"call_type": "Voice Inbound (API)", "menu_id": child.numericId,
                       "end_user_number": "+1 859-657-9625", "recording_permission": "recording_permission_granted"},
                      expect=201),
    ]
    calls.append(await cc.post({"call_type": "Voice Scheduled (API)", "call_id": calls[1]["id"],
                                "menu_id": cc["web"].numericId, "end_user_number": "+1 859-657-9625",
                                "scheduled_at": FUTURE}, expect=201))
    for call in calls:
        jsonschema.Draft202012Validator(created).validate(call)
    jsonschema.Draft202012Validator(listed).validate(await cc.get(CALLS))
    assert calls[1]["recording_permission"] == "recording_permission_granted"
    assert calls[2]["parent_id"] == calls[1]["id"]


async def test_simultaneous_incoming_calls_from_a_new_number_make_one_end_user(cc):
    body = {"call_type": "Voice Inbound (API)", "menu_id": cc["lock_star"].numericId,
            "end_user_number": "+1 760-867-5309"}
    results = await asyncio.gather(*(cc.post(body) for _ in range(4)))
    assert [status for status, _ in results] == [201] * 4
    assert len({payload["end_user"]["id"] for _, payload in results}) == 1
