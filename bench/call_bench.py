"""Call benchmarks against the real lab Asterisk with real SIP parties (sipp).

    python bench/call_bench.py latency [--calls 100]
    python bench/call_bench.py load [--sizes 100,200,300]

latency: the time from the caller's INVITE to the on-call phone's INVITE,
through Hotline (greeting off) and through a plain dialplan Dial() to the same
phone on the same Asterisk; calls one at a time; medians and p99 of both and
the difference (what Hotline adds).

load: N simultaneous calls, each escalating through two rules with real SIP
legs (rule 1 rings a phone that never answers for 2 s, rule 2 a phone that
answers and presses 1), arriving at --rate calls/s; every caller stays until
all have arrived, then about 2 s more after being connected, so all N are up
at once. --flow simple: one rule whose phone answers and presses 1.
--baseline (with --flow simple): after each size, the same calls through
bench/minimal_ari.py, the least a correct ARI app does for that flow (answer,
originate, wait for the 1, bridge, hang up the other side), measured the same
way; the last table gives both CPU figures per call and their ratio.
Reports the controller's CPU seconds per call and peak RSS (it runs as its own
process, `hotline serve --controller-only`), its event-loop lag p99 and
escalation timer error p99 (from /api/controller/stats), and the calls that
failed or whose log or items ended in a wrong or non-terminal status.
--api-load ROWS: meanwhile `hotline serve --api-only` answers wrk's get-list flood (bench/api_load.py)
from the same database, filled with ROWS incoming-call logs.

Runs its own lab instance ("bench") on its own ports, stops exactly what it
started, and needs root (as `make test`); HOTLINE_BENCH_OFFSET moves it (see
BENCH_OFFSET). HOTLINE_BENCH_PROFILE=FILE runs the
controller under cProfile and writes its statistics there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from ivr.store import models as m  # noqa: E402
from ivr.asterisk.dialplan import LAB_CALLER_ADDRESS  # noqa: E402
from ivr.lab.instance import Lab  # noqa: E402
from api_load import ApiLoad  # noqa: E402
from ivr.store.db import migrate, open_database  # noqa: E402
from tests.e2e.conftest import make_lab_config  # noqa: E402
from tests.sip.parties import Caller, Phone  # noqa: E402

# Lab ports: the e2e ports + 300, so a test session can run beside it. Two benchmarks at once on
# one machine each need their own: HOTLINE_BENCH_OFFSET=800 runs on the e2e ports + 800, in the lab
# instance "bench800".
BENCH_OFFSET = int(os.environ.get("HOTLINE_BENCH_OFFSET") or 300)
BENCH_INSTANCE = "bench" if BENCH_OFFSET == 300 else f"bench{BENCH_OFFSET}"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Measured:
    """A process this benchmark started, measured through /proc."""

    proc: asyncio.subprocess.Process | None = None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Controller(Measured):
    """`hotline serve --controller-only` as its own process, measured through /proc."""

    def __init__(self, config, workdir: Path):
        self.config_file = workdir / "hotline.yaml"
        self.port = free_tcp_port()
        self.config_file.write_text(yaml.safe_dump(config.replace(api__port=self.port).as_dict(reveal_secrets=True)))
        self.log = workdir / "controller.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_") and k != "DATABASE_URL"}
        env["HOTLINE_GENERAL_LOG_LEVEL"] = "WARNING"
        profile = ["-m", "cProfile", "-o", os.environ["HOTLINE_BENCH_PROFILE"]] \
            if os.environ.get("HOTLINE_BENCH_PROFILE") else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *profile, "-m", "ivr.main", "--config", str(self.config_file), "serve", "--controller-only",
            env=env, stdout=open(self.log, "ab"), stderr=asyncio.subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.stats()["ari_connected"]:
                    return
            except OSError:
                pass
            if self.proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()  # nothing this benchmark started may outlive it
                raise RuntimeError(f"the controller did not start:\n{self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/controller/stats", timeout=5) as resp:
            return json.loads(resp.read())



class MinimalController(Measured):
    """bench/minimal_ari.py, the least an ARI app does for the one-rule flow, as its own process."""

    def __init__(self, config, workdir: Path, endpoint: str):
        self.config, self.endpoint = config, endpoint
        self.log = workdir / "minimal.log"

    async def start(self) -> None:
        env = {**os.environ, "ARI_PASSWORD": self.config.ari.password}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "minimal_ari.py"), "--url", self.config.ari.url,
            "--user", self.config.ari.username, "--app", self.config.ari.app, "--endpoint", self.endpoint,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=open(self.log, "ab"))
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"the minimal ARI controller did not start:\n{self.log.read_text()[-2000:]}")


async def make_policy(db, phones: list[tuple[Phone, int]], *, confirm: bool) -> m.IncomingCallPolicy:
    """A policy with one rule per (phone, escalate_after), greeting off."""

    def build():
        project = m.Project.create(name="bench")
        policy = m.IncomingCallPolicy.create(
            project=project, name="Bench", slug=f"bench-{uuid.uuid4().hex}",
            routingPhoneNumber=f"+1212{uuid.uuid4().int % 8000000 + 2000000:07d}", greetingMessage="",
            noAnswerMessage="Nobody answered.", requireAnswerConfirmation=confirm)
        for order, (phone, escalate_after) in enumerate(phones, start=1):
            user = m.User.create(project=project, name=f"User {order}")
            m.UserIncomingCallNumber.create(project=project, user=user, sipUri=phone.uri(), isVerified=True)
            m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=policy, order=order,
                                                      escalateAfterSeconds=escalate_after, user=user)
        return policy

    return await db.run(build)


def invite_latencies(caller_result, phone_result) -> list[float]:
    """Caller's INVITE sent to the phone's INVITE received, call by call (one call at a time)."""
    sent = [c.invited_at for c in caller_result.calls]
    received = [c.invited_at for c in phone_result.calls]
    if len(sent) != len(received) or None in sent or None in received:
        # Calls are paired by their order; a missing record would pair the wrong ones.
        raise RuntimeError(f"cannot pair the calls: {len(sent)} sent, {len(received)} received")
    return [r - s for s, r in zip(sent, received)]


async def latency(args, config, lab, db) -> None:
    sip = ("127.0.0.1", config.sip.port)
    results = {}
    # Plain dialplan: the lab's test route Dial()s the phone for callers from the lab caller address.
    phone = Phone.answer(calls=args.calls, hold=0.2)
    async with phone:
        caller = Caller(f"dial-{phone.port}", sip, ip=LAB_CALLER_ADDRESS, calls=args.calls, concurrency=1,
                        rate=20, hangup_after=0.1, max_wait=10)
        await caller.start()
        caller_result = await caller.wait(args.calls * 2 + 30)
        phone_result = await phone.wait(30)
    results["plain Dial()"] = invite_latencies(caller_result, phone_result)
    # Through Hotline: StasisStart -> policy -> engine -> originate.
    controller = Controller(config, Path(args.workdir))
    await controller.start()
    try:
        phone = Phone.answer(calls=args.calls, hold=0.2)
        async with phone:
            policy = await make_policy(db, [(phone, 10)], confirm=False)
            caller = Caller(policy.routingPhoneNumber, sip, calls=args.calls, concurrency=1, rate=20,
                            hangup_after=0.1, max_wait=10)
            await caller.start()
            caller_result = await caller.wait(args.calls * 2 + 30)
            phone_result = await phone.wait(30)
        results["Hotline"] = invite_latencies(caller_result, phone_result)
    finally:
        await controller.stop()
    print("\n| path | calls | median ms | p99 ms |\n|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {len(values)} | {statistics.median(values) * 1000:.2f} | {pct(values, 99) * 1000:.2f} |")
    plain, hot = results["plain Dial()"], results["Hotline"]
    print(f"\nadded by Hotline: median {(statistics.median(hot) - statistics.median(plain)) * 1000:.2f} ms, "
          f"p99 {(pct(hot, 99) - pct(plain, 99)) * 1000:.2f} ms")


async def load_once(size: int, args, config, db, *, baseline: bool = False, api=None) -> dict:
    """N simultaneous calls through Hotline's controller, or (``baseline``) through the minimal one."""
    sip = ("127.0.0.1", config.sip.port)
    away = Phone.never_answer(calls=size, max_wait=30)
    person = Phone.answer_and_press("1", delay=0.3, calls=size, max_wait=30)
    async with away, person:
        if baseline:
            controller = MinimalController(config, Path(args.workdir), person.endpoint())
            dialed = "+12125550100"  # every number goes to the Stasis app, which rings the one phone
        else:
            controller = Controller(config, Path(args.workdir))
            rules = [(away, 2), (person, 10)] if args.flow == "escalation" else [(person, 10)]
            dialed = (await make_policy(db, rules, confirm=True)).routingPhoneNumber
        await controller.start()
        try:
            await asyncio.sleep(0.5)
            cpu_before = controller.cpu_seconds()
            started = time.monotonic()
            # Hotline answers at once; the on-call user is connected about 2.5 s later (rule 1's 2 s, the
            # answer and the key); the caller talks for about 2 s more.
            ramp = size / args.rate
            callers = Caller(dialed, sip, calls=size, concurrency=size, rate=args.rate,
                             hangup_after=ramp + (4.5 if args.flow == "escalation" else 2.5), max_wait=60)
            if api:
                await api.begin()
            await callers.start()
            result = await callers.wait(120)
            if baseline:
                phone = await person.wait(60)
                # Answered, pressed 1, and hung up by the far end (the caller's hang-up, passed on).
                wrong = size - sum(1 for c in phone.calls if c.answered and c.digits == "1" and c.hung_up_by == "remote")
            else:
                logs = await wait_for_logs(db, dialed, size, timeout=60)
            flood = await api.end() if api else {}
            elapsed = time.monotonic() - started
            cpu = controller.cpu_seconds() - cpu_before
            stats = controller.stats() if not baseline else None
            rss = controller.peak_rss_mb()
        finally:
            await controller.stop()
    if not baseline:
        wrong = size - len(logs)
        for log, items in logs:
            statuses = [i.status for i in items]
            expected_items = 2 if args.flow == "escalation" else 1
            if log.status != "Completed" or statuses[-1:] != ["Completed"] or len(statuses) != expected_items or \
                    any(s not in ("NoAnswer", "Completed") for s in statuses):
                wrong += 1
                if wrong <= 5:  # what went wrong, for the first few
                    print(f"  wrong: log {log.id} {log.status} ({log.statusMessage}); items "
                          f"{[(i.status, i.statusMessage) for i in items]}", flush=True)
    return {"calls": size, "failed": size - result.successful, "wrong": wrong,
            "cpu_ms_per_call": cpu / size * 1000, "peak_rss_mb": rss, "elapsed_s": elapsed,
            "loop_lag_p99_ms": stats["event_loop_lag"]["p99_ms"] if stats else None,
            "timer_error_p99_ms": stats["timer_error"]["p99_ms"] if stats else None, **flood}


async def wait_for_logs(db, routing_number: str, count: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        logs = await db.list(m.IncomingCallLog.select().where(m.IncomingCallLog.routingPhoneNumber == routing_number))
        done = [log for log in logs if log.status in m.TERMINAL_STATUSES]
        if len(done) >= count or time.monotonic() > deadline:
            out = []
            for log in logs:
                items = await db.list(m.IncomingCallLogItem.select().where(
                    m.IncomingCallLogItem.incomingCallLog == log.id).order_by(m.IncomingCallLogItem.startedAt))
                out.append((log, items))
            return out
        await asyncio.sleep(0.5)


async def main_async(args) -> None:
    workdir = Path(args.workdir)
    config = make_lab_config(workdir / "data", offset=BENCH_OFFSET)
    url = f"sqlite:///{workdir / 'bench.db'}"
    # Every channel holds an RTP port pair, and a call of the escalation flow has up to three
    # (caller, and the two rules' legs while they overlap): 300 calls need about 1,800 ports.
    config = config.replace(database__url=url, controller__confirm_timeout=5.0,
                            sip__rtp_end=config.sip.rtp_start + 3999)
    lab = Lab(config, instance=BENCH_INSTANCE)
    lab.up(test_routes=True)
    api = ApiLoad(url, workdir, args.api_load) if args.what == "load" and args.api_load else None
    db = None
    try:
        if api:  # first: its loader binds the models to a database of its own, which it closes
            await api.start()
        db = open_database(url, pool_size=2)
        await migrate(db)
        if args.what == "latency":
            await latency(args, config, lab, db)
        else:
            rows, bases = [], []
            for size in [int(s) for s in args.sizes.split(",")]:
                print(f"load: {size} simultaneous calls...", flush=True)
                rows.append(await load_once(size, args, config, db, api=api))
                print(rows[-1], flush=True)
                if args.baseline:
                    print(f"load: {size} simultaneous calls through the minimal ARI controller...", flush=True)
                    bases.append(await load_once(size, args, config, db, baseline=True))
                    print(bases[-1], flush=True)
            print("\n| simultaneous calls | failed | wrong or open logs | controller CPU ms/call | peak RSS MB "
                  "| loop lag p99 ms | timer error p99 ms |\n|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['calls']} | {r['failed']} | {r['wrong']} | {r['cpu_ms_per_call']:.1f} | "
                      f"{r['peak_rss_mb']:.0f} | {r['loop_lag_p99_ms']} | {r['timer_error_p99_ms']} |")
            if bases:
                print("\n| simultaneous calls | Hotline CPU ms/call | minimal ARI controller CPU ms/call | ratio "
                      "| failed (Hotline / minimal) | wrong (Hotline / minimal) | Hotline loop lag p99 ms |"
                      "\n|---|---|---|---|---|---|---|")
                for r, b in zip(rows, bases):
                    print(f"| {r['calls']} | {r['cpu_ms_per_call']:.1f} | {b['cpu_ms_per_call']:.1f} | "
                          f"{r['cpu_ms_per_call'] / b['cpu_ms_per_call']:.2f} | {r['failed']} / {b['failed']} | "
                          f"{r['wrong']} / {b['wrong']} | {r['loop_lag_p99_ms']} |")
            if api:
                print("\nmeanwhile the API (its own process, same database) answered get-list:")
                for r in rows:
                    print(f"  {r['calls']} calls: {r['api_rps']:.0f} req/s, {r['api_errors']} errors")
    finally:
        if api:
            await api.stop()
        if db is not None:
            await db.close_pool()
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "load"])
    parser.add_argument("--calls", type=int, default=100, help="latency: calls per path")
    parser.add_argument("--sizes", default="100,200,300", help="load: simultaneous calls per run")
    parser.add_argument("--flow", choices=["escalation", "simple"], default="escalation",
                        help="load: two rules (the first never answers), or one rule that answers")
    parser.add_argument("--rate", type=float, default=50.0, help="load: new calls per second")
    parser.add_argument("--api-load", type=int, default=0, metavar="ROWS",
                        help="load: also flood the API (its own process, the same database holding ROWS "
                             "incoming-call logs) with get-list from wrk while the calls run")
    parser.add_argument("--baseline", action="store_true",
                        help="load --flow simple: after each size, the same calls through bench/minimal_ari.py")
    args = parser.parse_args()
    if args.baseline and args.flow != "simple":
        parser.error("--baseline compares the one-rule flow: use it with --flow simple")
    if os.geteuid() != 0:
        print("the call benchmarks run the lab Asterisk and need root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hotline-call-bench-") as tmp:
        args.workdir = tmp
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
