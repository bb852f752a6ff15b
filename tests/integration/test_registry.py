"""The job against a schema registry (the double of tests/doubles/registry.py, and nginx with TLS
and basic auth in front of it), on the real broker.

The double hands out ids from 1001, never the committed ids of ``schemas/ids.json``: a worker that
fell back to the id file, or never learned the registry's entry id, would show here.
"""

from __future__ import annotations

import asyncio
import copy
import io
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaProducer

from streams.contracts.registry import HttpRegistry
from streams.contracts.schemas import BUS_EVENT, ENTRY, SchemaStore
from streams.core.busjson import BusJson
from streams.ops.produce import produce_lines
from streams.ops.sample import bus_events
from tests.doubles.registry import RegistryDouble, running_registry
from tests.support import tls
from tests.support.nginx import Nginx
from tests.support.tls import Certs, free_port

from . import support
from .support import Job, http_get, wait_until

pytestmark = pytest.mark.integration

certs = tls.certs  # the session's test certificates (a fixture)

STORE = SchemaStore()
COMMITTED_IDS = {v.schema_id for versions in STORE.versions.values() for v in versions}
NEW_VARIANT = "escalations.bus.FutureEscalation"
PASSWORD = "n0t-in-any-log"


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    """The registry double; tests ask for it before ``job``, so it outlives their workers."""
    with running_registry() as double:
        yield double


def _use(job: Job, registry: RegistryDouble) -> None:
    job.env["SCHEMA_REGISTRY_URL"] = registry.url


def _subject(topic: str) -> str:
    return f"{topic}-value"


def evolved_bus_schema() -> dict[str, Any]:
    """The bus schema with one more variant appended at the end of the ``event`` union."""
    schema = copy.deepcopy(STORE.current(BUS_EVENT))
    event = next(f for f in schema["fields"] if f["name"] == "event")
    event["type"].append(
        {
            "type": "record",
            "name": "FutureEscalation",
            "namespace": "escalations.bus",
            "fields": [{"name": "note", "type": "string"}],
        }
    )
    return schema


def _frame(schema_id: int, parsed: Any, datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, parsed, datum)
    return out.getvalue()


def encoded(lines: list[str], schema_id: int, schema: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """(key, wire-format value) of each JSON-form line, written with ``schema`` as ``schema_id``."""
    parsed = fastavro.parse_schema(schema)
    return [
        (datum["session_id"].encode(), _frame(schema_id, parsed, datum))
        for datum in BusJson(STORE.current(BUS_EVENT)).parse_lines(lines)
    ]


def new_variant(
    session_id: str, n: int, schema_id: int, schema: dict[str, Any]
) -> tuple[bytes, bytes]:
    datum = {
        "session_id": session_id,
        "event_id": f"future-{n}",
        "occurred_at": 1_790_000_000_000_000 + n,
        "event": (NEW_VARIANT, {"note": f"from a newer producer {n}"}),
    }
    return session_id.encode(), _frame(schema_id, fastavro.parse_schema(schema), datum)


async def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def send(job: Job, records: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(_send(job.bootstrap, job.settings.input_topic, records))


def produce_through(job: Job, registry: RegistryDouble, lines: list[str]) -> None:
    """``produce`` in process, with the ids of the registry (ours registered, or looked up)."""
    ids = HttpRegistry(registry.url, job.store, startup_timeout_s=10)
    asyncio.run(produce_lines(lines, job.bootstrap, job.settings.input_topic, ids, job.store))


def read_topic(job: Job, topic: str, expect: int = 10**9, idle_s: float = 1.5) -> list[Any]:
    return asyncio.run(support.read_topic(job.bootstrap, topic, expect, idle_s))


def assert_no_dead_letters(job: Job) -> None:
    letters = read_topic(job, job.settings.dlq_topic)
    assert letters == [], [dict(r.headers) for r in letters[:3]]


def stop_and_log(job: Job) -> str:
    for worker in job.workers:
        worker.terminate(timeout=20)
    return job.logs()


def run_cli(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_exit(job: Job, timeout: float) -> tuple[int | None, float]:
    worker = job.workers[-1]
    assert worker.process is not None
    started = time.monotonic()
    try:
        code = worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        return None, time.monotonic() - started
    return code, time.monotonic() - started


# -- a) end to end with the registry's ids ---------------------------------------------------


def test_worker_end_to_end_with_the_registrys_ids(registry: RegistryDouble, job: Job) -> None:
    _use(job, registry)
    lines = list(bus_events(600, sessions=6, seed=21))
    expected = job.expected(lines)
    job.worker()
    produce_through(job, registry, lines)

    assert job.wait_for_files(expected, timeout=45) == expected, job.logs()

    (bus_id,) = registry.versions(_subject(job.settings.input_topic))
    (entry_id,) = registry.versions(_subject(job.settings.output_topic))
    assert bus_id not in COMMITTED_IDS and entry_id not in COMMITTED_IDS
    entries = sum(data.count(b"\n") for data in expected.values())
    records = read_topic(job, job.settings.output_topic, expect=entries, idle_s=3.0)
    assert len(records) == entries
    assert {r.value[:5] for r in records} == {struct.pack(">bI", 0, entry_id)}
    assert_no_dead_letters(job)


# -- b) a newer producer's variant, under a new id ------------------------------------------


def test_a_variant_appended_by_a_newer_producer_is_dropped_as_unknown(
    registry: RegistryDouble, job: Job
) -> None:
    _use(job, registry)
    subject = _subject(job.settings.input_topic)
    ours = registry.add_version(subject, STORE.current(BUS_EVENT))
    evolved = evolved_bus_schema()
    newer = registry.add_version(subject, evolved)
    assert newer != ours

    lines = list(bus_events(400, sessions=5, seed=22))
    sessions = sorted({key for key, _ in encoded(lines[:50], ours, STORE.current(BUS_EVENT))})
    # Normal events written with our schema and with the newer one, the new variant between.
    records: list[tuple[bytes, bytes]] = []
    futures = 0
    for i, (key, value) in enumerate(
        encoded(lines[:200], ours, STORE.current(BUS_EVENT)) + encoded(lines[200:], newer, evolved)
    ):
        records.append((key, value))
        if i % 25 == 0:
            records.append(
                new_variant(sessions[futures % len(sessions)].decode(), i, newer, evolved)
            )
            futures += 1
    expected = job.expected(lines)
    job.worker()
    send(job, records)

    assert job.wait_for_files(expected, timeout=45) == expected, job.logs()
    assert_no_dead_letters(job)
    log = stop_and_log(job)
    assert f"'unknown_variant': {futures}" in log, log[-3000:]


# -- c) the registry goes away while a new id is in flight, then comes back ------------------


def test_a_registry_outage_holds_the_batch_until_the_registry_is_back(
    registry: RegistryDouble, job: Job
) -> None:
    _use(job, registry)
    subject = _subject(job.settings.input_topic)
    lines = list(bus_events(600, sessions=6, seed=23))
    first, second = lines[:300], lines[300:]
    web = free_port()
    job.worker(
        ESCALATIONS_WEB_ENABLED="true",
        ESCALATIONS_WEB_PORT=str(web),
        ESCALATIONS_STALL_TIMEOUT="1",
    )
    produce_through(job, registry, first)
    assert job.wait_for_files(job.expected(first), timeout=45) == job.expected(first), job.logs()

    newer = registry.add_version(subject, evolved_bus_schema())
    registry.down()  # connections refused
    send(job, encoded(second, newer, evolved_bus_schema()))
    # The batch waits for the writer schema; the watchdog reports it.
    health = wait_until(
        lambda: (answer := http_get(web, "/healthz"))[0] == 503 and answer,
        timeout=10,
        what="/healthz to report the held batch",
    )
    assert health[1]["reason"].startswith(f"{job.settings.app_id}-map: "), health
    worker = job.workers[0]
    assert worker.alive(), job.logs()
    assert job.files(job.expected(first)) == job.expected(first)  # nothing of the held batch

    registry.up()
    registry.fail_with(503)  # up, but answering 503
    time.sleep(1.5)
    assert worker.alive(), job.logs()
    fetches = registry.count("GET", f"/schemas/ids/{newer}")
    assert fetches >= 1
    registry.heal()

    expected = job.expected(lines)
    assert job.wait_for_files(expected, timeout=30) == expected, job.logs()
    assert worker.alive()
    wait_until(lambda: http_get(web, "/healthz")[0] == 200, timeout=10, what="/healthz 200")
    assert_no_dead_letters(job)
    log = stop_and_log(job)
    assert f"{registry.url}: fetching schema id {newer} failed" in log, log[-3000:]
    assert "answers again" in log


# -- d) lookup first; an incompatible output subject stops the worker ------------------------


def newer_entry_schema() -> dict[str, Any]:
    """Our entry schema with one more ``kind`` symbol: a compatible evolution of the subject,
    but one our schema cannot read (so testing ours against it says incompatible)."""
    schema = copy.deepcopy(STORE.current(ENTRY))
    kind = next(f for f in schema["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].append("escalated_again")
    return schema


def test_register_and_produce_use_our_version_when_a_newer_one_is_latest(
    registry: RegistryDouble, job: Job
) -> None:
    _use(job, registry)
    bus_subject = _subject(job.settings.input_topic)
    entry_subject = _subject(job.settings.output_topic)
    bus_id = registry.add_version(bus_subject, STORE.current(BUS_EVENT))
    registry.add_version(bus_subject, evolved_bus_schema())
    entry_id = registry.add_version(entry_subject, STORE.current(ENTRY))
    registry.add_version(entry_subject, newer_entry_schema())

    registered = run_cli(job.env, "schemas", "register")
    assert registered.returncode == 0, registered.stderr
    assert f"subject {bus_subject}, id {bus_id}" in registered.stdout
    assert f"subject {entry_subject}, id {entry_id}" in registered.stdout

    lines = list(bus_events(20, sessions=2, seed=24))
    produced = run_cli(job.env, "produce", stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, produced.stderr
    records = read_topic(job, job.settings.input_topic, expect=20)
    assert {r.value[:5] for r in records} == {struct.pack(">bI", 0, bus_id)}
    assert len(registry.versions(bus_subject)) == len(registry.versions(entry_subject)) == 2
    assert registry.count("POST", "/compatibility/") == 0  # found: nothing to test
    assert registry.count("POST", f"/subjects/{bus_subject}/versions") == 0


def test_a_worker_refuses_an_output_subject_whose_latest_is_incompatible(
    registry: RegistryDouble, job: Job
) -> None:
    _use(job, registry)
    entry_subject = _subject(job.settings.output_topic)
    without_summary = copy.deepcopy(STORE.current(ENTRY))
    without_summary["fields"] = [f for f in without_summary["fields"] if f["name"] != "summary"]
    registry.add_version(entry_subject, without_summary)

    job.worker()
    code, _ = wait_exit(job, timeout=45)

    log = job.logs()
    assert code == 70, log
    assert repr(entry_subject) in log, log
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in log and "summary" in log, log
    assert registry.versions(entry_subject) == [registry.versions(entry_subject)[0]]


# -- e) no registry at start ---------------------------------------------------------------


def test_a_worker_exits_70_when_the_registry_stays_unreachable_at_start(job: Job) -> None:
    port = free_port()  # nothing listens there
    # An upper-case scheme is a valid URL (it was refused, the password in the message).
    job.env["SCHEMA_REGISTRY_URL"] = f"HTTP://svc:{PASSWORD}@127.0.0.1:{port}"
    job.env["ESCALATIONS_REGISTRY_STARTUP_TIMEOUT"] = "3"
    bound = 3

    job.worker()
    code, took = wait_exit(job, timeout=bound + 40)

    log = job.logs()
    assert code == 70, log
    assert f"SCHEMA_REGISTRY_URL=http://127.0.0.1:{port}" in log, log
    assert PASSWORD not in log
    assert bound <= took < bound + 30, (took, log)


# -- f) TLS and basic auth (nginx in front of the double) ------------------------------------


@pytest.fixture
def secured(tmp_path: Path, registry: RegistryDouble, certs: Certs) -> Iterator[Nginx]:
    with Nginx(tmp_path / "nginx").start(
        free_port(), registry.port, certs.server_cert, certs.server_key, {"svc": PASSWORD}
    ) as nginx:
        yield nginx


def _secure_env(job: Job, nginx: Nginx, certs: Certs, password: str) -> dict[str, str]:
    return {
        **job.env,
        "SCHEMA_REGISTRY_URL": nginx.url,
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"svc:{password}",
        "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs.ca),
    }


def test_tls_and_basic_auth_in_front_of_the_registry(
    registry: RegistryDouble, job: Job, secured: Nginx, certs: Certs
) -> None:
    good = _secure_env(job, secured, certs, PASSWORD)
    bus_subject = _subject(job.settings.input_topic)
    entry_subject = _subject(job.settings.output_topic)

    registered = run_cli(good, "schemas", "register")
    assert registered.returncode == 0, registered.stderr
    (bus_id,) = registry.versions(bus_subject)
    (entry_id,) = registry.versions(entry_subject)
    assert f"subject {bus_subject}, id {bus_id}" in registered.stdout
    assert f"subject {entry_subject}, id {entry_id}" in registered.stdout

    wrong = _secure_env(job, secured, certs, "wrong-password")
    refused = run_cli(wrong, "schemas", "register")
    assert refused.returncode == 1, refused.stderr
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in refused.stderr
    assert "HTTP 401" in refused.stderr
    assert "wrong-password" not in refused.stderr

    untrusted = {**good, "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs.other_ca)}
    refused = run_cli(untrusted, "schemas", "register")
    assert refused.returncode == 1, refused.stderr
    assert "SCHEMA_REGISTRY_SSL_CA_LOCATION" in refused.stderr

    # The worker with wrong credentials stops at start (70), naming the variable.
    job.env.update(wrong)
    job.worker()
    code, _ = wait_exit(job, timeout=60)
    log = job.logs()
    assert code == 70, log
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in log
    assert "wrong-password" not in log
