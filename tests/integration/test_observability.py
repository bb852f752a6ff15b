"""Health, readiness, metrics, the sessions view, and the watchdog on a stuck sink."""

from __future__ import annotations

import fcntl
import json
import os
import time

import pytest

from streams.ops.broker import free_port
from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job, fetch

pytestmark = pytest.mark.integration


def _wait_status(url: str, status: int, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | None = None
    while time.monotonic() < deadline:
        try:
            last = fetch(url)
        except OSError:
            last = None
        if last is not None and last[0] == status:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status} (last: {last})")


def test_health_metrics_sessions_view_and_watchdog(job: Job) -> None:
    port = free_port()
    job.env.update(
        ESCALATIONS_WEB_ENABLED="true",
        ESCALATIONS_WEB_PORT=str(port),
        ESCALATIONS_STALL_TIMEOUT="2",
    )
    base = f"http://127.0.0.1:{port}"
    lines = list(bus_events(1500, sessions=3, seed=31))
    expected = job.expected(lines[:1000])
    job.worker()
    _wait_status(f"{base}/readyz", 200)
    job.produce(lines[:1000])
    assert job.wait_for_files(expected) == expected, job.logs()
    assert json.loads(_wait_status(f"{base}/healthz", 200))["status"] == "ok"

    metrics = fetch(f"{base}/metrics")[1].decode()
    written = sum(data.count(b"\n") for data in expected.values())
    assert f"escalations_lines_written_total {written}.0" in metrics
    assert 'escalations_events_in_total{topic="' + job.settings.input_topic + '"} 1000.0' in metrics
    assert "escalations_durable_append_seconds_count" in metrics
    assert "escalations_ready 1.0" in metrics
    # How checkpoints sync, as decided for the state root (ESCALATIONS_SYNC=auto).
    assert 'escalations_sink_sync_info{file_system="' in metrics

    view = json.loads(fetch(f"{base}/escalations/sessions/")[1])
    for session, data in expected.items():
        assert view[session]["bytes"] == len(data)
        assert view[session]["entries"] == data.count(b"\n")
    one = json.loads(fetch(f"{base}/escalations/sessions/{sorted(expected)[0]}/")[1])
    assert one == view[sorted(expected)[0]]
    assert fetch(f"{base}/escalations/sessions/nope/")[0] == 404

    # A sink that cannot make progress (its directory lock held elsewhere) trips the watchdog.
    stuck = sorted(expected)[0]
    fd = os.open(job.root / stuck / FILE_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        job.produce(lines[1000:])
        body = json.loads(_wait_status(f"{base}/healthz", 503, timeout=30))
        assert body["status"] == "stalled" and f"{job.settings.app_id}-sink: " in body["reason"]
    finally:
        os.close(fd)
    expected = job.expected(lines)
    assert job.wait_for_files(expected) == expected, job.logs()
    assert json.loads(_wait_status(f"{base}/healthz", 200))["reason"] is None
