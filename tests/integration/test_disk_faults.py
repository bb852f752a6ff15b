"""The state root fills up or turns read-only: a clear error, no commit, exact on resume."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.sample import bus_events

from .support import Job

pytestmark = pytest.mark.integration


@pytest.fixture
def small_root(job: Job) -> Iterator[Path]:
    """The job's state root on a 192 KiB tmpfs (needs root and mount; skipped otherwise)."""
    job.root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(job.root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield job.root
    finally:
        job.stop()  # workers first: nothing may hold the mount
        subprocess.run(["umount", "-l", str(job.root)], capture_output=True)


def _remount(root: Path, options: str, timeout: float = 20) -> None:
    """Remounts; a read-only remount waits until no file on it is open for writing (an idle
    worker closes its cached files after a couple of seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            ["mount", "-o", f"remount,{options}", str(root)], capture_output=True, text=True
        )
        if done.returncode == 0:
            return
        if "busy" not in done.stderr or time.monotonic() > deadline:
            raise AssertionError(f"remount,{options} failed: {done.stderr.strip()}")
        time.sleep(0.2)


def test_full_disk_stops_the_worker_and_it_resumes_exactly(job: Job, small_root: Path) -> None:
    lines = list(bus_events(6000, sessions=4, seed=23))  # ~560 KB of lines: ~3x the disk
    expected = job.expected(lines)
    assert sum(len(b) for b in expected.values()) > 2 * 192 * 1024
    worker = job.worker()
    job.produce(lines)
    assert worker.process is not None
    worker.process.wait(timeout=120)  # retries with backoff, then stops
    assert worker.process.returncode == 70, job.logs()
    assert "No space left on device" in worker.log()
    written = job.files(expected)
    assert all(expected[s].startswith(data) for s, data in written.items())  # a clean prefix

    _remount(small_root, "size=4m")  # the operator makes room
    worker.start()
    assert job.wait_for_files(expected, timeout=90) == expected, job.logs()


def test_read_only_state_root_stops_the_worker_and_it_resumes_exactly(
    job: Job, small_root: Path
) -> None:
    _remount(small_root, "size=4m")
    lines = list(bus_events(3000, sessions=3, seed=29))
    first = job.expected(lines[:1500])
    worker = job.worker()
    job.produce(lines[:1500])
    assert job.wait_for_files(first) == first, job.logs()

    _remount(small_root, "ro")
    job.produce(lines[1500:])
    assert worker.process is not None
    worker.process.wait(timeout=120)
    assert worker.process.returncode == 70, job.logs()
    assert "Read-only file system" in worker.log()
    assert job.files(first) == first  # nothing half-written

    _remount(small_root, "rw")
    worker.start()
    expected = job.expected(lines)
    assert job.wait_for_files(expected, timeout=90) == expected, job.logs()
    assert os.listdir(small_root)
