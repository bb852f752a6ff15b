"""Pure: bus-event datums -> escalation entries, lines and output records.

The shell (agents, CLI) feeds this module decoded records and coordinates; it decides
nothing itself and touches no I/O beyond the file objects it is handed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from streams.jsonl import render
from streams.mapping import EscalationEntry, entry_from_event
from streams.schemas import BUS_EVENT, SchemaStore
from streams.sink import SinkLine


def map_json_lines(
    lines: Iterable[str | bytes], out: IO[bytes], store: SchemaStore | None = None
) -> int:
    """``escalations map``: JSON-form lines -> JSONL lines; returns how many were written.

    Lines given as bytes must be UTF-8. Writes every good line before raising
    InputLineError for a malformed one (bad JSON, bad field or not UTF-8).
    """
    from streams.busjson import BusJson

    parser = BusJson((store or SchemaStore()).current(BUS_EVENT))
    written = 0
    buffer: list[bytes] = []
    try:
        for datum in parser.parse_lines(iter(lines)):
            entry = entry_from_event(datum["event"], ts_us=datum["occurred_at"])
            if entry is not None:
                buffer.append(render(entry))
                written += 1
                if len(buffer) >= 4096:
                    out.write(b"".join(buffer))
                    buffer.clear()
    finally:
        out.write(b"".join(buffer))
        out.flush()
    return written


def entry_datum(
    datum: dict[str, Any], topic: str, partition: int, offset: int
) -> dict[str, Any] | None:
    """The output-topic record for a decoded bus event, or None when it is dropped."""
    entry = entry_from_event(datum["event"], ts_us=datum["occurred_at"])
    if entry is None:
        return None
    return {
        "session_id": datum["session_id"],
        "ts": entry.ts_us,
        "kind": entry.kind,
        "goal_id": entry.goal_id,
        "intent": entry.intent,
        "summary": entry.summary,
        "confidence": entry.confidence,
        "auto_proceed": entry.auto_proceed,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
    }


def sink_line(d: dict[str, Any]) -> SinkLine:
    """An output-topic record (decoded) -> the line it becomes in its session's file."""
    entry = EscalationEntry(
        d["ts"],
        d["kind"],
        d.get("goal_id"),
        d.get("intent"),
        d["summary"],
        None,
        bool(d.get("auto_proceed")),
    )
    source = f"{d['source_topic']}:{d['source_partition']}"
    return SinkLine(d["session_id"], render(entry), source, d["source_offset"], d["ts"])
