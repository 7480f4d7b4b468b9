"""Notification calls through Twilio: the REST API places them (the stand-in hands them to FakeTwilio),
the TwiML webhooks run the conversation, the status callback says how they ended; on both backends.
The calls of a backend run at once, then each test reads its own Call Log."""

from __future__ import annotations

import asyncio
import uuid

import pytest_asyncio
from aiohttp import web

from ivr.asterisk.ami import AmiClient
from ivr.core.notification import PROMPT, Notification
from ivr.shells.notify import NotificationService
from ivr.shells.twilio.clients import TwilioClients
from ivr.shells.twilio.notify import TwilioNotifier
from ivr.shells.twilio.voice import TwilioCalls
from ivr.store import models as m
from ivr.store.calllogs import create_call_log
from ivr.store.db import open_database, run_and_release
from ivr.store.twilio_accounts import encrypt_token, new_key
from tests.twilio.harness import FakeTwilio, Phone
from tests.twilio.rest_standin import TwilioStandIn
from tests.twilio.test_twilio_calls import PUBLIC, config_for, number

ACCOUNT = "AC" + "5" * 32      # the project's own account
TOKEN = "d" * 32
KEY = new_key()
FROM = "+16465550142"


def project_with_account(with_account: bool) -> uuid.UUID:
    project = m.Project.create(name="notify over twilio")
    if with_account:
        m.ProjectCallSMSConfig.create(project=project, name="Ours", twilioAccountSID=ACCOUNT,
                                      twilioAuthToken=encrypt_token(TOKEN, KEY), twilioPrimaryPhoneNumber=FROM)
    return project.id


def logged(note: Notification) -> Notification:
    create_call_log(note)
    return note


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def notified(database_url):
    standin = TwilioStandIn()
    await standin.start()
    standin.account(ACCOUNT, TOKEN)
    config = config_for(database_url, api_base_url=standin.base_url, encryption_key=KEY).replace(
        notify__digit_timeout=1.0, notify__max_prompts=2, notify__ring_timeout=5.0)
    db = open_database(database_url, pool_size=4)
    clients = TwilioClients(config)
    clients.bind(db)
    calls = TwilioCalls(config, tokens_for=clients.tokens_for, rest_for=clients.for_account)
    notifier = TwilioNotifier(config, calls.auth, clients)
    notifier.bind(db)
    ami = AmiClient("127.0.0.1", 9, "nobody", "nothing")   # never connected: no call may need it
    service = NotificationService(config, db, ami, tts=None)
    service.connect_wait = 0.2
    service.through_twilio = notifier.place_if_twilio
    app = web.Application()
    app.router.add_routes(notifier.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    phones = {
        # One entry per <Gather>: the message's, the prompt's, then the wait for a key.
        "acknowledges": Phone.answering(number("303"), presses=[None, "1"]),
        "replays_then_acknowledges": Phone.answering(number("303"), presses=[None, "9", None, "1"]),
        "hears_but_no_key": Phone.answering(number("303"), talk=None),
        "busy": Phone.busy(number("303")),
        "no_answer": Phone.no_answer(number("303")),
    }
    fake = FakeTwilio(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}", public_url=PUBLIC, auth_token=TOKEN,
                      account_sid=ACCOUNT, phones=phones.values())

    async def created(params, sid):
        fake.on_call_created(params, sid)
    standin.on_call_created = created
    try:
        async with fake:
            project = await run_and_release(db, project_with_account, True)
            elsewhere = await run_and_release(db, project_with_account, False)
            notes = {name: Notification(uuid.uuid4(), project, phone.number, None, f"Incident {name} is critical.")
                     for name, phone in phones.items()}
            notes["asterisk_project"] = Notification(uuid.uuid4(), elsewhere, number("303"), None, "Not for Twilio.")
            for note in notes.values():
                await run_and_release(db, logged, note)
            await asyncio.gather(*(service.place(note) for note in notes.values()))
            rows = {name: await run_and_release(db, m.CallLog.get_by_id, note.call_log_id)
                    for name, note in notes.items()}
            yield {"rows": rows, "fake": fake, "phones": phones, "standin": standin}
    finally:
        await service.close()
        await clients.close()
        await runner.cleanup()
        await standin.stop()
        await db.close_pool()


def test_answered_and_acknowledged_with_1(notified):
    row = notified["rows"]["acknowledges"]
    assert (row.status, row.statusMessage) == ("Success", "Answered; the message was heard and acknowledged (key 1).")
    assert row.callData["acknowledged"] is True and row.callData["keyPressed"] == "1"
    [call] = [c for c in notified["fake"].calls.values() if c.to == notified["phones"]["acknowledges"].number]
    heard = call.says
    assert heard[:2] == ["Incident acknowledges is critical.", PROMPT]
    assert heard[-1] == "Acknowledged. Thank you, goodbye."
    assert call.from_ == FROM   # the project's configuration's number
    assert row.callData["callSid"] == call.sid


def test_9_replays_the_message(notified):
    row = notified["rows"]["replays_then_acknowledges"]
    assert row.status == "Success" and row.callData["replays"] == 1 and row.callData["acknowledged"] is True


def test_heard_without_a_key_is_a_success_not_acknowledged(notified):
    row = notified["rows"]["hears_but_no_key"]
    assert (row.status, row.statusMessage) == ("Success", "Answered and the message was heard; not acknowledged.")
    assert row.callData["acknowledged"] is False


def test_busy_and_no_answer(notified):
    rows = notified["rows"]
    assert (rows["busy"].status, rows["busy"].statusMessage) == ("Busy", "Line busy")
    assert rows["no_answer"].status == "Missed Call"


def test_a_project_without_twilio_stays_on_asterisk(notified):
    row = notified["rows"]["asterisk_project"]
    assert row.status == "Error" and "AMI" in row.statusMessage   # the Asterisk path, not connected here
    placed = [r for r in notified["standin"].requests if r.method == "POST" and r.path.endswith("/Calls.json")]
    assert len(placed) == 5 and all(r.form["To"] != row.toNumber for r in placed)
