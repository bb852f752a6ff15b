"""The map stage hands its entries to the sink stage of the same worker (Handoff).

Real codec, real sample events, real files; the senders are in-memory (the broker's part is
covered by the integration tests). What a user sees must not change: the same bytes in the
same files whether a line came through the handoff or was decoded from the output record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.busjson import BusJson
from streams.core.maplines import expected_files
from streams.core.records import sink_line
from streams.ops.sample import bus_events
from streams.runtime.handoff import Handoff
from streams.runtime.stages import MapStage, SinkStage
from streams.runtime.stats import Stats
from streams.sink.files import FILE_NAME, FileSink
from tests.unit.records import Rec

STORE = SchemaStore()
ENVELOPE_ID, ENTRY_ID = 1, 2


class Topic:
    """An in-memory output topic: one partition, offsets in send order."""

    def __init__(self) -> None:
        self.records: list[Rec] = []

    async def __call__(self, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        start = len(self.records)
        self.records += [
            Rec("escalations", 0, start + i, key, value) for i, (key, value) in enumerate(records)
        ]
        return [(0, start + i) for i in range(len(records))]


async def _no_dead_letters(key: bytes | None, value: bytes | None, headers: Any) -> Any:
    raise AssertionError("no record here is bad")


def _decoder() -> Decoder:
    return Decoder(Codec(STORE.by_id()), IdFile(STORE))


def _input(count: int) -> tuple[list[Rec], dict[str, bytes]]:
    lines = list(bus_events(count, sessions=5, seed=7))
    codec = Codec(STORE.by_id())
    records = [
        Rec("bus-events", 0, offset, d["session_id"].encode(), codec.encode(ENVELOPE_ID, d))
        for offset, d in enumerate(BusJson(STORE.current(BUS_EVENT)).parse_lines(lines))
    ]
    return records, expected_files(lines, STORE.current(BUS_EVENT))


def _files(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in root.glob(f"*/{FILE_NAME}")}


def _run(root: Path, handoff_map: Handoff | None, handoff_sink: Handoff | None) -> Topic:
    records, _ = _input(600)
    topic, stats = Topic(), Stats.empty()
    mapper = MapStage(_decoder(), ENTRY_ID, topic, _no_dead_letters, stats, handoff_map)
    sink = SinkStage(_decoder(), FileSink(root), _no_dead_letters, stats, handoff=handoff_sink)

    async def run() -> None:
        consumed = 0
        for start in range(0, len(records), 100):
            await mapper.process(records[start : start + 100])
            await sink.process(topic.records[consumed:])
            consumed = len(topic.records)

    asyncio.run(run())
    return topic


def test_lines_handed_over_give_the_same_files_as_decoding(tmp_path: Path) -> None:
    _, expected = _input(600)
    handoff = Handoff()
    _run(tmp_path / "handed", handoff, handoff)
    _run(tmp_path / "decoded", None, None)

    assert _files(tmp_path / "handed") == expected
    assert _files(tmp_path / "decoded") == expected
    assert handoff.hits == sum(data.count(b"\n") for data in expected.values())
    assert len(handoff) == 0  # every line taken


def test_a_record_with_other_bytes_is_decoded(tmp_path: Path) -> None:
    _, expected = _input(600)
    handoff = Handoff()
    topic = _run(tmp_path / "first", handoff, None)  # the lines stay in the handoff
    assert len(handoff) == len(topic.records)
    handoff.own({0})  # a new assignment: what was held is dropped
    assert len(handoff) == 0
    others = [b"other %d" % r.offset for r in topic.records]
    handoff.offer(others, [_entry("intruder")] * len(others))

    stats = Stats.empty()
    sink = SinkStage(
        _decoder(), FileSink(tmp_path / "second"), _no_dead_letters, stats, handoff=handoff
    )
    asyncio.run(sink.process(topic.records))

    assert handoff.hits == 0
    assert _files(tmp_path / "second") == expected
    assert not (tmp_path / "second" / "intruder").exists()


def _entry(session_id: str) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "ts": 1_795_556_444_000_000,
        "kind": "worker_started",
        "goal_id": None,
        "intent": None,
        "summary": "not this line",
        "confidence": None,
        "auto_proceed": False,
        "source_topic": "bus-events",
        "source_partition": 0,
        "source_offset": 0,
    }


def test_the_handoff_keeps_only_the_newest_entries() -> None:
    handoff = Handoff(capacity=3)
    entry = _entry("s")
    handoff.offer([b"v1", b"v2", b"v3", b"v4"], [entry] * 4)

    assert len(handoff) == 3
    assert handoff.take(b"v1") is None  # evicted: the oldest goes first
    assert handoff.take(b"v2") == sink_line(entry)
    assert handoff.take(b"v2") is None  # taken (and dropped) once
    assert handoff.take(None) is None
    assert handoff.hits == 1


def test_an_entry_is_there_before_its_acknowledgement() -> None:
    # The sink's fetch can return a record before the map stage's send has returned.
    handoff = Handoff()
    handoff.own({0})
    entry = _entry("s")
    handoff.offer([b"v"], [entry])
    assert handoff.take(b"v") == sink_line(entry)


def test_the_handoff_keeps_only_the_partitions_this_sink_owns() -> None:
    handoff = Handoff()
    entry = _entry("s")
    handoff.own({0, 2})
    values = [b"a", b"b", b"c", b"d"]
    handoff.offer(values, [entry] * 4)
    handoff.placed([(0, 1), (1, 1), (2, 1), (3, 1)], values)
    assert len(handoff) == 2
    assert handoff.take(b"b") is None  # placed in partition 1: another worker's sink
    assert handoff.take(b"c") == sink_line(entry)


def test_the_map_stage_waits_for_room_while_the_sink_takes_entries() -> None:
    async def scenario() -> list[str]:
        handoff = Handoff(capacity=10)
        entry = _entry("s")
        handoff.offer([b"v%d" % o for o in range(10)], [entry] * 10)
        events: list[str] = []

        async def mapper() -> None:
            await handoff.room()
            events.append("map goes on")

        async def sink() -> None:
            for offset in range(3):
                await asyncio.sleep(0.01)
                events.append(f"sink takes {offset}")
                handoff.take(b"v%d" % offset)

        await asyncio.gather(mapper(), sink())
        assert handoff.waits == 1
        return events

    # Room for a batch more once the handoff is below 90% full: after the second take.
    assert asyncio.run(scenario()) == [
        "sink takes 0",
        "sink takes 1",
        "map goes on",
        "sink takes 2",
    ]


def test_the_map_stage_waits_a_bounded_time_when_the_sink_takes_nothing() -> None:
    async def scenario() -> tuple[float, float]:
        handoff = Handoff(capacity=2)
        handoff.offer([b"v1", b"v2"], [_entry("s")] * 2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await handoff.room()  # the sink is behind (or gone): waits, then runs on
        waited = loop.time() - started
        started = loop.time()
        await handoff.room()  # and runs free for a while, without waiting again
        return waited, loop.time() - started

    waited, again = asyncio.run(scenario())
    assert 0.2 <= waited < 1.0
    assert again < 0.05
