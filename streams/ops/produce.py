"""``escalations produce``: JSON-form bus events -> Avro (wire format) -> the input topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.contracts.codec import Codec
from streams.contracts.registry import SchemaIds
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.busjson import BusJson
from streams.settings import MAX_REQUEST_BYTES

__all__ = ["ProduceReport", "produce_lines"]


@dataclass(frozen=True, slots=True)
class ProduceReport:
    events: int
    sessions: int
    seconds: float


async def produce_lines(
    lines: Iterable[str],
    bootstrap: str,
    topic: str,
    ids: SchemaIds,
    store: SchemaStore,
    progress: Callable[[int], None] | None = None,
    client_options: Mapping[str, Any] | None = None,
    *,
    schema_id: int | None = None,
) -> ProduceReport:
    """Sends every line in order, keyed by session id (so per-session order is kept).

    ``schema_id``: the bus schema's id for ``topic`` when the caller has it already (else it
    is asked of ``ids``). Stops with InputLineError at the first malformed line, after the
    lines before it were sent and acknowledged.
    """
    if schema_id is None:
        schema_id = await ids.id_for(BUS_EVENT, f"{topic}-value")
    codec = Codec({schema_id: store.current(BUS_EVENT)})
    parser = BusJson(store.current(BUS_EVENT))
    producer = AIOKafkaProducer(
        max_request_size=MAX_REQUEST_BYTES,
        bootstrap_servers=bootstrap,
        **dict(client_options or {}),
        linger_ms=5,
        acks="all",
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    sessions: set[str] = set()
    count = 0
    in_flight: list[asyncio.Future[object]] = []
    try:
        for datum in parser.parse_lines(iter(lines)):
            session = datum["session_id"]
            sessions.add(session)
            value = codec.encode(schema_id, datum)
            in_flight.append(await producer.send(topic, value, key=session.encode()))
            count += 1
            if len(in_flight) >= 10_000:
                await asyncio.gather(*in_flight)  # delivery errors surface here
                in_flight.clear()
                if progress is not None:
                    progress(count)
    finally:
        await producer.flush()
        try:
            await asyncio.gather(*in_flight)
        finally:
            await producer.stop()
    return ProduceReport(count, len(sessions), time.monotonic() - started)
