"""Scale-out on one machine, for real: two lab Asterisk nodes behind Kamailio, one controller process
per node, one PostgreSQL database (``ivr.lab.cluster``, ``hotline cluster up``).

Calls placed at Kamailio's port are spread over both nodes and end Completed; then one node's Asterisk
is killed (by its pid) with calls on it: Kamailio stops sending it new calls within its probe interval
(an INVITE it sends meanwhile fails over to the other node), and the calls that were on the dead node
are closed as lost by its controller (``controller.ari_lost_after``): nothing stays open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from ivr.lab.cluster import Cluster
from ivr.lab.kamailio import kamailio_binary
from ivr.shells.ari import GONE_MESSAGE
from tests.conftest import own_postgres_database
from tests.e2e.conftest import _worker_index, make_lab_config
from tests.sip import parties
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e

#: The cluster's base ports: the worker's e2e ports + 50 (Kamailio takes the SIP port; node i the
#: base + 10 i), clear of the session's lab (+0..+20) and of the next worker's (+100).
CLUSTER_OFFSET = 50
LOST_AFTER = 3.0       # controller.ari_lost_after: a dead node's calls are closed this long after
PING_INTERVAL = 1      # Kamailio's OPTIONS probes
INVITE_TIMEOUT = 1.0   # a node that sends nothing back within this long: the next node is tried


@pytest.fixture
def cluster_database():
    """A migrated PostgreSQL database of this test only, dropped after."""
    with own_postgres_database("hotline_cluster") as url:
        yield url


@pytest.fixture
def cluster(tmp_path, cluster_database):
    if os.geteuid() != 0:
        pytest.fail("the cluster runs lab Asterisk nodes and needs root: run `sudo make test`")
    kamailio_binary()  # a clear error when Kamailio is missing
    worker = _worker_index()
    offset = 100 * worker + CLUSTER_OFFSET
    config = make_lab_config(tmp_path / "data", offset=offset).replace(
        database__url=cluster_database, general__log_level="WARNING", sip__outbound_trunk="",
        sip__outbound_trunk_contact="",
        controller__port=18081 + offset, controller__confirm_timeout=5.0,
        controller__ari_lost_after=LOST_AFTER,
        sip__rtp_start=38000 + 1000 * worker, sip__rtp_end=38999 + 1000 * worker)
    running = Cluster(config, 2, prefix=f"c{worker}-", ping_interval=PING_INTERVAL, invite_timeout=INVITE_TIMEOUT)
    try:
        running.up()
        yield running
    finally:
        parties.kill_all_now()
        stopped = running.down()
        print(f"\ncluster down: {', '.join(stopped)}")
        assert not running.kamailio().is_running()


async def make_policy(db, phone: Phone):
    from ivr.store import models as m

    def build():
        project = m.Project.create(name=f"cluster-{uuid.uuid4().hex[:6]}")
        policy = m.IncomingCallPolicy.create(
            project=project, name="Cluster", slug=f"cluster-{uuid.uuid4().hex}",
            routingPhoneNumber=f"+1212{uuid.uuid4().int % 8000000 + 2000000:07d}", greetingMessage="",
            noAnswerMessage="Nobody answered.", requireAnswerConfirmation=True)
        user = m.User.create(project=project, name="On call")
        m.UserIncomingCallNumber.create(project=project, user=user, sipUri=phone.uri(), isVerified=True)
        m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=policy, order=1,
                                                  escalateAfterSeconds=10, user=user)
        return policy

    return await db.run(build)


async def logs_of(db, policy):
    from ivr.store import models as m

    logs = await db.list(m.IncomingCallLog.select().where(m.IncomingCallLog.incomingCallPolicyId == policy.id))
    items = await db.list(m.IncomingCallLogItem.select().where(
        m.IncomingCallLogItem.incomingCallLog.in_([log.id for log in logs]))) if logs else []
    by_log = {}
    for item in items:
        by_log.setdefault(item.__data__["incomingCallLog"], []).append(item)
    return [(log, by_log.get(log.id, [])) for log in logs]


async def wait_logs(db, policy, count: int, done, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        rows = await logs_of(db, policy)
        if len(rows) >= count and all(done(log) for log, _ in rows):
            return rows
        if time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.25)


def node_of(log) -> str:
    return log.callProviderCallId.rsplit("-", 1)[0]


def describe(rows) -> str:
    return "\n".join(f"{log.callProviderCallId} {log.status} {log.statusMessage!r} items "
                     f"{[(i.status, i.statusMessage) for i in items]}" for log, items in rows[:8])


async def test_calls_spread_over_two_nodes_and_survive_one_node_dying(cluster):
    from ivr.store import models as m
    from ivr.store.db import open_database

    plans = cluster.plan()
    names = [p.systemname for p in plans]
    kam = cluster.kamailio(plans)
    target = kam.listen
    db = open_database(cluster.config.database_url, pool_size=2)
    try:
        # ---------------------------------------------------------------- spread: 40 calls
        n = 40
        phone = Phone.answer_and_press("1", delay=0.3, calls=n, max_wait=30)
        await phone.start()
        policy = await make_policy(db, phone)
        callers = Caller(policy.routingPhoneNumber, target, calls=n, rate=20, hangup_after=1.5, max_wait=20)
        started = time.monotonic()
        await callers.start()
        result = await callers.wait(40)
        rows = await wait_logs(db, policy, n, lambda log: log.status in m.TERMINAL_STATUSES, timeout=15)
        elapsed = time.monotonic() - started
        await phone.stop()
        assert result.successful == n and result.failed == 0, result
        setup = sorted(c.setup_time for c in result.calls)
        print(f"\n{n} calls through Kamailio in {elapsed:.1f} s; INVITE->200 median {setup[n // 2] * 1000:.0f} ms, "
              f"max {setup[-1] * 1000:.0f} ms")
        assert len(rows) == n, describe(rows)
        per_node = {name: sum(1 for log, _ in rows if node_of(log) == name) for name in names}
        print(f"calls per node: {per_node}")
        assert all(count >= n // 4 for count in per_node.values()), per_node
        wrong = [(log, items) for log, items in rows
                 if log.status != "Completed" or [i.status for i in items] != ["Completed"]]
        assert not wrong, describe(wrong)

        # ---------------------------------------------------------------- one node dies
        phone = Phone.answer_and_press("1", delay=0.3, calls=40, max_wait=40)
        await phone.start()
        policy = await make_policy(db, phone)
        # Long calls, on both nodes: connected when the node dies.
        held = Caller(policy.routingPhoneNumber, target, calls=8, rate=20, hangup_after=8.0, max_wait=20)
        await held.start()
        rows = await wait_logs(db, policy, 8, lambda log: log.status == "Connected", timeout=15)
        assert len(rows) == 8 and all(log.status == "Connected" for log, _ in rows), describe(rows)
        on_dead = {log.id for log, _ in rows if node_of(log) == names[0]}
        assert on_dead and len(on_dead) < 8, describe(rows)

        dead_uri = f"sip:{plans[0].sip[0]}:{plans[0].sip[1]}"
        pid = cluster_node_pid(plans[0])
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # New calls keep arriving while Kamailio finds out.
        stream = Caller(policy.routingPhoneNumber, target, calls=16, rate=8, hangup_after=1.0, max_wait=20)
        await stream.start()
        detected = None
        while time.monotonic() - killed_at < 10:
            view = await asyncio.to_thread(kam.dispatcher_view)
            if any(v["uri"] == dead_uri and not v["active"] for v in view):
                detected = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.05)
        print(f"Kamailio marked the dead node inactive {detected * 1000 if detected else float('nan'):.0f} ms "
              f"after the kill (probe interval {PING_INTERVAL} s, INVITE timeout {INVITE_TIMEOUT} s)")
        assert detected is not None and detected < PING_INTERVAL + INVITE_TIMEOUT + 1.5
        stream_result = await stream.wait(40)
        await held.wait(40)
        total = 8 + 16
        rows = await wait_logs(db, policy, total, lambda log: log.status in m.TERMINAL_STATUSES,
                               timeout=LOST_AFTER + 15)
        await phone.stop()

        # Every new call was answered, by the surviving node (those sent to the dead one failed over).
        assert stream_result.successful == 16 and stream_result.failed == 0, stream_result
        worst = max(c.setup_time for c in stream_result.calls)
        print(f"calls placed after the kill: all answered by {names[1]}, INVITE->200 max {worst * 1000:.0f} ms")
        assert len(rows) == total, describe(rows)
        still_open = [(log, items) for log, items in rows if log.status not in m.TERMINAL_STATUSES]
        assert not still_open, describe(still_open)
        lost = [(log, items) for log, items in rows if log.id in on_dead]
        survived = [(log, items) for log, items in rows if log.id not in on_dead]
        # The dead node's calls: closed as lost by its controller, items too.
        gone = GONE_MESSAGE.format(seconds=LOST_AFTER)
        assert all(log.status == "Failed" and log.statusMessage == gone and log.endedAt is not None
                   and all(i.status in m.TERMINAL_STATUSES for i in items) for log, items in lost), describe(lost)
        # The others (held on the surviving node, and every call placed after the kill): Completed there.
        wrong = [(log, items) for log, items in survived
                 if log.status != "Completed" or [i.status for i in items] != ["Completed"]
                 or node_of(log) != names[1]]
        assert not wrong, describe(wrong)
        status = cluster.status()
        assert not status["nodes"][0]["asterisk"]["running"] and status["nodes"][1]["controller"]["ok"], status
    finally:
        await db.close_pool()


def cluster_node_pid(plan) -> int:
    from ivr.lab.instance import Lab

    pid = Lab(plan.config, plan.instance).pid
    assert pid, f"node {plan.instance} is not running"
    return pid
