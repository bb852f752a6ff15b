"""``escalations sink verify`` and ``escalations sink rebuild``: check and restore the files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.codec import Codec
from streams.errors import Coordinates, DecodeError, SinkCorruptionError
from streams.pipeline import sink_line
from streams.registry import SchemaIds
from streams.sink import (
    FILE_NAME,
    POSITION_NAME,
    FileSink,
    SinkLine,
    SinkPosition,
    parse_position,
    session_id_problem,
)
from streams.topics import partition_for

log = logging.getLogger(__name__)

KEYS = ["ts", "kind", "goal_id", "intent", "summary", "confidence", "auto_proceed"]


def verify_session(sink: FileSink, session_id: str) -> list[str]:
    """What is wrong with one state directory (empty: its file matches its position)."""
    directory = sink.directory(session_id)
    data, pos_path = directory / FILE_NAME, directory / POSITION_NAME
    if not pos_path.exists():
        return [f"{pos_path}: missing"] if data.exists() else []
    try:
        position = parse_position(pos_path.read_bytes(), pos_path)
    except SinkCorruptionError as exc:
        return [str(exc)]
    content = data.read_bytes() if data.exists() else b""
    problems = []
    if len(content) < position.size:
        problems.append(
            f"{data}: {len(content)} bytes but {position.size} recorded (data lost: rebuild it)"
        )
        return problems
    if len(content) > position.size:
        problems.append(
            f"{data}: torn or unrecorded tail of {len(content) - position.size} bytes past the "
            "recorded position (the worker truncates it when it next owns the session)"
        )
    good = content[: position.size]
    if good and not good.endswith(b"\n"):
        problems.append(f"{data}: the recorded bytes do not end with a newline")
    lines = good.split(b"\n")[:-1] if good else []
    if len(lines) != position.entries:
        problems.append(f"{data}: {len(lines)} lines but {position.entries} recorded")
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            problems.append(f"{data}: line {number} is not JSON")
            continue
        if not isinstance(obj, dict) or list(obj) != KEYS:
            problems.append(f"{data}: line {number} does not have the entry's keys in order")
    return problems


@dataclass(frozen=True, slots=True)
class RebuildReport:
    positions: dict[str, SinkPosition]
    records: int
    undecodable: int


async def rebuild(
    sink: FileSink,
    codec: Codec,
    ids: SchemaIds,
    bootstrap: str,
    topic: str,
    partitions: int,
    sessions: set[str] | None,
    idle_s: float = 2.0,
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
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    lines: dict[str, list[SinkLine]] = {}
    records = undecodable = 0
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
                        line = await _line(codec, ids, r)
                        if line is None:
                            undecodable += 1
                        elif pending is None or line.session_id in pending:
                            lines.setdefault(line.session_id, []).append(line)
            targets = sorted(lines if pending is None else pending - set(done))
            retry = False
            for session_id in targets:
                if session_id in done:
                    continue
                position = sink.replace(session_id, lines.get(session_id, []))
                if position is None:
                    retry = True
                else:
                    done[session_id] = position
            if not retry:
                break
    finally:
        await consumer.stop()
    return RebuildReport(done, records, undecodable)


async def _line(codec: Codec, ids: SchemaIds, r: Any) -> SinkLine | None:
    from streams.stages import Decoder

    try:
        d = await Decoder(codec, ids).decode(r.value, Coordinates(r.topic, r.partition, r.offset))
        line = sink_line(d)
    except (DecodeError, KeyError, TypeError) as exc:
        log.warning("rebuild: skipping %s[%s]@%s: %s", r.topic, r.partition, r.offset, exc)
        return None
    if session_id_problem(line.session_id) is not None:
        log.warning(
            "rebuild: skipping %s[%s]@%s: unsafe session id", r.topic, r.partition, r.offset
        )
        return None
    return line
