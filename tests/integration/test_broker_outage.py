"""The broker goes away (the network to it is cut) and comes back: the worker neither corrupts
files nor spins nor floods its log, rejoins and writes what arrived meanwhile; and a SIGTERM
while the broker is away still stops it within the drain bound."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.sample import bus_events
from streams.runtime.faustapp import EXIT_DRAIN_CUT
from streams.sink.files import FileSink
from streams.sink.verify import verify_session

from ..support.relay import Relay
from .support import Job

pytestmark = pytest.mark.integration

OUTAGE_S = 20


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, Relay]]:
    """An embedded broker reached only through a relay the test can cut."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("cuts the network to its own embedded broker")
    relay_port = free_port()
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log", advertised_port=relay_port).start()
    relay = Relay(relay_port, broker.port).start()
    try:
        yield broker, relay
    finally:
        relay.stop()
        broker.stop()


def _aiokafka_lines(log: str) -> int:
    return sum(1 for line in log.splitlines() if "[aiokafka" in line)


def test_worker_survives_an_outage_rejoins_and_writes_what_came_meanwhile(
    relayed: tuple[EmbeddedBroker, Relay], tmp_path: Path
) -> None:
    _broker, relay = relayed
    job = Job(f"127.0.0.1:{relay.port}", tmp_path).create_topics()
    try:
        lines = list(bus_events(3000, sessions=4, seed=17))
        worker = job.worker()
        job.produce(lines[:2000])
        first = job.expected(lines[:2000])
        assert job.wait_for_files(first) == first

        relay.cut()
        log_before = _aiokafka_lines(worker.log())
        cpu_before = _cpu_seconds(worker.pid)
        time.sleep(OUTAGE_S)
        cpu = _cpu_seconds(worker.pid) - cpu_before
        logged = _aiokafka_lines(worker.log()) - log_before
        assert worker.alive(), job.logs()
        assert cpu < OUTAGE_S * 0.25, f"the worker spun: {cpu:.1f}s of CPU in {OUTAGE_S}s"
        # Repeats are collapsed: about one line per source and reason every 10 s, not ~75/s.
        assert logged < OUTAGE_S * 5, f"{logged} aiokafka log lines in {OUTAGE_S}s"
        assert job.files(first) == first
        sink = FileSink(job.root)
        assert all(verify_session(sink, s) == [] for s in first)

        relay.restore()
        job.produce(lines[2000:])  # the rest arrives once the broker is back
        everything = job.expected(lines)
        assert job.wait_for_files(everything, timeout=90) == everything
        assert worker.alive(), job.logs()
    finally:
        job.stop()


def test_sigterm_with_the_broker_gone_stops_within_the_drain_bound(
    relayed: tuple[EmbeddedBroker, Relay], tmp_path: Path
) -> None:
    _broker, relay = relayed
    job = Job(f"127.0.0.1:{relay.port}", tmp_path, ESCALATIONS_DRAIN_TIMEOUT="4").create_topics()
    try:
        lines = list(bus_events(500, sessions=4, seed=5))
        worker = job.worker()
        job.produce(lines)
        expected = job.expected(lines)
        assert job.wait_for_files(expected) == expected

        relay.cut()
        time.sleep(3)
        took = worker.terminate(timeout=20)
        assert took < 4 + 3, f"SIGTERM took {took:.1f}s with the broker gone\n{job.logs()}"
        assert worker.returncode in (0, EXIT_DRAIN_CUT), job.logs()
        assert job.files(expected) == expected  # nothing lost or torn by the cut-short stop
    finally:
        job.stop()
