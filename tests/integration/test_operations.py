"""The commands an operator runs: demo, a worker that cannot write, dead-letter replay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from streams.core.deadletter import ERROR_CLASS, SOURCE_TOPIC, header
from streams.ops.sample import bus_events

from .support import Job
from .test_dead_letters import _read, _send_raw

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_exits_zero() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo: OK, every file matches `escalations map` of the sample" in demo.stdout
    assert "pending_escalations.jsonl: " in demo.stdout


def test_unwritable_state_root_stops_the_worker_with_a_clear_error(job: Job) -> None:
    job.root.parent.mkdir(parents=True, exist_ok=True)
    job.root.write_text("a file where the state root should be")
    worker = job.worker()
    assert worker.process is not None
    worker.process.wait(timeout=60)
    assert worker.process.returncode == 70, job.logs()
    assert (
        "ESCALATIONS_STATE_ROOT=" in worker.log() and "is not a writable directory" in worker.log()
    )


def test_dlq_replay_resends_the_original_records_once(job: Job) -> None:
    job.worker()
    bad = [(b"k1", b"not avro at all"), (b"k2", b"\x00\x00\x00\x03\xe7\x02")]
    asyncio.run(_send_raw(job.bootstrap, job.settings.input_topic, bad))
    assert len(asyncio.run(_read(job.bootstrap, job.settings.dlq_topic, 2))) == 2
    time.sleep(1.0)  # the replay only takes records dead-lettered before it started

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", "dlq", "replay", "--idle", "2", *args],
            env=job.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    dry = replay("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 2 records" in dry.stdout
    # Where the replayed lines go, and how many sessions that touches (k1, k2).
    assert "of 2 sessions" in dry.stdout, dry.stdout
    assert "would be appended after what each of these 2 sessions' files" in dry.stdout
    done = replay()
    assert done.returncode == 0, done.stderr
    assert "replayed 2 records" in done.stdout
    assert "are appended after what each of these 2 sessions' files" in done.stdout
    assert "NotFramedError: 1" in done.stdout and "UnknownSchemaIdError: 1" in done.stdout
    # Still bad, so the worker dead-letters them again: four records, original bytes each time.
    dead = asyncio.run(_read(job.bootstrap, job.settings.dlq_topic, 4))
    assert sorted((d.key, d.value) for d in dead) == sorted(bad * 2)
    assert sorted(header(d.headers, ERROR_CLASS) or "" for d in dead) == sorted(
        ["NotFramedError", "UnknownSchemaIdError"] * 2
    )
    # The next replay resumes after the first: only the two new dead letters are left.
    again = replay("--dry-run")
    assert "would replay 2 records" in again.stdout, again.stdout
    # And good events still flow.
    lines = list(bus_events(200, sessions=2, seed=8))
    expected = job.expected(lines)
    job.produce(lines)
    assert job.wait_for_files(expected) == expected, job.logs()


def test_dlq_replay_sends_a_sink_stage_dead_letter_back_to_the_output_topic(job: Job) -> None:
    # A record the sink stage could not use came from the output topic: sent to the input
    # topic it would be dead-lettered there again on every replay, its line never written.
    job.worker()
    asyncio.run(_send_raw(job.bootstrap, job.settings.output_topic, [(b"s1", b"not avro")]))
    (first,) = asyncio.run(_read(job.bootstrap, job.settings.dlq_topic, 1))
    assert header(first.headers, SOURCE_TOPIC) == job.settings.output_topic
    time.sleep(1.0)  # the replay only takes records dead-lettered before it started
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dlq", "replay", "--idle", "2"],
        env=job.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"1 back to {job.settings.output_topic}" in done.stdout, done.stdout
    # Still bad, so the sink stage dead-letters it again: from the output topic, not the input.
    dead = asyncio.run(_read(job.bootstrap, job.settings.dlq_topic, 2))
    assert [header(d.headers, SOURCE_TOPIC) for d in dead] == [job.settings.output_topic] * 2
