"""API throughput and latency: get-list and count over 100,000 incoming-call logs, beside a floor and a peer.

    python bench/api_bench.py [--rows 100000] [--duration 10] [--connections 16] [--backends sqlite,postgres]
                              [--limits 10,100]

100,000 IncomingCallLog rows across 10 projects are loaded into a fresh database of each backend.
Three servers answer the same requests, each its own process, measured one after the other
(side by side in one run: the machine is shared, only figures of one run compare) with wrk (C,
2 threads, 16 connections on loopback):

- Hotline: `hotline serve --api-only` (rate limit off);
- the floor: a bare aiohttp handler running the very SQL Hotline runs (taken from its compiled-query
  cache, api/listing.py) with the same work, the count and then the page, on stdlib sqlite3 or asyncpg,
  rows as dicts to orjson: no auth, no validation, no rendering of ids and dates;
- the peer, datasette (SQLite only; `pip install -e '.[bench]'`, which `make bench` does): its table
  JSON with the same filter, columns, sort and page size (it counts the filtered rows too).

Requests: get-list at limit 10 and limit 100 (five fields selected, a status filter, newest first)
and count (the same filter). Then, as the ceiling, the limit-100 JSON answered from memory by a bare
aiohttp handler. Prints a table: requests/s, p50, p99, and Hotline's share of the floor.
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
SELECTED = ["status", "callerPhoneNumber", "startedAt", "callDurationInSeconds", "incomingCallPolicyId"]
LIST_BODY = {
    "select": {name: True for name in SELECTED},
    "query": {"status": "NoAnswer"},
    "sort": {"createdAt": -1},
}
COUNT_BODY = {"query": {"status": "NoAnswer"}}
RESOURCE = "incoming-call-log"
POSTGRES_ADMIN = os.environ.get("HOTLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, rows: int) -> tuple[str, str]:
    """Fill the database; returns an owner key of the first project, and that project's id."""
    db = open_database(url, pool_size=2)
    try:
        await migrate(db)
        rng = random.Random(7)
        key = new_key()
        first_project = []
        per_project = rows // 10
        start = dt.datetime(2026, 1, 1)

        def fill():
            for p in range(10):
                project = Project.create(name=f"Bench {p}")
                policy = IncomingCallPolicy.create(project=project, name=f"Bench {p}", slug=f"bench-{p}-{uuid.uuid4().hex[:6]}")
                if p == 0:
                    first_project.append(project.id)
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
            db.execute_sql("ANALYZE")

        await db.run(fill)
        return key, str(first_project[0])
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
wrk.method = {method}
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


def wrk_script(key: str, body: dict | None) -> str:
    """The Lua script of a request with ``key``; ``body`` None: a GET (datasette)."""
    return WRK_SCRIPT.format(method=lua_string("GET" if body is None else "POST"),
                             body="nil" if body is None else lua_string(json.dumps(body)), key=lua_string(key))


def wrk_result(out: str) -> dict:
    """Requests/s, p50, p99 and errors from what the script's ``done`` printed."""
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, micros, p50, p99, errors = match.groups()
    return {"rps": int(requests) / (int(micros) / 1e6), "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000,
            "errors": int(errors)}


def run_wrk(url: str, key: str, body: dict | None, duration: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(wrk_script(key, body))
        script = fh.name
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", script, url],
                             capture_output=True, text=True, timeout=duration + 60).stdout
    finally:
        os.unlink(script)
    return wrk_result(out)


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

# The floor: Hotline's SQL (argv[3], a JSON file: the statements and their values) with nothing around it.
FLOOR_SERVER = r"""
import json, sys
import orjson
from aiohttp import web
port, url, plan = int(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
count_sql, page_sql, values, names = plan["count_sql"], plan["page_sql"], plan["values"], plan["names"]
app = web.Application()

def answer(count, limit, skip, rows):
    return web.Response(body=orjson.dumps({"count": count, "limit": limit, "skip": skip, "data": rows}, default=str),
                        content_type="application/json")

if url.startswith("sqlite"):
    import sqlite3
    conn = sqlite3.connect(url.split("///", 1)[1], check_same_thread=False)
    async def get_list(request):
        orjson.loads(await request.read())
        limit = int(request.query.get("limit", 10))
        count = conn.execute(count_sql, values).fetchone()[0]
        rows = conn.execute(page_sql, [*values, limit, 0]).fetchall()
        return answer(count, limit, 0, [dict(zip(names, row)) for row in rows])
    async def count(request):
        orjson.loads(await request.read())
        return web.Response(body=orjson.dumps({"count": conn.execute(count_sql, values).fetchone()[0]}),
                            content_type="application/json")
else:
    import asyncpg
    async def pool(app):
        app["pool"] = await asyncpg.create_pool(url, min_size=2, max_size=8)
        yield
        await app["pool"].close()
    app.cleanup_ctx.append(pool)
    async def get_list(request):
        orjson.loads(await request.read())
        limit = int(request.query.get("limit", 10))
        async with request.app["pool"].acquire() as conn:
            count = await conn.fetchval(count_sql, *values)
            rows = await conn.fetch(page_sql, *values, limit, 0)
        return answer(count, limit, 0, [dict(zip(names, row)) for row in rows])
    async def count(request):
        orjson.loads(await request.read())
        async with request.app["pool"].acquire() as conn:
            value = await conn.fetchval(count_sql, *values)
        return web.Response(body=orjson.dumps({"count": value}), content_type="application/json")

app.router.add_post("/api/incoming-call-log/get-list", get_list)
app.router.add_post("/api/incoming-call-log/count", count)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


def hotline_sql(url: str, project_id: str) -> dict:
    """The statements Hotline compiles for the bench's get-list (api/listing.py), and their values."""
    from api.listing import plan_for, values_of
    from api.registry import BY_PATH
    from ivr.store.db import open_database

    resource = BY_PATH[RESOURCE]
    db = open_database(url, pool_size=1, bind_models=False)
    selection = resource.selection(LIST_BODY["select"], None)
    conditions = resource.conditions(LIST_BODY["query"])
    plan = plan_for(resource, db, selection.fields, conditions, resource.order(LIST_BODY["sort"]))
    values = values_of(resource.model.project.db_value(uuid.UUID(project_id)), conditions)
    postgres = url.startswith("postgres")
    return {"count_sql": plan.count.dollar_sql if postgres else plan.count.sql,
            "page_sql": plan.page.dollar_sql if postgres else plan.page.sql,
            "values": plan.count.params(values), "names": list(plan.names)}


def datasette_command() -> list[str] | None:
    exe = Path(sys.executable).with_name("datasette")
    return [str(exe)] if exe.exists() else ([shutil.which("datasette")] if shutil.which("datasette") else None)


def bench_backend(name: str, url: str, args, results: dict, tmp: Path) -> bytes:
    print(f"[{name}] loading {args.rows:,} incoming-call logs...", flush=True)
    started = time.monotonic()
    key, project_id = asyncio.run(load(url, args.rows))
    print(f"[{name}] loaded in {time.monotonic() - started:.1f} s", flush=True)
    plan_file = tmp / f"{name}-plan.json"
    plan_file.write_text(json.dumps(hotline_sql(url, project_id)))
    ports = {server: free_port() for server in ("hotline", "floor", "datasette")}
    env = {**os.environ, "DATABASE_URL": url, "HOTLINE_API_PORT": str(ports["hotline"]),
           "HOTLINE_API_RATE_LIMIT": "0", "HOTLINE_GENERAL_DATA_DIR": str(tmp / name),
           "HOTLINE_GENERAL_LOG_LEVEL": "WARNING",
           # The floor and the peer run at wrk's priority; so does Hotline here (it yields to calls otherwise).
           "HOTLINE_API_NICE": "0"}
    servers = {"hotline": start_server([sys.executable, "-m", "ivr.main", "serve", "--api-only"], env),
               "floor": start_server([sys.executable, "-c", FLOOR_SERVER, str(ports["floor"]), url, str(plan_file)],
                                     dict(os.environ))}
    datasette = datasette_command() if name == "sqlite" else None
    if name == "sqlite" and datasette is None:
        print("[sqlite] datasette is not installed: no peer figures (pip install -e '.[bench]'; make bench does)",
              file=sys.stderr, flush=True)
    if datasette:
        servers["datasette"] = start_server(
            [*datasette, "serve", url.split("///", 1)[1], "-p", str(ports["datasette"]), "-h", "127.0.0.1",
             "--setting", "suggest_facets", "off", "--setting", "default_page_size", "100"], dict(os.environ))
    try:
        headers = {"ApiKey": key, "Content-Type": "application/json"}
        bases = {server: f"http://127.0.0.1:{port}/api/{RESOURCE}" for server, port in ports.items()}
        sample = wait_http(f"{bases['hotline']}/get-list?limit=100", headers, json.dumps(LIST_BODY).encode())
        assert len(json.loads(sample)["data"]) == 100, sample[:200]
        floor_sample = wait_http(f"{bases['floor']}/get-list?limit=100", headers, json.dumps(LIST_BODY).encode())
        assert json.loads(floor_sample)["count"] == json.loads(sample)["count"], (floor_sample[:200], sample[:200])
        table = f"http://127.0.0.1:{ports['datasette']}/{Path(url).stem}/incoming_call_log.json"
        peer_filter = (f"status=NoAnswer&projectId={uuid.UUID(project_id).hex}&_sort_desc=createdAt"
                       + "".join(f"&_col={name}" for name in SELECTED) + "&_shape=objects")
        if datasette:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{table}?{peer_filter}&_size=100", timeout=5) as resp:
                        peer = json.loads(resp.read())
                    break
                except OSError:
                    if time.monotonic() > deadline or servers["datasette"].poll() is not None:
                        raise
                    time.sleep(0.3)
            assert peer["filtered_table_rows_count"] == json.loads(sample)["count"], list(peer)
        requests = [(f"get-list limit {limit}", f"/get-list?limit={limit}", LIST_BODY, f"{peer_filter}&_size={limit}")
                    for limit in args.limits]
        requests.append(("count", "/count", COUNT_BODY, f"{peer_filter}&_size=0"))
        for label, path, body, peer_query in requests:
            runs = [("hotline", bases["hotline"] + path, body), ("floor", bases["floor"] + path, body)]
            if datasette:
                runs.append(("datasette", f"{table}?{peer_query}", None))
            for server, url_, body_ in runs:
                run_wrk(url_, key, body_, min(2, args.duration), args.connections)  # warm-up
                result = run_wrk(url_, key, body_, args.duration, args.connections)
                results[(name, label, server)] = result
                print(f"[{name}] {label:17} {server:9} {fmt(result)}", flush=True)
        return sample
    finally:
        for server, proc in servers.items():
            stop(proc)
            if proc.returncode not in (0, -15):
                print(f"[{name}] {server} exited {proc.returncode}:\n{proc.stderr.read()}", file=sys.stderr)


def fmt(r: dict) -> str:
    return f"{r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}"


def print_table(results: dict) -> None:
    print()
    print("| backend | request | server | req/s | p50 ms | p99 ms | Hotline's share |")
    print("|---|---|---|---|---|---|---|")
    for (backend, label, server), r in results.items():
        share = ""
        if server == "floor":
            hotline = results.get((backend, label, "hotline"))
            share = f"{hotline['rps'] / r['rps']:.0%} of the floor" if hotline else ""
        elif server == "datasette":
            hotline = results.get((backend, label, "hotline"))
            share = f"{hotline['rps'] / r['rps']:.1f}x datasette" if hotline else ""
        errors = f" ({r['errors']} errors)" if r["errors"] else ""
        print(f"| {backend} | {label} | {server}{errors} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{share} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (2 for a quick look)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--limits", default="10,100", help="get-list page sizes")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the JSON-from-memory ceiling")
    args = parser.parse_args()
    args.limits = [int(x) for x in args.limits.split(",")]
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
        if not args.no_ceiling and sample is not None:
            payload = tmp / "payload.json"
            payload.write_bytes(sample)
            port = free_port()
            ceiling = start_server([sys.executable, "-c", CEILING_SERVER, str(port), str(payload)], dict(os.environ))
            try:
                url = f"http://127.0.0.1:{port}/api/{RESOURCE}/get-list"
                wait_http(url, {}, b"{}")
                run_wrk(url, "x", LIST_BODY, min(2, args.duration), args.connections)
                results[("memory", "get-list limit 100", "ceiling")] = run_wrk(url, "x", LIST_BODY, args.duration,
                                                                             args.connections)
            finally:
                stop(ceiling)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
