"""`escalations sink verify` and `sink rebuild`, while the worker runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job

pytestmark = pytest.mark.integration


def _cli(job: Job, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "sink", *args],
        env=job.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _verify_checkpointed(job: Job, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``sink verify`` once nothing is pending: every line written has been checkpointed."""
    deadline = time.monotonic() + timeout
    while True:
        result = _cli(job, "verify")
        if "pending" not in result.stdout or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_verify_and_rebuild_a_deleted_and_a_corrupted_session(job: Job) -> None:
    lines = list(bus_events(3000, sessions=4, seed=13))
    first = job.expected(lines[:2000])
    job.worker()
    job.produce(lines[:2000])
    assert job.wait_for_files(first) == first, job.logs()
    ok = _cli(job, "verify")  # lines not yet checkpointed are pending, not problems
    assert ok.returncode == 0, ok.stderr
    assert "checked 4 state directories" in ok.stdout and "0 problems" in ok.stdout
    ok = _verify_checkpointed(job)
    assert ok.returncode == 0 and "pending" not in ok.stdout, ok.stdout + ok.stderr

    deleted, corrupted = sorted(first)[:2]
    shutil.rmtree(job.root / deleted)
    damaged = job.root / corrupted / FILE_NAME
    damaged.write_bytes(damaged.read_bytes()[: len(first[corrupted]) // 2])
    bad = _cli(job, "verify")
    assert bad.returncode == 1
    assert (
        f"{damaged}: {len(first[corrupted]) // 2} bytes but {len(first[corrupted])}" in bad.stderr
    )

    # The worker keeps going meanwhile: the others get their lines; the damaged one waits.
    job.produce(lines[2000:])
    expected = job.expected(lines)
    others = {s: d for s, d in expected.items() if s not in (deleted, corrupted)}
    assert job.wait_for_files(others) == others, job.logs()

    rebuilt = _cli(job, "rebuild", "--session", deleted, "--session", corrupted)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    entries = len(expected[deleted].splitlines())
    assert f"rebuilt {deleted}: {entries} entries" in rebuilt.stdout
    assert job.wait_for_files(expected) == expected, job.logs()
    assert _verify_checkpointed(job).returncode == 0

    # Rebuilding every session from the topic reproduces the same bytes.
    everything = _cli(job, "rebuild", "--all")
    assert everything.returncode == 0, everything.stderr
    assert job.files(expected) == expected
    # And the worker carries on appending to the rebuilt files.
    more = list(bus_events(3400, sessions=4, seed=13))
    job.produce(more[3000:])
    expected = job.expected(more)
    assert job.wait_for_files(expected) == expected, job.logs()


def test_rebuild_all_reports_a_session_it_gave_up_on(job: Job) -> None:
    lines = list(bus_events(600, sessions=3, seed=29))
    expected = job.expected(lines)
    worker = job.worker()
    job.produce(lines)
    assert job.wait_for_files(expected) == expected
    assert _verify_checkpointed(job).returncode == 0
    worker.terminate()
    # Bytes past the recorded position that the topic does not explain: as if a worker had
    # moved past what the rebuild read. Rebuild must not replace that file, and must say so.
    stuck = sorted(expected)[0]
    with open(job.root / stuck / FILE_NAME, "ab") as f:
        f.write(b'{"written":"by someone else"}\n')

    result = _cli(job, "rebuild", "--all", "--idle", "0.3")

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"not rebuilt {stuck}" in result.stderr
    for session in sorted(expected)[1:]:
        assert f"rebuilt {session}:" in result.stdout
