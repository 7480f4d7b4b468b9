"""The contact center's rows (ivr/store/models.py: CallMenu, EndUser, ContactCenterCall, ...): what
the calls API and the call services both need to know about them.

An outbound call is handed from the API to the call services through the outbox
(ivr/store/outbox.py), kind :data:`OUTBOUND_CALL`, payload ``{"call": "<ContactCenterCall _id>"}``,
written in the transaction that creates the call: the API never waits for a call, and a call is
never placed twice (the services take it once).
"""

from __future__ import annotations

import uuid

from ivr.core.contact_center.vocabulary import AGENT_BUSY_STATUSES, AgentAvailability
from ivr.store import models as m

OUTBOUND_CALL = "cc_outbound"


def agent_is_busy(user_id: uuid.UUID) -> bool:
    """The agent has a call assigned, connecting or connected."""
    call = m.ContactCenterCall
    return call.select(call.id).where(call.agentId == user_id,
                                      call.status.in_([s.value for s in AGENT_BUSY_STATUSES])).exists()


def agent_is_available(user: m.User) -> bool:
    return user.agentAvailability == AgentAvailability.AVAILABLE.value and not agent_is_busy(user.id)


def agent_address(user: m.User) -> str | None:
    """Where an agent is rung: their first verified number (E.164 or SIP URI), None without one."""
    number = m.UserIncomingCallNumber
    row = (number.select(number.phoneNumber, number.sipUri)
           .where(number.user == user.id, number.isVerified == True)  # noqa: E712 - peewee expression
           .order_by(number.createdAt, number.id).first())
    if row is None:
        return None
    return row.phoneNumber or row.sipUri
