"""The dashboard's tests: one server and one Chromium per module (tests/dashboard/server.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from tests.dashboard.server import sqlite_site

    running = sqlite_site(tmp_path_factory)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from tests.dashboard.server import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()
