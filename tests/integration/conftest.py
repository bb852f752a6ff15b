"""A real broker for the integration tests, and workers started and stopped by PID.

The broker is, in order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; an Apache Kafka container
(testcontainers) when a Docker engine answers; else the embedded Tansu broker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import settings as settings_module
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.maplines import expected_files
from streams.ops.broker import EmbeddedBroker
from streams.ops.demo import actual_files
from streams.ops.produce import ProduceReport, produce_lines
from streams.runtime.topics import ensure_topics


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_file=log) as broker:
            yield broker.bootstrap


class Worker:
    """``escalations worker`` as a child process; the test that starts it stops it."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.env, self.cwd, self.name = env, cwd, name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def start(self) -> Worker:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> float:
        """SIGTERM and wait; returns the seconds it took to exit."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Job:
    """One test's own topics, group, state root and workers on the shared broker."""

    def __init__(self, bootstrap: str, tmp: Path, partitions: int = 4) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.root = tmp / "state"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ESCALATIONS_STATE_ROOT": str(self.root),
            "ESCALATIONS_INPUT_TOPIC": f"bus-events-{tag}",
            "ESCALATIONS_OUTPUT_TOPIC": f"escalations-{tag}",
            "ESCALATIONS_DLQ_TOPIC": f"bus-events-{tag}.dlq",
            "ESCALATIONS_APP_ID": f"escalation-stream-{tag}",
            "ESCALATIONS_PARTITIONS": str(partitions),
            "ESCALATIONS_WEB_ENABLED": "false",
            "ESCALATIONS_SESSION_TIMEOUT": "3",
            "PYTHONUNBUFFERED": "1",
        }
        self.settings = settings_module.load(self.env)
        self.store = SchemaStore()
        self.workers: list[Worker] = []
        asyncio.run(ensure_topics(self.settings, bootstrap))

    def worker(self) -> Worker:
        worker = Worker(self.env, self.tmp, f"worker-{len(self.workers)}")
        self.workers.append(worker)
        return worker.start()

    def produce(self, lines: list[str]) -> ProduceReport:
        return asyncio.run(
            produce_lines(
                lines, self.bootstrap, self.settings.input_topic, IdFile(self.store), self.store
            )
        )

    def expected(self, lines: list[str]) -> dict[str, bytes]:
        return expected_files(lines, self.store.current(BUS_EVENT))

    def files(self, sessions: Any) -> dict[str, bytes]:
        return actual_files(self.root, sorted(sessions))

    def wait_for_files(self, expected: dict[str, bytes], timeout: float = 60) -> dict[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            actual = self.files(expected)
            if actual == expected:
                return actual
            time.sleep(0.2)
        return self.files(expected)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            try:
                worker.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            worker.kill()


@pytest.fixture
def job(bootstrap: str, tmp_path: Path) -> Iterator[Job]:
    j = Job(bootstrap, tmp_path)
    yield j
    j.stop()
