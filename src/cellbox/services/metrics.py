"""Prometheus metrics for ``/metrics``: containers, executions, the model server, uploads, the warm pool.

One registry per running server (not prometheus-client's global one), so several servers in one process (tests)
never count into each other.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

EXECUTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.containers_created = Counter("cellbox_containers_created", "Containers created", registry=r)
        self.containers_expired = Counter("cellbox_containers_expired", "Containers expired when idle", registry=r)
        self.executions = Counter("cellbox_executions", "Code executions, by how they ended", ["status"],
                                  registry=r)
        self.execution_seconds = Histogram("cellbox_execution_seconds", "Execution time, queueing included",
                                           buckets=EXECUTION_BUCKETS, registry=r)
        self.upstream_turns = Counter("cellbox_upstream_turns", "Model server turns (chat completions)",
                                      registry=r)
        self.upstream_errors = Counter("cellbox_upstream_errors", "Model server turns that failed, by kind",
                                       ["kind"], registry=r)
        self.uploads = Counter("cellbox_uploads", "Files uploaded (Files API and container files)", registry=r)
        self.upload_bytes = Counter("cellbox_upload_bytes", "Bytes uploaded", registry=r)
        self._live = Gauge("cellbox_containers_live", "Containers running now", registry=r)
        self._pool = Gauge("cellbox_warm_pool_ready", "Containers started ahead of demand, ready", registry=r)

    def watch(self, live: Callable[[], float], pool: Callable[[], float]) -> None:
        """Gauges read at scrape time."""
        self._live.set_function(live)
        self._pool.set_function(pool)

    def uploaded(self, size: int) -> None:
        self.uploads.inc()
        self.upload_bytes.inc(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
