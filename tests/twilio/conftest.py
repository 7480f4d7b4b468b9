"""Fixtures of the Twilio tests: the REST stand-in (tests/twilio/rest_standin.py) on a free port."""

from __future__ import annotations

import pytest

from tests.twilio.rest_standin import TwilioStandIn


@pytest.fixture
async def twilio_standin():
    """Twilio's REST API on 127.0.0.1:<free port> (``.base_url``), with no account yet."""
    standin = TwilioStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()
