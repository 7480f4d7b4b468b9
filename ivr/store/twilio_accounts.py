"""Which Twilio account serves a policy, and the auth tokens of project-level configurations.

A project may keep its own Twilio account (``ProjectCallSMSConfig``, the resource
``/api/project-call-sms-config``); a policy naming one (``projectCallSMSConfigId``) uses it, any other
policy the global account of the settings ``twilio.*``. The auth tokens of project-level configurations
are stored encrypted with Fernet (``cryptography``) under ``twilio.encryption_key``
(``hotline twilio key`` makes a key); they are decrypted only here, when a call or a request to Twilio
needs them, and never logged.

The functions are synchronous peewee code, run through the database bridge like the rest of the store.
"""

from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

from cryptography.fernet import Fernet, InvalidToken

from ivr.config import Config
from ivr.store import models as m

log = logging.getLogger(__name__)

KEY_SETTING = "twilio.encryption_key"
KEY_ENV = "HOTLINE_TWILIO_ENCRYPTION_KEY"


class TokenKeyError(Exception):
    """A project-level auth token cannot be encrypted or decrypted: no key, a malformed key, or not the
    key it was stored with. The message says what to do; it never contains a token."""


class TwilioAccount(NamedTuple):
    account_sid: str
    auth_token: str
    from_number: str
    #: The project-level configuration it comes from; None: the global account (the settings).
    config_id: uuid.UUID | None = None


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, url-safe base64): a value for ``twilio.encryption_key``."""
    return Fernet.generate_key().decode()


def _fernet(key: str) -> Fernet:
    if not key:
        raise TokenKeyError(f"No encryption key for Twilio auth tokens: set {KEY_SETTING} ({KEY_ENV}); "
                            "`hotline twilio key` prints a new one.")
    try:
        return Fernet(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        raise TokenKeyError(f"{KEY_SETTING} is not a valid Fernet key (32 url-safe base64-encoded bytes); "
                            "`hotline twilio key` prints a new one.") from None


def encrypt_token(token: str, key: str) -> str:
    """``token`` encrypted under ``key``, as text for the database."""
    return _fernet(key).encrypt(token.encode()).decode()


def decrypt_token(stored: str, key: str) -> str:
    """The token ``stored`` holds; ``TokenKeyError`` when ``key`` is not the one it was encrypted with."""
    fernet = _fernet(key)
    try:
        return fernet.decrypt(stored.encode()).decode()
    except (InvalidToken, ValueError, TypeError):
        raise TokenKeyError(f"A stored Twilio auth token cannot be decrypted with {KEY_SETTING}: it was stored "
                            "under another key. Set the key it was stored with, or store the token again "
                            "(update the Project Call SMS Config's twilioAuthToken).") from None


def global_account(config: Config) -> TwilioAccount | None:
    """The global account of the settings, if both its SID and token are set."""
    tw = config.twilio
    if tw.account_sid and tw.auth_token:
        return TwilioAccount(tw.account_sid, tw.auth_token, tw.from_number or "")
    return None


def config_account(row: m.ProjectCallSMSConfig, config: Config) -> TwilioAccount:
    """The account of a project-level configuration (its token decrypted)."""
    return TwilioAccount(row.twilioAccountSID, decrypt_token(row.twilioAuthToken, config.twilio.encryption_key),
                         row.twilioPrimaryPhoneNumber, row.id)


def twilio_account_for(project_id, policy_id, config: Config) -> TwilioAccount | None:
    """The account a policy's calls and numbers use: its project-level configuration if it names one
    (of its own project), else the global account, else None (no Twilio account configured).

    ``policy_id`` None: the global account. Raises ``TokenKeyError`` when the configuration's token
    cannot be decrypted (a policy with its own account never silently falls back to the global one)."""
    if policy_id is not None:
        Policy, Cfg = m.IncomingCallPolicy, m.ProjectCallSMSConfig
        policy = (Policy.select(Policy.projectCallSMSConfigId)
                  .where(Policy.id == policy_id, Policy.project == project_id).first())
        if policy is not None and policy.projectCallSMSConfigId is not None:
            row = Cfg.get_or_none(Cfg.id == policy.projectCallSMSConfigId, Cfg.project == project_id)
            if row is not None:
                return config_account(row, config)
            log.warning("policy %s names the Project Call SMS Config %s, which no longer exists: using the "
                        "global Twilio account", policy_id, policy.projectCallSMSConfigId)
    return global_account(config)


def auth_tokens_for_account(account_sid: str, config: Config) -> list[str]:
    """Every auth token known for ``account_sid`` (the global account's, then the configurations', newest
    first; distinct): a webhook signed by any of them is Twilio's. A configuration whose token cannot be
    decrypted is logged and skipped."""
    tokens: list[str] = []
    glob = global_account(config)
    if glob is not None and glob.account_sid == account_sid:
        tokens.append(glob.auth_token)
    Cfg = m.ProjectCallSMSConfig
    rows = (Cfg.select(Cfg.id, Cfg.twilioAuthToken).where(Cfg.twilioAccountSID == account_sid)
            .order_by(Cfg.updatedAt.desc()))
    for row in rows:
        try:
            token = decrypt_token(row.twilioAuthToken, config.twilio.encryption_key)
        except TokenKeyError as exc:
            log.error("Project Call SMS Config %s: %s", row.id, exc)
            continue
        if token not in tokens:
            tokens.append(token)
    return tokens


def auth_token_for_account(account_sid: str, config: Config) -> str | None:
    """The auth token of ``account_sid``: the global account's or a stored configuration's; None if unknown
    (needed to check the signature of a webhook, which names its AccountSid)."""
    tokens = auth_tokens_for_account(account_sid, config)
    return tokens[0] if tokens else None


def notify_account_for(project_id, config: Config) -> TwilioAccount | None:
    """The account a project's notification calls go through: its project-level configuration (the
    oldest, if it keeps several), else the global account when ``notify.provider`` is twilio, else None
    (the local Asterisk places them). Raises ``TokenKeyError`` like :func:`twilio_account_for`."""
    Cfg = m.ProjectCallSMSConfig
    row = Cfg.select().where(Cfg.project == project_id).order_by(Cfg.createdAt, Cfg.id).first()
    if row is not None:
        return config_account(row, config)
    return global_account(config) if config.notify.provider == "twilio" else None
