"""Contact-center outbound calls against the real lab Asterisk with real SIP parties (sipp).

    python bench/cc_bench.py [--calls 50] [--at-once 10]

Creates --calls outbound calls through ``POST /apps/api/v1/calls`` (HTTP Basic), --at-once of them at
a time, each for its own agent (an agent holds one call at a time). Every agent rings on one sipp
phone that answers at once; every end user is the lab carrier's sipp phone, which answers at once
and hangs up a second later. The API and the call services run in this process (``build_app`` as the
e2e tests run it). Reports the POST's latency, the set-up time from the call's creation to both
parties connected (the outbox hand-over, the agent's INVITE and answer, the end user's INVITE and
answer, the bridge), and the calls that did not finish truthfully.

Runs its own lab instance ("ccbench") on the e2e ports + 300, stops exactly what it started, and
needs root (as `make test`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from api.auth import hash_key, new_key  # noqa: E402
from ivr.lab.instance import Lab  # noqa: E402
from ivr.main import CONTACT_CENTER, CONTROLLER, build_app  # noqa: E402
from ivr.store import models as m  # noqa: E402
from ivr.store.db import migrate, open_database, run_and_release  # noqa: E402
from tests.e2e.conftest import make_lab_config  # noqa: E402
from tests.sip.parties import Phone  # noqa: E402

BENCH_OFFSET = 300


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def build_project(count: int, agent_uri: str) -> tuple[str, str, list[str]]:
    project = m.Project.create(name="cc bench")
    secret = new_key()
    m.ApiKey.create(project=project, name="bench", keyHash=hash_key(secret), keyPrefix=secret[:10],
                    role="Project Admin", permissions=[])
    m.OutboundPhoneNumber.create(project=project, phoneNumber="+13392195276", isDefault=True)
    emails = []
    for i in range(count):
        email = f"agent{i}@bench.example"
        agent = m.User.create(project=project, name=f"Agent {i}", email=email, isAgent=True)
        m.UserIncomingCallNumber.create(project=project, user=agent, sipUri=agent_uri, isVerified=True)
        emails.append(email)
    return str(project.id), secret, emails


async def main_async(args) -> None:
    workdir = Path(args.workdir)
    config = make_lab_config(workdir / "data", offset=BENCH_OFFSET)
    url = f"sqlite:///{workdir / 'bench.db'}"
    config = config.replace(database__url=url, api__rate_limit=0, notify__max_calls_per_hour=100000,
                            general__log_level="WARNING")
    lab = Lab(config, instance="ccbench")
    lab.up(test_routes=True)
    db = open_database(url, pool_size=4)
    runner = None
    try:
        await migrate(db)
        await db.close_pool()  # migrate() kept this task's connection
        carrier_port = int(config.sip.outbound_trunk_contact.rsplit(":", 1)[1])
        async with Phone.answer(calls=args.calls, max_wait=120) as agents, \
                Phone.answer(port=carrier_port, calls=args.calls, hold=1.0, max_wait=120) as users:
            project_id, key, emails = await run_and_release(db, build_project, args.calls, agents.uri())
            runner = web.AppRunner(build_app(config, db=db, api=True), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            await asyncio.wait_for(runner.app[CONTROLLER].ari.connected.wait(), 10)
            base = f"http://127.0.0.1:{runner.addresses[0][1]}/apps/api/v1/calls"
            auth = {"Authorization": "Basic " + base64.b64encode(f"{project_id}:{key}".encode()).decode()}
            post_ms: list[float] = []
            refused = []
            gate = asyncio.Semaphore(args.at_once)

            async def one(session, email):
                async with gate:
                    body = {"call_type": "Voice Outbound (API)", "agent_email": email,
                            "end_user_number": "+1 859-657-9625"}
                    started = time.perf_counter()
                    async with session.post(base, json=body, headers=auth) as resp:
                        payload = await resp.json()
                    post_ms.append((time.perf_counter() - started) * 1000)
                    if resp.status != 201:
                        refused.append((resp.status, payload))
                        return
                    await wait_ended(db, payload["id"], project_id)

            begun = time.perf_counter()
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*[one(session, email) for email in emails])
            elapsed = time.perf_counter() - begun
            service = runner.app[CONTACT_CENTER]
            while service.actors:
                await asyncio.sleep(0.1)
        calls = await run_and_release(db, lambda: list(m.ContactCenterCall.select().where(
            m.ContactCenterCall.project == uuid.UUID(project_id))))
        setup_ms = [(c.connectedAt - c.createdAt).total_seconds() * 1000 for c in calls if c.connectedAt]
        wrong = [(c.numericId, c.status, c.failReason, c.failDetails) for c in calls
                 if c.status != "finished" or c.disconnectedBy != "disconnected_by_end_user"]
        print(f"{args.calls} outbound calls, {args.at_once} at a time, in {elapsed:.1f} s")
        print(f"POST /apps/api/v1/calls: p50 {pct(post_ms, 50):.1f} ms, p99 {pct(post_ms, 99):.1f} ms; "
              f"refused: {len(refused)} {refused[:3]}")
        if setup_ms:
            print(f"created -> connected (outbox, agent INVITE + answer, end user INVITE + answer, bridge): "
                  f"p50 {pct(setup_ms, 50):.0f} ms, p99 {pct(setup_ms, 99):.0f} ms")
        print(f"not finished truthfully: {len(wrong)} {wrong[:5]}")
    finally:
        if runner is not None:
            await runner.cleanup()
        await db.close_pool()
        lab.down()


def call_status(numeric_id: int, project_id: str) -> str:
    Call = m.ContactCenterCall
    return Call.get(Call.numericId == numeric_id, Call.project == uuid.UUID(project_id)).status


async def wait_ended(db, numeric_id: int, project_id: str, timeout: float = 60.0) -> None:
    # run_and_release: a task that keeps polling must not keep one of the pool's connections.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await run_and_release(db, call_status, numeric_id, project_id) in ("finished", "failed"):
            return
        await asyncio.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--at-once", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the call benchmarks run the lab Asterisk and need root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hotline-cc-bench-") as tmp:
        args.workdir = tmp
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
