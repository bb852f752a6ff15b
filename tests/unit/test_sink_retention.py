"""Sessions come and go (issue 20): recovery touches only what the assigned partitions' logs
know, and a session whose directory went (or that stayed idle past the retention) leaves the
worker's memory and its log. Real files under ``tmp_path``."""

from __future__ import annotations

import shutil
from pathlib import Path

from streams.core.records import SinkLine
from streams.sink.fileio import OsFiles, StrPath
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.positionlog import LOG_DIR, PositionLogs
from streams.sink.retention import Retention

P0, P1 = "escalations:0", "escalations:1"


def line(session: str, offset: int) -> SinkLine:
    return SinkLine(session, f'{{"s":"{session}","o":{offset}}}\n'.encode(), "bus:0", offset, 1)


def partition_of(session: str) -> str:
    return P1 if session.startswith("other") else P0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Listings(OsFiles):
    """The OS file layer, recording the directories listed and the paths looked at."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.touched: set[str] = set()

    def list_dirs(self, path: StrPath) -> list[str]:
        self.listed.append(str(path))
        return super().list_dirs(path)

    def stat(self, path: StrPath) -> object:  # type: ignore[override]
        self.touched.add(str(path))
        return super().stat(path)

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        self.touched.add(str(path))
        return super().open(path, create=create, readonly=readonly)


def logged(root: Path) -> set[str]:
    """The sessions the position logs hold, as a reader of the root finds them."""
    logs = PositionLogs(OsFiles(), root)
    logs.refresh()
    return {name for name in logs.sessions_of(P0) if logs.latest(name) is not None}


def worker(root: Path, partitions: list[str], files: OsFiles | None = None) -> FileSink:
    sink = FileSink(root, files=files or OsFiles(), log_of=partition_of)
    sink.recover(lambda s: partition_of(s) in partitions, partitions)
    return sink


def test_recovery_reads_only_what_the_assigned_partitions_logs_know(tmp_path: Path) -> None:
    root = tmp_path / "state"
    first = worker(root, [P0, P1])
    first.write(
        [line(f"live-{n}", 0) for n in range(20)] + [line(f"other-{n}", 0) for n in range(20)]
    )
    first.checkpoint()
    for n in range(200):  # ended sessions' directories, archived by no one yet
        (root / f"old-{n}").mkdir()

    files = Listings()
    second = worker(root, [P0], files)

    assert str(root) not in files.listed, "recovery listed the whole state root"
    looked_at = {
        Path(p).relative_to(root).parts[0] for p in files.touched if p.startswith(f"{root}/")
    }
    assert looked_at - {LOG_DIR} == {f"live-{n}" for n in range(20)}
    assert set(second.known_positions()) == {f"live-{n}" for n in range(20)}


def test_a_session_whose_directory_went_is_forgotten_and_left_out_of_the_log(
    tmp_path: Path,
) -> None:
    root = tmp_path / "state"
    sink = worker(root, [P0])
    sink.write([line(f"s{n}", 0) for n in range(100)])
    sink.checkpoint()
    for n in range(90):
        shutil.rmtree(root / f"s{n}")

    forgotten = Retention(sink, retention_s=3600).sweep(limit=1000)

    assert sorted(forgotten) == sorted(f"s{n}" for n in range(90))
    assert set(sink.known_positions()) == {f"s{n}" for n in range(90, 100)}
    assert sink.logs.sessions_of(P0) == {f"s{n}" for n in range(90, 100)}
    assert all(sink.logs.latest(f"s{n}") is None for n in range(90))
    # Another worker reads the tombstones; the next rewrite leaves the sessions out.
    assert logged(root) == {f"s{n}" for n in range(90, 100)}
    log = root / LOG_DIR / "escalations-0.log"
    before = log.stat().st_size
    sink.logs.compact("escalations-0.log")
    assert log.stat().st_size < before / 5
    assert logged(root) == {f"s{n}" for n in range(90, 100)}

    # A forgotten session that comes back is a new one: its new lines only, no discontinuity.
    sink.write([line("s0", 7)])
    sink.checkpoint()
    again = worker(root, [P0])
    assert (root / "s0" / FILE_NAME).read_bytes() == b'{"s":"s0","o":7}\n'
    assert not again.sessions_io.discontinuities and not sink.sessions_io.discontinuities


def test_a_session_idle_past_the_retention_is_forgotten_and_adopted_when_it_comes_back(
    tmp_path: Path,
) -> None:
    root = tmp_path / "state"
    sink = worker(root, [P0])
    clock = Clock()
    retention = Retention(sink, retention_s=600, clock=clock)
    sink.write([line("idle", 0), line("busy", 0)])
    sink.checkpoint()
    assert retention.sweep() == []
    for offset in range(1, 4):
        clock.now += 300
        sink.write([line("busy", offset)])
        sink.checkpoint()
        retention.sweep()
    assert set(sink.known_positions()) == {"busy"}, "idle for 900 s of a 600 s retention"
    assert retention.forgotten == 1

    sink.write([line("idle", 9)])
    assert (root / "idle" / FILE_NAME).read_bytes() == b'{"s":"idle","o":0}\n{"s":"idle","o":9}\n'


def test_lines_not_yet_recorded_keep_a_session_from_being_forgotten(tmp_path: Path) -> None:
    root = tmp_path / "state"
    sink = worker(root, [P0])
    sink.write([line("s1", 0)])
    shutil.rmtree(root / "s1")
    assert Retention(sink, retention_s=0).sweep() == []
    sink.checkpoint()
    assert Retention(sink, retention_s=3600).sweep() == ["s1"]


def test_memory_and_logs_stay_flat_while_sessions_come_and_go(tmp_path: Path) -> None:
    root = tmp_path / "state"
    sink = worker(root, [P0])
    sink.logs.compact_bytes = 64 * 1024
    retention = Retention(sink, retention_s=3600)
    sizes = []
    for wave in range(30):
        names = [f"w{wave}-{n}" for n in range(100)]
        for offset in range(3):
            sink.write([line(name, offset) for name in names])
            sink.checkpoint()
            retention.sweep(limit=1000)
        for name in names[:90]:  # most of the wave ends; its directories go
            shutil.rmtree(root / name)
        retention.sweep(limit=1000)
        retention.sweep(limit=1000)
        log = root / LOG_DIR / "escalations-0.log"
        sizes.append(
            (len(sink.logs.sessions_of(P0)), len(sink.known_positions()), len(sink.states))
        )
        assert log.stat().st_size < 4 * 64 * 1024 + 16 * 1024
    # 10 sessions left of each wave: the first wave's are still there, never forgotten.
    assert sizes[9][0] == 100 and sizes[29][0] == 300
    assert sizes[29][1] == 300
    assert len(sink.logs._fold) == 300


def test_every_forgotten_session_is_told_to_the_sessions_view(tmp_path: Path) -> None:
    root = tmp_path / "state"
    sink = worker(root, [P0])
    sink.write([line(f"s{n}", 0) for n in range(4)])
    sink.checkpoint()
    shutil.rmtree(root / "s0")
    told: list[str] = []
    sink.on_forgotten = told.extend
    assert Retention(sink, retention_s=3600).sweep() == ["s0"]
    shutil.rmtree(root / "s1")  # gone while no worker ran: found by the next recovery
    restarted = FileSink(root, log_of=partition_of)
    restarted.on_forgotten = told.extend
    restarted.recover(lambda s: True, [P0])
    assert told == ["s0", "s1"]
