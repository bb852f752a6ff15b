"""The benchmark's events: generated once, encoded once, with the files they must produce."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.contracts.codec import Codec
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.busjson import BusJson
from streams.core.jsonl import render
from streams.core.maplines import expected_files
from streams.core.mapping import entry_from_event
from streams.ops.sample import bus_events

__all__ = ["TS_PREFIX", "Events", "backlog", "timed", "ts_of"]

#: Every JSONL line starts with this; the ``ts`` string follows up to the next quote.
TS_PREFIX = b'{"ts":"'


def ts_of(line: bytes) -> bytes:
    """The ``ts`` string of a JSONL line, as bytes."""
    start = len(TS_PREFIX)
    return line[start : line.index(b'"', start)]


@dataclass(slots=True)
class Events:
    """Encoded records (key, value) in send order and the file bytes they must produce."""

    records: list[tuple[bytes, bytes]]
    #: Per session: the exact bytes `escalations map` gives for every event so far (with the
    #: events of the backlog this one continues, if any).
    expected: dict[str, bytes]
    #: For events with controlled timestamps: a line's ``ts`` string -> its event's index.
    ts_index: dict[bytes, int] = field(default_factory=dict)
    #: ... and the session of each event that has a line.
    session_of: dict[int, str] = field(default_factory=dict)
    #: The JSON-form lines of every event so far (what a continuation maps after).
    history: list[str] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return sum(data.count(b"\n") for data in self.expected.values())

    def sizes(self) -> dict[str, int]:
        return {session: len(data) for session, data in self.expected.items()}


def backlog(count: int, sessions: int, seed: int, *, after: Events | None = None) -> Events:
    """The sample mix (~40% filtered); expected files from ``streams.core.maplines.expected_files``.

    With ``after``, a continuation of that backlog (the same session ids, sent after it): the
    expected files hold both backlogs' lines.
    """
    store = SchemaStore()
    lines = list(bus_events(count, sessions=sessions, seed=seed))
    history = [*after.history, *lines] if after is not None else lines
    codec = Codec(IdFile(store).known())
    schema_id = store.current_id(BUS_EVENT)
    records = [
        (datum["session_id"].encode(), codec.encode(schema_id, datum))
        for datum in BusJson(store.current(BUS_EVENT)).parse_lines(lines)
    ]
    return Events(records, expected_files(history, store.current(BUS_EVENT)), history=history)


def timed(count: int, sessions: int, seed: int, base_us: int) -> Events:
    """The sample mix with ``occurred_at = base_us + index``: each line's ``ts`` is unique.

    So a JSONL line seen on disk maps back to the event (and its send time) it came from.
    """
    store = SchemaStore()
    codec = Codec(IdFile(store).known())
    schema_id = store.current_id(BUS_EVENT)
    records: list[tuple[bytes, bytes]] = []
    chunks: dict[str, list[bytes]] = {}
    ts_index: dict[bytes, int] = {}
    session_of: dict[int, str] = {}
    parser = BusJson(store.current(BUS_EVENT))
    for index, datum in enumerate(
        parser.parse_lines(bus_events(count, sessions=sessions, seed=seed))
    ):
        datum["occurred_at"] = base_us + index
        records.append((datum["session_id"].encode(), codec.encode(schema_id, datum)))
        entry = entry_from_event(datum["event"], ts_us=datum["occurred_at"])
        if entry is not None:
            line = render(entry)
            chunks.setdefault(datum["session_id"], []).append(line)
            ts_index[ts_of(line)] = index
            session_of[index] = datum["session_id"]
    expected = {session: b"".join(lines) for session, lines in chunks.items()}
    return Events(records, expected, ts_index, session_of)
