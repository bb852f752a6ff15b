"""What an operator meets in the first week: two workers on one host, the demo's state root,
misspelt settings, and a sessions view that answers for every session on every worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.ops.broker import free_port
from streams.ops.sample import bus_events
from streams.runtime.faustapp import EXIT_CONFIG

from .conftest import JobFactory
from .support import Job, http_get, wait_until

pytestmark = pytest.mark.integration


def test_a_second_worker_on_a_taken_web_port_exits_naming_the_setting(job: Job) -> None:
    port = free_port()
    first = job.worker(ESCALATIONS_WEB_ENABLED="true", ESCALATIONS_WEB_PORT=str(port))
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the first worker ready")
    second = job.worker(ESCALATIONS_WEB_ENABLED="true", ESCALATIONS_WEB_PORT=str(port))
    assert second.process is not None
    second.process.wait(timeout=60)
    log = second.log()
    assert second.returncode == EXIT_CONFIG, log
    assert "ESCALATIONS_WEB_PORT" in log and "ESCALATIONS_WEB_ENABLED" in log
    assert "Traceback" not in log
    assert first.alive()


def test_a_misspelt_setting_is_warned_about_at_start(job: Job) -> None:
    lines = list(bus_events(50, sessions=2, seed=3))
    expected = job.expected(lines)
    worker = job.worker(ESCALATIONS_BATCHMAX="10")
    job.produce(lines)
    job.wait_for_files(expected)
    assert (
        "ESCALATIONS_BATCHMAX is not a setting and is ignored "
        "(did you mean ESCALATIONS_BATCH_MAX?)" in worker.log()
    )


def test_any_worker_answers_for_any_session(job_factory: JobFactory) -> None:
    job = job_factory(ESCALATIONS_WEB_ENABLED="true")
    ports = [free_port(), free_port()]
    for port in ports:
        job.worker(ESCALATIONS_WEB_PORT=str(port))
    for port in ports:
        wait_until(lambda p=port: http_get(p, "/readyz")[0] == 200, 90, f"worker on {port}")
    lines = list(bus_events(800, sessions=12, seed=8))
    expected = job.expected(lines)
    job.produce(lines)
    job.wait_for_files(expected, timeout=90)

    seen: dict[int, object] = {}

    def all_sessions_seen(port: int) -> bool:
        status, body = http_get(port, "/escalations/sessions/")
        seen[port] = (status, body)
        if status != 200:
            return False
        return all(
            body.get(s, {}).get("entries") == data.count(b"\n") for s, data in expected.items()
        )

    for port in ports:
        try:
            wait_until(lambda p=port: all_sessions_seen(p), 60, f"every session at {port}")
        except AssertionError as exc:
            wanted = {s: data.count(b"\n") for s, data in expected.items()}
            raise AssertionError(
                f"{exc}: wanted entries {wanted}, saw {seen[port]}\n{job.logs()}"
            ) from None
        for session, data in expected.items():
            status, body = http_get(port, f"/escalations/sessions/{session}/")
            assert status == 200, body
            assert body["entries"] == data.count(b"\n")
            assert body["bytes"] == len(data)


def test_the_demo_writes_under_the_configured_state_root_and_leaves_the_cwd_clean(
    tmp_path: Path,
) -> None:
    root = tmp_path / "demo-state"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    demo = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**env, "ESCALATIONS_STATE_ROOT": str(root)},
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"state root {root}" in demo.stdout
    assert any((root / name / "pending_escalations.jsonl").is_file() for name in os.listdir(root))
    assert os.listdir(cwd) == []  # no escalation-stream-data/, no state/
