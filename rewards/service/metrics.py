"""Prometheus metrics of one app instance (its own ``CollectorRegistry``, so several apps can
live in one process, e.g. in tests). Exposes nothing by itself: ``GET /metrics`` renders it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class ServiceMetrics:
    """Request counts/latency by route, cache hits/misses, grading timeouts and sandbox
    verdicts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rlsys_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("rlsys_http_request_duration_seconds",
                                 "HTTP request latency by route.", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.cache_hits = Counter("rlsys_cache_hits", "Score cache hits (items).", ["reward"],
                                  registry=self.registry)
        self.cache_misses = Counter("rlsys_cache_misses", "Score cache misses (items).",
                                    ["reward"], registry=self.registry)
        self.items = Counter("rlsys_items_scored", "Items scored, by reward and outcome.",
                             ["reward", "outcome"], registry=self.registry)
        self.grading_timeouts = Counter("rlsys_grading_timeouts",
                                        "Items not graded within their request's budget.",
                                        ["reward"], registry=self.registry)
        self.sandbox_verdicts = Counter("rlsys_sandbox_verdicts",
                                        "Code sandbox verdicts by status.", ["status"],
                                        registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric above."""
        return generate_latest(self.registry)
