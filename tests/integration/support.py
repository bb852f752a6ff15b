"""What the integration tests share: workers as child processes, a job's topics and files.

Workers are started and stopped by PID by the test that started them. Every helper that
waits polls with a deadline and raises with what it saw, never returns quietly on timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer

from streams import settings as settings_module
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.maplines import expected_files
from streams.core.records import RESERVED_NAMES
from streams.ops.demo import actual_files
from streams.ops.processes import WorkerProcess
from streams.ops.produce import ProduceReport, produce_lines
from streams.runtime.topics import ensure_topics

__all__ = [
    "Job",
    "Worker",
    "docker_answers",
    "fetch",
    "files_diff",
    "http_get",
    "read_topic",
    "wait_until",
]

T = TypeVar("T")


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_until(check: Callable[[], T | None], timeout: float, what: str, step: float = 0.2) -> T:
    """Polls ``check`` until it returns something other than None/False; raises naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def fetch(url: str) -> tuple[int, bytes]:
    """(status, body) of GET ``url``; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def read_topic(
    bootstrap: str, topic: str, expect: int = 10**9, idle_s: float = 5.0, **options: Any
) -> list[Any]:
    """The records of ``topic`` from the beginning: ``expect`` of them, or all there are once
    nothing came for ``idle_s`` seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        while len(records) < expect:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                break
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


def http_get(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON body or text) of GET http://127.0.0.1:port/path; (0, reason) if it fails."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except OSError as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def files_diff(expected: dict[str, bytes], actual: dict[str, bytes]) -> str:
    """One line per session that differs: missing, or lines expected/found and the first change."""
    out = []
    for session in sorted(set(expected) | set(actual)):
        want, got = expected.get(session), actual.get(session)
        if want == got:
            continue
        if got is None:
            out.append(f"  {session}: missing ({len((want or b'').splitlines())} lines expected)")
            continue
        if want is None:
            out.append(f"  {session}: unexpected file ({len(got.splitlines())} lines)")
            continue
        w, g = want.splitlines(), got.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(w, g, strict=False)) if a != b), min(len(w), len(g))
        )
        out.append(
            f"  {session}: {len(g)} lines, {len(w)} expected; first difference at line {first + 1}"
        )
    return "\n".join(out[:20]) + (f"\n  ... {len(out) - 20} more" if len(out) > 20 else "")


class Worker(WorkerProcess):
    """``escalations worker`` as a child process; the test that starts it stops it."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        super().__init__(env, cwd, cwd / f"{name}.log")
        self.name = name
        self.starts = 0

    def start(self, banner: str | None = None) -> Worker:
        self.starts += 1
        super().start(banner or f"===== start {self.starts} =====")
        return self

    def terminate(self, timeout: float = 20.0, *, kill_after: bool = False) -> float:
        """SIGTERM and wait; a worker that outlives ``timeout`` is killed and the test fails."""
        return super().terminate(timeout, kill_after=kill_after)


class Job:
    """One test's own topics, group, state root and workers on a broker.

    Building one does no I/O; ``create_topics()`` (which the ``job_factory`` fixture calls)
    creates the job's topics on the broker.
    """

    def __init__(self, bootstrap: str, tmp: Path, partitions: int = 4, **env: str) -> None:
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
            **env,
        }
        self.settings = settings_module.load(self.env)
        self.store = SchemaStore()
        self.workers: list[Worker] = []

    def create_topics(self) -> Job:
        options = self.settings.kafka.aiokafka_kwargs()
        asyncio.run(ensure_topics(self.settings, self.bootstrap, options))
        return self

    def worker(self, **env: str) -> Worker:
        """Starts one more worker (``env`` adds to the job's, e.g. its own web port)."""
        worker = Worker({**self.env, **env}, self.tmp, f"worker-{len(self.workers)}")
        self.workers.append(worker)
        return worker.start()

    def produce(self, lines: list[str]) -> ProduceReport:
        return asyncio.run(
            produce_lines(
                lines,
                self.bootstrap,
                self.settings.input_topic,
                IdFile(self.store),
                self.store,
                client_options=self.settings.kafka.aiokafka_kwargs(),
            )
        )

    def expected(self, lines: list[str]) -> dict[str, bytes]:
        return expected_files(lines, self.store.current(BUS_EVENT))

    def files(self, sessions: Any) -> dict[str, bytes]:
        return actual_files(self.root, sorted(sessions))

    def wait_for_files(self, expected: dict[str, bytes], timeout: float = 60) -> dict[str, bytes]:
        """The files once they are exactly ``expected``; raises with a short per-session diff
        (and the workers' logs) when they are not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            actual = self.files(expected)
            if actual == expected:
                return actual
            time.sleep(0.2)
        raise AssertionError(
            f"files not as expected after {timeout:.0f}s:\n"
            + files_diff(expected, self.files(expected))
            + "\n"
            + self.logs()
        )

    def state_entries(self) -> list[str]:
        """What the state root holds besides the worker's own data (Faust's data directory and
        the sink's position logs)."""
        return sorted(name for name in os.listdir(self.root) if name not in RESERVED_NAMES)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            try:
                worker.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            worker.kill()
