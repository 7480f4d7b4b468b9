"""A deliberately small ARI client for the end-to-end tests (aiohttp).

Not the production client: it keeps every event it receives so that tests can wait for
one whenever they like (a StasisStart can arrive before the HTTP answer that caused it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any, Callable

import aiohttp

from ivr.config import connect_host
from ivr.asterisk.dialplan import ari_address
from ivr.config import Config


class AriError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"ARI answered {status}: {body}")
        self.status = status
        self.body = body


class AriClient:
    def __init__(self, config: Config, app: str | None = None, subscribe_all: bool = False):
        host, port = ari_address(config)
        self.base = f"http://{connect_host(host)}:{port}/ari"
        token = base64.b64encode(f"{config.ari.username}:{config.ari.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.app = app or config.ari.app
        self.subscribe_all = subscribe_all
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "AriClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=10))
        url = self.base.replace("http", "ws", 1) + "/events"
        params = {"app": self.app}
        if self.subscribe_all:
            params["subscribeAll"] = "true"
        self._ws = await self._session.ws_connect(url, params=params, heartbeat=None)
        self._reader = asyncio.create_task(self._read())
        # The application exists once the websocket is up; make sure Asterisk agrees.
        deadline = time.monotonic() + 5
        while True:
            apps = await self.get("/applications")
            if any(a["name"] == self.app for a in apps):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"ARI application {self.app} did not register")
            await asyncio.sleep(0.02)

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self._changed.set()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------ REST
    async def request(self, method: str, path: str, **params) -> Any:
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items() if v is not None}
        async with self._session.request(method, self.base + path, params=params) as resp:
            text = await resp.text()
            body = json.loads(text) if text and resp.content_type == "application/json" else text
            if resp.status >= 300:
                raise AriError(resp.status, body)
            return body

    async def get(self, path: str, **params) -> Any:
        return await self.request("GET", path, **params)

    async def post(self, path: str, **params) -> Any:
        return await self.request("POST", path, **params)

    async def delete(self, path: str, **params) -> Any:
        return await self.request("DELETE", path, **params)

    async def originate(self, endpoint: str, *, app_args: str = "", caller_id: str | None = None,
                        timeout: int = 10, channel_id: str | None = None) -> str:
        """Originate into this app; the channel id is chosen first (StasisStart races the answer)."""
        channel_id = channel_id or f"leg-{uuid.uuid4().hex[:12]}"
        await self.post("/channels", endpoint=endpoint, app=self.app, appArgs=app_args, callerId=caller_id,
                        timeout=timeout, channelId=channel_id)
        return channel_id

    async def hangup(self, channel_id: str) -> None:
        try:
            await self.delete(f"/channels/{channel_id}")
        except AriError as exc:
            if exc.status != 404:
                raise

    # ---------------------------------------------------------------------- events
    def find(self, type_: str, predicate: Callable[[dict], bool] | None = None) -> list[dict]:
        return [e for e in self.events if e.get("type") == type_ and (predicate is None or predicate(e))]

    async def wait_event(self, type_: str, predicate: Callable[[dict], bool] | None = None,
                         timeout: float = 5.0) -> dict:
        """The first event (already received or to come) of ``type_`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(type_, predicate)
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events[-15:]]
                raise AssertionError(f"no {type_} event within {timeout} s (last events: {seen})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


def on_channel(channel_id: str) -> Callable[[dict], bool]:
    return lambda e: e.get("channel", {}).get("id") == channel_id
