"""API throughput and latency: get-list and count over 100,000 incoming-call logs.

    python bench/api_bench.py [--rows 100000] [--duration 10] [--connections 16] [--backends sqlite,postgres]

100,000 IncomingCallLog rows across 10 projects are loaded into a fresh
database of each backend; `hotline serve --api-only` serves it (its own process,
rate limit off); wrk (C, 2 threads, 16 connections on loopback) sends

- get-list: limit 100, five fields selected, a status filter;
- count: the same filter;

and, as the ceiling, the same get-list JSON answered from memory by a bare
aiohttp handler (no auth, no database). Prints requests/s, p50 and p99 and the
ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.auth import hash_key, new_key  # noqa: E402
from ivr.store.db import migrate, open_database  # noqa: E402
from ivr.store.models import ApiKey, IncomingCallLog, IncomingCallPolicy, Project, Role  # noqa: E402

STATUSES = ["Completed"] * 6 + ["NoAnswer", "CallerHungUp", "Busy", "Failed"]
LIST_BODY = {
    "select": {"status": True, "callerPhoneNumber": True, "startedAt": True, "callDurationInSeconds": True,
               "incomingCallPolicyId": True},
    "query": {"status": "NoAnswer"},
    "sort": {"createdAt": -1},
}
COUNT_BODY = {"query": {"status": "NoAnswer"}}
POSTGRES_ADMIN = os.environ.get("HOTLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, rows: int) -> str:
    """Fill the database; returns an owner key of the first project."""
    db = open_database(url, pool_size=2)
    try:
        await migrate(db)
        rng = random.Random(7)
        key = new_key()
        per_project = rows // 10
        start = dt.datetime(2026, 1, 1)

        def fill():
            for p in range(10):
                project = Project.create(name=f"Bench {p}")
                policy = IncomingCallPolicy.create(project=project, name=f"Bench {p}", slug=f"bench-{p}-{uuid.uuid4().hex[:6]}")
                if p == 0:
                    ApiKey.create(project=project, name="bench", keyHash=hash_key(key), keyPrefix=key[:10],
                                  role=Role.OWNER.value, permissions=[])
                batch = []
                for i in range(per_project):
                    at = start + dt.timedelta(seconds=i * 7 + p)
                    batch.append(dict(
                        id=uuid.uuid4(), project=project.id, incomingCallPolicyId=policy.id,
                        callerPhoneNumber=f"+1415555{rng.randrange(10000):04d}", routingPhoneNumber="+14155550100",
                        status=rng.choice(STATUSES), callDurationInSeconds=rng.randrange(600), startedAt=at,
                        endedAt=at + dt.timedelta(seconds=60), createdAt=at, updatedAt=at,
                        callCostInUSDCents=0, incomingCallCostInUSDCents=0, outgoingCallCostInUSDCents=0, repeatCount=0))
                    if len(batch) == 500:
                        with db.atomic():
                            IncomingCallLog.insert_many(batch).execute()
                        batch = []
                if batch:
                    with db.atomic():
                        IncomingCallLog.insert_many(batch).execute()
            if url.startswith("postgres"):
                db.execute_sql("ANALYZE")
            else:
                db.execute_sql("ANALYZE")

        await db.run(fill)
        return key
    finally:
        await db.close_pool()


def wait_http(url: str, headers: dict, body: bytes, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["ApiKey"] = {key}
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(url: str, key: str, body: dict, duration: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT.format(body=lua_string(json.dumps(body)), key=lua_string(key)))
        script = fh.name
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", script, url],
                             capture_output=True, text=True, timeout=duration + 60).stdout
    finally:
        os.unlink(script)
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, micros, p50, p99, errors = match.groups()
    return {"rps": int(requests) / (int(micros) / 1e6), "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000,
            "errors": int(errors)}


def start_server(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CEILING_SERVER = r"""
import sys
from aiohttp import web
payload = open(sys.argv[2], "rb").read()
async def handler(request):
    await request.read()
    return web.Response(body=payload, content_type="application/json")
app = web.Application()
app.router.add_post("/api/incoming-call-log/get-list", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def bench_backend(name: str, url: str, args, results: dict, tmp: Path) -> bytes:
    print(f"[{name}] loading {args.rows:,} incoming-call logs...", flush=True)
    started = time.monotonic()
    key = asyncio.run(load(url, args.rows))
    print(f"[{name}] loaded in {time.monotonic() - started:.1f} s", flush=True)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "HOTLINE_API_PORT": str(port), "HOTLINE_API_RATE_LIMIT": "0",
           "HOTLINE_GENERAL_DATA_DIR": str(tmp / name), "HOTLINE_GENERAL_LOG_LEVEL": "WARNING"}
    server = start_server([sys.executable, "-m", "ivr.main", "serve", "--api-only"], env)
    try:
        base = f"http://127.0.0.1:{port}/api/incoming-call-log"
        headers = {"ApiKey": key, "Content-Type": "application/json"}
        sample = wait_http(f"{base}/get-list?limit=100", headers, json.dumps(LIST_BODY).encode())
        assert len(json.loads(sample)["data"]) == 100, sample[:200]
        for label, path, body in (("get-list", "/get-list?limit=100", LIST_BODY), ("count", "/count", COUNT_BODY)):
            run_wrk(base + path, key, body, 2, args.connections)  # warm-up
            results[(name, label)] = run_wrk(base + path, key, body, args.duration, args.connections)
            print(f"[{name}] {label}: {fmt(results[(name, label)])}", flush=True)
        return sample
    finally:
        stop(server)
        if server.returncode not in (0, -15):
            print(server.stderr.read(), file=sys.stderr)


def fmt(r: dict) -> str:
    return f"{r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    results: dict = {}
    sample = None
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                sample = bench_backend("sqlite", f"sqlite:///{tmp / 'bench.db'}", args, results, tmp)
            elif backend == "postgres":
                import asyncpg

                dbname = f"hotline_bench_{secrets.token_hex(4)}"

                async def admin(sql):
                    conn = await asyncpg.connect(POSTGRES_ADMIN)
                    try:
                        await conn.execute(sql)
                    finally:
                        await conn.close()

                asyncio.run(admin(f'CREATE DATABASE "{dbname}"'))
                try:
                    sample = bench_backend("postgres", POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + dbname, args,
                                           results, tmp)
                finally:
                    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        payload = tmp / "payload.json"
        payload.write_bytes(sample)
        port = free_port()
        ceiling = start_server([sys.executable, "-c", CEILING_SERVER, str(port), str(payload)], dict(os.environ))
        try:
            url = f"http://127.0.0.1:{port}/api/incoming-call-log/get-list"
            wait_http(url, {}, b"{}")
            run_wrk(url, "x", LIST_BODY, 2, args.connections)
            results[("ceiling", "get-list")] = run_wrk(url, "x", LIST_BODY, args.duration, args.connections)
        finally:
            stop(ceiling)
    top = results[("ceiling", "get-list")]["rps"]
    print()
    print("| backend | request | req/s | p50 ms | p99 ms | share of ceiling |")
    print("|---|---|---|---|---|---|")
    for (backend, label), r in results.items():
        print(f"| {backend} | {label} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['rps'] / top:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
