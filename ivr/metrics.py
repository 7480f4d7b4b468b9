"""What the controller measures about itself: Prometheus metrics and exact recent percentiles.

``/metrics`` serves the Prometheus text format (prometheus_client); the same
samples of event-loop lag and timer error are also kept, the last few
thousand of them, for exact percentiles in ``/api/controller/stats``
(benchmarks read those).
"""

from __future__ import annotations

import asyncio
import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                    0.15, 0.25, 0.5, 1.0, 2.5)


def percentile(samples, q: float) -> float | None:
    ordered = sorted(samples)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_in_progress = Gauge("hotline_calls_in_progress", "Incoming calls being handled now",
                                       registry=self.registry)
        self.calls = Counter("hotline_calls_total", "Incoming calls by final status", ["status"],
                             registry=self.registry)
        self.ring_attempts = Counter("hotline_ring_attempts_total", "Ring attempts (legs) by final status",
                                     ["status"], registry=self.registry)
        self.loop_lag = Histogram("hotline_event_loop_lag_seconds", "How late the event loop runs a timer",
                                  buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.timer_error = Histogram("hotline_escalation_timer_error_seconds",
                                     "How late an escalation or confirmation timer is handled",
                                     buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ari_connected = Gauge("hotline_ari_connected", "1 while the controller is connected to ARI",
                                   registry=self.registry)
        self.ami_connected = Gauge("hotline_ami_connected", "1 while Hotline is logged in to AMI",
                                   registry=self.registry)
        self.escalation_latency = Histogram(
            "hotline_escalation_latency_seconds",
            "From the end of a rule (its time up, or its last leg gone) to the next rule's first ring",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.agi_sessions = Gauge("hotline_agi_sessions_in_progress", "FastAGI sessions running now, by route",
                                  ["route"], registry=self.registry)
        self.agi_rejected = Counter("hotline_agi_rejected_connections_total",
                                    "Connections to the FastAGI port closed without running a route "
                                    "(port scans, health checks, garbage)", registry=self.registry)
        self.notifications_in_progress = Gauge("hotline_notification_calls_in_progress",
                                               "Outbound notification calls being placed now", registry=self.registry)
        self.notifications = Counter("hotline_notification_calls_total",
                                     "Outbound notification calls by final Call Log status", ["status"],
                                     registry=self.registry)
        self.webhook_deliveries = Counter("hotline_webhook_deliveries_total",
                                          "Acknowledgement webhooks by outcome (delivered, failed)", ["outcome"],
                                          registry=self.registry)
        self.cc_calls_in_progress = Gauge("hotline_contact_center_calls_in_progress",
                                          "Contact-center calls (the calls API) being placed now",
                                          registry=self.registry)
        self.cc_calls = Counter("hotline_contact_center_calls_total",
                                "Contact-center calls by final status and fail_reason", ["status", "fail_reason"],
                                registry=self.registry)
        self.recent_loop_lag: collections.deque[float] = collections.deque(maxlen=20000)
        self.recent_timer_error: collections.deque[float] = collections.deque(maxlen=20000)

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.recent_loop_lag.append(seconds)

    def observe_timer_error(self, seconds: float) -> None:
        self.timer_error.observe(seconds)
        self.recent_timer_error.append(seconds)

    def stats(self) -> dict:
        def summary(samples) -> dict:
            values = list(samples)
            return {"samples": len(values),
                    **{f"p{q}_ms": None if (p := percentile(values, q)) is None else round(p * 1000, 3)
                       for q in (50, 99)},
                    "max_ms": round(max(values) * 1000, 3) if values else None}

        return {"calls_in_progress": self.calls_in_progress._value.get(),
                "event_loop_lag": summary(self.recent_loop_lag),
                "timer_error": summary(self.recent_timer_error)}


async def watch_loop_lag(metrics: Metrics, interval: float = 0.05) -> None:
    """Sleep ``interval`` again and again; how much later than asked we wake is the loop's lag."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        metrics.observe_loop_lag(max(0.0, loop.time() - start - interval))


def reset_recent(metrics: Metrics) -> None:
    metrics.recent_loop_lag.clear()
    metrics.recent_timer_error.clear()
