"""Hostile input against the decode -> map -> sink path, with Hypothesis (docs/architecture.md "Where each guarantee is kept").

The promises under test: bad input is data, never a crash (every record is emitted, dropped or
dead-lettered, exactly one of the three, and the stage never raises), and no path escapes the
state root whatever the session id says. The stages run for real with in-memory senders that
record what they are given (``MapStage`` and ``SinkStage`` take their senders as callables), and
the sink writes real files under a temporary root. No Kafka is needed.

Deterministic (``derandomize=True``) and without an example database, so a run leaves nothing
behind and CI sees the same examples every time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.busjson import BusJson
from streams.core.deadletter import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    SCHEMA_ID,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    header,
)
from streams.core.jsonl import TS_MAX_US, TS_MIN_US, render
from streams.core.mapping import EscalationEntry
from streams.core.records import SinkLine, session_id_problem
from streams.errors import Coordinates, DecodeError, SinkError
from streams.ops.sample import bus_events
from streams.runtime.stages import MapStage, SinkStage
from streams.runtime.stats import Stats
from streams.sink.files import FILE_NAME, FileSink
from tests.unit.records import Rec

STORE = SchemaStore()
BY_ID = STORE.by_id()
CODEC = Codec(BY_ID)
WHERE = Coordinates("bus-events", 0, 7)
ENVELOPE_ID, ENTRY_ID = 1, 2
KEY_ORDER = ["ts", "kind", "goal_id", "intent", "summary", "confidence", "auto_proceed"]
DECODE_ERRORS = {"NotFramedError", "UnknownSchemaIdError", "AvroBodyError", "TrailingBytesError"}

BASE = settings(deadline=None, derandomize=True, database=None)


def fuzz(examples: int, *, slow: bool = False) -> settings:
    too_slow = [HealthCheck.too_slow] if slow else []
    return settings(BASE, max_examples=examples, suppress_health_check=too_slow)


def _samples(count: int) -> list[bytes]:
    parser = BusJson(STORE.current(BUS_EVENT))
    return [
        CODEC.encode(ENVELOPE_ID, parser.parse(line))
        for line in bus_events(count, sessions=8, seed=1234)
    ]


SAMPLES = _samples(200)

#: Session ids that are not one safe path segment (README, "Guarantees").
UNSAFE_SESSIONS = [
    "",
    ".",
    "..",
    "../x",
    "../../x",
    "x/..",
    "a/b",
    "/abs",
    "/etc/passwd",
    "a\\b",
    "C:\\x",
    "..\\..\\windows",
    "\x00",
    "a\x00b",
    "a\nb",
    "\x1b[31m",
    "\x7f",
    "x" * 201,
    "é" * 100 + "x",  # 201 bytes of UTF-8 in 101 characters
]

#: Look-alikes of "/" and "." are ordinary characters on Linux, not separators: each of these
#: is one valid path segment and must stay inside the root.
LOOK_ALIKES = [
    "\u2215etc\u2215passwd",  # DIVISION SLASH
    "\uff0fetc\uff0fpasswd",  # FULLWIDTH SOLIDUS
    "\u2024",  # ONE DOT LEADER
    "\u2024\u2024",
    "\u2024\u2024\u2215x",
    "\uff0e\uff0e",  # FULLWIDTH FULL STOP
]

#: Valid, if unusual, single segments.
ODD_BUT_SAFE = [
    *LOOK_ALIKES,
    "...",
    ".hidden",
    "C:x",
    " leading and trailing ",
    "x" * 200,
    "é" * 100,  # exactly 200 bytes
    "日本語のセッション",
    "🚀" * 50,  # 200 bytes
    "\u2028line\u2029sep",
    "quote\"'`$(rm -rf)",
]

HOSTILE_TEXTS = [
    "",
    '"',
    '\\"',
    "\\",
    '{"ts":"1970-01-01T00:00:00Z"}\n',
    "\x00\x01\x1f\x7f",
    "\r\n\t\b\f",
    "\u2028\u2029",
    "\ufeffbom",
    "🚀👩‍👩‍👧\u200d",
    "\u202eright-to-left",
    "x" * 10_000,
]


class Sent:
    """An in-memory ``Send``: keeps what it is given; the broker "acknowledges" at once."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def __call__(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.records.append((key, value, list(headers)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class SentAll(Sent):
    """The entry sender of MapStage: takes a batch's (key, value) records at once."""

    async def __call__(  # type: ignore[override]
        self, records: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, int]]:
        start = len(self.records)
        self.records.extend((key, value, []) for key, value in records)
        return [(0, start + i) for i in range(len(records))]


@dataclass
class Outcome:
    """What happened to one record: exactly one of these must be set."""

    emitted: list[tuple[bytes | None, bytes | None, Any]]
    dead: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
    dropped: int


def _map_each(records: Sequence[Rec]) -> list[Outcome]:
    """Runs every record through a real MapStage, one batch each, and says what became of it."""
    emitted, dead, stats = SentAll(), Sent(), Stats.empty()
    stage = MapStage(Decoder(Codec(BY_ID), IdFile(STORE)), ENTRY_ID, emitted, dead, stats)
    outcomes: list[Outcome] = []

    async def run() -> None:
        for r in records:
            e, d, dropped = len(emitted.records), len(dead.records), sum(stats.dropped.values())
            await stage.process([r])  # must never raise
            outcomes.append(
                Outcome(
                    emitted.records[e:],
                    dead.records[d:],
                    sum(stats.dropped.values()) - dropped,
                )
            )

    asyncio.run(run())
    assert sum(stats.events_in.values()) == len(records)
    assert stats.entries_out == len(emitted.records)
    assert sum(stats.dead_lettered.values()) == len(dead.records)
    return outcomes


def _check_accounted(record: Rec, outcome: Outcome) -> str:
    """Exactly one of emitted / dead-lettered / dropped; returns which, after checking it."""
    counts = (len(outcome.emitted), len(outcome.dead), outcome.dropped)
    assert sorted(counts) == [0, 0, 1], f"record at offset {record.offset}: {counts}"
    if outcome.emitted:
        key, value, headers = outcome.emitted[0]
        schema_id, entry = CODEC.decode(value, WHERE)
        assert schema_id == ENTRY_ID
        assert key == entry["session_id"].encode()
        assert session_id_problem(entry["session_id"]) is None
        assert (entry["source_topic"], entry["source_partition"], entry["source_offset"]) == (
            record.topic,
            record.partition,
            record.offset,
        )
        assert TS_MIN_US <= entry["ts"] <= TS_MAX_US
        return "emitted"
    if outcome.dead:
        key, value, headers = outcome.dead[0]
        assert (key, value) == (record.key, record.value)  # the original bytes
        assert header(headers, "trace") == "t-1"  # the original headers
        assert header(headers, ERROR_CLASS) in DECODE_ERRORS | {"InvalidRecordError"}
        assert header(headers, SOURCE_TOPIC) == record.topic
        assert header(headers, SOURCE_PARTITION) == str(record.partition)
        assert header(headers, SOURCE_OFFSET) == str(record.offset)
        message = header(headers, ERROR_MESSAGE) or ""
        assert message.startswith(f"{record.topic}[{record.partition}]@{record.offset}: ")
        return str(header(headers, ERROR_CLASS))
    return "dropped"


def _records(values: Sequence[bytes | None], key: bytes | None = b"k") -> list[Rec]:
    return [Rec("bus-events", 3, offset, key, value) for offset, value in enumerate(values)]


# -- Codec.decode -----------------------------------------------------------------------------


def _decode_contract(value: bytes) -> None:
    try:
        schema_id, record = CODEC.decode(value, WHERE)
    except DecodeError as exc:
        assert exc.where == WHERE
        assert str(exc).startswith("bus-events[0]@7: ")
        assert type(exc).__name__ in DECODE_ERRORS
        return
    # Anything else than a DecodeError propagates and fails the test with its type.
    assert schema_id in BY_ID
    assert isinstance(record, dict)


@fuzz(1500)
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_returns_a_record_or_raises_a_decode_error(value: bytes) -> None:
    _decode_contract(value)


framed_bodies = st.one_of(
    st.binary(max_size=120),
    # A valid record's head with arbitrary bytes after it reaches far deeper into the schema.
    st.tuples(st.sampled_from(SAMPLES), st.integers(0, 120), st.binary(max_size=40)).map(
        lambda t: t[0][5 : 5 + t[1]] + t[2]
    ),
)


@fuzz(1500)
@given(st.sampled_from([ENVELOPE_ID, ENTRY_ID]), framed_bodies)
def test_framed_arbitrary_bodies_never_crash_decode_or_the_map_stage(
    schema_id: int, body: bytes
) -> None:
    value = b"\x00" + schema_id.to_bytes(4, "big") + body
    _decode_contract(value)
    (record,) = _records([value])
    (outcome,) = _map_each([record])
    verdict = _check_accounted(record, outcome)
    if schema_id == ENTRY_ID:
        # An entry on the input topic has no event: it can only be dead-lettered.
        assert verdict in DECODE_ERRORS | {"InvalidRecordError"}


# -- every truncation and every single-byte mutation of valid records -------------------------


def _mutations(value: bytes) -> Iterator[bytes]:
    for i in range(len(value)):
        for replacement in {value[i] ^ 0x01, value[i] ^ 0x80, 0x00, 0xFF}:
            if replacement != value[i]:
                yield value[:i] + bytes([replacement]) + value[i + 1 :]


def test_every_truncation_of_a_valid_record_is_dead_lettered_once() -> None:
    values = [value[:cut] for value in SAMPLES for cut in range(len(value))]
    records = _records(values)
    verdicts = [_check_accounted(r, o) for r, o in zip(records, _map_each(records), strict=True)]
    for record, verdict in zip(records, verdicts, strict=True):
        # Avro is self-delimiting: no strict prefix of a record is a record.
        expected = "NotFramedError" if len(record.value or b"") < 5 else "AvroBodyError"
        assert verdict == expected, f"{len(record.value or b'')}-byte prefix: {verdict}"


def test_every_single_byte_mutation_of_a_valid_record_is_accounted_for_once() -> None:
    values = [mutated for value in SAMPLES for mutated in _mutations(value)]
    records = _records(values)
    verdicts = [_check_accounted(r, o) for r, o in zip(records, _map_each(records), strict=True)]
    assert len(records) > 20_000
    # The corpus reaches every outcome: the test is not vacuous.
    assert {"emitted", "dropped", "InvalidRecordError", "AvroBodyError"} <= set(verdicts)
    assert {"NotFramedError", "UnknownSchemaIdError"} <= set(verdicts)


def test_an_unknown_variant_index_a_negative_one_and_a_huge_length_are_dead_lettered() -> None:
    value = SAMPLES[0]
    envelope = CODEC.decode(value, WHERE)[1]
    head = CODEC.encode(
        ENVELOPE_ID,
        {
            **envelope,
            "event": (
                "escalations.bus.CostSoftCapWarning",
                {"current_usd": 1.0, "soft_cap_usd": 2.0},
            ),
        },
    )
    event_at = len(head) - 17  # the union index, before two doubles
    hostile = [
        head[:event_at] + b"\x1c" + head[event_at + 1 :],  # index 14 of 0..12
        head[:event_at] + b"\x01" + head[event_at + 1 :],  # index -1 (fastavro: the last)
        b"\x00\x00\x00\x00\x01" + b"\xfe\xff\xff\xff\x0f" + b"x" * 10,  # a 2 GiB string
        b"\x00\x00\x00\x00\x01" + b"\xff" * 12 + b"\x01",  # an over-long varint
    ]
    records = _records(hostile)
    verdicts = [_check_accounted(r, o) for r, o in zip(records, _map_each(records), strict=True)]
    assert verdicts == ["AvroBodyError"] * len(hostile)


# -- schema-valid envelopes with hostile contents -----------------------------------------------


def _names(schema: Any, namespace: str, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, namespace, named)
    elif isinstance(schema, dict):
        ns = schema.get("namespace", namespace)
        if schema.get("type") in ("record", "enum"):
            named[f"{ns}.{schema['name']}"] = schema
        for f in schema.get("fields", []):
            _names(f["type"], ns, named)
        for key in ("items", "values"):
            if key in schema:
                _names(schema[key], ns, named)


hostile_text = st.one_of(
    st.sampled_from(HOSTILE_TEXTS),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
)
session_ids = st.one_of(
    st.sampled_from(UNSAFE_SESSIONS + ODD_BUT_SAFE + ["session-001"]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.text(st.sampled_from(list("./\\\x00a\u2215\uff0f\u2024 ")), max_size=6),
)


def _datums(schema: Any, namespace: str, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Every datum the writer schema allows (fastavro's tuple notation for unions of records)."""
    if isinstance(schema, str):
        if schema in named or f"{namespace}.{schema}" in named:
            return _datums(named.get(schema) or named[f"{namespace}.{schema}"], namespace, named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32),
            "double": st.floats(),
            "string": hostile_text,
        }[schema]
    if isinstance(schema, list):
        branches = []
        for branch in schema:
            strategy = _datums(branch, namespace, named)
            if isinstance(branch, dict) and branch.get("type") == "record":
                full = f"{branch.get('namespace', namespace)}.{branch['name']}"
                strategy = st.tuples(st.just(full), strategy)
            branches.append(strategy)
        return st.one_of(branches)
    kind = schema["type"]
    ns = schema.get("namespace", namespace)
    if kind == "record":
        return st.fixed_dictionaries(
            {
                f["name"]: st.deferred(lambda t=f["type"]: _datums(t, ns, named))
                for f in schema["fields"]
            }
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_datums(schema["items"], ns, named), max_size=3)
    return _datums(kind, ns, named)


def _envelopes() -> st.SearchStrategy[dict[str, Any]]:
    schema = BY_ID[ENVELOPE_ID]
    named: dict[str, Any] = {}
    _names(schema, "", named)
    event = _datums(
        next(f["type"] for f in schema["fields"] if f["name"] == "event"), "escalations.bus", named
    )
    return st.fixed_dictionaries(
        {
            "session_id": session_ids,
            "event_id": hostile_text,
            "occurred_at": st.one_of(
                st.integers(TS_MIN_US, TS_MAX_US), st.integers(-(2**63), 2**63 - 1)
            ),
            "event": event,
        }
    )


def _unsafe_by_contract(session_id: str) -> bool:
    """The README's list: empty, ., .., .faust, / or \\, a control character (C0, DEL, C1),
    over 200 bytes."""
    return (
        session_id in ("", ".", "..", ".faust")
        or any(ch in "/\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in session_id)
        or len(session_id.encode("utf-8", "surrogatepass")) > 200
    )


@fuzz(400, slow=True)
@given(st.lists(_envelopes(), min_size=1, max_size=4))
def test_schema_valid_hostile_envelopes_are_emitted_dropped_or_dead_lettered(
    envelopes: list[dict[str, Any]],
) -> None:
    records = _records([CODEC.encode(ENVELOPE_ID, e) for e in envelopes])
    for envelope, record, outcome in zip(envelopes, records, _map_each(records), strict=True):
        verdict = _check_accounted(record, outcome)
        invalid = _unsafe_by_contract(envelope["session_id"]) or not (
            TS_MIN_US <= envelope["occurred_at"] <= TS_MAX_US
        )
        assert (verdict == "InvalidRecordError") == invalid, (envelope["session_id"], verdict)
        if verdict == "emitted":
            entry = CODEC.decode(outcome.emitted[0][1], WHERE)[1]
            assert entry["session_id"] == envelope["session_id"]
            assert entry["ts"] == envelope["occurred_at"]


# -- session ids as paths ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-paths")


def _tree(path: Path) -> set[str]:
    """Every path under ``path`` (relative), directories included."""
    found = set()
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(top, name), path))
    return found


def _assert_segment_stays_inside(root: Path, session_id: str) -> None:
    sink = FileSink(root)
    directory = sink.directory(session_id)
    assert directory.parent == root.resolve()
    assert directory.name == session_id
    line = render(EscalationEntry(0, "cancelled", "g1", None, "goal cancelled", None, False))
    sink.write([SinkLine(session_id, line, "bus-events:0", 1, 0)])
    # The OS saw one new entry in the root, named exactly as the session id: a round trip.
    assert os.listdir(root) == [session_id]
    assert sink.sessions() == [session_id]
    assert (root / session_id / FILE_NAME).read_bytes() == line
    assert all(
        os.path.realpath(root / p).startswith(str(root.resolve()) + os.sep) for p in _tree(root)
    )


@pytest.mark.parametrize("session_id", UNSAFE_SESSIONS, ids=ascii)
def test_unsafe_session_ids_are_refused_and_create_nothing(scratch: Path, session_id: str) -> None:
    base = Path(tempfile.mkdtemp(dir=scratch))
    root = base / "state"
    root.mkdir()
    assert session_id_problem(session_id) is not None
    sink = FileSink(root)
    with pytest.raises(SinkError, match="refusing state directory"):
        sink.directory(session_id)
    with pytest.raises(SinkError):
        sink.write([SinkLine(session_id, b"{}\n", "bus-events:0", 1, 0)])
    assert _tree(base) == {"state"}


@pytest.mark.parametrize("session_id", ODD_BUT_SAFE, ids=ascii)
def test_look_alikes_and_odd_names_are_one_segment_inside_the_root(
    scratch: Path, session_id: str
) -> None:
    # U+2215, U+FF0F, U+2024 and U+FF0E look like "/" and "." but are not separators or
    # relative components on Linux: the kernel only knows the bytes 0x2F and 0x2E.
    base = Path(tempfile.mkdtemp(dir=scratch))
    root = base / "state"
    root.mkdir()
    assert session_id_problem(session_id) is None
    _assert_segment_stays_inside(root, session_id)
    assert os.listdir(base) == ["state"]


any_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.text(st.sampled_from(list("./\\\x00\x7fa\u2215\uff0f\u2024\ud800é🚀")), max_size=8),
    st.sampled_from(UNSAFE_SESSIONS + ODD_BUT_SAFE),
    st.integers(195, 205).map(lambda n: "x" * n),
)


@fuzz(400)
@given(any_text)
def test_session_id_problem_agrees_with_the_sink_on_arbitrary_text(
    scratch: Path, session_id: str
) -> None:
    base = Path(tempfile.mkdtemp(dir=scratch))
    root = base / "state"
    root.mkdir()
    try:
        problem = session_id_problem(session_id)
        if problem is None:
            # The invariants of one safe segment, whatever the implementation checks.
            assert session_id not in ("", ".", "..")
            assert not any(ch in "/\\\x00" for ch in session_id)
            assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in session_id)
            assert len(session_id.encode("utf-8")) <= 200
            assert not any(unicodedata.category(ch) == "Cc" and ord(ch) < 0x80 for ch in session_id)
            _assert_segment_stays_inside(root, session_id)
        else:
            with pytest.raises(SinkError):
                FileSink(root).directory(session_id)
            assert _unsafe_by_contract(session_id) or any(
                0xD800 <= ord(ch) <= 0xDFFF for ch in session_id
            ), (session_id, problem)
        assert os.listdir(base) == ["state"]
    finally:
        shutil.rmtree(base)


# -- SinkStage over hostile entries ----------------------------------------------------------------


entries = st.fixed_dictionaries(
    {
        "session_id": st.one_of(session_ids, st.just("@ESCAPE@")),
        "ts": st.one_of(st.integers(TS_MIN_US, TS_MAX_US), st.integers(-(2**63), 2**63 - 1)),
        "kind": st.sampled_from(["failed", "refused", "router_escalation", "cancelled"]),
        "goal_id": st.one_of(st.none(), hostile_text),
        "intent": st.one_of(st.none(), hostile_text),
        "summary": hostile_text,
        "confidence": st.none(),
        "auto_proceed": st.booleans(),
        "source_topic": st.one_of(st.just("bus-events"), hostile_text),
        "source_partition": st.integers(-(2**31), 2**31 - 1),
    }
)


@fuzz(150, slow=True)
@given(st.lists(entries, min_size=1, max_size=6))
def test_sink_stage_keeps_hostile_entries_inside_the_root(
    scratch: Path, drafts: list[dict[str, Any]]
) -> None:
    base = Path(tempfile.mkdtemp(dir=scratch))
    root = base / "state"
    siblings = set(os.listdir(scratch))
    try:
        datums = []
        for offset, draft in enumerate(drafts):
            session = draft["session_id"]
            if session == "@ESCAPE@":  # an absolute path that would land next to the root
                session = str(base / "escaped")
            datums.append({**draft, "session_id": session, "source_offset": offset})
        records = [
            Rec("escalations", 1, i, d["session_id"].encode(), CODEC.encode(ENTRY_ID, d))
            for i, d in enumerate(datums)
        ]
        dead, stats = Sent(), Stats.empty()
        stage = SinkStage(Decoder(Codec(BY_ID), IdFile(STORE)), FileSink(root), dead, stats)
        asyncio.run(stage.process(records))

        good = [
            d
            for d in datums
            if not _unsafe_by_contract(d["session_id"]) and TS_MIN_US <= d["ts"] <= TS_MAX_US
        ]
        bad = [r for r, d in zip(records, datums, strict=True) if d not in good]
        # Bad ones are dead-lettered, once each, with their original bytes.
        assert [(k, v) for k, v, _ in dead.records] == [(r.key, r.value) for r in bad]
        assert all(header(h, ERROR_CLASS) == "InvalidRecordError" for _, _, h in dead.records)
        # Nothing outside the root: the root is the only new thing next to it or above it.
        assert set(os.listdir(scratch)) == siblings
        assert os.listdir(base) == (["state"] if good else [])
        resolved = str(root.resolve()) + os.sep
        assert all(os.path.realpath(root / p).startswith(resolved) for p in _tree(root))
        # Good ones: one directory per session, one line per entry, every value intact.
        by_session: dict[str, list[dict[str, Any]]] = {}
        for d in good:
            by_session.setdefault(d["session_id"], []).append(d)
        found = sorted(os.listdir(root)) if root.exists() else []
        assert found == sorted(by_session)
        for session, items in by_session.items():
            data = (root / session / FILE_NAME).read_bytes()
            assert data == b"".join(
                render(
                    EscalationEntry(
                        d["ts"],
                        d["kind"],
                        d["goal_id"],
                        d["intent"],
                        d["summary"],
                        None,
                        d["auto_proceed"],
                    )
                )
                for d in items
            )
            lines = data.split(b"\n")
            assert lines.pop() == b"" and len(lines) == len(items)
            for raw, d in zip(lines, items, strict=True):
                parsed = json.loads(raw)
                assert list(parsed) == KEY_ORDER
                assert (parsed["summary"], parsed["goal_id"], parsed["intent"]) == (
                    d["summary"],
                    d["goal_id"],
                    d["intent"],
                )
        assert stats.lines_written == len(good)
    finally:
        shutil.rmtree(base)


def test_schema_id_header_names_the_writer_schema_of_a_bad_body() -> None:
    value = SAMPLES[1][:-1]
    (outcome,) = _map_each(_records([value]))
    ((_, _, headers),) = outcome.dead
    assert header(headers, SCHEMA_ID) == str(ENVELOPE_ID)
