"""Power loss on a file system that does not honour ``syncfs``: the real worker, its state root
on a FUSE double that drops every unsynced byte on command (tests/doubles/lazyfs.py).

Three times mid-stream (once while a checkpoint is syncing): SIGKILL, drop what was not synced,
restart. Then every file must be byte-exact and nothing dead-lettered. With ``syncfs`` forced,
the same power loss leaves files the worker must refuse (the double's teeth, and the old way).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.sample import bus_events
from tests.support.lazyfs import LazyMount, mounted

from .conftest import JobFactory
from .support import Job, read_topic, wait_until

pytestmark = pytest.mark.integration

SESSIONS = 150
CHUNK = 2500


@pytest.fixture
def lazy_job(job_factory: JobFactory, tmp_path: Path) -> Iterator[tuple[Job, LazyMount]]:
    """A job whose state root is the double (its workers stopped before the unmount)."""
    job = job_factory(ESCALATIONS_CHECKPOINT_INTERVAL_MS="200")
    with mounted(job.root, tmp_path / "lazyfs.log") as fs:
        try:
            yield job, fs
        finally:
            job.stop()


def _written(job: Job, sessions: object) -> int:
    return sum(len(b) for b in job.files(sessions).values())


def _wait_until_writing(job: Job, sessions: object, timeout: float = 90) -> None:
    start = _written(job, sessions)
    wait_until(lambda: _written(job, sessions) > start, timeout, "the worker to write lines")


def test_power_loss_mid_stream_keeps_files_byte_exact(lazy_job: tuple[Job, LazyMount]) -> None:
    job, fs = lazy_job
    lines = list(bus_events(4 * CHUNK, sessions=SESSIONS, seed=1717))
    expected = job.expected(lines)
    assert len(expected) == SESSIONS
    worker = job.worker()
    lost = []
    for n in range(3):
        job.produce(lines[n * CHUNK : (n + 1) * CHUNK])
        _wait_until_writing(job, expected)
        if n == 1:
            # During a checkpoint: the next file sync waits; the power goes out meanwhile.
            fs.hold()
            wait_until(lambda: fs.status()["held"] == 1, 60, "a checkpoint to sync a file")
            os.kill(worker.pid, signal.SIGKILL)
            lost.append(fs.drop())  # answers the held sync: the killed worker can exit
            worker.kill()
        else:
            time.sleep(0.3)
            worker.kill()
            lost.append(fs.drop())
        worker.start()
    job.produce(lines[3 * CHUNK :])

    assert job.wait_for_files(expected, timeout=240) == expected, job.logs()
    assert all(lost), f"every power loss dropped unsynced bytes: {lost}"
    assert "durable by fsync (fuse" in worker.log()
    for refusal in ("skipping session", "outside the sink", "directories are gone"):
        assert refusal not in worker.log()
    dead = asyncio.run(read_topic(job.bootstrap, job.settings.dlq_topic, idle_s=2))
    assert dead == []


def test_with_syncfs_forced_a_power_loss_loses_committed_lines(
    lazy_job: tuple[Job, LazyMount],
) -> None:
    job, fs = lazy_job
    job.env["ESCALATIONS_SYNC"] = "syncfs"
    lines = list(bus_events(CHUNK, sessions=SESSIONS, seed=1718))
    expected = job.expected(lines)
    worker = job.worker()
    job.produce(lines)
    assert job.wait_for_files(expected, timeout=120) == expected, job.logs()
    wait_until(lambda: "checkpoints" in worker.log(), 30, "a checkpoint to be logged")
    time.sleep(1.0)  # checkpointed and committed, by the worker's account
    worker.kill()
    assert fs.drop() > 0
    worker.start()

    # syncfs persisted nothing the double holds: the positions outlived the lines, and the
    # worker says so (a file shorter than recorded, a directory gone), never silently.
    wait_until(
        lambda: "outside the sink" in worker.log() or "directories are gone" in worker.log(),
        90,
        "the worker to report the lost lines",
    )
    assert job.files(expected) != expected
