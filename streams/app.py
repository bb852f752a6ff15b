"""Composition root: the Faust app, its topics, agents and table.

Run it with ``escalations worker`` or Faust's own ``faust -A streams.app worker -l info``.
Every topic carries raw bytes: decoding happens in our code so that a bad record goes to
the dead-letter topic instead of being acked and lost inside Faust's codec machinery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import weakref
from typing import Any

import faust
from faust.streams import _current_event  # the table's changelog partition comes from it

from streams import settings as settings_module
from streams.codec import Codec
from streams.deadletter import Headers
from streams.errors import EscalationsError
from streams.jsonl import rfc3339
from streams.registry import IdFile, open_ids
from streams.schemas import ENTRY, SchemaStore
from streams.sink import FileSink, SinkPosition
from streams.stages import Decoder, MapStage, RawRecord, SinkStage, Stats

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
    broker_commit_interval=1.0,
    producer_linger=0.005,
    stream_wait_empty=True,
    web_enabled=settings.web_enabled,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    web_host=settings.web_host,
)


def _topic(name: str) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
        internal=True,  # created by the app with the configured partitions
    )


bus_events = _topic(settings.input_topic)
escalations = _topic(settings.output_topic)
dead_letters = _topic(settings.dlq_topic)

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
_ready = asyncio.Event()
_stages: dict[str, Any] = {}


def _sender(topic: faust.TopicT) -> Any:
    async def send(key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return await topic.send(key=key, value=value, headers=headers)

    return send


def fatal(exc: BaseException) -> None:
    """Stop at once without committing: what was not written is consumed again on restart."""
    log.critical("escalations: stopping: %s", exc)
    print(f"escalations: fatal: {exc}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(70)


def position_view(position: SinkPosition) -> dict[str, Any]:
    last = position.last_ts_us
    return {
        "entries": position.entries,
        "bytes": position.size,
        "last_offsets": dict(position.offsets),
        "last_entry_ts": None if last is None else rfc3339(*divmod(last, 1_000_000)),
    }


def _update_view(session_id: str, position: SinkPosition, record: RawRecord) -> None:
    # Snapshots, not increments: the file position is the truth and table recovery on a
    # broker with wrong end offsets may come back short; the next write repairs the view.
    event = record_events.get(id(record))
    if event is not None:
        _current_event.set(weakref.ref(event))
    sink_positions[session_id] = position_view(position)


record_events: dict[int, Any] = {}


@app.task
async def prepare() -> None:
    """Check the state root and the schema ids before any record is processed."""
    try:
        sink.check_root()
        entry_id = await ids.id_for(ENTRY, f"{settings.output_topic}-value")
    except EscalationsError as exc:
        fatal(exc)
        return
    _stages["map"] = MapStage(decoder, entry_id, _sender(escalations), _sender(dead_letters), stats)
    _stages["sink"] = SinkStage(decoder, sink, _sender(dead_letters), stats, _update_view)
    log.info(
        "escalations: %s -> %s -> %s (dead letters: %s), %d partitions",
        settings.input_topic,
        settings.output_topic,
        settings.state_root,
        settings.dlq_topic,
        settings.partitions,
    )
    _ready.set()


@app.agent(bus_events, name="map-bus-events")
async def map_bus_events(stream: faust.StreamT[bytes]) -> None:
    """Decode bus events, keep the escalation-class ones, produce entries (or dead letters)."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
        await _ready.wait()
        await _run("map", [e.message for e in events])


@app.agent(escalations, name="write-jsonl")
async def write_jsonl(stream: faust.StreamT[bytes]) -> None:
    """Materialise entries into each session's pending_escalations.jsonl, exactly once."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
        await _ready.wait()
        messages = [e.message for e in events]
        record_events.update((id(m), e) for m, e in zip(messages, events, strict=True))
        try:
            await _run("sink", messages)
        finally:
            record_events.clear()


async def _run(stage: str, messages: list[Any]) -> None:
    try:
        # Shielded: a cancelled agent (shutdown) still finishes the batch it acks.
        await asyncio.shield(_stages[stage].process(messages))
    except EscalationsError as exc:
        fatal(exc)


@app.on_partitions_assigned.connect
async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    # Another worker may have written our sessions' files while it owned them.
    sink.forget()


def main() -> None:
    app.main()


if __name__ == "__main__":
    main()
