"""``escalations dlq replay``: dead-lettered records back to the topic they came from.

Reads the dead-letter topic with its own consumer group (so a replay resumes where the
last one stopped), up to the records dead-lettered before the replay started (records that
fail again land after that point and wait for the next replay), sends each original key,
value and headers (minus the dead-letter headers) back to the topic its
``escalations.source.topic`` header names (the input topic for the map stage's dead letters,
the output topic for the sink stage's: an escalation entry sent to the input topic would fail
there again, forever), and commits after the sends are acknowledged.

Order: a replayed record is consumed again after everything its session's partition already
holds, so its line is appended after what the session's file has by then (lines of later
events included), not where it would have been. The report counts the sessions that affects.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.core.deadletter import ERROR_CLASS, PREFIX, SOURCE_TOPIC, header
from streams.settings import MAX_REQUEST_BYTES

__all__ = ["ReplayReport", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int
    by_error: dict[str, int]
    by_topic: dict[str, int]  # where the records were sent back
    sessions: int = 0  # distinct session ids (record keys) among them


async def replay(
    bootstrap: str,
    dlq_topic: str,
    input_topic: str,
    group_id: str,
    output_topic: str | None = None,
    *,
    idle_s: float = 3.0,
    limit: int | None = None,
    dry_run: bool = False,
    client_options: Mapping[str, Any] | None = None,
) -> ReplayReport:
    """Replays until the topic has been idle for ``idle_s`` (or ``limit`` records)."""
    consumer = AIOKafkaConsumer(
        dlq_topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        **dict(client_options or {}),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_request_size=MAX_REQUEST_BYTES,
        **dict(client_options or {}),
    )
    await consumer.start()
    await producer.start()
    replayed = 0
    errors: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    sessions: set[bytes | None] = set()
    ours = {input_topic} | ({output_topic} if output_topic else set())
    started_ms = int(time.time() * 1000)
    done: set[TopicPartition] = set()
    try:
        while limit is None or replayed < limit:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=500)
            if not batches:
                break
            sends = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for record in records:
                    if record.timestamp >= started_ms:
                        consumer.pause(tp)  # dead-lettered during this replay: next time
                        done.add(tp)
                        break
                    if limit is not None and replayed >= limit:
                        break
                    headers = [(k, v) for k, v in record.headers if not k.startswith(PREFIX)]
                    errors[header(record.headers, ERROR_CLASS) or "unknown"] += 1
                    came_from = header(record.headers, SOURCE_TOPIC)
                    target = came_from if came_from in ours else input_topic
                    targets[target] += 1
                    sessions.add(record.key)
                    if not dry_run:
                        sends.append(
                            await producer.send(
                                target, record.value, key=record.key, headers=headers
                            )
                        )
                    offsets[tp] = record.offset + 1
                    replayed += 1
            await asyncio.gather(*sends)
            if not dry_run and offsets:
                await consumer.commit(offsets)
            if done and done >= consumer.assignment():
                break
    finally:
        await producer.stop()
        await consumer.stop()
    return ReplayReport(replayed, dict(errors), dict(targets), len(sessions))
