"""Scale-out benchmark: two lab Asterisk nodes behind Kamailio, one controller process per node, one
PostgreSQL database (``hotline cluster up``), real sipp callers and phones. Prints figures; asserts nothing.

    sudo .venv/bin/python bench/cluster_bench.py [--calls 200] [--rate 40] [--latency-calls 60]

1. load: --calls calls at --rate calls/s through Kamailio; each rings a phone that answers and presses
   1 (the policy asks for confirmation), is bridged, and the caller hangs up --hold s later. Reports the
   calls answered and the achieved set-up rate (calls/s), how they were spread over the nodes, and the
   logs that did not end Completed (with one Completed item).
2. latency: INVITE -> 200 OK (Hotline answers a caller at once), --latency-calls calls one at a time
   through Kamailio, then as many straight to node 1's SIP port: median and p95 of both.
3. failover: a stream of calls at --failover-rate calls/s through Kamailio; node 1's Asterisk is killed
   (SIGKILL, by its pid) mid-stream. Reports how long Kamailio took to mark it inactive (polled with
   kamcmd), the first call answered after the kill, the calls placed after the kill that failed, the
   longest set-up of those (an INVITE sent to the dead node waits --invite-timeout, then fails over), and
   how long until every call that was on the dead node had a closed log (controller.ari_lost_after).

Runs its own cluster (prefix "bench-", ports of the e2e ports + 950) and its own PostgreSQL database
(HOTLINE_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/postgres, for creating it), and
stops exactly what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.lab.cluster import Cluster  # noqa: E402
from ivr.lab.instance import Lab  # noqa: E402
from ivr.store import models as m  # noqa: E402
from ivr.store.db import migrate, open_database, run_sync  # noqa: E402
from tests.conftest import POSTGRES_ADMIN_URL, _psql  # noqa: E402
from tests.e2e.conftest import make_lab_config  # noqa: E402
from tests.sip import parties  # noqa: E402
from tests.sip.parties import Caller, Phone  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))
import call_bench  # noqa: E402
from call_bench import pct  # noqa: E402

BENCH_OFFSET = 950


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


async def make_policy(db, phone: Phone) -> m.IncomingCallPolicy:
    """One rule: ``phone``, for 20 s, with the press-1 confirmation."""
    return await call_bench.make_policy(db, [(phone, 20)], confirm=True)


async def logs_of(db, policy) -> list[tuple[m.IncomingCallLog, list]]:
    logs = await db.list(m.IncomingCallLog.select().where(m.IncomingCallLog.incomingCallPolicyId == policy.id))
    items = await db.list(m.IncomingCallLogItem.select().where(
        m.IncomingCallLogItem.incomingCallLog.in_([log.id for log in logs]))) if logs else []
    by_log: dict = {}
    for item in items:
        by_log.setdefault(item.__data__["incomingCallLog"], []).append(item)
    return [(log, by_log.get(log.id, [])) for log in logs]


async def wait_terminal(db, policy, count: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        rows = await logs_of(db, policy)
        if (len(rows) >= count and all(log.status in m.TERMINAL_STATUSES for log, _ in rows)) \
                or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.25)


def node_of(log) -> str:
    return (log.callProviderCallId or "?").rsplit("-", 1)[0]


def wrong(rows) -> int:
    return sum(1 for log, items in rows if log.status != "Completed" or [i.status for i in items] != ["Completed"])


async def load(args, cluster, db, target) -> dict:
    phone = Phone.answer_and_press("1", delay=0.3, calls=args.calls, max_wait=60)
    async with phone:
        policy = await make_policy(db, phone)
        await asyncio.sleep(0.3)
        callers = Caller(policy.routingPhoneNumber, target, calls=args.calls, rate=args.rate,
                         hangup_after=args.hold, max_wait=60)
        await callers.start()
        result = await callers.wait(args.calls / args.rate + args.hold + 60)
        rows = await wait_terminal(db, policy, args.calls, 60)
    answered = sorted(c.answered_at for c in result.calls if c.answered_at)
    first = min(c.invited_at for c in result.calls if c.invited_at)
    setup = [c.setup_time for c in result.calls if c.answered]
    spread: dict[str, int] = {}
    for log, _ in rows:
        spread[node_of(log)] = spread.get(node_of(log), 0) + 1
    return {"calls": args.calls, "answered": len(answered), "failed": args.calls - result.successful,
            "rate": len(answered) / max(1e-9, answered[-1] - first) if answered else 0.0,
            "setup_median": statistics.median(setup) if setup else float("nan"),
            "setup_p95": pct(setup, 95) if setup else float("nan"),
            "spread": spread, "logs": len(rows), "wrong": wrong(rows) + (args.calls - len(rows))}


async def latency(args, db, target, direct) -> dict:
    out = {}
    for name, where in (("through Kamailio", target), ("direct to node 1", direct)):
        phone = Phone.answer_and_press("1", delay=0.3, calls=args.latency_calls, max_wait=30)
        async with phone:
            policy = await make_policy(db, phone)
            caller = Caller(policy.routingPhoneNumber, where, calls=args.latency_calls, concurrency=1, rate=10,
                            hangup_after=0.1, max_wait=20)
            await caller.start()
            result = await caller.wait(args.latency_calls * 3 + 30)
            await wait_terminal(db, policy, args.latency_calls, 30)
        out[name] = [c.setup_time for c in result.calls if c.answered]
    return out


async def failover(args, cluster, db, target) -> dict:
    plans = cluster.plan()
    kam = cluster.kamailio(plans)
    dead_uri = f"sip:{plans[0].sip[0]}:{plans[0].sip[1]}"
    calls = int(args.failover_rate * args.failover_seconds)
    phone = Phone.answer_and_press("1", delay=0.3, calls=calls, max_wait=60)
    async with phone:
        policy = await make_policy(db, phone)
        stream = Caller(policy.routingPhoneNumber, target, calls=calls, rate=args.failover_rate,
                        hangup_after=args.hold, max_wait=30)
        await stream.start()
        await asyncio.sleep(args.failover_seconds / 3)
        pid = Lab(plans[0].config, plans[0].instance).pid
        killed_at, killed_mono = time.time(), time.monotonic()
        os.kill(pid, signal.SIGKILL)
        detected = None
        while time.monotonic() - killed_mono < 15:
            view = await asyncio.to_thread(kam.dispatcher_view)
            if any(v["uri"] == dead_uri and not v["active"] for v in view):
                detected = time.monotonic() - killed_mono
                break
            await asyncio.sleep(0.02)
        result = await stream.wait(args.failover_seconds + args.hold + 60)
        on_dead_open = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = await logs_of(db, policy)
            dead = [log for log, _ in rows if node_of(log) == plans[0].systemname]
            if all(log.status in m.TERMINAL_STATUSES for log in dead):
                on_dead_open = time.monotonic() - killed_mono
                break
            await asyncio.sleep(0.1)
        rows = await wait_terminal(db, policy, len(rows), 30)
    after = [c for c in result.calls if c.invited_at and c.invited_at >= killed_at]
    answered_after = sorted(c.answered_at for c in after if c.answered_at)
    lost = [log for log, _ in rows if log.status == "Failed"]
    return {"calls": calls, "after_kill": len(after), "failed_after_kill": sum(1 for c in after if not c.answered),
            "detected": detected, "first_answer_after_kill": (answered_after[0] - killed_at) if answered_after else None,
            "max_setup_after_kill": max((c.setup_time for c in after if c.answered), default=float("nan")),
            "dead_calls_closed_after": on_dead_open, "lost": len(lost),
            "open": sum(1 for log, _ in rows if log.status not in m.TERMINAL_STATUSES),
            "spread_after_kill": sorted({node_of(log) for log, _ in rows
                                         if log.startedAt and log.startedAt.timestamp() >= killed_at})}


async def run_phases(args, cluster, url):
    plans = cluster.plan()
    target = cluster.kamailio(plans).listen
    db = open_database(url, pool_size=2)
    try:
        print(f"load: {args.calls} calls at {args.rate:g}/s through Kamailio...", flush=True)
        lo = await load(args, cluster, db, target)
        print(f"latency: {args.latency_calls} calls one at a time, each way...", flush=True)
        la = await latency(args, db, target, plans[0].sip)
        print("failover: node 1 killed mid-stream...", flush=True)
        fo = await failover(args, cluster, db, target)
    finally:
        await db.close_pool()
        await parties.stop_all()
    return lo, la, fo


def run(args) -> None:
    workdir = Path(args.workdir)
    name = f"hotline_cluster_bench_{os.getpid()}_{secrets.token_hex(3)}"
    _psql(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    cluster = None
    try:
        run_sync(url, migrate)
        config = make_lab_config(workdir / "data", offset=BENCH_OFFSET).replace(
            database__url=url, general__log_level="WARNING", controller__port=18081 + BENCH_OFFSET,
            sip__outbound_trunk="", sip__outbound_trunk_contact="",
            controller__confirm_timeout=5.0, controller__ari_lost_after=args.lost_after,
            sip__rtp_start=50000, sip__rtp_end=53999)
        cluster = Cluster(config, 2, prefix="bench-", ping_interval=args.ping_interval,
                          invite_timeout=args.invite_timeout)
        started = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - started:.1f} s", flush=True)
        lo, la, fo = asyncio.run(run_phases(args, cluster, url))
    finally:
        parties.kill_all_now()
        if cluster is not None:
            print(f"cluster down: {', '.join(cluster.down())}", flush=True)
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"\ncommand: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {os.cpu_count()} CPUs; 2 Asterisk 22 nodes, Kamailio 5.6 (dispatcher round-robin, "
          f"OPTIONS every {args.ping_interval} s, INVITE timeout {args.invite_timeout} s), 2 controllers, PostgreSQL")
    print("\n| load | value |\n|---|---|")
    print(f"| calls offered | {lo['calls']} at {args.rate:g}/s, caller hangs up {args.hold:g} s after the answer |")
    print(f"| answered | {lo['answered']} (failed {lo['failed']}) |")
    print(f"| achieved set-up rate | {lo['rate']:.1f} calls/s |")
    print(f"| INVITE->200 under load | median {ms(lo['setup_median'])} ms, p95 {ms(lo['setup_p95'])} ms |")
    print(f"| spread over the nodes | {', '.join(f'{k}: {v}' for k, v in sorted(lo['spread'].items()))} |")
    print(f"| logs not Completed (or missing) | {lo['wrong']} of {lo['calls']} |")
    print("\n| INVITE->200 OK, one call at a time | calls | median ms | p95 ms |\n|---|---|---|---|")
    for path, values in la.items():
        print(f"| {path} | {len(values)} | {ms(statistics.median(values))} | {ms(pct(values, 95))} |")
    print("\n| failover (node 1 killed) | value |\n|---|---|")
    print(f"| stream | {fo['calls']} calls at {args.failover_rate:g}/s, {fo['after_kill']} placed after the kill |")
    detected = f"{fo['detected'] * 1000:.0f} ms" if fo["detected"] is not None else "not within 15 s"
    print(f"| kill -> Kamailio marks the node inactive | {detected} |")
    first = f"{fo['first_answer_after_kill'] * 1000:.0f} ms" if fo["first_answer_after_kill"] is not None else "none"
    print(f"| kill -> first call answered (by node 2) | {first} |")
    print(f"| calls placed after the kill that failed | {fo['failed_after_kill']} |")
    print(f"| longest INVITE->200 after the kill (failover) | {ms(fo['max_setup_after_kill'])} ms |")
    closed = f"{fo['dead_calls_closed_after']:.1f} s" if fo["dead_calls_closed_after"] is not None else "not within 60 s"
    print(f"| kill -> every call of node 1 closed (ari_lost_after {args.lost_after:g} s) | {closed} "
          f"({fo['lost']} closed Failed as lost) |")
    print(f"| logs left open | {fo['open']} |")
    print(f"| nodes that took calls after the kill | {', '.join(fo['spread_after_kill'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="load: calls through Kamailio")
    parser.add_argument("--rate", type=float, default=40.0, help="load: new calls per second")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds a caller stays after the answer")
    parser.add_argument("--latency-calls", type=int, default=60, help="latency: calls per path, one at a time")
    parser.add_argument("--failover-rate", type=float, default=10.0, help="failover: calls per second")
    parser.add_argument("--failover-seconds", type=float, default=6.0, help="failover: length of the stream")
    parser.add_argument("--ping-interval", type=int, default=1, help="Kamailio's OPTIONS probe interval (s)")
    parser.add_argument("--invite-timeout", type=float, default=1.0, help="Kamailio's INVITE timeout (s)")
    parser.add_argument("--lost-after", type=float, default=5.0, help="controller.ari_lost_after (s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the cluster benchmark runs lab Asterisk nodes and needs root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hotline-cluster-bench-") as tmp:
        args.workdir = tmp
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
