"""Topics on locked-down clusters, and `faust -A streams.app worker` as the same worker.

With ``ESCALATIONS_CREATE_TOPICS=false`` the job creates nothing: it checks its topics exist with
the configured partition count, and a missing one stops it with the list of what to create.
Creating and checking happen in the app's start, so Faust's own worker command does the same.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import pytest

from streams.ops.sample import bus_events
from streams.runtime.faustapp import EXIT_FATAL

from .conftest import JobFactory
from .support import Job, Worker, wait_until

pytestmark = pytest.mark.integration

FAUST = shutil.which("faust", path=str(Path(sys.executable).parent)) or "faust"


def _fresh_job(bootstrap: str, tmp_path: Path, **env: str) -> Job:
    """A job whose topics do not exist yet (the fixture would create them)."""
    return Job(bootstrap, tmp_path, **env)


def test_without_topic_creation_a_topic_of_another_size_stops_the_worker(
    bootstrap: str, tmp_path: Path
) -> None:
    # The embedded broker creates any topic a client asks about (with 4 partitions), so a
    # *missing* topic cannot be shown here (tests/unit/test_topics.py covers that message);
    # a topic of the wrong size can.
    job = _fresh_job(
        bootstrap, tmp_path, ESCALATIONS_CREATE_TOPICS="false", ESCALATIONS_PARTITIONS="3"
    )
    try:
        worker = job.worker()
        assert worker.process is not None
        worker.process.wait(timeout=90)
        log = worker.log()
        assert worker.returncode == EXIT_FATAL, log[-3000:]
        assert "has 4 partitions but ESCALATIONS_PARTITIONS=3" in log
    finally:
        job.stop()


def test_without_topic_creation_existing_topics_are_used(job_factory: JobFactory) -> None:
    job = job_factory()  # the topics exist (created by an administrator, say)
    job.env["ESCALATIONS_CREATE_TOPICS"] = "false"
    lines = list(bus_events(300, sessions=3, seed=4))
    job.worker()
    job.produce(lines)
    expected = job.expected(lines)
    assert job.wait_for_files(expected) == expected


def test_faust_worker_command_creates_the_topics_and_runs_the_job(
    bootstrap: str, tmp_path: Path
) -> None:
    job = _fresh_job(bootstrap, tmp_path, ESCALATIONS_APP_ID=f"faust-cli-{uuid.uuid4().hex[:6]}")
    worker = Worker(job.env, job.tmp, "faust-worker")
    worker.command = [FAUST, "-A", "streams.app", "worker", "-l", "info", "--without-web"]
    job.workers.append(worker)
    try:
        worker.start()
        lines = list(bus_events(300, sessions=3, seed=9))
        # `produce` would create the topics itself: wait for the worker to have made them.
        wait_until(lambda: "created topic" in worker.log() or None, 60, "the worker's topics")
        job.produce(lines)
        expected = job.expected(lines)
        assert job.wait_for_files(expected) == expected
        assert worker.alive()
    finally:
        job.stop()
