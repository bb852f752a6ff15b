"""streams.sink.positionlog: the checkpoints' positions, one append-only log per output partition.

Real files under ``tmp_path``; a "restart" is a new ``FileSink`` over the same root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streams.core.records import SinkLine, session_id_problem
from streams.sink.fileio import OS_FILES
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.frames import encode_frame, parse_frames
from streams.sink.position import POSITION_NAME, SinkPosition, read_position
from streams.sink.positionlog import LOG_DIR, PositionLogs, merge, read_recorded
from streams.sink.replace import replace_session

SOURCE = "bus-events:0"


def line(session: str, offset: int, source: str = SOURCE) -> SinkLine:
    body = f'{{"session":"{session}","offset":{offset}}}\n'.encode()
    return SinkLine(session, body, source, offset, 1_000 + offset)


def expected(session: str, *offsets: int) -> bytes:
    return b"".join(line(session, o).line for o in offsets)


def restarted(root: Path, **kwargs: object) -> FileSink:
    sink = FileSink(root, **kwargs)  # type: ignore[arg-type]
    sink.recover(lambda session: True)
    return sink


def durable(sink: FileSink, items: list[SinkLine]) -> None:
    sink.write(items)
    sink.checkpoint()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_the_logs_directory_can_never_be_a_session() -> None:
    assert session_id_problem(LOG_DIR) is not None
    assert LOG_DIR == ".positions"


def test_a_worker_logs_each_session_under_its_output_partition(root: Path) -> None:
    partition = {"a": "escalations:3", "b": "escalations:0"}
    sink = FileSink(root, log_of=partition.__getitem__)
    durable(sink, [line("a", 0), line("b", 1, "bus-events:7")])

    assert sorted(p.name for p in (root / LOG_DIR).iterdir()) == [
        "escalations-0.log",
        "escalations-3.log",
    ]
    for session, offset in (("a", 0), ("b", 1)):
        position = read_recorded(root, session)
        assert position is not None and position.entries == 1
        assert offset in position.offsets.values()


def test_frames_round_trip_and_a_torn_one_ends_the_read() -> None:
    first = [("s1", SinkPosition(10, 1, {"t:0": 4}, 7, 1)), ("é\udcff", SinkPosition(3, 1, {}))]
    second = [("s1", SinkPosition(20, 2, {"t:0": 5, "t:1": 0}, None, 2, epoch=9))]
    raw = encode_frame(first) + encode_frame(second)

    entries, end = parse_frames(raw)
    assert end == len(raw)
    assert [(n, p, p.seq, p.epoch) for n, p in entries] == [
        (n, p, p.seq, p.epoch) for n, p in first + second
    ]
    for cut in range(len(encode_frame(first)), len(raw)):  # torn, or zero-filled
        assert parse_frames(raw[:cut])[1] == len(encode_frame(first))
        zeroed = raw[:cut] + bytes(len(raw) - cut)
        assert parse_frames(zeroed)[1] == len(encode_frame(first))


def test_entries_of_one_epoch_merge_the_biggest_prefix_and_the_highest_offsets() -> None:
    small = SinkPosition(100, 2, {"t:0": 9}, 5, 4)
    big = SinkPosition(150, 3, {"t:0": 7, "t:1": 3}, 6, 3)  # another writer, stale on t:0

    merged = merge(small, big)

    assert (merged.size, merged.entries, merged.last_ts_us) == (150, 3, 6)
    assert merged.offsets == {"t:0": 9, "t:1": 3}
    assert merged.seq == 4
    assert merge(big, small) == merged


def test_a_long_log_is_rewritten_as_its_newest_entries(root: Path) -> None:
    sink = FileSink(root)
    sink.logs.compact_bytes = 2_000
    sessions = [f"s{n}" for n in range(5)]
    sizes = []
    for offset in range(60):
        durable(sink, [line(s, offset) for s in sessions])
        sizes.append((root / LOG_DIR / "bus-events-0.log").stat().st_size)

    assert sink.logs.compactions >= 2
    assert max(sizes) < 4 * 2_000  # bounded
    assert not list((root / LOG_DIR).glob("*.tmp"))
    again = restarted(root)
    for session in sessions:
        assert again.known_positions()[session].entries == 60
        assert (root / session / FILE_NAME).read_bytes() == expected(session, *range(60))


def test_a_worker_appending_after_another_reads_its_frames_first(root: Path) -> None:
    first, second = FileSink(root), FileSink(root)
    durable(first, [line("s1", 0)])
    second.recover(lambda session: True)
    durable(second, [line("s2", 1)])
    durable(first, [line("s3", 2)])  # appends after the other's frame, which it now knows

    assert first.logs.get("s2", 0) is not None
    logs = PositionLogs(OS_FILES, root)
    logs.refresh()
    assert all(logs.get(s, 0) is not None for s in ("s1", "s2", "s3"))


def test_a_directory_deleted_while_no_worker_held_it_starts_a_new_life(root: Path) -> None:
    durable(FileSink(root), [line("s1", 0), line("s1", 1), line("s1", 2)])
    shutil.rmtree(root / "s1")  # e.g. a finished session cleaned up, then a late line

    sink = restarted(root)
    durable(sink, [line("s1", 5)])

    assert (root / "s1" / FILE_NAME).read_bytes() == expected("s1", 5)
    # The logs still hold the old life's entries: a new epoch keeps them from applying.
    own = read_position(root / "s1" / POSITION_NAME)
    assert own is not None and own.epoch != 0
    again = restarted(root)
    assert again.corrupt_sessions() == {}
    assert again.known_positions()["s1"].entries == 1


def test_a_rebuilt_file_is_described_by_its_position_file_not_by_the_old_entries(
    root: Path,
) -> None:
    sink = FileSink(root)
    durable(sink, [line("s1", 0), line("s1", 1)])
    (root / "s1" / FILE_NAME).write_bytes(b"")  # emptied by a reader
    assert restarted(root).sessions_io.discontinuities == {"emptied": 1}

    rebuilt = replace_session(FileSink(root), "s1", [line("s1", 0), line("s1", 1)])

    assert rebuilt is not None and rebuilt.epoch != 0
    again = restarted(root)
    assert again.corrupt_sessions() == {}
    durable(again, [line("s1", 1), line("s1", 2)])
    assert (root / "s1" / FILE_NAME).read_bytes() == expected("s1", 0, 1, 2)
    position = read_recorded(root, "s1")
    assert position is not None and position.entries == 3 and position.epoch == rebuilt.epoch
