"""The reports topic and the sessions view against a real broker (the embedded one by default).

The reports topic is created compacted (the embedded broker accepts and reports the setting,
though it never compacts), and an existing one that is not compacted is a warning at start. A
worker's view reads the retention window and drops tombstoned and too-old sessions. A worker
stopped (SIGTERM) right after writing has sent its last position reports before it exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.ops.sample import bus_events
from streams.runtime.reports import PositionReports
from streams.runtime.sender import BatchSender
from streams.runtime.sessions import ReportsReader, SessionsView
from streams.runtime.topics import TOPIC_CONFIGS, cleanup_policy, reports_topic
from streams.sink.position import SinkPosition

from .conftest import JobFactory
from .support import Job, read_topic

pytestmark = pytest.mark.integration


async def _policy(bootstrap: str, topic: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return cleanup_policy([a.to_object() for a in answers], topic)


def test_the_reports_topic_is_created_compacted(job: Job) -> None:
    topic = reports_topic(job.settings)
    assert asyncio.run(_policy(job.bootstrap, topic)) == "compact"
    assert asyncio.run(_policy(job.bootstrap, job.settings.output_topic)) is None


def test_an_existing_reports_topic_that_is_not_compacted_is_a_warning(
    bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job(bootstrap, tmp_path)
    topic = reports_topic(job.settings)

    async def create_plain() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 4, 1, topic_configs=TOPIC_CONFIGS)])
        finally:
            await admin.close()

    asyncio.run(create_plain())
    with caplog.at_level(logging.INFO, logger="streams.runtime.topics"):
        job.create_topics()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"topic {topic} is not compacted" in m for m in warnings), caplog.text
    assert any("--add-config cleanup.policy=compact" in m for m in warnings), caplog.text


async def test_the_view_drops_tombstoned_and_too_old_sessions(bootstrap: str) -> None:
    # One partition: the order a view reads is the order sent, "s-live" last, so once it is
    # seen, so is everything before it.
    topic = f"reports-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    now_ms = int(time.time() * 1000)
    report = json.dumps({"entries": 1, "bytes": 10}).encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, at_ms in [(b"s-old", now_ms - 7_200_000), (b"s-kept", now_ms - 60_000)]:
            # Two hours ago (the retention is one), and a minute ago.
            await producer.send_and_wait(topic, report, key=key, timestamp_ms=at_ms)
        # The job's own path: reports, then the sink forgets "s-gone", sent at stop.
        reports = PositionReports(BatchSender(lambda: producer, topic))
        reports.written("s-gone", SinkPosition(size=10, entries=1))
        assert await reports.flush() == 1
        reports.forget(["s-gone"])
        reports.written("s-live", SinkPosition(size=10, entries=1))
        assert await reports.flush() == 2
    finally:
        await producer.stop()
    view = SessionsView(retention_s=3600)
    reader = ReportsReader(bootstrap=bootstrap, topic=topic, partitions=1, view=view)
    await reader.start()
    try:
        deadline = time.monotonic() + 20
        while view.get("s-live") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()
    assert sorted(view.all()) == ["s-kept", "s-live"]


def test_a_worker_stopped_right_after_writing_has_sent_its_last_reports(
    job_factory: JobFactory,
) -> None:
    # Checkpoints only at stop: the positions become reports as the worker stops, so only a
    # flush at stop can send them.
    job = job_factory(ESCALATIONS_CHECKPOINT_INTERVAL_MS="600000")
    lines = list(bus_events(400, sessions=5, seed=20))
    worker = job.worker()
    job.produce(lines)
    expected = job.expected(lines)
    job.wait_for_files(expected)
    worker.terminate(timeout=20)
    assert worker.returncode == 0, worker.log()[-3000:]
    records = asyncio.run(
        read_topic(job.bootstrap, reports_topic(job.settings), len(expected), idle_s=3.0)
    )
    latest = {r.key.decode(): json.loads(r.value) for r in records if r.value is not None}
    assert {s: v["bytes"] for s, v in latest.items()} == {
        s: len(data) for s, data in expected.items()
    }, worker.log()[-3000:]
