"""The registry as production runs it, on the real broker: a registry that restarts while records
flow, a start refused for its contract, ``sink rebuild`` against a registry that is behind.

The registry double (tests/doubles/registry.py) plays the restart: ``not_ready()`` answers 404
(40403) for ids it has, as Karapace does while it re-reads its schemas topic.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.contracts.codec import Codec
from streams.contracts.registry import HttpRegistry
from streams.contracts.schemas import BUS_EVENT, ENTRY
from streams.core.busjson import BusJson
from streams.core.records import entry_datum
from streams.ops.rebuild import RebuildReport, gave_up_messages, rebuild
from streams.ops.sample import bus_events
from streams.runtime.factory import build
from streams.runtime.topics import job_topics
from streams.sink.files import FILE_NAME, FileSink
from tests.doubles.registry import RegistryDouble, running_registry
from tests.support.tls import free_port

from .support import Job, http_get, wait_until
from .test_registry import (
    STORE,
    _send,
    assert_no_dead_letters,
    encoded,
    evolved_bus_schema,
    run_cli,
    send,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    with running_registry() as double:
        yield double


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


# -- 1. a registry that restarts while records flow -------------------------------------------


def test_a_restarting_registry_holds_the_batch_and_health_says_why(
    registry: RegistryDouble, job: Job
) -> None:
    """Fails on the old worker: the 404s dead-lettered the records and /healthz stayed 200."""
    job.env["SCHEMA_REGISTRY_URL"] = registry.url
    newer = registry.add_version(f"{job.settings.input_topic}-value", evolved_bus_schema())
    web = free_port()
    job.worker(
        ESCALATIONS_WEB_ENABLED="true",
        ESCALATIONS_WEB_PORT=str(web),
        ESCALATIONS_STALL_TIMEOUT="1",
        ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE="120",
    )
    wait_until(lambda: http_get(web, "/readyz")[0] == 200, timeout=45, what="/readyz 200")
    registry.not_ready()  # restarted: 404 for every id until it has read its schemas
    lines = list(bus_events(300, sessions=4, seed=31))
    send(job, encoded(lines, newer, evolved_bus_schema()))

    health = wait_until(
        lambda: (answer := http_get(web, "/healthz"))[0] == 503 and answer,
        timeout=20,
        what="/healthz to say the batch waits for the registry",
    )
    reason = health[1]["reason"]
    assert reason.startswith(f"{job.settings.app_id}-map: "), reason
    assert f"schema id {newer}" in reason and "HTTP 404" in reason, reason
    assert "ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE=120s" in reason, reason
    assert job.files(job.expected(lines)) == {}

    registry.ready()
    expected = job.expected(lines)
    assert job.wait_for_files(expected, timeout=30) == expected, job.logs()
    wait_until(lambda: http_get(web, "/healthz")[0] == 200, timeout=10, what="/healthz 200")
    assert_no_dead_letters(job)


# -- 3. a start refused for its contract creates nothing ---------------------------------------


class Refused(Exception):
    pass


def _refuse(exc: BaseException) -> NoReturn:
    raise Refused(str(exc)) from exc


async def test_a_start_refused_for_its_schema_creates_no_topic(
    bootstrap: str, tmp_path: Path, registry: RegistryDouble
) -> None:
    """Fails on the old start: it created the job's topics before asking the registry."""
    job = Job(bootstrap, tmp_path, SCHEMA_REGISTRY_URL=registry.url)  # no topics created
    without_summary = copy.deepcopy(STORE.current(ENTRY))
    without_summary["fields"] = [f for f in without_summary["fields"] if f["name"] != "summary"]
    registry.add_version(f"{job.settings.output_topic}-value", without_summary)

    runtime = build(job.settings, fatal=_refuse)
    with pytest.raises(Refused, match="summary"):
        await runtime.start()

    assert set(job_topics(job.settings)) & await _topics(bootstrap) == set()


def test_produce_refused_for_its_schema_creates_no_topic(
    bootstrap: str, tmp_path: Path, registry: RegistryDouble
) -> None:
    """Fails on the old ``produce``: it created the job's topics first."""
    job = Job(bootstrap, tmp_path, SCHEMA_REGISTRY_URL=registry.url)  # no topics created
    registry.add_version(f"{job.settings.input_topic}-value", {"type": "string"})

    result = run_cli(job.env, "produce", stdin="\n".join(bus_events(3, sessions=1)) + "\n")

    assert result.returncode == 1, result.stderr
    assert f"{job.settings.input_topic}-value" in result.stderr
    assert set(job_topics(job.settings)) & asyncio.run(_topics(bootstrap)) == set()


# -- 1. `escalations sink rebuild` against a registry that is behind ---------------------------


def _entries(job: Job, lines: list[str], entry_id: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the escalation entries the map stage makes of ``lines``."""
    codec = Codec({entry_id: STORE.current(ENTRY)})
    out = []
    for offset, datum in enumerate(BusJson(STORE.current(BUS_EVENT)).parse_lines(lines)):
        entry = entry_datum(datum, job.settings.input_topic, 0, offset)
        if entry is not None:
            out.append((datum["session_id"].encode(), codec.encode(entry_id, entry)))
    return out


def _rebuild(job: Job, root: Path, url: str, grace_s: float) -> RebuildReport:
    """``escalations sink rebuild`` of every session into ``root``, against the registry."""
    return asyncio.run(
        rebuild(
            FileSink(root),
            Codec({}),
            HttpRegistry(url, STORE, unknown_id_grace_s=grace_s),
            job.bootstrap,
            job.settings.output_topic,
            job.settings.partitions,
            None,
            idle_s=1.0,
        )
    )


def test_rebuild_waits_for_a_registry_that_is_behind(
    registry: RegistryDouble, job: Job, tmp_path: Path
) -> None:
    """Fails on the old rebuild: it skipped the entries as undecodable and wrote short files."""
    entry_id = registry.add_version(f"{job.settings.output_topic}-value", STORE.current(ENTRY))
    lines = list(bus_events(200, sessions=3, seed=32))
    expected = job.expected(lines)
    asyncio.run(_send(job.bootstrap, job.settings.output_topic, _entries(job, lines, entry_id)))

    registry.not_ready(seconds=1.5)  # restarted just now
    started = time.monotonic()
    root = tmp_path / "rebuilt"
    report = _rebuild(job, root, registry.url, grace_s=30)

    assert (report.undecodable, report.unknown_ids, report.gave_up) == (0, {}, [])
    assert time.monotonic() - started >= 1.0  # it waited for the registry
    assert {s: (root / s / FILE_NAME).read_bytes() for s in expected} == expected

    # A registry that stays behind past the grace: the files are kept as they are, and the
    # registry, not a worker, is named as the cause.
    registry.not_ready()
    report = _rebuild(job, root, registry.url, grace_s=0.5)
    entries = sum(data.count(b"\n") for data in expected.values())
    assert report.unknown_ids == {entry_id: entries}
    assert report.gave_up == report.blocked == sorted(expected)
    assert {s: (root / s / FILE_NAME).read_bytes() for s in expected} == expected
    messages = gave_up_messages(report, job.settings)
    assert len(messages) == len(expected)
    assert all("the registry is the cause" in m and f"ids {entry_id}" in m for m in messages)
