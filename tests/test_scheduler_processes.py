"""Scheduled calls fire exactly once and on time with two real call-services processes
(`hotline serve --controller-only`, as `hotline serve` starts them) on one PostgreSQL database,
one of them killed (SIGKILL) while calls are firing and started again.

No Asterisk: ARI and AMI point at a closed port, so the processes keep retrying them; the scheduler
needs only the database. Every process started here is stopped by its pid, whatever happens."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.core.contact_center.vocabulary import CallType, RecordingPermission
from ivr.store import models as m
from ivr.store.contact_center import INBOUND_CALL, CallPlan, create_call
from ivr.store.db import open_database
from tests.conftest import own_postgres_database
from tests.test_serve import free_port, get, wait_for

FIRED = re.compile(r"scheduled call (\d+) fired ([0-9.]+) s after its time")


@pytest.fixture
def postgres_url():
    """A PostgreSQL database of its own (the processes fire every due call of their database)."""
    with own_postgres_database("hotline_sched") as url:
        yield url


class CallServices:
    """`hotline serve --controller-only` processes on free ports, each stopped by its pid."""

    def __init__(self, url: str, tmp_path: Path):
        self.url = url
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}

    def start(self, name: str) -> subprocess.Popen:
        port = free_port()
        data = self.tmp_path / name
        env = {**os.environ, "DATABASE_URL": self.url, "HOTLINE_GENERAL_DATA_DIR": str(data),
               "HOTLINE_API_PORT": str(port), "HOTLINE_AGI_PORT": str(free_port()),
               "HOTLINE_AGI_SECRET": f"test-agi-secret-{secrets.token_hex(8)}",
               "HOTLINE_ARI_URL": "http://127.0.0.1:9", "HOTLINE_ARI_PASSWORD": "x",
               "HOTLINE_AMI_PORT": "9", "HOTLINE_AMI_SECRET": "y", "HOTLINE_TTS_CACHE_DIR": str(data / "sounds")}
        env.pop("HOTLINE_CONFIG", None)
        log_path = self.tmp_path / f"{name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ivr.main", "serve", "--controller-only"], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        wait_for(lambda: proc.poll() is not None or get(f"http://127.0.0.1:{port}/api/health"),
                 what=f"the call services {name} answering")
        assert proc.poll() is None, f"the call services {name} exited:\n{log_path.read_text()}"
        assert "looking for due calls every 0.25 s" in log_path.read_text()
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return self.logs[proc.pid].read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def make_world():
    project = m.Project.create(name="scheduled calls, two processes")
    menu = m.CallMenu.create(project=project, name="Callbacks", menuType="mobile_menu")
    return project.id, menu.id


def schedule(project_id, menu_id, count: int) -> list:
    """``count`` scheduled calls through the API's own creation, each due 1-2 s after it is created."""
    ids = []
    for i in range(count):
        at = m.utcnow() + dt.timedelta(seconds=random.uniform(1.0, 2.0))
        plan = CallPlan(project_id, CallType.SCHEDULED, "en", f"+1859657{i % 10000:04d}",
                        RecordingPermission.NOT_ASKED, create_end_user=True, menu_id=menu_id, scheduled_at=at)
        ids.append(create_call(plan, 0))
    return ids


def outcome(ids: list) -> tuple[dict, dict, dict]:
    """Per call: its status, its lateness (queuedAt - scheduledAt, s), its count of inbound messages."""
    C = m.ContactCenterCall
    status, late = {}, {}
    for row in C.select(C.id, C.status, C.queuedAt, C.scheduledAt).where(C.id.in_(ids)):
        status[row.id] = row.status
        late[row.id] = (row.queuedAt - row.scheduledAt).total_seconds() if row.queuedAt else None
    wanted = {str(i) for i in ids}
    counts = {i: 0 for i in ids}
    for msg in m.OutboxMessage.select().where(m.OutboxMessage.kind == INBOUND_CALL):
        if msg.payload.get("call") in wanted:
            counts[next(i for i in ids if str(i) == msg.payload["call"])] += 1
    return status, late, counts


async def wait_fired(db, ids: list, timeout: float = 30.0) -> None:
    C = m.ContactCenterCall
    deadline = time.monotonic() + timeout
    while await db.run(lambda: C.select().where(C.id.in_(ids), C.status == "scheduled").count()):
        assert time.monotonic() < deadline, f"scheduled calls still not fired after {timeout} s"
        await asyncio.sleep(0.2)


async def test_two_processes_fire_each_scheduled_call_once_and_on_time_even_when_one_is_killed(postgres_url,
                                                                                              tmp_path):
    services = CallServices(postgres_url, tmp_path)
    db = open_database(postgres_url, pool_size=4)
    try:
        a, b = services.start("a"), services.start("b")
        project_id, menu_id = await db.run(make_world)

        # 1. Two processes, 200 calls due within the next 1-2 s.
        first = await db.run(schedule, project_id, menu_id, 200)
        await wait_fired(db, first)

        # 2. 200 more; a is killed while they fire, then started again; 100 more after that.
        creating = asyncio.get_running_loop().create_task(db.run(schedule, project_id, menu_id, 200))
        C = m.ContactCenterCall
        deadline = time.monotonic() + 30
        while await db.run(lambda: C.select().where(C.project == project_id, C.status == "queued").count()) < 220:
            assert time.monotonic() < deadline, "the second batch did not start firing"
            await asyncio.sleep(0.02)
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=10) == -signal.SIGKILL
        second = await creating
        a2 = services.start("a2")
        third = await db.run(schedule, project_id, menu_id, 100)
        await wait_fired(db, second + third)

        everything = first + second + third
        status, late, counts = await db.run(outcome, everything)
        assert set(status.values()) == {"queued"} and len(status) == 500
        assert [n for n in counts.values() if n != 1] == [], "a call without exactly one cc_inbound message"
        lateness = sorted(late.values())
        assert lateness[0] >= 0 and lateness[-1] < 1.0, f"lateness from {lateness[0]} to {lateness[-1]} s"
        # The processes' own logs: no call fired twice, both processes fired calls, and so did the restarted one.
        logged = {proc.pid: [int(n) for n, _ in FIRED.findall(services.log(proc))] for proc in (a, b, a2)}
        numbers = [n for per in logged.values() for n in per]
        assert len(numbers) == len(set(numbers))
        assert logged[a.pid] and logged[b.pid] and logged[a2.pid], {p: len(n) for p, n in logged.items()}
        print(f"\nfired by a/b/a2: {len(logged[a.pid])}/{len(logged[b.pid])}/{len(logged[a2.pid])}; lateness "
              f"p50 {statistics.median(lateness) * 1000:.0f} ms, p99 {lateness[int(len(lateness) * 0.99)] * 1000:.0f} "
              f"ms, max {lateness[-1] * 1000:.0f} ms")
    finally:
        services.stop_all()
        await db.close_pool()
