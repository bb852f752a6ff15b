"""Composition root: the Faust app, its topics, the batched pipeline, the table and views.

Run it with ``escalations worker`` or Faust's own ``faust -A streams.app worker -l info``.

The hot path is a Faust service (``streams.source.BatchSource``) with its own consumer
group: it reads bus events and escalation entries in batches, maps, produces and writes the
files, and commits only after that. Every topic carries raw bytes and is decoded in our own
code, so a bad record goes to the dead-letter topic instead of being lost in a codec. The
file sink reports each state directory's new position on a small internal topic, and an
ordinary Faust agent turns those reports into the ``sink-positions`` table (a view).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from streams import settings as settings_module
from streams import web
from streams.codec import Codec
from streams.deadletter import Headers
from streams.errors import EscalationsError
from streams.jsonl import rfc3339
from streams.metrics import Metrics
from streams.producer import BatchSender
from streams.registry import IdFile, open_ids
from streams.schemas import ENTRY, SchemaStore
from streams.sink import FileSink, SinkPosition
from streams.source import Batch, BatchSource
from streams.stages import Decoder, Handoff, MapStage, SinkStage, Stats
from streams.topics import partition_for

log = logging.getLogger(__name__)

settings = settings_module.load()

app = faust.App(
    settings.app_id,
    broker=settings.broker_url,
    autodiscover=False,
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    producer_linger=0.005,
    # The table is a view of snapshots; the embedded broker reports end offsets short, which
    # makes Faust's recovery check crash a worker that takes over a changelog partition.
    recovery_consistency_check=False,
    producer_max_request_size=settings_module.MAX_REQUEST_BYTES,
    web_enabled=settings.web_enabled,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    web_host=settings.web_host,
)


def _topic(name: str, *, internal: bool = True) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
        internal=internal,  # created by the app with the configured partitions
        config={"max.message.bytes": str(settings_module.MAX_REQUEST_BYTES)},
    )


bus_events = _topic(settings.input_topic)
escalations = _topic(settings.output_topic)
dead_letters = _topic(settings.dlq_topic)
#: Position reports of the sink (one small record per state directory and batch).
sink_reports = _topic(f"{settings.app_id}-sink-reports")

#: The queryable view of the sink: state directory -> entries, bytes, last offsets, last ts.
sink_positions = app.Table(
    "sink-positions",
    default=None,
    partitions=settings.partitions,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    help="Per state directory: entries, bytes, last source offsets and last entry time.",
)

stats = Stats.empty()
store = SchemaStore()
ids = open_ids(settings.schema_registry_url, store)
codec = Codec(ids.known() if isinstance(ids, IdFile) else {})
decoder = Decoder(codec, ids)
sink = FileSink(settings.state_root, fsync=settings.fsync)
metrics = Metrics()
#: Entries the map stage produced, for this worker's sink stage (skips its second decode).
handoff = Handoff()
sink.on_sync = metrics.sync_seconds.observe
_sources: list[BatchSource] = []  # the running sources (map, sink), once started
_sink_batches: list[SinkBatches] = []  # the sink's batch handler, once started


def current_sources() -> list[BatchSource]:
    return list(_sources)


def unhealthy() -> str | None:
    """The watchdog: why the worker is stuck, or None."""
    for source in _sources:
        reason = source.stalled(settings.stall_timeout_s)
        if reason is not None:
            return f"{source.group_id}: {reason}"
    return None


def fatal(exc: BaseException) -> None:
    """Stop at once without committing: what was not written is consumed again on restart."""
    log.critical("escalations: stopping: %s", exc, exc_info=not isinstance(exc, EscalationsError))
    print(f"escalations: fatal: {exc}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(70)


def _sender(topic: faust.TopicT) -> Any:
    """Sends through Faust's producer directly: Topic.send's per-record machinery is costly."""
    name = topic.get_topic_name()

    async def send(key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return await app.producer.send(name, key, value, None, None, headers)

    return send


def _aiokafka_producer() -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's (started with the app, stopped after our sources)."""
    driver: Any = app.producer  # faust's aiokafka driver; its type stub lacks the accessor
    producer: AIOKafkaProducer = driver._ensure_producer()
    return producer


def position_view(position: SinkPosition) -> dict[str, Any]:
    last = position.last_ts_us
    return {
        "entries": position.entries,
        "bytes": position.size,
        "last_offsets": dict(position.offsets),
        "last_entry_ts": None if last is None else rfc3339(*divmod(last, 1_000_000)),
    }


class MapBatches:
    """bus-events batches -> escalations (and dead letters)."""

    def __init__(self, entry_schema_id: int) -> None:
        emit = BatchSender(_aiokafka_producer, escalations.get_topic_name())
        self.stage = MapStage(decoder, entry_schema_id, emit, _sender(dead_letters), stats, handoff)

    async def __call__(self, batch: Batch) -> None:
        records = [r for records in batch.values() for r in records]
        metrics.batch_size.labels("map").observe(len(records))
        await _guarded(self.stage.process(records))


#: At most one position report per state directory this often (the table is a view).
REPORT_INTERVAL_S = 1.0


class SinkBatches:
    """escalations batches -> JSONL files; each state directory's latest position is
    reported at most once per ``REPORT_INTERVAL_S`` (after a batch, or by a timer)."""

    def __init__(self) -> None:
        self.reports: dict[str, SinkPosition] = {}
        self.reported_at = 0.0
        self.stage = SinkStage(
            decoder, sink, _sender(dead_letters), stats, self._written, handoff=handoff
        )
        self.report = _sender(sink_reports)

    def _written(self, session_id: str, position: SinkPosition) -> None:
        self.reports[session_id] = position

    async def __call__(self, batch: Batch) -> None:
        records = [r for records in batch.values() for r in records]
        metrics.batch_size.labels("sink").observe(len(records))
        await _guarded(self.stage.process(records))
        if time.monotonic() - self.reported_at >= REPORT_INTERVAL_S:
            await self.send_reports()

    async def send_reports(self) -> None:
        """Sends the positions written since the last reports, one record per directory."""
        reports, self.reports = self.reports, {}
        self.reported_at = time.monotonic()
        sent = [
            await self.report(session_id.encode(), json.dumps(position_view(p)).encode(), [])
            for session_id, p in reports.items()
        ]
        await asyncio.gather(*sent)


async def _guarded(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception as exc:  # bad input never gets here: a sink fault or our own bug
        fatal(exc)


async def _nothing(assigned: set[Any]) -> None:
    return None


async def _on_assigned(assigned: set[Any]) -> None:
    """Reload positions (another worker may have written) and repair torn tails at once."""
    owned = {tp.partition for tp in assigned if tp.topic == settings.output_topic}
    handoff.own(owned)
    sink.forget()

    def owns(session_id: str) -> bool:
        return partition_for(session_id.encode(), settings.partitions) in owned

    try:
        checked = await asyncio.to_thread(sink.recover, owns)
    except EscalationsError as exc:
        fatal(exc)
    log.info("sink: recovered %d state directories of partitions %s", checked, sorted(owned))


@app.task  # type: ignore[untyped-decorator]  # faust ships no types for it
async def start_pipeline() -> None:
    """Check the state root and the schema ids, then start the batched source."""
    try:
        sink.check_root()
        entry_id = await ids.id_for(ENTRY, f"{settings.output_topic}-value")
    except EscalationsError as exc:
        fatal(exc)
        return
    common: dict[str, Any] = {
        "bootstrap": settings.bootstrap_servers or "127.0.0.1:9092",
        "batch_max": settings.batch_max,
        "fetch_wait_ms": settings.fetch_wait_ms,
        "session_timeout_s": settings.session_timeout_s,
        "loop": app.loop,
        "beacon": app.beacon,
    }
    # Two consumer groups, so mapping and file writing overlap instead of taking turns.
    _sources.append(
        BatchSource(
            group_id=f"{settings.app_id}-map",
            topics=[settings.input_topic],
            handle=MapBatches(entry_id),
            on_assigned=_nothing,
            summary=stats.summary,
            **common,
        )
    )
    _sink_batches.append(SinkBatches())
    _sources.append(
        BatchSource(
            group_id=f"{settings.app_id}-sink",
            topics=[settings.output_topic],
            handle=_sink_batches[0],
            on_assigned=_on_assigned,
            summary=lambda: (
                f"{stats.summary()}; {_sync_summary()}; lines handed over {handoff.hits}"
            ),
            **common,
        )
    )
    for source in _sources:
        await app.add_runtime_dependency(source)
    log.info(
        "escalations: %s -> %s -> %s (dead letters: %s), %d partitions",
        settings.input_topic,
        settings.output_topic,
        settings.state_root,
        settings.dlq_topic,
        settings.partitions,
    )


metrics.watch(stats, sink, current_sources, unhealthy)
web.install(
    app,
    sink=sink,
    table=sink_positions,
    metrics=metrics,
    sources=current_sources,
    unhealthy=unhealthy,
    view=position_view,
)


@app.timer(REPORT_INTERVAL_S)  # type: ignore[untyped-decorator]
async def send_position_reports() -> None:
    """Reports positions written by the last batches before a quiet spell."""
    for handler in _sink_batches:
        if handler.reports and time.monotonic() - handler.reported_at >= REPORT_INTERVAL_S:
            await handler.send_reports()


@app.timer(30.0)  # type: ignore[untyped-decorator]
async def log_stats() -> None:
    log.info("stats: %s; %s", stats.summary(), _sync_summary())
    reason = unhealthy()
    if reason is not None:
        log.error("watchdog: %s", reason)


def _sync_summary() -> str:
    return f"durable appends {sink.syncs} in {sink.sync_seconds:.3f}s"


@app.agent(sink_reports, name="sink-positions-view")
async def sink_positions_view(stream: faust.StreamT[bytes]) -> None:
    """Keeps the sink-positions table: the latest reported position per state directory."""
    async for event in stream.events():
        key = event.message.key
        if key is not None and event.message.value is not None:
            sink_positions[key.decode()] = json.loads(event.message.value)


def main() -> None:
    app.main()


if __name__ == "__main__":
    main()
