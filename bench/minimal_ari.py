"""The least a correct ARI application does for the load benchmark's one-rule flow (the baseline
``bench/call_bench.py load --flow simple`` compares Hotline's controller with).

    ARI_PASSWORD=... python bench/minimal_ari.py --url http://127.0.0.1:8088 --user U --app hotline \\
        --endpoint PJSIP/hotline-direct/sip:oncall@127.0.0.1:5090

A caller entering Stasis is answered and one on-call channel is originated into the same app;
when that channel (answered: its StasisStart) sends the DTMF digit 1, a mixing bridge is created
and both channels are added to it. When either side leaves (StasisEnd, or ChannelDestroyed of a
leg that never answered), the other side is hung up and the bridge deleted. Plain aiohttp and the
standard json module, every event of the app decoded, no database, no logging, no prompts, no
ringback, no timers: what Hotline does beyond this is what it costs beyond this.

Prints ``ready`` once its events websocket is connected; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid

import aiohttp


class Call:
    __slots__ = ("caller", "leg", "bridge", "over")

    def __init__(self, caller: str, leg: str):
        self.caller, self.leg, self.bridge, self.over = caller, leg, None, False


async def main(args) -> None:
    base = args.url.rstrip("/") + "/ari"
    auth = aiohttp.BasicAuth(args.user, os.environ["ARI_PASSWORD"])
    calls: dict[str, Call] = {}  # by caller and by leg channel id
    tasks: set[asyncio.Task] = set()

    async with aiohttp.ClientSession(auth=auth, connector=aiohttp.TCPConnector(limit=64)) as http:

        async def rest(method: str, path: str, **params) -> None:
            async with http.request(method, base + path, params=params) as resp:
                await resp.read()  # a 404 means the channel or bridge is already gone: fine

        def spawn(coro) -> None:
            task = asyncio.ensure_future(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def incoming(caller: str) -> None:
            leg = f"min-{uuid.uuid4().hex}"
            call = calls[caller] = calls[leg] = Call(caller, leg)  # before the originate: StasisStart may come first
            await rest("POST", f"/channels/{caller}/answer")
            if not call.over:
                await rest("POST", "/channels", endpoint=args.endpoint, app=args.app, appArgs="leg",
                           channelId=leg, timeout="30")

        async def accept(call: Call) -> None:
            call.bridge = f"{call.caller}-bridge"
            await rest("POST", f"/bridges/{call.bridge}", type="mixing")
            await rest("POST", f"/bridges/{call.bridge}/addChannel", channel=f"{call.caller},{call.leg}")

        async def end(call: Call, gone: str) -> None:
            calls.pop(call.caller, None)
            calls.pop(call.leg, None)
            other = call.leg if gone == call.caller else call.caller
            await rest("DELETE", f"/channels/{other}")
            if call.bridge:
                await rest("DELETE", f"/bridges/{call.bridge}")

        url = f"{base}/events?app={args.app}&subscribeAll=false"
        async with http.ws_connect(url.replace("http", "ws", 1), heartbeat=10.0) as ws:
            print("ready", flush=True)
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                kind = event["type"]
                channel = (event.get("channel") or {}).get("id")
                call = calls.get(channel)
                if kind == "StasisStart":
                    if event.get("args", [])[:1] == ["incoming"] and call is None:
                        spawn(incoming(channel))
                    elif call is None:  # a leg whose call is over
                        spawn(rest("DELETE", f"/channels/{channel}"))
                elif call is None or call.over:
                    continue
                elif kind == "ChannelDtmfReceived" and channel == call.leg and event.get("digit") == "1" \
                        and call.bridge is None:
                    spawn(accept(call))
                elif kind == "StasisEnd" or (kind == "ChannelDestroyed" and channel == call.leg):
                    call.over = True
                    spawn(end(call, channel))
        for task in list(tasks):
            task.cancel()


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--endpoint", required=True, help="the on-call phone's channel endpoint")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(run())
