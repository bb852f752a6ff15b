"""Nothing lost, nothing doubled: SIGKILL at random moments, torn tails, restarts."""

from __future__ import annotations

import random
import time

import pytest

from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job

pytestmark = pytest.mark.integration
KILLS = 5


def _written(job: Job, sessions: object) -> int:
    return sum(len(b) for b in job.files(sessions).values())


def _wait_until_writing(job: Job, sessions: object, timeout: float = 60) -> bool:
    start = _written(job, sessions)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _written(job, sessions) > start:
            return True
        time.sleep(0.02)
    return False


def test_sigkill_at_random_moments_keeps_files_byte_exact(job: Job) -> None:
    rng = random.Random(20261124)
    lines = list(bus_events(60_000, sessions=12, seed=99))
    chunks = [lines[i : i + 10_000] for i in range(0, len(lines), 10_000)]
    expected = job.expected(lines)
    worker = job.worker()
    kills_while_writing = 0
    for n, chunk in enumerate(chunks[:KILLS], 1):
        backlog_end = sum(len(b) for b in job.expected(lines[: n * 10_000]).values())
        job.produce(chunk)
        assert _wait_until_writing(job, expected), job.logs()
        time.sleep(rng.uniform(0.0, 0.1))
        assert worker.alive(), job.logs()
        before = _written(job, expected)
        worker.kill()
        time.sleep(0.05)
        # The worker died mid-stream: what it had been given was not all written yet.
        kills_while_writing += before < backlog_end
        worker.start()
    job.produce(chunks[-1])
    assert job.wait_for_files(expected, timeout=120) == expected, job.logs()
    assert kills_while_writing == KILLS
    for session, data in expected.items():
        assert (job.root / session / FILE_NAME).read_bytes() == data


def test_restart_repairs_torn_tail_and_unrecorded_lines(job: Job) -> None:
    lines = list(bus_events(3000, sessions=4, seed=5))
    expected = job.expected(lines[:1500])
    worker = job.worker()
    job.produce(lines[:1500])
    assert job.wait_for_files(expected) == expected, job.logs()
    worker.terminate()
    sessions = sorted(expected)
    # A crash mid-write leaves a partial line; one between write and position, a whole one.
    with open(job.root / sessions[0] / FILE_NAME, "ab") as f:
        f.write(b'{"ts":"2026-11-24T21:40:44Z","kind":"fail')
    with open(job.root / sessions[1] / FILE_NAME, "ab") as f:
        f.write(expected[sessions[1]].splitlines(keepends=True)[-1])
    worker.start()
    # Repaired on assignment, before any new event arrives for those sessions.
    assert job.wait_for_files(expected, timeout=60) == expected, job.logs()
    job.produce(lines[1500:])
    expected = job.expected(lines)
    assert job.wait_for_files(expected) == expected, job.logs()
