"""Pure: the records that flow between the stages, and the rules for a session id.

A bus event's datum becomes an output-topic record (``entry_datum``); an output-topic record
becomes the line it adds to its session's file (``sink_line``). A session id names a state
directory, so it must be one safe path segment (``session_id_problem``): the single place
where that rule is written down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from streams.core.jsonl import render
from streams.core.mapping import EscalationEntry, entry_from_event

__all__ = [
    "DATA_DIR_NAME",
    "MAX_SESSION_ID_BYTES",
    "POSITIONS_DIR_NAME",
    "RESERVED_NAMES",
    "SinkLine",
    "entry_datum",
    "session_id_problem",
    "sink_line",
]

MAX_SESSION_ID_BYTES: Final = 200
#: The worker's data directory under the state root (Faust's tables, the demo's logs).
DATA_DIR_NAME: Final = ".faust"
#: The sink's position logs under the state root (streams.sink.positionlog).
POSITIONS_DIR_NAME: Final = ".positions"
RESERVED_NAMES: Final = frozenset({DATA_DIR_NAME, POSITIONS_DIR_NAME})


def session_id_problem(session_id: str) -> str | None:
    """Why ``session_id`` cannot name a state directory, or None when it can.

    The rule, in one place: a session id is 1 to 200 bytes of UTF-8 that make one safe path
    segment: not ``.`` or ``..``, no ``/`` or ``\\``, no control character (C0 U+0000..U+001F,
    DEL U+007F, C1 U+0080..U+009F), no lone surrogate, and not the worker's own data
    directory (``.faust``) and position logs (``.positions``). Records with any other session id are dead-lettered.
    """
    if not session_id:
        return "session id is empty"
    if session_id in (".", ".."):
        return f"session id {session_id!r} is a relative path component"
    if session_id in RESERVED_NAMES:
        return f"session id {session_id!r} is reserved for the worker's own data"
    size = len(session_id.encode("utf-8", "surrogatepass"))
    if size > MAX_SESSION_ID_BYTES:
        return f"session id is {size} bytes (at most {MAX_SESSION_ID_BYTES})"
    for ch in session_id:
        if ch in "/\\":
            return f"session id contains a path separator {ch!r}"
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"session id contains a control character U+{code:04X}"
        if 0xD800 <= code <= 0xDFFF:
            return "session id contains a lone surrogate (not UTF-8)"
    return None


@dataclass(frozen=True, slots=True)
class SinkLine:
    """One rendered entry bound for a session's file, with its source coordinates."""

    session_id: str
    line: bytes
    source: str  # "topic:partition" of the bus event
    offset: int  # the bus event's offset
    ts_us: int


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
