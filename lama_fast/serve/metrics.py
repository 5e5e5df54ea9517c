"""The server's Prometheus metrics, in a registry of its own (several apps in one process stay apart)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: from a small image on a GPU to a large photo on a laptop's CPU.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests by route and status, their latency, the inference time, the queue and the model's load."""

    def __init__(self, routes: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.routes = frozenset(routes)
        self.requests = Counter("lama_fast_requests", "HTTP requests answered, by route and status",
                                ("route", "status"), registry=self.registry)
        self.latency = Histogram("lama_fast_request_seconds", "Time from a request's arrival to its answer",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("lama_fast_inference_seconds", "Time the model took for one request",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.waiting = Gauge("lama_fast_queue_depth", "Requests admitted and waiting for the model",
                             registry=self.registry)
        self.running = Gauge("lama_fast_inference_running", "Requests the model is working on (0 or 1)",
                             registry=self.registry)
        self.load_seconds = Gauge("lama_fast_model_load_seconds", "Time taken to load and prepare the model",
                                  registry=self.registry)
        self.ready = Gauge("lama_fast_ready", "1 once the model is loaded", registry=self.registry)

    def route_of(self, path: str) -> str:
        """A path's route label: the path of a known route, else "other" (unbounded paths, one label)."""
        if path.startswith("/static/"):
            return "/static"
        return path if path in self.routes else "other"

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def queue_changed(self, waiting: int, running: int) -> None:
        self.waiting.set(waiting)
        self.running.set(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
