"""The API under load beside the calls: `hotline serve --api-only` on the calls' own database, flooded
by wrk with api_bench's get-list (limit 100, five fields, a status filter) for as long as the calls run.

Used by `call_bench.py load --api-load`: the controller's event-loop lag is then measured while a
second process answers the API as fast as it can on the same two cores and the same database file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_bench import LIST_BODY, free_port, load, wait_http, wrk_result, wrk_script  # noqa: E402


class ApiLoad:
    """One API process over ``url`` and a wrk flood that runs between ``begin()`` and ``end()``."""

    def __init__(self, url: str, workdir: Path, rows: int, connections: int = 16):
        self.url, self.workdir, self.rows, self.connections = url, workdir, rows, connections
        self.port = free_port()
        self.server: asyncio.subprocess.Process | None = None
        self.wrk: asyncio.subprocess.Process | None = None
        self.script: str | None = None

    async def start(self) -> None:
        print(f"api load: loading {self.rows:,} incoming-call logs...", flush=True)
        key, _project = await load(self.url, self.rows)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_") and k != "DATABASE_URL"}
        env.update(DATABASE_URL=self.url, HOTLINE_API_PORT=str(self.port), HOTLINE_API_RATE_LIMIT="0",
                   HOTLINE_GENERAL_DATA_DIR=str(self.workdir / "api-data"), HOTLINE_GENERAL_LOG_LEVEL="WARNING")
        self.server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr.main", "serve", "--api-only", env=env,  # it lowers its priority (api.nice)
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.workdir / "api.log", "ab"))
        endpoint = f"{self.base}?limit=100"
        body = json.dumps(LIST_BODY).encode()
        sample = await asyncio.to_thread(wait_http, endpoint, {"ApiKey": key, "Content-Type": "application/json"},
                                         body)
        assert json.loads(sample)["data"], sample[:200]
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, dir=self.workdir) as fh:
            fh.write(wrk_script(key, LIST_BODY))
            self.script = fh.name

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/incoming-call-log/get-list"

    async def begin(self) -> None:
        """Start the flood (it runs until ``end()``; wrk's own limit is only a backstop)."""
        # wrk stands for the API's clients, which are not on the call server: here it shares the two cores,
        # so it runs at the API's priority (api.nice's default, 19) rather than above it.
        self.wrk = await asyncio.create_subprocess_exec(
            "nice", "-n", "19", "wrk", "-t2", f"-c{self.connections}", "-d600s", "-s", self.script, f"{self.base}?limit=100",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def end(self) -> dict:
        """Stop the flood (wrk reports on SIGINT); its requests/s over the calls' run."""
        self.wrk.send_signal(signal.SIGINT)
        result = wrk_result((await self.wrk.communicate())[0].decode())
        return {"api_rps": result["rps"], "api_errors": result["errors"]}

    async def stop(self) -> None:
        for proc in (self.wrk, self.server):
            if proc and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
        if self.script:
            os.unlink(self.script)
