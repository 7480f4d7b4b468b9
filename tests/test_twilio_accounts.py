"""ivr/store/twilio_accounts.py: the encryption of project-level auth tokens, and which account a policy
uses (its project's configuration, else the global one), on both backends."""

from __future__ import annotations

import secrets

import pytest
from cryptography.fernet import Fernet

from ivr.config import load_config
from ivr.store import models as m
from ivr.store.db import open_database
from ivr.store.twilio_accounts import (
    TokenKeyError,
    TwilioAccount,
    auth_token_for_account,
    auth_tokens_for_account,
    decrypt_token,
    encrypt_token,
    new_key,
    twilio_account_for,
)

KEY = new_key()
GLOBAL_SID = "AC" + "1" * 32


def settings(**env) -> object:
    return load_config(env={"HOTLINE_TWILIO_ENCRYPTION_KEY": KEY, **env})


WITH_GLOBAL = {"HOTLINE_TWILIO_ACCOUNT_SID": GLOBAL_SID, "HOTLINE_TWILIO_AUTH_TOKEN": "global-token",
               "HOTLINE_TWILIO_FROM_NUMBER": "+14155550100"}


def test_encrypt_round_trip_and_clear_errors():
    stored = encrypt_token("secret-token", KEY)
    assert "secret-token" not in stored
    assert decrypt_token(stored, KEY) == "secret-token"
    Fernet(KEY).decrypt(stored.encode())  # plain Fernet: any tool with the key reads it
    with pytest.raises(TokenKeyError, match=r"set twilio.encryption_key \(HOTLINE_TWILIO_ENCRYPTION_KEY\)"):
        encrypt_token("secret-token", "")
    with pytest.raises(TokenKeyError, match="not a valid Fernet key"):
        encrypt_token("secret-token", "too-short")
    with pytest.raises(TokenKeyError, match="stored under another key") as caught:
        decrypt_token(stored, new_key())
    assert "secret-token" not in str(caught.value)
    with pytest.raises(TokenKeyError, match="stored under another key"):
        decrypt_token("not a fernet token", KEY)
    assert new_key() != new_key() and len(new_key()) == 44


@pytest.fixture
async def db(database_url):
    db = open_database(database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.close_pool()


def _project_with_config(token: str, sid: str | None = None, key: str = KEY):
    project = m.Project.create(name="Own Twilio")
    cfg = m.ProjectCallSMSConfig.create(project=project, name="Own",
                                        twilioAccountSID=sid or "AC" + secrets.token_hex(16),
                                        twilioAuthToken=encrypt_token(token, key),
                                        twilioPrimaryPhoneNumber="+14155550111")
    own = m.IncomingCallPolicy.create(project=project, name="Own", slug=f"own-{secrets.token_hex(6)}",
                                      projectCallSMSConfigId=cfg.id)
    plain = m.IncomingCallPolicy.create(project=project, name="Plain", slug=f"plain-{secrets.token_hex(6)}")
    return project, cfg, own, plain


async def test_a_policy_uses_its_config_else_the_global_account(db):
    project, cfg, own, plain = await db.run(_project_with_config, "project-token")
    with_global, without = settings(**WITH_GLOBAL), settings()
    account = await db.run(twilio_account_for, project.id, own.id, with_global)
    assert account == TwilioAccount(cfg.twilioAccountSID, "project-token", "+14155550111", cfg.id)
    assert tuple(account)[:3] == (cfg.twilioAccountSID, "project-token", "+14155550111")
    glob = TwilioAccount(GLOBAL_SID, "global-token", "+14155550100", None)
    assert await db.run(twilio_account_for, project.id, plain.id, with_global) == glob
    assert await db.run(twilio_account_for, project.id, None, with_global) == glob
    assert await db.run(twilio_account_for, project.id, plain.id, without) is None
    # Another project's id never reaches the config: a policy is looked up in its project.
    other = await db.run(m.Project.create, name="Other")
    assert await db.run(twilio_account_for, other.id, own.id, with_global) == glob
    # The config's token under a wrong key: a clear error, never the global account in its place.
    with pytest.raises(TokenKeyError, match="stored under another key"):
        await db.run(twilio_account_for, project.id, own.id, settings(HOTLINE_TWILIO_ENCRYPTION_KEY=new_key()))


async def test_auth_token_for_an_account_sid(db):
    sid = "AC" + secrets.token_hex(16)
    await db.run(_project_with_config, "first-token", sid)
    await db.run(_project_with_config, "second-token", sid)
    await db.run(_project_with_config, "lost-token", sid, new_key())  # stored under another key: skipped
    config = settings(**WITH_GLOBAL)
    assert sorted(await db.run(auth_tokens_for_account, sid, config)) == ["first-token", "second-token"]
    assert await db.run(auth_token_for_account, sid, config) in ("first-token", "second-token")
    assert await db.run(auth_token_for_account, GLOBAL_SID, config) == "global-token"
    assert await db.run(auth_token_for_account, "AC" + "9" * 32, config) is None
    assert await db.run(auth_token_for_account, GLOBAL_SID, settings()) is None
