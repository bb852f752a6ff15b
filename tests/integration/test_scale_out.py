"""Two workers in one group on one state root: a SIGKILL and a graceful stop mid-stream."""

from __future__ import annotations

import time

import pytest

from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .conftest import Job

pytestmark = pytest.mark.integration


def _total(job: Job, sessions: object) -> int:
    return sum(len(b) for b in job.files(sessions).values())


def test_partitions_move_between_workers_and_files_stay_exact(job: Job) -> None:
    lines = list(bus_events(48_000, sessions=16, seed=4))
    expected = job.expected(lines)
    a, b = job.worker(), job.worker()
    time.sleep(6)  # both members join before the stream starts
    job.produce(lines[:16_000])
    start = _total(job, expected)
    deadline = time.monotonic() + 60
    while _total(job, expected) == start and time.monotonic() < deadline:
        time.sleep(0.02)
    killed_at = time.monotonic()
    a.kill()  # mid-stream: b takes a's partitions after the session timeout
    job.produce(lines[16_000:32_000])
    first = job.expected(lines[:32_000])
    assert job.wait_for_files(first, timeout=90) == first, job.logs()
    takeover = time.monotonic() - killed_at
    print(f"SIGKILL of one of two workers: all files exact {takeover:.1f}s after the kill")

    c = job.worker()  # a third member joins, then b leaves gracefully mid-stream
    time.sleep(5)
    job.produce(lines[32_000:])
    time.sleep(0.3)
    drained = b.terminate(timeout=20)
    assert drained < 10, f"SIGTERM took {drained:.1f}s"
    assert b.process is not None and b.process.returncode == 0, job.logs()
    assert job.wait_for_files(expected, timeout=90) == expected, job.logs()
    assert c.alive(), job.logs()
    print(f"graceful stop of one of two workers mid-stream: exited in {drained:.1f}s")
    for session, data in expected.items():
        assert (job.root / session / FILE_NAME).read_bytes() == data
