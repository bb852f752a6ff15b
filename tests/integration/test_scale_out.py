"""Two workers in one group on one state root: a SIGKILL and a graceful stop mid-stream."""

from __future__ import annotations

import re
import time

import pytest

from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job, Worker, wait_until

pytestmark = pytest.mark.integration


#: A killed member's partitions must be written again within this many seconds of the kill
#: (the session timeout is 3 s in the tests; rejoining and replaying take the rest).
TAKEOVER_BOUND_S = 30


def _total(job: Job, sessions: object) -> int:
    return sum(len(b) for b in job.files(sessions).values())


def _assigned(worker: Worker, topic: str) -> set[int]:
    """The partitions of ``topic`` in the worker's latest assignment (from its log)."""
    lines = [x for x in worker.log().splitlines() if "rebalance: assigned" in x and topic in x]
    if not lines:
        return set()
    return {int(p) for p in re.findall(re.escape(topic) + r"\[(\d+)\]", lines[-1])}


def _balanced(job: Job, *workers: Worker) -> bool:
    """Every live worker holds a share of both groups' partitions, and together all of them."""
    for topic in (job.settings.input_topic, job.settings.output_topic):
        shares = [_assigned(w, topic) for w in workers]
        if any(not s for s in shares) or set().union(*shares) != set(
            range(job.settings.partitions)
        ):
            return False
        if sum(len(s) for s in shares) != job.settings.partitions:
            return False
    return True


def test_partitions_move_between_workers_and_files_stay_exact(job: Job) -> None:
    lines = list(bus_events(48_000, sessions=16, seed=4))
    expected = job.expected(lines)
    a, b = job.worker(), job.worker()
    wait_until(lambda: _balanced(job, a, b), 60, "both workers to share the partitions")
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
    assert takeover < TAKEOVER_BOUND_S, f"takeover took {takeover:.1f}s"

    c = job.worker()  # a third member joins, then b leaves gracefully mid-stream
    wait_until(lambda: _balanced(job, b, c), 60, "the new worker to get a share")
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
