"""The dialplan-side services of ``hotline serve``, one aiohttp cleanup context per resource.

Started after the ARI controller (whose Prometheus registry they share, so ``/metrics`` shows
everything), in dependency order: the AMI connection, the FastAGI server (the escalation routes),
the notification calls (which use both). Cleanup runs in reverse.
"""

from __future__ import annotations

from aiohttp import web

from ivr.metrics import Metrics

METRICS = web.AppKey("metrics", Metrics)


def metrics_of(app: web.Application) -> Metrics:
    """The controller's metrics when it runs in this app, else the app's own."""
    from ivr.controller import CONTROLLER

    if CONTROLLER in app:
        return app[CONTROLLER].metrics
    if METRICS not in app:
        app[METRICS] = Metrics()
    return app[METRICS]


def add_dialplan_services(app: web.Application, config) -> None:
    from ivr.agi_calls import agi_context
    from ivr.asterisk.ami import ami_context
    from ivr.notify import notify_context

    app.cleanup_ctx.append(ami_context(config, metrics_of))
    app.cleanup_ctx.append(agi_context(config, metrics_of))
    app.cleanup_ctx.append(notify_context(config, metrics_of))
