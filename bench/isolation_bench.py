"""Does an API flood delay the calls? The call services' event-loop lag while the API answers the most
expensive queries it accepts.

    python bench/isolation_bench.py [--rows 100000] [--duration 20] [--connections 16]

100,000 incoming-call logs in SQLite; wrk floods get-list with a 200-character EndsWith (the
longest value the API accepts: a full scan of the table per request) while the call services
measure their own event-loop lag (a 50 ms sleep, how late it wakes; /api/controller/stats). Two
layouts, one run each:

- `hotline serve`: the API and the call services in two processes (what Hotline runs);
- one process: the same application with both in one event loop (how Hotline ran before), for
  comparison; built by this script, not a mode Hotline offers.

No Asterisk is needed: the call services keep retrying ARI and AMI, and their loop is measured all
the same. Prints requests/s of the flood and the lag's p50, p99 and maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_bench import free_port, load, run_wrk, start_server, stop  # noqa: E402

FLOOD = {"select": {"status": True, "callerPhoneNumber": True},
         "query": {"callerPhoneNumber": {"_type": "EndsWith", "value": "9" * 200}}, "limit": 100}

ONE_PROCESS = r"""
import asyncio, sys
from aiohttp import web
from ivr.config import load_config
from ivr.main import build_app

async def main():
    config = load_config()
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.api.host, config.api.port).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/controller/stats", timeout=5) as resp:
        return json.loads(resp.read())["event_loop_lag"]


def wait_stats(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stats(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run(layout: str, env: dict, key: str, args) -> dict:
    api, calls = int(env["HOTLINE_API_PORT"]), int(env["HOTLINE_CONTROLLER_PORT"])
    if layout == "two processes":
        proc, stats_port = start_server([sys.executable, "-m", "ivr.main", "serve"], env), calls
    else:
        proc, stats_port = start_server([sys.executable, "-c", ONE_PROCESS], env), api
    try:
        wait_stats(stats_port)
        time.sleep(1.0)
        before = stats(stats_port)["samples"]
        flood = run_wrk(f"http://127.0.0.1:{api}/api/incoming-call-log/get-list", key, FLOOD, args.duration,
                        args.connections)
        lag = stats(stats_port)
        return {"layout": layout, **flood, "lag_samples": lag["samples"] - before, "lag_p50_ms": lag["p50_ms"],
                "lag_p99_ms": lag["p99_ms"], "lag_max_ms": lag["max_ms"]}
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotline-isolation-") as tmp:
        url = f"sqlite:///{tmp}/hotline.db"
        key = asyncio.run(load(url, args.rows))
        env = {**os.environ, "DATABASE_URL": url, "HOTLINE_GENERAL_DATA_DIR": tmp,
               "HOTLINE_API_PORT": str(free_port()), "HOTLINE_CONTROLLER_PORT": str(free_port()),
               "HOTLINE_AGI_PORT": str(free_port()), "HOTLINE_API_RATE_LIMIT": "0",
               "HOTLINE_ARI_URL": "http://127.0.0.1:9", "HOTLINE_AMI_PORT": "9", "HOTLINE_ARI_PASSWORD": "bench",
               "HOTLINE_AMI_SECRET": "bench", "HOTLINE_AGI_SECRET": "bench-agi-secret-0123456789", "HOTLINE_TTS_CACHE_DIR": f"{tmp}/sounds",
               "HOTLINE_GENERAL_LOG_LEVEL": "ERROR"}
        env.pop("HOTLINE_CONFIG", None)
        results = [run(layout, env, key, args) for layout in ("two processes", "one process")]
    print(f"\nAPI flood: get-list with a 200-character EndsWith over {args.rows:,} logs, wrk -t2 "
          f"-c{args.connections} for {args.duration} s, while the call services measure their event-loop lag\n")
    print("| layout | flood req/s | flood p99 ms | loop lag samples | lag p50 ms | lag p99 ms | lag max ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['layout']} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {r['lag_samples']} | {r['lag_p50_ms']} | "
              f"{r['lag_p99_ms']} | {r['lag_max_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
