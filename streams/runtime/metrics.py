"""Prometheus metrics: the job's counters, fsync latency, batch sizes, lag, health."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.runtime.source import BatchSource
from streams.runtime.stats import Stats
from streams.sink.files import FileSink

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4"


class Metrics:
    """One registry per worker; counters are read from the live objects at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sync_seconds = Histogram(
            "escalations_durable_append_seconds",
            "Time of a sink checkpoint: the lines written since the last one made durable "
            "(syncfs), every written directory's position recorded, then synced again.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "escalations_batch_records",
            "Records per processed batch, by stage (map, sink).",
            labelnames=["stage"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )

    def watch(
        self,
        stats: Stats,
        sink: FileSink,
        sources: Callable[[], list[BatchSource]],
        unhealthy: Callable[[], str | None],
    ) -> None:
        self.registry.register(_Live(stats, sink, sources, unhealthy))

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Live:
    def __init__(
        self,
        stats: Stats,
        sink: FileSink,
        sources: Callable[[], list[BatchSource]],
        unhealthy: Callable[[], str | None],
    ) -> None:
        self.stats, self.sink, self.sources, self.unhealthy = stats, sink, sources, unhealthy

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter("events_in", "Records consumed from the input topic.", s.events_in, "topic")
        yield _counter("entries_out", "Escalation entries produced.", {"": s.entries_out})
        yield _counter("events_dropped", "Bus events with no entry.", s.dropped, "reason")
        yield _counter("dead_letters", "Records sent to the DLQ.", s.dead_lettered, "error")
        yield _counter("lines_written", "JSONL lines appended.", {"": s.lines_written})
        yield _counter("repeats_skipped", "Entries already written.", {"": s.repeats_skipped})
        corrupt = GaugeMetricFamily(
            "escalations_corrupt_sessions", "State directories skipped until rebuilt."
        )
        corrupt.add_metric([], len(self.sink.corrupt_sessions()))
        yield corrupt
        sink = self.sink
        yield _counter(
            "sink_discontinuities",
            "Session files a reader emptied, truncated, replaced or removed (their directory): "
            "the next lines follow what is there.",
            sink.sessions_io.discontinuities,
            "kind",
        )
        yield _counter(
            "sessions_forgotten",
            "Sessions forgotten: directory gone, or idle past ESCALATIONS_SESSION_RETENTION.",
            {"": sink.logs.forgotten},
        )
        known = GaugeMetricFamily("escalations_sink_sessions", "Sessions the sink holds in memory.")
        known.add_metric([], len(sink.views.known))
        yield known
        sync = GaugeMetricFamily(
            "escalations_sink_sync_info",
            "How checkpoints make files durable (ESCALATIONS_SYNC as decided for the state "
            "root: syncfs, fsync, or off) and the root's file system.",
            labels=["mode", "file_system"],
        )
        choice = self.sink.syncer.durability()
        sync.add_metric([choice.mode.value if self.sink.fsync else "off", choice.file_system], 1)
        yield sync
        sources = self.sources()
        lag = GaugeMetricFamily(
            "escalations_consumer_lag",
            "Records waiting per partition (where the broker reports a high watermark).",
            labels=["topic", "partition"],
        )
        ready = GaugeMetricFamily("escalations_ready", "1 once the sink has recovered.")
        healthy = GaugeMetricFamily("escalations_healthy", "0 while the watchdog sees a stall.")
        for source in sources:
            for tp, value in source.lags().items():
                lag.add_metric([tp.topic, str(tp.partition)], value)
        ready.add_metric([], 1 if sources and all(s.ready for s in sources) else 0)
        healthy.add_metric([], 1 if self.unhealthy() is None else 0)
        yield lag
        yield ready
        yield healthy


def _counter(name: str, doc: str, values: Any, label: str | None = None) -> Metric:
    family = CounterMetricFamily(f"escalations_{name}", doc, labels=[label] if label else [])
    for key, value in dict(values).items():
        family.add_metric([key] if label else [], value)
    return family
