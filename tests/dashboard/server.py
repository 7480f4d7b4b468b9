"""Hotline's API (with the dashboard) served on a loopback port from a thread of its own, and a browser.

The browser tests are synchronous (Playwright's sync API); the server runs its own event loop in a
thread, so the test thread can drive Chromium while the server answers. ``Site.run(coro)`` runs a
coroutine in the server's loop (to build data through the real API).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from api.app import create_app
from ivr.store.db import migrate, open_database, run_sync
from tests.api.conftest import NO_TWILIO, TWILIO_ENCRYPTION_KEY, ApiClient

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "dashboard"
ROLES = ("owner", "admin", "member", "viewer")


class Site:
    """The application on 127.0.0.1:<port>, in a thread with its own event loop."""

    def __init__(self, config, database_url: str):
        self.config = config
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dashboard-site", daemon=True)
        self.base = ""
        self.api: ApiClient | None = None

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Site":
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self):
        self.db = open_database(self.database_url, pool_size=2)
        self.runner = web.AppRunner(create_app(self.config, db=self.db), shutdown_timeout=2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.session = ClientSession(base_url=self.base)
        self.api = ApiClient(self.session, self.db)

    async def _stop(self):
        await self.session.close()
        await self.runner.cleanup()
        await self.db.close_pool()

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def site_config(data_dir: Path, database_url: str, **env):
    from ivr.config import load_config

    return load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(data_dir), "HOTLINE_API_RATE_LIMIT": "0",
                            "HOTLINE_DATABASE_URL": database_url,
                            "HOTLINE_TWILIO_ENCRYPTION_KEY": TWILIO_ENCRYPTION_KEY,
                            "HOTLINE_TWILIO_API_BASE_URL": NO_TWILIO, **env})


def sqlite_site(tmp_path_factory) -> Site:
    data_dir = tmp_path_factory.mktemp("dashboard-data")
    url = f"sqlite:///{data_dir / 'hotline.db'}"
    run_sync(url, migrate)
    return Site(site_config(data_dir, url), url).start()


def launch_chromium(playwright):
    """Debian's chromium, headless (scripts/install-system-deps installs it; no browser is downloaded)."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail("chromium is missing: run scripts/install-system-deps (Debian package chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])


def sign_in(page, base: str, key: str) -> None:
    page.goto(f"{base}/dashboard/sign-in")
    page.fill("input[name=apiKey]", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/\?ok=signed-in$"))


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
