"""The sessions view and the reports it is built from, bounded by the live sessions.

A forgotten session becomes a tombstone on the reports topic and leaves every view; a report
older than ``ESCALATIONS_SESSION_RETENTION`` is not kept (arriving or aging); a request for one
session parses that session's report only, and each report is parsed once. At stop, the pending
reports are sent whatever the throttle. Time comes in as data (an injected clock), never slept.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from streams.errors import ConfigError
from streams.runtime.factory import build
from streams.runtime.reports import PositionReports, position_view
from streams.runtime.sessions import SessionsView
from streams.runtime.topics import cleanup_policy
from streams.settings import load
from streams.sink.position import SinkPosition

HOUR_S = 3600.0
NOW_S = 1_800_000_000.0


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _report_of(size: int, entries: int) -> bytes:
    return json.dumps(position_view(SinkPosition(size=size, entries=entries))).encode()


def _report(entries: int) -> bytes:
    return _report_of(entries * 10, entries)


def _view(parse: Any = json.loads) -> tuple[SessionsView, _Clock]:
    clock = _Clock(NOW_S)
    return SessionsView(retention_s=HOUR_S, clock=clock, parse=parse), clock


def _feed(view: SessionsView, key: str, value: bytes | None, age_s: float = 0.0) -> None:
    at_ms = int((NOW_S - age_s) * 1000)
    view.apply(key.encode(), value, at_ms, view.cutoff_ms())


def test_a_tombstone_removes_the_session_and_a_later_report_brings_it_back() -> None:
    view, _ = _view()
    _feed(view, "s1", _report(1))
    _feed(view, "s2", _report(2))
    _feed(view, "s1", None)
    assert view.get("s1") is None
    assert set(view.all()) == {"s2"}
    _feed(view, "s1", _report(3))  # written again after being forgotten
    assert view.get("s1")["entries"] == 3


def test_reports_older_than_the_retention_are_not_kept() -> None:
    view, clock = _view()
    _feed(view, "old", _report(1), age_s=2 * HOUR_S)  # arrives already too old
    _feed(view, "s1", _report(1), age_s=10)
    _feed(view, "s1", _report(2), age_s=2 * HOUR_S)  # its latest report is too old: gone
    _feed(view, "live", _report(1), age_s=0.5 * HOUR_S)
    assert set(view.all()) == {"live"}
    clock.now += 0.6 * HOUR_S  # "live" ages past the retention while kept
    _feed(view, "new", _report(1), age_s=-0.6 * HOUR_S)
    assert view.prune() == 1
    assert set(view.all()) == {"new"}


def test_the_view_holds_the_live_sessions_not_every_session_ever_reported() -> None:
    view, _ = _view()
    for n in range(10_000):  # a month of short sessions: each reported, then forgotten
        _feed(view, f"s{n}", _report(1))
        if n >= 100:
            _feed(view, f"s{n - 100}", None)
    assert len(view) == 100


def test_one_session_is_answered_by_parsing_its_report_only_and_once() -> None:
    parsed: list[bytes] = []

    def parse(raw: bytes) -> Any:
        parsed.append(raw)
        return json.loads(raw)

    view, _ = _view(parse)
    for n in range(1000):
        _feed(view, f"s{n}", _report(n))
    assert view.get("s7") == json.loads(_report(7))
    assert view.get("s7") == json.loads(_report(7))
    assert parsed == [_report(7)]
    assert len(view.all()) == 1000
    assert len(parsed) == 1000  # each report parsed once, s7 not again
    _feed(view, "s7", _report(8))  # superseded before anyone asks: never parsed
    _feed(view, "s7", _report(9))
    assert view.get("s7")["entries"] == 9
    assert len(parsed) == 1001


def _records() -> tuple[list[tuple[bytes, bytes | None]], Any]:
    sent: list[tuple[bytes, bytes | None]] = []

    async def send(records: Sequence[tuple[bytes, bytes | None]]) -> None:
        sent.extend(records)

    return sent, send


async def test_a_forgotten_session_is_sent_as_a_tombstone_in_place_of_its_pending_report() -> None:
    sent, send = _records()
    clock = _Clock(100.0)
    reports = PositionReports(send, interval_s=1.0, clock=clock)
    reports.written("s1", SinkPosition(size=1, entries=1))
    reports.written("s2", SinkPosition(size=2, entries=1))
    reports.forget(["s1", "s3"])
    clock.now += 1.0
    assert await reports.send_if_due() == 3
    await reports.sent()
    assert sent == [(b"s1", None), (b"s2", _report_of(2, 1)), (b"s3", None)]


async def test_flush_sends_everything_pending_whatever_the_throttle() -> None:
    sent, send = _records()
    clock = _Clock(100.0)
    reports = PositionReports(send, interval_s=1.0, clock=clock, batch_max=2)
    for name in ("s1", "s2", "s3"):
        reports.written(name, SinkPosition(size=1, entries=1))
    reports.forget(["s4"])
    assert await reports.send_if_due() == 0  # within the interval
    assert await reports.flush() == 4  # the worker stops: all of them, now
    assert [key for key, _ in sent] == [b"s1", b"s2", b"s3", b"s4"]
    assert await reports.flush() == 0


async def test_the_runtime_hook_tombstones_sessions_forgotten_on_another_thread(
    tmp_path: Path,
) -> None:
    rt = build(load({"ESCALATIONS_STATE_ROOT": str(tmp_path), "ESCALATIONS_WEB_ENABLED": "0"}))
    rt._loop_thread = threading.get_ident()  # as the app's start does
    rt.app.loop = asyncio.get_running_loop()
    rt.reports.written("s1", SinkPosition(size=1, entries=1))
    worker = threading.Thread(target=rt.forget_sessions, args=(iter(["s1", "s2"]),))
    worker.start()
    worker.join()
    for _ in range(3):
        await asyncio.sleep(0)
    assert rt.reports.pending == {"s1": None, "s2": None}


def test_the_cleanup_policy_is_read_from_a_describe_configs_answer() -> None:
    # The shape the embedded broker and aiokafka give (``to_object()``).
    answer = {
        "throttle_time_ms": 0,
        "resources": [
            {
                "error_code": 0,
                "resource_type": 2,
                "resource_name": "app-sink-reports",
                "config_entries": [
                    {"config_names": "cleanup.policy", "config_value": "compact"},
                    {"config_names": "max.message.bytes", "config_value": "8454144"},
                ],
            },
            {"error_code": 0, "resource_name": "other", "config_entries": []},
        ],
    }
    assert cleanup_policy([answer], "app-sink-reports") == "compact"
    assert cleanup_policy([answer], "other") is None


def test_session_retention_is_a_week_by_default_and_checked() -> None:
    assert load({}).session_retention_s == 7 * 24 * HOUR_S
    assert load({"ESCALATIONS_SESSION_RETENTION": "3600"}).session_retention_s == HOUR_S
    with pytest.raises(ConfigError, match="ESCALATIONS_SESSION_RETENTION='-1'"):
        load({"ESCALATIONS_SESSION_RETENTION": "-1"})
