"""``hotline serve``: the REST API and the call controller in one process, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from ivr.config import Config

log = logging.getLogger(__name__)


async def serve(config: Config, api: bool = True, controller: bool = True) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    from api.app import create_app

    app = create_app(config, controller=controller, api=api)
    runner = web.AppRunner(app, access_log=None)
    try:
        # Inside the try: a context that fails at start-up must still close the ones before it
        # (an open database pool would keep the process from exiting).
        await runner.setup()
        site = web.TCPSite(runner, config.api.host, config.api.port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {config.api.host}:{config.api.port}: {exc.strerror} "
                               "(set api.port or HOTLINE_API_PORT)") from None
        parts = [p for p, on in (("REST API", api), ("call controller", controller)) if on]
        log.info("Hotline serving %s on http://%s:%s", " and ".join(parts), config.api.host, config.api.port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
