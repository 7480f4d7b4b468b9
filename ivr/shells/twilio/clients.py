"""One REST client per Twilio account the call services talk to, made when first needed."""

from __future__ import annotations

import logging

from ivr.store import twilio_accounts
from ivr.store.db import run_and_release
from ivr.twilio.rest import TwilioRest

log = logging.getLogger(__name__)


class TwilioClients:
    """``for_account(sid)``: the REST client of an account Hotline knows (the global one, or a project's
    configuration), None for another; ``tokens_for(sid)``: the auth tokens its webhooks may be signed with."""

    def __init__(self, config):
        self.config = config
        self.db = None
        self._clients: dict[tuple[str, str], TwilioRest] = {}

    def bind(self, db) -> None:
        self.db = db

    async def tokens_for(self, account_sid: str) -> list[str]:
        return await run_and_release(self.db, twilio_accounts.auth_tokens_for_account, account_sid, self.config)

    async def for_account(self, account_sid: str) -> TwilioRest | None:
        tokens = await self.tokens_for(account_sid) if account_sid else []
        if not tokens:
            log.warning("no auth token is known for the Twilio account %s: cannot use its REST API", account_sid)
            return None
        return self.client(account_sid, tokens[0])

    def client(self, account_sid: str, auth_token: str) -> TwilioRest:
        key = (account_sid, auth_token)
        if key not in self._clients:
            self._clients[key] = TwilioRest(account_sid, auth_token, base_url=self.config.twilio.api_base_url)
        return self._clients[key]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
