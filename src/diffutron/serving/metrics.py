"""Server metrics in Prometheus text format (``GET /metrics``), one registry per server.

Counters and gauges come from ``prometheus_client``; the only thing computed here is the generated
tokens/s over the last ``window`` seconds (a gauge, so a page or ``curl`` can read it without PromQL).
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, window: float = 10.0):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "diffutron_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.queue_depth = Gauge("diffutron_queue_depth", "requests waiting to join the batch", registry=r)
        self.batch_rows = Gauge("diffutron_batch_rows", "rows in the running batch", registry=r)
        self.batch_size = Histogram(
            "diffutron_batch_size",
            "rows per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.forward_passes = Counter("diffutron_forward_passes", "network calls", registry=r)
        self.generated_tokens = Counter("diffutron_generated_tokens", "answer tokens produced", registry=r)
        self.tokens_per_second = Gauge(
            "diffutron_generated_tokens_per_second",
            f"generated tokens/s over the last {window:g} s",
            registry=r,
        )
        self.tokens_per_second.set_function(self._rate)
        self._window = window
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def finished(self, tokens: int) -> None:
        self.generated_tokens.inc(tokens)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, tokens))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self._window:
            self._recent.popleft()

    def _rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / self._window

    def render(self) -> bytes:
        return generate_latest(self.registry)
