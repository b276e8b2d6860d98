"""``/health`` (JSON) and ``/metrics`` (Prometheus) of a running edge.

Metrics are read from the live objects at scrape time (a custom prometheus-client
collector over a registry of its own), so the spool, uplink and collectors keep
plain counters and know nothing of Prometheus, and several edges can run in one
process (tests, the demo). The HTTP server is the kernel's
(:mod:`zhizao.health`), shared by every service.

``/health`` always answers 200 while the process runs, with ``status`` ``ok`` or
``degraded`` (uplink or a source disconnected, or a subscription the broker refused,
listed with its topic and reason under the source) in the body: a broker outage is
exactly when the edge must keep running and spooling, so a supervisor must not
restart it for that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry

from edge.source import Collector
from edge.spool import Spool
from edge.uplink import Uplink
from zhizao.health import HealthServer


class EdgeMetrics(PromCollector):
    def __init__(self, spool: Spool, uplink: Uplink, collectors: Mapping[str, Collector]) -> None:
        self._spool = spool
        self._uplink = uplink
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        read = CounterMetricFamily(
            "zhizao_edge_points_read", "Points read by a source", labels=["source"]
        )
        errors = CounterMetricFamily(
            "zhizao_edge_source_errors",
            "Source errors (malformed payloads, bad nodes, failed connects)",
            labels=["source"],
        )
        connected = GaugeMetricFamily(
            "zhizao_edge_source_connected", "1 when the source is connected", labels=["source"]
        )
        refused = GaugeMetricFamily(
            "zhizao_edge_source_subscriptions_refused",
            "Topic filters of the source the broker refused (SUBACK reason code)",
            labels=["source"],
        )
        anomalies = CounterMetricFamily(
            "zhizao_edge_counter_anomalies",
            "Counter increments not counted as implausible (sent as counter_anomaly events)",
            labels=["device", "counter"],
        )
        rebaselines = CounterMetricFamily(
            "zhizao_edge_counter_rebaselines",
            "Counters re-baselined after a reconnect or a device restart",
            labels=["device", "counter"],
        )
        for name, collector in self._collectors.items():
            health = collector.health
            read.add_metric([name], health.points_read)
            errors.add_metric([name], health.errors)
            connected.add_metric([name], 1 if health.connected else 0)
            refused.add_metric([name], len(health.subscriptions_refused))
            for (device, counter), count in sorted(health.counter_anomalies.items()):
                anomalies.add_metric([device, counter], count)
            for (device, counter), count in sorted(health.counter_rebaselines.items()):
                rebaselines.add_metric([device, counter], count)
        yield from (read, errors, connected, refused, anomalies, rebaselines)

        spool = self._spool.stats
        yield CounterMetricFamily(
            "zhizao_edge_points_spooled", "Points accepted by the spool", value=spool.accepted_total
        )
        up = self._uplink.stats
        yield CounterMetricFamily(
            "zhizao_edge_points_sent", "Points acknowledged by the broker", value=up.points_sent
        )
        dropped = CounterMetricFamily(
            "zhizao_edge_points_dropped", "Points dropped by the spool", labels=["reason"]
        )
        dropped.add_metric(["overflow"], spool.dropped_overflow_total)
        dropped.add_metric(["age"], spool.dropped_age_total)
        yield dropped
        yield GaugeMetricFamily(
            "zhizao_edge_spool_depth_points", "Points in the spool", value=spool.depth_points
        )
        yield GaugeMetricFamily(
            "zhizao_edge_spool_bytes", "Bytes of point data in the spool", value=spool.depth_bytes
        )
        oldest = spool.oldest_spooled_at_ms
        age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "zhizao_edge_spool_oldest_age_seconds", "Age of the oldest spooled point", value=age
        )
        yield GaugeMetricFamily(
            "zhizao_edge_spool_pending_batches",
            "Batches formed and not yet acknowledged",
            value=spool.pending_batches,
        )
        yield GaugeMetricFamily(
            "zhizao_edge_uplink_connected",
            "1 when connected to the platform broker",
            value=1 if up.connected else 0,
        )
        yield CounterMetricFamily(
            "zhizao_edge_uplink_batches_sent", "Batches acknowledged", value=up.batches_sent
        )
        yield CounterMetricFamily(
            "zhizao_edge_uplink_batches_rejected",
            "Batches the broker rejected (kept, retried)",
            value=up.batches_rejected,
        )
        yield CounterMetricFamily(
            "zhizao_edge_uplink_connects", "Successful connects to the broker", value=up.connects
        )
        yield GaugeMetricFamily(
            "zhizao_edge_last_seq",
            "Last batch sequence number formed",
            value=-1 if self._spool.last_seq is None else self._spool.last_seq,
        )


def health_document(
    edge_id: str, spool: Spool, uplink: Uplink, collectors: Mapping[str, Collector]
) -> dict[str, Any]:
    up = uplink.stats
    st = spool.stats
    sources = [
        {
            "name": name,
            "connected": c.health.connected,
            "points_read": c.health.points_read,
            "errors": c.health.errors,
            "last_error": c.health.last_error,
            "subscriptions_refused": [
                {"topic": topic, "reason": reason}
                for topic, reason in c.health.subscriptions_refused.items()
            ],
        }
        for name, c in collectors.items()
    ]
    # A refused subscription is a source that cannot receive: degraded, not ok.
    ok = up.connected and all(s["connected"] and not s["subscriptions_refused"] for s in sources)
    return {
        "status": "ok" if ok else "degraded",
        "edge": edge_id,
        "uplink": {
            "connected": up.connected,
            "protocol": up.protocol,
            "points_sent": up.points_sent,
            "batches_sent": up.batches_sent,
            "last_acked_seq": up.last_acked_seq,
        },
        "spool": {
            "depth_points": st.depth_points,
            "depth_bytes": st.depth_bytes,
            "pending_batches": st.pending_batches,
            "dropped_overflow": st.dropped_overflow_total,
            "dropped_age": st.dropped_age_total,
            "next_seq": st.next_seq,
        },
        "sources": sources,
    }


def health_server(
    edge_id: str,
    spool: Spool,
    uplink: Uplink,
    collectors: Mapping[str, Collector],
    *,
    host: str,
    port: int,
) -> HealthServer:
    """The kernel's endpoint with the edge's document and metrics.

    Degraded answers 200 (see the module doc): the body's ``status`` says so.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeMetrics(spool, uplink, collectors))

    def health() -> tuple[bool, dict[str, Any]]:
        doc = health_document(edge_id, spool, uplink, collectors)
        return doc.pop("status") == "ok", doc

    return HealthServer("edge", health, registry, host=host, port=port, degraded_code=200)
