"""Nothing a reader plants leads the sink out of the state root (issue 20): a symbolic link in
place of a session's directory, its file, or the position logs' directory is refused, the
session counted as skipped, the others carry on, and nothing outside the root is created or
changed. Real files on the test's file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.core.records import SinkLine
from streams.errors import SinkCorruptionError
from streams.sink import fileio
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.positionlog import LOG_DIR

P0 = "escalations:0"


def line(session: str, offset: int) -> SinkLine:
    return SinkLine(session, f'{{"o":{offset}}}\n'.encode(), "bus-events:0", offset, 1000)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(directory.rglob("*"))
    }


@pytest.fixture(autouse=True, params=["openat2", "O_NOFOLLOW"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of refusing links: ``openat2`` and the fallback for kernels before 5.6."""
    if request.param == "O_NOFOLLOW":
        monkeypatch.setattr(fileio, "_OPENAT2", None)
    elif fileio._OPENAT2 is None:
        pytest.skip("openat2 is missing here (Linux before 5.6)")


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "state", tmp_path / "outside"
    outside.mkdir()
    (outside / FILE_NAME).write_bytes(b"a reader's own file\n")
    return root, outside


def sink_on(root: Path) -> FileSink:
    sink = FileSink(root, log_of=lambda s: P0)
    sink.recover(lambda s: True)
    return sink


def test_a_session_directory_that_is_a_link_is_refused(places: tuple[Path, Path]) -> None:
    root, outside = places
    before = snapshot(outside)
    root.mkdir()
    (root / "planted").symlink_to(outside, target_is_directory=True)
    (root / "empty-link").symlink_to(root.parent / "nowhere", target_is_directory=True)
    sink = sink_on(root)
    result = sink.write([line("planted", 1), line("empty-link", 1), line("fine", 1)])
    sink.checkpoint()
    assert snapshot(outside) == before
    assert not (root.parent / "nowhere").exists()
    assert result.corrupt.keys() == {"planted", "empty-link"}
    assert "symbolic link" in sink.corrupt_sessions()["planted"]
    assert (root / "fine" / FILE_NAME).read_bytes() == b'{"o":1}\n'


def test_a_session_file_that_is_a_link_is_refused(places: tuple[Path, Path]) -> None:
    root, outside = places
    before = snapshot(outside)
    (root / "planted").mkdir(parents=True)
    (root / "planted" / FILE_NAME).symlink_to(outside / FILE_NAME)
    sink = sink_on(root)
    assert sink.write([line("planted", 1), line("fine", 1)]).corrupt.keys() == {"planted"}
    sink.checkpoint()
    assert snapshot(outside) == before
    assert (root / "fine" / FILE_NAME).exists()


def test_a_link_swapped_in_between_two_batches_is_refused(places: tuple[Path, Path]) -> None:
    root, outside = places
    sink = sink_on(root)
    sink.write([line("s1", 1), line("s2", 1)])
    sink.checkpoint()
    before = snapshot(outside)
    # While the sink holds s1's file open: the directory moved away, a link in its place.
    os.rename(root / "s1", root.parent / "moved")
    (root / "s1").symlink_to(outside, target_is_directory=True)
    assert sink.write([line("s1", 2), line("s2", 2)]).corrupt.keys() == {"s1"}
    sink.checkpoint()
    assert snapshot(outside) == before
    assert (root / "s2" / FILE_NAME).read_bytes() == b'{"o":1}\n{"o":2}\n'
    # The link removed, the session carries on.
    (root / "s1").unlink()
    os.rename(root.parent / "moved", root / "s1")
    assert not sink.write([line("s1", 3)]).corrupt
    assert (root / "s1" / FILE_NAME).read_bytes() == b'{"o":1}\n{"o":3}\n'


def test_a_link_in_the_position_logs_place_stops_the_checkpoint(
    places: tuple[Path, Path],
) -> None:
    root, outside = places
    before = snapshot(outside)
    root.mkdir()
    (root / LOG_DIR).symlink_to(outside, target_is_directory=True)
    sink = FileSink(root, log_of=lambda s: P0)
    with pytest.raises(SinkCorruptionError, match="symbolic link"):
        sink.recover(lambda s: True, [P0])  # the fence's owner file lives there
        sink.write([line("s1", 1)])
        sink.checkpoint()
    assert snapshot(outside) == before
