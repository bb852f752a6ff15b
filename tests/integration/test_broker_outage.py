"""The broker goes away for 30 s: the worker neither corrupts files nor spins."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from streams.ops.broker import EmbeddedBroker
from streams.ops.sample import bus_events
from streams.sink.files import FileSink
from streams.sink.verify import verify_session

from .conftest import Job

pytestmark = pytest.mark.integration

OUTAGE_S = 30


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_worker_survives_a_broker_outage_without_damage_or_spinning(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("stops and restarts its own embedded broker")
    broker = EmbeddedBroker(log_file=tmp_path / "outage-broker.log").start()
    port = broker.port
    job = Job(broker.bootstrap, tmp_path)
    try:
        lines = list(bus_events(2000, sessions=4, seed=17))
        expected = job.expected(lines)
        worker = job.worker()
        job.produce(lines)
        assert job.wait_for_files(expected) == expected, job.logs()

        broker.stop()
        cpu_before = _cpu_seconds(worker.process.pid)  # type: ignore[union-attr]
        time.sleep(OUTAGE_S)
        cpu = _cpu_seconds(worker.process.pid) - cpu_before  # type: ignore[union-attr]
        print(f"worker CPU during a {OUTAGE_S}s outage: {cpu:.2f}s")
        assert worker.alive(), job.logs()
        assert cpu < OUTAGE_S * 0.25, f"the worker spun: {cpu:.1f}s of CPU in {OUTAGE_S}s"
        assert job.files(expected) == expected
        sink = FileSink(job.root)
        assert all(verify_session(sink, s) == [] for s in expected)

        # Memory storage: the broker comes back empty (no topics, no offsets). The worker
        # reconnects; it must not damage the files whatever it then reads.
        try:
            broker = EmbeddedBroker(port=port, log_file=tmp_path / "outage-broker.log").start()
        except Exception as exc:  # the port may still be in TIME_WAIT (no SO_REUSEADDR)
            pytest.fail(f"could not restart the broker on port {port}: {exc}")
        time.sleep(10)
        assert job.files(expected) == expected, job.logs()
        assert all(verify_session(sink, s) == [] for s in expected)
    finally:
        job.stop()
        broker.stop()
