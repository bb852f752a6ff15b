"""``escalations demo``: embedded broker + worker + the bundled sample, then the files."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from streams import settings as settings_module
from streams.contracts.registry import IdFile
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.maplines import expected_files
from streams.core.records import DATA_DIR_NAME
from streams.ops.broker import EmbeddedBroker
from streams.ops.processes import WorkerProcess
from streams.ops.produce import produce_lines
from streams.ops.sample import bus_events
from streams.runtime.topics import ensure_topics
from streams.sink.files import FILE_NAME

__all__ = ["Echo", "actual_files", "run_demo"]

Echo = Callable[..., None]


def actual_files(root: Path, sessions: list[str]) -> dict[str, bytes]:
    found = {}
    for session in sessions:
        path = root / session / FILE_NAME
        if path.exists():
            found[session] = path.read_bytes()
    return found


def _state_root(configured: Path | None) -> Path:
    """ESCALATIONS_STATE_ROOT when it is set, else a new temporary directory."""
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        return configured.resolve()
    return Path(tempfile.mkdtemp(prefix="escalations-demo-"))


def run_demo(
    *, count: int | None, timeout: float, echo: Echo, state_root: Path | None = None
) -> bool:
    if count is None:
        sample = resources.files("streams").joinpath("samples", "bus_events.jsonl")
        lines = [x for x in sample.read_text(encoding="utf-8").split("\n") if x.strip()]
    else:
        lines = list(bus_events(count))
    store = SchemaStore()
    expected = expected_files(lines, store.current(BUS_EVENT))
    root = _state_root(state_root)
    logs = root / DATA_DIR_NAME
    logs.mkdir(parents=True, exist_ok=True)
    echo(f"demo: {len(lines)} bus events for {len(expected)} sessions; state root {root}")
    with EmbeddedBroker(log_file=logs / "broker.log") as broker:
        echo(f"demo: embedded broker (Tansu) on {broker.bootstrap}")
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "ESCALATIONS_STATE_ROOT": str(root),
            "ESCALATIONS_WEB_ENABLED": "false",
            "ESCALATIONS_SESSION_TIMEOUT": "3",
        }
        settings = settings_module.load(env)
        asyncio.run(ensure_topics(settings, broker.bootstrap))
        log_path = logs / "worker.log"
        worker = WorkerProcess(env, root, log_path).start()
        echo(f"demo: worker pid {worker.pid}, log {log_path}")
        try:
            report = asyncio.run(
                produce_lines(lines, broker.bootstrap, settings.input_topic, IdFile(store), store)
            )
            echo(f"demo: produced {report.events} events to {settings.input_topic}")
            ok = _wait_for(root, expected, worker, timeout)
        finally:
            worker.terminate(timeout=20)
    _show(root, expected, echo)
    if ok:
        echo(f"demo: OK, every file matches `escalations map` of the sample ({root})")
    else:
        echo(f"demo: FAILED, files differ from the expected lines; see {log_path}")
    return ok


def _wait_for(
    root: Path, expected: dict[str, bytes], worker: WorkerProcess, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    sessions = sorted(expected)
    while time.monotonic() < deadline:
        if actual_files(root, sessions) == expected:
            return True
        if not worker.alive():
            return False
        time.sleep(0.2)
    return False


def _show(root: Path, expected: dict[str, bytes], echo: Echo) -> None:
    actual = actual_files(root, sorted(expected))
    for session in sorted(expected):
        data = actual.get(session, b"")
        lines = data.splitlines()
        state = "ok" if data == expected[session] else "DIFFERS"
        echo(f"\n{root / session / FILE_NAME}: {len(lines)} lines, {len(data)} bytes, {state}")
        for line in lines[:3]:
            echo("  " + line.decode("utf-8"))
        if len(lines) > 3:
            echo(f"  ... {len(lines) - 3} more")
