"""A small ARI client on aiohttp: REST calls and the events websocket.

- Every REST call is bounded in time; 404 means "already gone" and is raised as
  ``AriNotFound`` so callers can ignore it where that is the truth.
- ``events()`` yields the app's events forever, reconnecting with backoff. After
  each (re)connection it yields ``{"type": "HotlineConnected"}`` first: no
  StasisStart is replayed after a reconnect, so the consumer reconciles then.
- Only the app's own events are subscribed (no subscribeAll).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

CONNECTED = "HotlineConnected"


class AriError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"ARI {status}: {message}")
        self.status = status
        self.message = message


class AriNotFound(AriError):
    """The channel, bridge or playback no longer exists."""


class AriUnavailable(AriError):
    """Asterisk could not be reached or did not answer in time."""


class AriClient:
    def __init__(self, url: str, username: str, password: str, app: str, *, request_timeout: float = 5.0,
                 reconnect_max_delay: float = 10.0):
        self.base = url.rstrip("/") + "/ari"
        self.app = app
        self.username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.request_timeout = request_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self._session: aiohttp.ClientSession | None = None
        self.connected = asyncio.Event()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Many concurrent calls each issue requests: keep connections alive and plentiful.
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(headers=self.headers, connector=connector,
                                                  cookie_jar=aiohttp.DummyCookieJar(),  # ARI sets none
                                                  timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- REST -------------------------------------------------------------------------

    async def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                      body: Any = None) -> Any:
        # The URL is encoded here, once: yarl's parsing and encoding of it and of the parameters were a
        # noticeable part of a call's CPU (ten requests per call).
        url = self.base + quote(path, safe="/")
        if params:
            url += "?" + urlencode([(k, _param(v)) for k, v in params.items() if v is not None], quote_via=quote)
        try:
            async with self.session.request(method, URL(url, encoded=True), json=body) as resp:
                data = await resp.read()
                if resp.status == 404:
                    raise AriNotFound(404, _message(data.decode(errors="replace")))
                if resp.status >= 400:
                    raise AriError(resp.status, _message(data.decode(errors="replace")))
                return json.loads(data) if data else None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise AriUnavailable(0, f"{method} {path}: {exc or type(exc).__name__}") from None

    async def originate(self, endpoint: str, channel_id: str, app_args: str, *, timeout: int,
                        caller_id: str | None = None, variables: dict[str, str] | None = None) -> dict:
        return await self.request("POST", "/channels", {
            "endpoint": endpoint, "app": self.app, "appArgs": app_args, "channelId": channel_id,
            "timeout": timeout, "callerId": caller_id,
        }, {"variables": variables} if variables else None)

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"/channels/{channel_id}", {"reason": reason})

    async def play(self, channel_id: str, playback_id: str, media: str) -> dict:
        return await self.request("POST", f"/channels/{channel_id}/play/{playback_id}", {"media": media})

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{playback_id}")

    async def create_bridge(self, bridge_id: str, bridge_type: str = "mixing") -> dict:
        return await self.request("POST", f"/bridges/{bridge_id}", {"type": bridge_type})

    async def add_to_bridge(self, bridge_id: str, channel_ids: list[str]) -> None:
        await self.request("POST", f"/bridges/{bridge_id}/addChannel", {"channel": ",".join(channel_ids)})

    async def record_bridge(self, bridge_id: str, name: str) -> dict:
        """Record what the bridge mixes, into Asterisk's stored recording ``name`` (wav)."""
        return await self.request("POST", f"/bridges/{bridge_id}/record", {
            "name": name, "format": "wav", "ifExists": "overwrite", "terminateOn": "none"})

    async def record_channel(self, channel_id: str, name: str, *, max_seconds: int, max_silence_seconds: int,
                             beep: bool = True, terminate_on: str = "#") -> dict:
        """Record what the channel says into Asterisk's stored recording ``name`` (wav)."""
        return await self.request("POST", f"/channels/{channel_id}/record", {
            "name": name, "format": "wav", "ifExists": "overwrite", "maxDurationSeconds": max_seconds,
            "maxSilenceSeconds": max_silence_seconds, "beep": "true" if beep else "false",
            "terminateOn": terminate_on})

    async def stop_recording(self, name: str) -> None:
        await self.request("POST", f"/recordings/live/{name}/stop")

    async def stored_recording(self, name: str) -> bytes:
        """The file of a stored recording (ARI's ``/recordings/stored/{name}/file``)."""
        path = f"/recordings/stored/{name}/file"
        try:
            async with self.session.get(self.base + path) as resp:
                body = await resp.read()
                if resp.status == 404:
                    raise AriNotFound(404, f"no stored recording {name}")
                if resp.status >= 400:
                    raise AriError(resp.status, _message(body.decode(errors="replace")))
                return body
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise AriUnavailable(0, f"GET {path}: {exc or type(exc).__name__}") from None

    async def delete_stored_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/stored/{name}")

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{bridge_id}")

    async def filter_events(self, allowed: list[str]) -> None:
        """Ask Asterisk to send the app only these event types (less JSON to parse per call)."""
        await self.request("PUT", f"/applications/{self.app}/eventFilter",
                           body={"allowed": [{"type": kind} for kind in allowed]})

    async def channels(self) -> list[dict]:
        return await self.request("GET", "/channels")

    async def bridges(self) -> list[dict]:
        return await self.request("GET", "/bridges")

    async def application(self) -> dict:
        """This app's state in Asterisk, with the ids of the channels in it (``channel_ids``)."""
        return await self.request("GET", f"/applications/{self.app}")

    async def playback(self, playback_id: str) -> dict:
        return await self.request("GET", f"/playbacks/{playback_id}")

    async def info(self) -> dict:
        return await self.request("GET", "/asterisk/info")

    # -- events -----------------------------------------------------------------------

    def _events_url(self) -> str:
        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/events", f"app={self.app}&subscribeAll=false", ""))

    async def events(self) -> AsyncIterator[dict]:
        delay = 0.2
        while True:
            try:
                async with self.session.ws_connect(self._events_url(), heartbeat=10.0,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
                                                   max_msg_size=16 * 1024 * 1024) as ws:
                    log.info("connected to ARI at %s (app %s)", self.base, self.app)
                    delay = 0.2
                    self.connected.set()
                    yield {"type": CONNECTED}
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            try:
                                yield json.loads(message.data)
                            except ValueError:
                                log.warning("ignoring a malformed ARI event: %.200s", message.data)
                        elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
                log.warning("the ARI websocket closed; reconnecting")
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    log.error("ARI refused the credentials of user %s (check ari.username/ari.password)",
                              self.username)
                else:
                    log.warning("ARI websocket handshake failed: %s %s", exc.status, exc.message)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("cannot reach ARI at %s (%s); retrying in %.1f s", self.base,
                            exc or type(exc).__name__, delay)
            self.connected.clear()
            await asyncio.sleep(delay + random.uniform(0, delay / 4))
            delay = min(delay * 2, self.reconnect_max_delay)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _message(text: str) -> str:
    try:
        return json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        return text[:200]
