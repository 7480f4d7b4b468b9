"""The dashboard's live page during a real call: sipp calls the lab Asterisk, Hotline's controller runs the
policy, the API process (with the dashboard) reads the same database, and headless Chromium shows the
call appear and end Completed."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from api.app import create_app
from api.auth import hash_key, new_key
from ivr.store.models import ApiKey, Role
from tests.dashboard.server import artifact
from tests.e2e.hotline import Target
from tests.sip.parties import Caller, Phone

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def test_live_page_shows_a_real_call_appear_and_end_completed(hotline, sip_target):
    from playwright.async_api import async_playwright

    from tests.dashboard.server import CHROMIUM

    runner = web.AppRunner(create_app(hotline.config, db=hotline.db), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    phone = Phone.answer_and_press("1", delay=1.0)
    try:
        async with phone, async_playwright() as playwright:
            scenario = await hotline.policy(Target([phone], escalate_after=10), name="Dashboard e2e")
            key = new_key()
            await hotline.db.run(lambda: ApiKey.create(project=scenario.policy.projectId, name="dashboard",
                                                       keyHash=hash_key(key), keyPrefix=key[:10],
                                                       role=Role.VIEWER.value))
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                       args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = await browser.new_page(viewport={"width": 375, "height": 812})
                page.set_default_timeout(10000)
                await page.goto(f"{base}/dashboard/sign-in?next=/dashboard/live")
                await page.fill("input[name=apiKey]", key)
                await page.click("button[type=submit]")
                await page.wait_for_url(re.compile(r".*/dashboard/live\?ok=signed-in$"))
                await page.wait_for_selector("#live-state[data-state=live]")
                assert await page.locator(".call").count() == 0

                caller = Caller(scenario.number, sip_target, caller_id="+14155550123", hangup_after=2)
                await caller.start()
                card = page.locator(".call", has_text="+14155550123")
                await card.wait_for(timeout=5000)  # appears while it rings (the page reads every 0.5 s)
                assert await card.locator(".policy").inner_text() == "Dashboard e2e"
                assert f"User {phone.port}" in await card.locator(".legs").inner_text()
                await page.screenshot(path=artifact("e2e-live-ringing.png"), full_page=True)
                await page.wait_for_selector(".call[data-status=Completed]", timeout=20000)
                assert (await caller.wait(20)).answered
                await hotline.final_log(scenario)
                assert await card.locator(".answered").inner_text() == f"Answered by User {phone.port}"
                assert await card.locator(".legs .status").inner_text() == "Completed"
                await page.screenshot(path=artifact("e2e-live-completed.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
