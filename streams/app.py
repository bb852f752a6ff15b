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
from collections import defaultdict
from typing import Any

import faust

from streams import settings as settings_module
from streams import web
from streams.codec import Codec
from streams.deadletter import Headers
from streams.errors import EscalationsError
from streams.jsonl import rfc3339
from streams.metrics import Metrics
from streams.registry import IdFile, open_ids
from streams.schemas import ENTRY, SchemaStore
from streams.sink import FileSink, SinkPosition
from streams.source import Batch, BatchSource
from streams.stages import Decoder, MapStage, RawRecord, SinkStage, Stats
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
sink = FileSink(settings.state_root)
metrics = Metrics()
sink.on_sync = metrics.sync_seconds.observe
_source: list[BatchSource] = []  # the running source, once started


def current_source() -> BatchSource | None:
    return _source[0] if _source else None


def unhealthy() -> str | None:
    """The watchdog: why the worker is stuck, or None."""
    source = current_source()
    return None if source is None else source.stalled(settings.stall_timeout_s)


def fatal(exc: BaseException) -> None:
    """Stop at once without committing: what was not written is consumed again on restart."""
    log.critical("escalations: stopping: %s", exc, exc_info=not isinstance(exc, EscalationsError))
    print(f"escalations: fatal: {exc}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(70)


def _sender(topic: faust.TopicT) -> Any:
    async def send(key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return await topic.send(key=key, value=value, headers=headers)

    return send


def position_view(position: SinkPosition) -> dict[str, Any]:
    last = position.last_ts_us
    return {
        "entries": position.entries,
        "bytes": position.size,
        "last_offsets": dict(position.offsets),
        "last_entry_ts": None if last is None else rfc3339(*divmod(last, 1_000_000)),
    }


class Pipeline:
    """Both stages over one batch: bus events -> entries, entries -> files; then reports."""

    def __init__(self, entry_schema_id: int) -> None:
        self.reports: dict[str, SinkPosition] = {}
        self.map = MapStage(
            decoder, entry_schema_id, _sender(escalations), _sender(dead_letters), stats
        )
        self.sink = SinkStage(decoder, sink, _sender(dead_letters), stats, self._written)

    def _written(self, session_id: str, position: SinkPosition, record: RawRecord) -> None:
        self.reports[session_id] = position

    async def __call__(self, batch: Batch) -> None:
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, records in batch.items():
            by_topic[tp.topic].extend(records)
        metrics.batch_size.observe(sum(len(records) for records in by_topic.values()))
        try:
            if by_topic[settings.input_topic]:
                await self.map.process(by_topic[settings.input_topic])
            if by_topic[settings.output_topic]:
                await self.sink.process(by_topic[settings.output_topic])
            reports, self.reports = self.reports, {}
            for session_id, position in reports.items():
                await sink_reports.send(
                    key=session_id.encode(), value=json.dumps(position_view(position)).encode()
                )
        except EscalationsError as exc:
            fatal(exc)
        except Exception as exc:  # our own bug: crash loudly, commit nothing
            fatal(exc)


async def _on_assigned(assigned: set[Any]) -> None:
    """Reload positions (another worker may have written) and repair torn tails at once."""
    owned = {tp.partition for tp in assigned if tp.topic == settings.output_topic}
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
    source = BatchSource(
        bootstrap=settings.bootstrap_servers or "127.0.0.1:9092",
        group_id=f"{settings.app_id}-pipeline",
        topics=[settings.input_topic, settings.output_topic],
        handle=Pipeline(entry_id),
        on_assigned=_on_assigned,
        batch_max=settings.batch_max,
        session_timeout_s=settings.session_timeout_s,
        summary=lambda: f"{stats.summary()}; {_sync_summary()}",
        loop=app.loop,
        beacon=app.beacon,
    )
    _source.append(source)
    await app.add_runtime_dependency(source)
    log.info(
        "escalations: %s -> %s -> %s (dead letters: %s), %d partitions",
        settings.input_topic,
        settings.output_topic,
        settings.state_root,
        settings.dlq_topic,
        settings.partitions,
    )


metrics.watch(stats, sink, current_source, unhealthy)
web.install(
    app,
    sink=sink,
    table=sink_positions,
    metrics=metrics,
    source=current_source,
    unhealthy=unhealthy,
    view=position_view,
)


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
