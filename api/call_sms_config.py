"""The rules of ``/api/project-call-sms-config``: a project's own Twilio account (OneUptime's Project Call &
SMS Config), which its Incoming Call Policies may name (``projectCallSMSConfigId``) instead of the global
account of the settings ``twilio.*``.

``twilioAuthToken`` is write-only: it is a ``write_only`` field of the schema (never read, listed, queried,
sorted or selected through a relation) and is stored encrypted (Fernet, under ``twilio.encryption_key``,
``ivr/store/twilio_accounts.py``). Storing one without a key configured is a 400 that says to set it.
"""

from __future__ import annotations

import re
from typing import Any

from api.contact_center_rules import normalize_phone, require_text
from api.errors import BadRequest, Conflict
from api.resources import Context, Rules
from ivr.store import models as m
from ivr.store.twilio_accounts import TokenKeyError, encrypt_token

ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MAX_TOKEN = 256


def check_account_sid(values: dict[str, Any], name: str = "twilioAccountSID") -> None:
    sid = values.get(name)
    if sid is not None and not ACCOUNT_SID.match(sid):
        raise BadRequest(f"data.{name}: not a Twilio account SID (AC followed by 32 hexadecimal digits)")


def encrypt_auth_token(ctx: Context, values: dict[str, Any], name: str = "twilioAuthToken") -> None:
    """Replace the plain token of ``values`` by its ciphertext; the messages never include the token."""
    token = values.get(name)
    if token is None:
        return
    token = token.strip()
    if not token:
        raise BadRequest(f"data.{name}: must not be empty")
    if len(token) > MAX_TOKEN or any(c.isspace() for c in token):
        raise BadRequest(f"data.{name}: not a Twilio auth token (at most {MAX_TOKEN} characters, no spaces)")
    try:
        values[name] = encrypt_token(token, ctx.twilio_encryption_key)
    except TokenKeyError as exc:
        raise BadRequest(f"Cannot store data.{name}: {exc}") from None


class ProjectCallSMSConfigRules(Rules):
    def _check(self, ctx: Context, values: dict[str, Any]) -> None:
        require_text(values, "name")
        check_account_sid(values)
        normalize_phone(ctx, values, "twilioPrimaryPhoneNumber")
        encrypt_auth_token(ctx, values)

    def prepare_create(self, ctx, values, resource):
        self._check(ctx, values)

    def prepare_update(self, ctx, row, values, resource):
        self._check(ctx, values)

    def before_delete(self, ctx, row, resource):
        Policy = m.IncomingCallPolicy
        policy = (Policy.select(Policy.name)
                  .where(Policy.projectCallSMSConfigId == row.id, Policy.project == ctx.project_id).first())
        if policy is not None:
            raise Conflict(f"The Incoming Call Policy {policy.name!r} uses this Project Call SMS Config: change its "
                           "projectCallSMSConfigId first.")
