"""Pure: JSON-form bus events -> the exact JSONL lines (``escalations map``), and per session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any

from streams.core.busjson import BusJson
from streams.core.jsonl import render
from streams.core.mapping import entry_from_event

__all__ = ["expected_files", "map_json_lines"]


def _entries(
    lines: Iterable[str | bytes], bus_schema: Mapping[str, Any]
) -> Iterable[tuple[str, bytes]]:
    """(session id, line) of every escalation-class event, in input order."""
    for datum in BusJson(dict(bus_schema)).parse_lines(iter(lines)):
        entry = entry_from_event(datum["event"], ts_us=datum["occurred_at"])
        if entry is not None:
            yield datum["session_id"], render(entry)


def map_json_lines(
    lines: Iterable[str | bytes], out: IO[bytes], bus_schema: Mapping[str, Any]
) -> int:
    """``escalations map``: JSON-form lines -> JSONL lines; returns how many were written.

    Lines given as bytes must be UTF-8. Writes every good line before raising
    InputLineError for a malformed one (bad JSON, bad field or not UTF-8).
    """
    written = 0
    buffer: list[bytes] = []
    try:
        for _session, line in _entries(lines, bus_schema):
            buffer.append(line)
            written += 1
            if len(buffer) >= 4096:
                out.write(b"".join(buffer))
                buffer.clear()
    finally:
        out.write(b"".join(buffer))
        out.flush()
    return written


def expected_files(lines: Iterable[str | bytes], bus_schema: Mapping[str, Any]) -> dict[str, bytes]:
    """Per session, the bytes its file must hold for these events (the job's contract)."""
    out: dict[str, list[bytes]] = {}
    for session, line in _entries(lines, bus_schema):
        out.setdefault(session, []).append(line)
    return {session: b"".join(chunks) for session, chunks in out.items()}
