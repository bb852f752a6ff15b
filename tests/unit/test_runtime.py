"""The composition root, built without a broker: the app, its handlers and their fatal paths.

``build(settings)`` wires the Faust app and the runtime; nothing here connects to Kafka. The
handlers are driven directly: the position reports' throttle, the position view, and the
deliberate stop (``fatal``) on a sink fault, a report that cannot be sent, an unusable state
root.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiokafka import TopicPartition

from streams.core.records import SinkLine
from streams.errors import SinkError
from streams.runtime.factory import Runtime, build
from streams.runtime.reports import PositionReports, position_view
from streams.settings import Settings, load
from streams.sink.position import SinkPosition


class Stopped(Exception):
    """What the test's ``fatal`` raises instead of ending the process."""


def _settings(root: Path, **env: str) -> Settings:
    return load({"ESCALATIONS_STATE_ROOT": str(root), "ESCALATIONS_WEB_ENABLED": "false", **env})


def _fatal(exc: BaseException) -> NoReturn:
    raise Stopped(str(exc)) from exc


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return build(_settings(tmp_path / "state"), fatal=_fatal)


def test_build_wires_the_app_without_touching_kafka(runtime: Runtime, tmp_path: Path) -> None:
    app = runtime.app
    assert app.conf.id == "escalation-stream"
    assert list(app.agents) == []  # no per-record Faust agent: batched sources only
    assert list(app.tables) == []
    assert runtime.reports_topic_name == "escalation-stream-sink-reports"
    # Faust's data directory lives under the state root, not in the working directory.
    assert Path(app.conf.datadir) == tmp_path / "state" / ".faust"
    assert app.conf.web_bind == "127.0.0.1"
    assert runtime.sources == []  # started by the app's task, not at build time


def test_web_bind_and_advertised_host_are_separate(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ESCALATIONS_WEB_BIND="0.0.0.0", ESCALATIONS_WEB_HOST="10.1.2.3")
    app = build(settings, fatal=_fatal).app
    assert app.conf.web_bind == "0.0.0.0"
    assert app.conf.web_host == "10.1.2.3"


def test_the_codec_starts_with_the_committed_ids(runtime: Runtime) -> None:
    for schema_id in runtime.store.by_id():
        assert runtime.codec.knows(schema_id)


def test_position_view_shows_the_entry_time_to_the_microsecond() -> None:
    position = SinkPosition(
        size=10, entries=1, offsets={"t:0": 4}, last_ts_us=1_795_000_000_474_123
    )
    view = position_view(position)
    assert view["last_entry_ts"] == "2026-11-18T11:06:40.474123Z"
    assert view == {
        "entries": 1,
        "bytes": 10,
        "last_offsets": {"t:0": 4},
        "last_entry_ts": "2026-11-18T11:06:40.474123Z",
    }
    assert position_view(SinkPosition())["last_entry_ts"] is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_reports_are_throttled_and_carry_the_latest_position() -> None:
    sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(records: Sequence[tuple[bytes, bytes]]) -> None:
        sent.extend((key, json.loads(value)) for key, value in records)

    clock = _Clock()
    reports = PositionReports(send, interval_s=1.0, clock=clock)
    reports.written("s1", SinkPosition(size=1, entries=1))
    assert await reports.send_if_due() == 0  # within the interval: held back
    reports.written("s1", SinkPosition(size=2, entries=2))
    reports.written("s2", SinkPosition(size=5, entries=1))
    clock.now += 1.0
    assert await reports.send_if_due() == 2
    await reports.sent()
    assert sent == [
        (b"s1", position_view(SinkPosition(size=2, entries=2))),
        (b"s2", position_view(SinkPosition(size=5, entries=1))),
    ]
    clock.now += 5.0
    assert await reports.send_if_due() == 0  # nothing new: nothing sent


async def test_reports_are_bounded_per_interval_the_longest_waiting_first() -> None:
    sent: list[bytes] = []

    async def send(records: Sequence[tuple[bytes, bytes]]) -> None:
        sent.extend(key for key, _ in records)

    clock = _Clock()
    reports = PositionReports(send, interval_s=1.0, clock=clock, batch_max=2)
    for name in ("s1", "s2", "s3"):
        reports.written(name, SinkPosition(size=1, entries=1))
    clock.now += 1.0
    assert await reports.send_if_due() == 2
    await reports.sent()
    reports.written("s1", SinkPosition(size=2, entries=2))  # written again: waits its turn
    clock.now += 1.0
    assert await reports.send_if_due() == 2
    await reports.sent()
    assert sent == [b"s1", b"s2", b"s3", b"s1"]


async def test_a_failed_report_send_is_raised_by_the_next_call() -> None:
    async def send(records: Sequence[tuple[bytes, bytes]]) -> None:
        raise RuntimeError("produce failed")

    clock = _Clock()
    reports = PositionReports(send, interval_s=1.0, clock=clock)
    reports.written("s1", SinkPosition(size=1, entries=1))
    clock.now += 1.0
    assert await reports.send_if_due() == 1  # sent in the background: the batch goes on
    for _ in range(3):
        await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="produce failed"):
        await reports.send_if_due()


async def test_a_report_that_cannot_be_sent_stops_the_worker(runtime: Runtime) -> None:
    async def process(records: list[Any]) -> None:
        return None

    async def failing_reports() -> None:
        raise RuntimeError("produce failed")

    handle = runtime._handler("sink", process, failing_reports)
    with pytest.raises(Stopped, match="produce failed"):
        await handle({})


async def test_a_sink_fault_stops_the_worker(runtime: Runtime) -> None:
    async def process(records: list[Any]) -> None:
        raise SinkError("disk on fire")

    with pytest.raises(Stopped, match="disk on fire"):
        await runtime._handler("sink", process)({})


async def test_an_unwritable_state_root_stops_the_worker_naming_the_variable(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = _settings(tmp_path / "state")
    rt = build(settings, fatal=_fatal)
    rt.sink.root = blocker / "state"  # a root that cannot be created
    with pytest.raises(Stopped, match="ESCALATIONS_STATE_ROOT"):
        await rt.prepare()


async def test_an_unusable_data_dir_stops_the_worker_naming_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = _settings(tmp_path / "state", ESCALATIONS_DATA_DIR=str(blocker / "x" / "data"))
    rt = build(settings, fatal=_fatal)
    with pytest.raises(Stopped, match="ESCALATIONS_DATA_DIR"):
        await rt.prepare()


def test_corrupt_sessions_are_a_copy_the_web_view_can_iterate(runtime: Runtime) -> None:
    sink = runtime.sink
    view = sink.corrupt_sessions()
    assert view == {}
    view["x"] = "changed by the reader"
    assert sink.corrupt_sessions() == {}


async def test_an_io_error_during_recovery_stops_the_worker(tmp_path: Path) -> None:
    # EACCES or EIO while reloading the sessions of a new assignment: the worker must not go
    # on consuming without its sink (it would answer /readyz 503 forever).
    root = tmp_path / "state"
    rt = build(_settings(root), fatal=_fatal)
    rt.sink.write([SinkLine("s1", b"{}\n", "bus-events:0", 0, 1)])
    rt.sink.checkpoint()  # s1 is in its partition's position log: recovery reloads it
    data = root / "s1" / "pending_escalations.jsonl"
    data.unlink()
    data.mkdir()  # a directory where the file should be
    with pytest.raises(Stopped, match="cannot recover the state under"):
        await rt.on_sink_assigned({TopicPartition(rt.settings.output_topic, p) for p in range(4)})
