"""Bus events in, byte-exact JSONL files and one output record per entry out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.contracts.codec import Codec
from streams.core.records import DATA_DIR_NAME, POSITIONS_DIR_NAME
from streams.errors import Coordinates
from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job, read_topic

pytestmark = pytest.mark.integration
FAUST = str(Path(sys.executable).parent / "faust")


def test_produce_command_to_files_and_output_topic(job: Job) -> None:
    lines = list(bus_events(3000, sessions=8, seed=11))
    expected = job.expected(lines)
    job.worker()
    produced = subprocess.run(
        [sys.executable, "-m", "streams.cli", "produce"],
        input="\n".join(lines) + "\n",
        env=job.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr
    assert "produced 3000 events for 8 sessions" in produced.stderr

    assert job.wait_for_files(expected) == expected, job.logs()
    # One directory per session, beside the worker's own data directory (Faust's) and the
    # sink's position logs (one per output partition written).
    directories = sorted(p.name for p in job.root.iterdir() if p.is_dir())
    assert directories == sorted([*expected, DATA_DIR_NAME, POSITIONS_DIR_NAME])
    logs = sorted(p.name for p in (job.root / POSITIONS_DIR_NAME).iterdir())
    assert logs and all(n.startswith(f"{job.settings.output_topic}-") for n in logs), logs

    entries = sum(data.count(b"\n") for data in expected.values())
    records = asyncio.run(read_topic(job.bootstrap, job.settings.output_topic, entries))
    codec = Codec(job.store.by_id())
    decoded = [
        codec.decode(r.value, Coordinates(r.topic, r.partition, r.offset))[1] for r in records
    ]
    assert len(decoded) == entries
    sources = {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in decoded}
    assert len(sources) == entries  # one record per entry, none doubled
    assert all(d["source_topic"] == job.settings.input_topic for d in decoded)
    assert all(r.key == d["session_id"].encode() for r, d in zip(records, decoded, strict=True))

    # The sink's position reports (what the sessions view shows) match the files.
    reports = asyncio.run(
        read_topic(job.bootstrap, f"{job.settings.app_id}-sink-reports", 10**9, idle_s=2.0)
    )
    latest = {r.key.decode(): json.loads(r.value) for r in reports}
    for session, data in expected.items():
        assert latest[session]["bytes"] == len(data)
        assert latest[session]["entries"] == data.count(b"\n")


def _faust(job: Job, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAUST, "-A", "streams.app", command],
        env=job.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=job.tmp,
    )


def test_faust_cli_loads_the_app(job: Job) -> None:
    agents = _faust(job, "agents")
    assert agents.returncode == 0, agents.stderr


def test_sigterm_drains_and_exits_quickly(job: Job) -> None:
    lines = list(bus_events(2000, sessions=4, seed=3))
    expected = job.expected(lines)
    worker = job.worker()
    job.produce(lines)
    assert job.wait_for_files(expected) == expected, job.logs()
    took = worker.terminate(timeout=15)
    assert took < 10, f"SIGTERM took {took:.1f}s"
    assert worker.process is not None and worker.process.returncode == 0, job.logs()
    # Restarted, it writes nothing twice.
    job.worker()
    more = list(bus_events(2300, sessions=4, seed=3))
    job.produce(more[2000:])
    expected = job.expected(more)
    assert job.wait_for_files(expected) == expected, job.logs()
    for session in expected:
        assert (job.root / session / FILE_NAME).read_bytes() == expected[session]
