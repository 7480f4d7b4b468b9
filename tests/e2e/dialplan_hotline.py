"""Hotline without the ARI controller: ``hotline serve`` with ``controller.ari: false`` (the AMI connection,
the FastAGI server and the notification calls), against the lab Asterisk.

With no ARI application connected, the lab dialplan sends every trunk call to FastAGI (Stasis()
fails at once), so the controller's scenarios run against the FastAGI shell unchanged.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ivr.asterisk.ami import AmiClient
from ivr.main import AGI_CALLS, AGI_SERVER, AMI_CLIENT, NOTIFIER, build_app
from ivr.runtime import METRICS
from ivr.shells.fastagi import AgiCalls
from ivr.shells.notify import NotificationService
from tests.e2e.hotline import Hotline


class DialplanHotline(Hotline):
    """The same helpers as the controller's (policies, logs), with the dialplan services running;
    ``api=True`` also serves the REST API on a loopback port (``base_url``)."""

    def __init__(self, config, db, api: bool = False):
        super().__init__(config, db)
        self.api = api
        self.site: web.TCPSite | None = None

    @property
    def controller(self) -> AgiCalls:  # what final_log() looks at: the calls still running
        return self.runner.app[AGI_CALLS]

    @property
    def ami(self) -> AmiClient:
        return self.runner.app[AMI_CLIENT]

    @property
    def notifier(self) -> NotificationService:
        return self.runner.app[NOTIFIER]

    @property
    def agi_server(self):
        return self.runner.app[AGI_SERVER]

    @property
    def metrics(self):
        return self.runner.app[METRICS]

    @property
    def base_url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        app = build_app(self.config.replace(controller__ari=False), db=self.db, api=self.api)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        if self.api:
            self.site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await self.site.start()
        await asyncio.wait_for(self.ami.connected.wait(), 10)

    async def wait_ami_reconnected(self, connections_before: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.ami.connections > connections_before and self.ami.connected.is_set()):
            assert time.monotonic() < deadline, f"AMI did not reconnect: {self.ami.last_error}"
            await asyncio.sleep(0.05)
