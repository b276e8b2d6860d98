"""Prometheus metrics of one ingest worker, in a registry of its own.

A registry per worker (not the process-global default) lets tests and the demo run
several workers in one process and read each one's figures.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_LAG = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86_400)
_POINTS = (1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_received = Counter(
            "zhizao_ingest_messages_received", "MQTT messages received", ["channel"], registry=r
        )
        self.points_received = Counter(
            "zhizao_ingest_points_received", "Points in received data messages", registry=r
        )
        self.rows_written = Counter(
            "zhizao_ingest_rows_written", "New fact rows committed", ["table"], registry=r
        )
        self.rows_duplicate = Counter(
            "zhizao_ingest_rows_duplicate",
            "Fact rows offered that already existed (replays absorbed)",
            registry=r,
        )
        self.dead_letters = Counter(
            "zhizao_ingest_dead_letters",
            "Messages (level=message) and points (level=point) sent to the dead letters",
            ["level"],
            registry=r,
        )
        self.sequence_gaps = Counter(
            "zhizao_ingest_sequence_gap_messages",
            "Sequence numbers skipped by edges (messages possibly lost)",
            registry=r,
        )
        self.sequence_late = Counter(
            "zhizao_ingest_sequence_late_messages",
            "Messages that arrived late and filled a gap",
            registry=r,
        )
        self.sequence_replays = Counter(
            "zhizao_ingest_sequence_replayed_messages",
            "Messages whose sequence number was already received (redelivery or resend)",
            registry=r,
        )
        self.sequence_conflicts = Counter(
            "zhizao_ingest_sequence_conflict_messages",
            "Messages whose sequence number was already stored with other content (dead-lettered)",
            registry=r,
        )
        self.batch_points = Histogram(
            "zhizao_ingest_batch_points",
            "Fact rows per committed batch",
            buckets=_POINTS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "zhizao_ingest_commit_seconds",
            "Duration of a batch transaction",
            buckets=_SECONDS,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "zhizao_ingest_lag_seconds",
            "From a message's newest source timestamp to the commit of its points",
            buckets=_LAG,
            registry=r,
        )
        self.db_errors = Counter(
            "zhizao_ingest_db_errors", "Failed database attempts (retried)", ["stage"], registry=r
        )
        self.broker_connects = Counter(
            "zhizao_ingest_broker_connects", "Successful broker connections", registry=r
        )
        self.callback_errors = Counter(
            "zhizao_ingest_callback_errors",
            "Exceptions caught in MQTT callbacks (the client keeps running)",
            registry=r,
        )
        self.broker_connected = Gauge(
            "zhizao_ingest_broker_connected", "1 while connected to the broker", registry=r
        )
        self.subscriptions_refused = Gauge(
            "zhizao_ingest_subscriptions_refused",
            "Topic filters the broker refused to subscribe (SUBACK reason code; the ACL)",
            registry=r,
        )
        self.database_ok = Gauge(
            "zhizao_ingest_database_ok",
            "1 while the last database attempt succeeded",
            registry=r,
        )
        self.inflight = Gauge(
            "zhizao_ingest_inflight_messages", "Received messages not yet acknowledged", registry=r
        )
        self.inflight_bytes = Gauge(
            "zhizao_ingest_inflight_bytes",
            "Payload bytes of received messages not yet acknowledged",
            registry=r,
        )
        self.paused = Gauge(
            "zhizao_ingest_reading_paused",
            "1 while the worker does not read from the broker (in-flight window full)",
            registry=r,
        )
        self.oversize_dropped = Counter(
            "zhizao_ingest_oversize_dropped",
            "Messages above max_packet_bytes, acknowledged and dropped on arrival (MQTT 3.1.1)",
            registry=r,
        )
        self.memory_trims = Counter(
            "zhizao_ingest_memory_trims",
            "Times freed memory was handed back to the system after a burst",
            registry=r,
        )
        # Raw lag samples (seconds) for benchmarks; bounded, so memory stays flat.
        self.lag_samples: deque[float] = deque(maxlen=200_000)
        #: Port the health endpoint listens on (when enabled), for embedding processes.
        self.health_port: int | None = None
        self.messages_received_count = 0  # cheap to read in the socket loop
        self.messages_acked = 0
        self.points_committed = 0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
