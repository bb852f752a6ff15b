"""A hostile corpus against a running worker on a real broker (docs/architecture.md "Where each guarantee is kept", README "Guarantees").

Raw records (random bytes, random bodies behind valid framing, truncations, unknown schema ids,
schema-valid records whose session id is a path attack or whose timestamp is out of range) are
sent to the input topic between good events. What a user must see: the worker stays up, every
good session's file is byte for byte what ``escalations map`` gives (odd but valid session ids
and hostile summary strings included), every bad record is in the dead-letter topic exactly once
with its original key, value and headers and the reason, sessions written earlier are untouched,
and nothing appears outside the state root.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from streams.contracts.codec import Codec
from streams.contracts.schemas import BUS_EVENT
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
from streams.errors import Coordinates, DecodeError, SinkCorruptionError
from streams.ops.sample import bus_events
from streams.sink.positionlog import read_recorded

from .support import Job, Worker

pytestmark = pytest.mark.integration

DECODE_ERRORS = frozenset(
    {"NotFramedError", "UnknownSchemaIdError", "AvroBodyError", "TrailingBytesError"}
)
INVALID = frozenset({"InvalidRecordError"})
MB = 1024 * 1024

#: Valid session ids that look dangerous. Look-alikes of "/" and "." (U+2215 DIVISION SLASH,
#: U+FF0F FULLWIDTH SOLIDUS, U+2024 ONE DOT LEADER) are ordinary characters on Linux: each of
#: these is one path segment inside the state root.
ODD_SESSIONS = [
    "\u2215etc\u2215passwd",
    "\uff0fetc\uff0fpasswd",
    "\u2024",
    "\u2024\u2024",
    "\u2024\u2024\u2215escape",
    "...",
    ".hidden",
    "C:x",
    "s" * 200,
    "é" * 100,
    "🚀 rocket",
    "quote\"'`$(x)",
]

#: Hostile summary strings; each ends up JSON-escaped on one line of a session's file.
HOSTILE_TEXTS = [
    'she said "hi" \\ then left',
    "controls \x00\x01\x07\x1b[31m\x7f end",
    "\r\n\t\b\f",
    "line\u2028separator\u2029paragraph",
    "emoji 🚀👩‍👩‍👧 and \ufeff BOM and \u202e RTL",
    '{"ts":"1970-01-01T00:00:00Z","kind":"forged"}\n',
    "x" * 10_000,
    "é" * 5_000 + "🚀",
]


def _lines(count: int, sessions: int, seed: int, prefix: str) -> list[str]:
    """Sample events, their sessions renamed so that each phase has sessions of its own."""
    out = []
    for line in bus_events(count, sessions=sessions, seed=seed):
        obj = json.loads(line)
        obj["session_id"] = prefix + obj["session_id"].removeprefix("session-")
        out.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    return out


def _event_line(session: str, n: int, event: Any) -> str:
    occurred = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_796_000_000 + n)) + ".000001Z"
    return json.dumps(
        {"session_id": session, "event_id": f"h-{n}", "occurred_at": occurred, "event": event},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _hostile_but_valid_lines() -> list[str]:
    """Odd session ids, and hostile strings in every kept variant that carries text."""
    lines, n = [], 0
    for session in ODD_SESSIONS:
        for text in HOSTILE_TEXTS[:3]:
            lines.append(_event_line(session, n, {"Refused": {"reason": text, "intent": "Large"}}))
            n += 1
    for i, text in enumerate(HOSTILE_TEXTS):
        session = f"strings-{i % 3}"
        for event in (
            {"ChildGoalEvent": {"goal_id": text, "event": {"Failed": {"reason": text}}}},
            {"WorkerStarted": {"worker_id": text, "kind": text, "task": text}},
            {"Refused": {"reason": text, "intent": "Small"}},
            {"ChildGoalEvent": {"goal_id": "g", "event": {"ProofReady": {"path": text}}}},
            {"DisclosureLine": text},  # filtered: no line
        ):
            lines.append(_event_line(session, n, event))
            n += 1
    return lines


def _bad_corpus(job: Job) -> list[tuple[frozenset[str], bytes | None, bytes | None]]:
    """(the error classes allowed, key, value) of every bad record."""
    codec = Codec(job.store.by_id())
    parser = BusJson(job.store.current(BUS_EVENT))
    good = parser.parse(_event_line("bad-base", 0, {"Refused": {"reason": "r", "intent": "Large"}}))
    valid = codec.encode(1, good)
    rng = random.Random(20261125)

    def decodes(value: bytes) -> bool:
        try:
            codec.decode(value, Coordinates("local"))
        except DecodeError:
            return False
        return True

    bad: list[tuple[frozenset[str], bytes | None, bytes | None]] = []
    for i in range(12):  # random bytes; the first half is surely not framed
        value = rng.randbytes(rng.randrange(0, 300))
        if i < 6 and value:
            value = bytes([rng.randrange(1, 256)]) + value[1:]
        assert not decodes(value)
        bad.append((DECODE_ERRORS, f"random-{i}".encode(), value))
    for i in range(12):  # valid framing, random body
        schema_id = 1 if i % 3 else 2
        value = b"\x00" + schema_id.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 200))
        allowed = DECODE_ERRORS if schema_id == 1 else DECODE_ERRORS | INVALID
        if schema_id == 1:
            assert not decodes(value)
        bad.append((allowed, f"framed-{i}".encode(), value))
    for cut in (0, 1, 4, 5, 6, 9, len(valid) // 2, len(valid) - 1):
        expected = "NotFramedError" if cut < 5 else "AvroBodyError"
        bad.append((frozenset({expected}), b"truncated", valid[:cut]))
    for schema_id in (0, 3, 999, 2**32 - 1):
        value = b"\x00" + schema_id.to_bytes(4, "big") + valid[5:]
        bad.append((frozenset({"UnknownSchemaIdError"}), b"unknown-id", value))
    bad.append((frozenset({"TrailingBytesError"}), b"trailing", valid + b"\x00"))
    bad.append((frozenset({"NotFramedError"}), b"tombstone", None))
    bad.append((frozenset({"NotFramedError"}), None, b'{"session_id":"json-not-avro"}'))
    bad.append((DECODE_ERRORS, b"\xff\xfe\x00binary key", rng.randbytes(64)))
    bad.append((frozenset({"NotFramedError"}), b"k" * 100_000, b"\x01" * 100))
    for session in [
        "",
        ".",
        "..",
        "../hostile-escape-1",
        "../../hostile-escape-2",
        "a/b",
        str(job.tmp / "abs-escape"),  # absolute: would land next to the state root
        "/etc/passwd",
        "..\\hostile-escape-3",
        "C:\\x",
        "a\x00b",
        "\x00",
        "a\nb",
        "\x1b[31mred",
        "\x7f",
        "x" * 201,
        "é" * 100 + "x",  # 201 bytes
    ]:
        value = codec.encode(1, {**good, "session_id": session})
        bad.append((INVALID, session.encode(), value))
    for ts in (-(2**63), -62135596800 * 1_000_000 - 1, 253402300800 * 1_000_000, 2**63 - 1):
        value = codec.encode(1, {**good, "session_id": "bad-ts", "occurred_at": ts})
        bad.append((INVALID, b"bad-ts", value))
    return bad


def _trace(i: int) -> str:
    return f"hostile-{i}"


async def _send(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], first: int
) -> list[RecordMetadata]:
    """Sends raw records, one at a time, each with a ``trace`` header numbered from ``first``."""
    # aiokafka refuses requests over 1 MB by default; the 5 MB events need more.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * MB, acks="all")
    await producer.start()
    try:
        metas = []
        for i, (key, value) in enumerate(records, first):
            # A forged dead-letter header too: the worker must replace it, not keep it.
            headers = [("trace", _trace(i).encode()), (ERROR_CLASS, b"Forged")]
            metas.append(await (await producer.send(topic, value, key=key, headers=headers)))
        return metas
    finally:
        await producer.stop()


async def _read_all(
    bootstrap: str, topic: str, expect: int, timeout: float
) -> list[ConsumerRecord]:
    """Everything on ``topic``: until ``expect`` records arrived, then 2 s more for extras."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * MB,
        fetch_max_bytes=16 * MB,
    )
    await consumer.start()
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
            if len(out) >= expect:
                deadline = min(deadline, time.monotonic() + 2)
    finally:
        await consumer.stop()
    return out


def _wait_for(job: Job, worker: Worker, expected: dict[str, bytes], timeout: float) -> None:
    """Until the files equal ``expected`` and their positions are recorded, or the worker died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.alive():
        if job.files(expected) == expected and all(
            _recorded_size(job.root, s) == len(data) for s, data in expected.items()
        ):
            return
        time.sleep(0.2)


def _recorded_size(root: Path, session: str) -> int | None:
    try:
        position = read_recorded(root, session)
    except (OSError, SinkCorruptionError):
        return None
    return None if position is None else position.size


def _digest(files: dict[str, bytes]) -> dict[str, tuple[int, str, int]]:
    """Comparable without printing megabytes: (bytes, sha256, lines) per session."""
    return {
        s: (len(data), hashlib.sha256(data).hexdigest()[:16], data.count(b"\n"))
        for s, data in files.items()
    }


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every path under ``path``: file contents, or None for a directory."""
    found: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), path)] = None
        for name in files:
            full = os.path.join(top, name)
            found[os.path.relpath(full, path)] = Path(full).read_bytes()
    return found


def _outside_state(job: Job) -> dict[str, bytes | None]:
    """job.tmp without the state root, the workers' logs and Faust's data directory."""
    data_dir = f"{job.env['ESCALATIONS_APP_ID']}-data"
    logs = {w.log_path.name for w in job.workers}
    return {
        p: v
        for p, v in _tree(job.tmp).items()
        if p.split(os.sep)[0] not in {"state", data_dir, *logs}
    }


def _check_dead_letters(
    job: Job,
    bad: list[tuple[frozenset[str], bytes | None, bytes | None]],
    metas: list[RecordMetadata],
    dead: list[ConsumerRecord],
    first: int = 0,
) -> None:
    by_source: dict[tuple[str | None, str | None], list[ConsumerRecord]] = {}
    for d in dead:
        source = (header(d.headers, SOURCE_PARTITION), header(d.headers, SOURCE_OFFSET))
        by_source.setdefault(source, []).append(d)
    expected_sources = {(str(m.partition), str(m.offset)) for m in metas}
    assert set(by_source) == expected_sources, (
        f"dead letters for unknown sources {set(by_source) - expected_sources}, "
        f"missing for {expected_sources - set(by_source)}\n{job.logs()}"
    )
    for i, ((allowed, key, value), meta) in enumerate(zip(bad, metas, strict=True), first):
        copies = by_source[(str(meta.partition), str(meta.offset))]
        assert len(copies) == 1, f"bad record {i} ({key!r}) dead-lettered {len(copies)} times"
        (d,) = copies
        error_class = header(d.headers, ERROR_CLASS)
        message = header(d.headers, ERROR_MESSAGE) or ""
        assert error_class in allowed, (i, key, error_class, message)
        assert (d.key, d.value) == (key, value), f"bad record {i} ({key!r}): bytes changed"
        # The original headers, then the worker's own: one of each, none forged.
        ours = [k for k, _ in d.headers if k.startswith("escalations.")]
        assert [(k, v) for k, v in d.headers if k not in ours] == [("trace", _trace(i).encode())]
        assert len(ours) == len(set(ours)) and b"Forged" not in dict(d.headers).values()
        assert header(d.headers, SOURCE_TOPIC) == job.settings.input_topic
        assert message.startswith(f"{job.settings.input_topic}[{meta.partition}]@{meta.offset}: ")
        if error_class in ("UnknownSchemaIdError", "AvroBodyError", "TrailingBytesError"):
            assert header(d.headers, SCHEMA_ID) is not None


def test_hostile_corpus_is_dead_lettered_and_good_sessions_stay_byte_exact(job: Job) -> None:
    calm = _lines(120, sessions=3, seed=31, prefix="calm-")
    busy = _lines(240, sessions=4, seed=32, prefix="busy-")
    odd = _hostile_but_valid_lines()
    bad = _bad_corpus(job)
    before = _tree(job.tmp)
    worker = job.worker()

    # Phase 1: sessions that the hostile input must not touch.
    job.produce(calm)
    expected_calm = job.expected(calm)
    _wait_for(job, worker, expected_calm, timeout=30)
    assert _digest(job.files(expected_calm)) == _digest(expected_calm), job.logs()
    calm_dirs = {s: _tree(job.root / s) for s in expected_calm}

    # Phase 2: the bad corpus interleaved with good events, hostile-but-valid ones included.
    good = busy + odd
    rng = random.Random(5)
    rng.shuffle(bad)
    chunks = 6
    metas: list[RecordMetadata] = []
    for c in range(chunks):
        job.produce(good[c * len(good) // chunks : (c + 1) * len(good) // chunks])
        part = bad[c * len(bad) // chunks : (c + 1) * len(bad) // chunks]
        raw = [(key, value) for _, key, value in part]
        metas += asyncio.run(_send(job.bootstrap, job.settings.input_topic, raw, len(metas)))

    # Valid records whose Kafka key is hostile or missing: the session id decides the path.
    codec, parser = Codec(job.store.by_id()), BusJson(job.store.current(BUS_EVENT))
    keyed = [
        _event_line("keyed-by-session", 9001, {"Refused": {"reason": "k", "intent": "Large"}}),
        _event_line("keyless", 9002, {"Refused": {"reason": "n", "intent": "Small"}}),
    ]
    odd_keys = [b"../../keyed-escape", None]
    raw = [(k, codec.encode(1, parser.parse(x))) for k, x in zip(odd_keys, keyed, strict=True)]
    asyncio.run(_send(job.bootstrap, job.settings.input_topic, raw, 10_000))

    expected = {**expected_calm, **job.expected(good + keyed)}
    assert {s for s in expected if s in ODD_SESSIONS} == set(ODD_SESSIONS)
    _wait_for(job, worker, expected, timeout=40)
    assert worker.alive(), job.logs()
    assert _digest(job.files(expected)) == _digest(expected), job.logs()

    dead = asyncio.run(_read_all(job.bootstrap, job.settings.dlq_topic, len(bad), timeout=30))
    _check_dead_letters(job, bad, metas, dead)

    # Sessions written before the hostile input: every file byte-identical (positions too).
    assert {s: _tree(job.root / s) for s in expected_calm} == calm_dirs
    # Nothing outside the state root, and nothing in it but the good sessions.
    assert _outside_state(job) == before
    assert job.state_entries() == sorted(expected)
    assert not (job.tmp.parent / "hostile-escape-2").exists()
    assert not (job.tmp.parent / "keyed-escape").exists()
    assert worker.alive(), job.logs()
    assert "fatal" not in worker.log(), job.logs()


def _huge_event(session: str, n: int, variant: str) -> str:
    """A valid JSON-form event carrying ~5 MB of text (hostile characters at both ends)."""
    huge = '\u2028"<' + "x" * (5 * MB) + "🚀\x00>"
    if variant == "Failed":
        event: Any = {"ChildGoalEvent": {"goal_id": "g", "event": {"Failed": {"reason": huge}}}}
    else:
        event = {"DisclosureLine": huge}
    return _event_line(session, n, event)


def _run_with_big_records(
    job: Job, big: list[tuple[bytes | None, bytes | None]]
) -> tuple[Worker, list[str], list[RecordMetadata], dict[str, bytes | None]]:
    """Good events, the big raw records, good events again; returns what the test checks."""
    around = _lines(80, sessions=2, seed=41, prefix="around-")
    before = _tree(job.tmp)
    worker = job.worker()
    job.produce(around[:40])
    metas = asyncio.run(_send(job.bootstrap, job.settings.input_topic, big, 0))
    job.produce(around[40:])
    return worker, around, metas, before


def test_five_megabyte_events_are_written_or_dropped_and_the_worker_stays_up(job: Job) -> None:
    codec = Codec(job.store.by_id())
    parser = BusJson(job.store.current(BUS_EVENT))
    kept = _huge_event("big-kept", 1, "Failed")  # one ~5 MB line in its session's file
    dropped = _huge_event("big-dropped", 2, "DisclosureLine")  # filtered: no line, no file
    big = [
        (s.encode(), codec.encode(1, parser.parse(line)))
        for s, line in [
            ("big-dropped", dropped),
            ("big-kept", kept),
        ]
    ]
    worker, around, _, before = _run_with_big_records(job, big)

    expected = job.expected([*around, dropped, kept])
    assert set(expected) == {"around-000", "around-001", "big-kept"}
    assert len(expected["big-kept"]) > 5 * MB
    _wait_for(job, worker, expected, timeout=40)
    assert worker.alive(), job.logs()
    assert _digest(job.files(expected)) == _digest(expected), job.logs()
    assert _outside_state(job) == before
    assert job.state_entries() == sorted(expected)


def test_a_five_megabyte_bad_record_is_dead_lettered_whole(job: Job) -> None:
    codec = Codec(job.store.by_id())
    parser = BusJson(job.store.current(BUS_EVENT))
    datum = parser.parse(_huge_event("big", 1, "Failed"))
    bad = codec.encode(1, {**datum, "session_id": "../big-escape"})
    worker, around, metas, before = _run_with_big_records(job, [(b"../big-escape", bad)])

    expected = job.expected(around)
    _wait_for(job, worker, expected, timeout=40)
    assert worker.alive(), job.logs()
    assert _digest(job.files(expected)) == _digest(expected), job.logs()
    dead = asyncio.run(_read_all(job.bootstrap, job.settings.dlq_topic, 1, timeout=20))
    _check_dead_letters(job, [(INVALID, b"../big-escape", bad)], metas, dead)
    assert _outside_state(job) == before
    assert job.state_entries() == sorted(expected)
    assert not (job.tmp.parent / "big-escape").exists()
    assert worker.alive(), job.logs()
