"""``escalations sink rebuild``: rematerialise session files from the output topic."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.registry import SchemaIds
from streams.core.records import SinkLine, session_id_problem, sink_line
from streams.errors import Coordinates, DecodeError, UnknownSchemaIdError
from streams.runtime.partitioner import partition_for
from streams.security import mask_url
from streams.settings import Settings
from streams.sink.files import FileSink
from streams.sink.position import SinkPosition
from streams.sink.replace import replace_session

__all__ = ["RebuildReport", "gave_up_messages", "rebuild"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    positions: dict[str, SinkPosition]  # the sessions rebuilt
    records: int
    undecodable: int
    #: Sessions not rebuilt: a worker kept moving past what was read, or records of theirs
    #: were skipped (retry later).
    gave_up: list[str] = dataclasses.field(default_factory=list)
    #: Records skipped because the registry did not know their schema id (after its grace):
    #: id -> records. A file then holds lines the rebuild could not read: the registry's fault.
    unknown_ids: dict[int, int] = dataclasses.field(default_factory=dict)
    #: The sessions of those records (not rebuilt: their files would lose lines).
    blocked: list[str] = dataclasses.field(default_factory=list)


async def rebuild(
    sink: FileSink,
    codec: Codec,
    ids: SchemaIds,
    bootstrap: str,
    topic: str,
    partitions: int,
    sessions: set[str] | None,
    idle_s: float = 2.0,
    client_options: Mapping[str, Any] | None = None,
) -> RebuildReport:
    """Rematerialise sessions' files (all when ``sessions`` is None) from the output topic.

    Replay is deterministic, so a rebuilt file is byte-identical to one written live. Safe
    while a worker runs: files are replaced under the directory lock, and a file the worker
    has moved past what was read is retried after reading further.
    """
    wanted = sorted(
        {partition_for(s.encode(), partitions) for s in sessions}
        if sessions is not None
        else range(partitions)
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        **dict(client_options or {}),
    )
    await consumer.start()
    lines: dict[str, list[SinkLine]] = {}
    records = undecodable = 0
    decoder = Decoder(codec, ids)  # waits for a registry that is behind (its grace per id)
    unknown: Counter[int] = Counter()
    blocked: set[str] = set()  # sessions with records skipped for an unknown id: kept as is
    done: dict[str, SinkPosition] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in wanted])
        await consumer.seek_to_beginning()
        pending = set(sessions) if sessions is not None else None
        for _attempt in range(10):
            while batch := await consumer.getmany(timeout_ms=int(idle_s * 1000)):
                for recs in batch.values():
                    for r in recs:
                        records += 1
                        line = await _line(decoder, r, unknown, blocked)
                        if line is None:
                            undecodable += 1
                        elif pending is None or line.session_id in pending:
                            lines.setdefault(line.session_id, []).append(line)
            targets = sorted(lines if pending is None else pending - set(done))
            retry = False
            for session_id in targets:
                if session_id in done or session_id in blocked:
                    continue
                position = replace_session(sink, session_id, lines.get(session_id, []))
                if position is None:
                    retry = True
                else:
                    done[session_id] = position
            if not retry:
                break
    finally:
        await consumer.stop()
    wanted_sessions = set(lines) | blocked if sessions is None else set(sessions)
    gave_up = sorted(wanted_sessions - set(done))
    return RebuildReport(done, records, undecodable, gave_up, dict(unknown), sorted(blocked))


async def _line(
    decoder: Decoder, r: Any, unknown: Counter[int], blocked: set[str]
) -> SinkLine | None:
    try:
        d = await decoder.decode(r.value, Coordinates(r.topic, r.partition, r.offset))
        line = sink_line(d)
    except (DecodeError, KeyError, TypeError) as exc:
        if isinstance(exc, UnknownSchemaIdError) and exc.schema_id is not None:
            unknown[exc.schema_id] += 1
            if r.key is not None:  # the session id: its file would lose the record's line
                blocked.add(bytes(r.key).decode("utf-8", "replace"))
        log.warning("rebuild: skipping %s[%s]@%s: %s", r.topic, r.partition, r.offset, exc)
        return None
    if session_id_problem(line.session_id) is not None:
        log.warning(
            "rebuild: skipping %s[%s]@%s: unsafe session id", r.topic, r.partition, r.offset
        )
        return None
    return line


def gave_up_messages(report: RebuildReport, settings: Settings) -> list[str]:
    """Why each session was not rebuilt: the registry, or a worker moving past the read."""
    unknown = ", ".join(f"{i} ({n} records)" for i, n in sorted(report.unknown_ids.items()))
    registry = mask_url(settings.schema_registry_url or "")
    return [
        f"not rebuilt {session}: the schema registry {registry} did not know schema ids "
        f"{unknown} within ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE="
        f"{settings.registry_unknown_id_grace_s:g}s: the registry is the cause, not a worker; "
        "retry once it serves them"
        if session in report.blocked
        else f"not rebuilt {session}: a worker kept moving past the topic read"
        for session in report.gave_up
    ]
