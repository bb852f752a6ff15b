"""The registry as production runs it: restarts, lagging followers, transitive compatibility.

Against the registry double over real HTTP (``tests/doubles/registry.py``), with the client's
sleep and clock injected: a sleep moves a fake clock and may change the double's phase (ready,
caught up), so nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.registry import HttpRegistry
from streams.contracts.schemas import BUS_EVENT, ENTRY, SchemaStore
from streams.errors import ContractError, Coordinates
from streams.runtime.stages import SinkStage
from streams.runtime.stats import Stats
from streams.sink.files import FILE_NAME, FileSink
from tests.doubles.registry import RegistryDouble, running_registry
from tests.unit.records import Rec

STORE = SchemaStore()
WHERE = Coordinates("escalations", 0, 7)


class FakeTime:
    """A clock that only sleeping moves; ``on_sleep`` runs before each sleep returns."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    with running_registry() as double:
        yield double


def _client(url: str, fake: FakeTime, grace: float = 60.0) -> HttpRegistry:
    return HttpRegistry(url, STORE, unknown_id_grace_s=grace, sleep=fake.sleep, clock=fake.clock)


def _entry(session_id: str = "s-1", offset: int = 7) -> dict[str, Any]:
    return {
        "ts": 1_700_000_000_000_000,
        "kind": "cancelled",
        "goal_id": "g1",
        "intent": None,
        "summary": "goal cancelled",
        "confidence": None,
        "auto_proceed": False,
        "session_id": session_id,
        "source_topic": "bus-events",
        "source_partition": 0,
        "source_offset": offset,
    }


# -- 1. a registry that has just started answers 404 for ids it has ----------------------------


def test_a_restarting_registrys_404_is_waited_out_and_health_says_why(
    registry: RegistryDouble,
) -> None:
    """Fails on the old client: the first 404 was final (None, the record dead-lettered)."""
    entry_id = registry.add_version("escalations-value", STORE.current(ENTRY))
    registry.not_ready()
    fake = FakeTime()
    client = _client(registry.url, fake)
    reasons: list[str | None] = []

    def phase(n: int) -> None:
        reasons.append(client.waiting())
        if n == 4:
            registry.ready()

    fake.on_sleep = phase
    value = Codec({entry_id: STORE.current(ENTRY)}).encode(entry_id, _entry())

    datum = asyncio.run(Decoder(Codec({}), client).decode(value, WHERE))

    assert datum["summary"] == "goal cancelled"
    assert fake.sleeps == [0.2, 0.4, 0.8, 1.6]
    assert registry.count("GET", f"/schemas/ids/{entry_id}") == 5
    reason = reasons[0] or ""
    assert registry.url in reason and f"schema id {entry_id}" in reason, reasons
    assert "HTTP 404" in reason and "ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE=60s" in reason
    assert client.waiting() is None


def test_a_lagging_follower_is_waited_for_too(registry: RegistryDouble) -> None:
    follower = registry.follower().start()
    try:
        newer = registry.add_version("bus-events-value", STORE.current(BUS_EVENT))
        fake = FakeTime()
        fake.on_sleep = lambda n: follower.catch_up() if n == 2 else None

        schema = asyncio.run(_client(follower.url, fake).fetch(newer))

        assert schema == STORE.current(BUS_EVENT)
        assert follower.count("GET", f"/schemas/ids/{newer}") == 3
        assert registry.count("GET", "/schemas/ids/") == 0
    finally:
        follower.stop()


def test_an_id_the_registry_never_knows_is_unknown_after_the_grace_once(
    registry: RegistryDouble,
) -> None:
    fake = FakeTime()
    client = _client(registry.url, fake, grace=30.0)

    assert asyncio.run(client.fetch(4242)) is None
    assert sum(fake.sleeps) == pytest.approx(30.0)
    assert client.waiting() is None
    # The grace is spent: the next record with that id is not held again.
    assert asyncio.run(client.fetch(4242)) is None
    assert sum(fake.sleeps) == pytest.approx(30.0)


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, Any]] = []

    async def __call__(self, key: bytes | None, value: bytes | None, headers: Any) -> Any:
        self.records.append((key, value, headers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_the_sink_stage_writes_a_record_whose_id_a_restarting_registry_knows(
    registry: RegistryDouble, tmp_path: Path
) -> None:
    """Fails on the old client: the sink stage dead-lettered the entry."""
    entry_id = registry.add_version("escalations-value", STORE.current(ENTRY))
    registry.not_ready()
    fake = FakeTime()
    fake.on_sleep = lambda n: registry.ready() if n == 3 else None
    codec = Codec({entry_id: STORE.current(ENTRY)})
    records = [
        Rec("escalations", 0, i, b"s-1", codec.encode(entry_id, _entry(offset=i))) for i in range(3)
    ]
    dead = Sent()
    stage = SinkStage(
        Decoder(Codec({}), _client(registry.url, fake)), FileSink(tmp_path), dead, Stats.empty()
    )

    asyncio.run(stage.process(records))

    assert dead.records == []
    assert (tmp_path / "s-1" / FILE_NAME).read_bytes().count(b"\n") == 3


# -- 2. transitive compatibility: which versions fail ------------------------------------------


def _with_symbol(schema: dict[str, Any]) -> dict[str, Any]:
    """A version our entry schema cannot read: one more ``kind`` symbol."""
    out = copy.deepcopy(schema)
    kind = next(f for f in out["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].append("escalated_again")
    return out


def _with_tenant(schema: dict[str, Any]) -> dict[str, Any]:
    """A version our entry schema reads: one more optional field."""
    out = copy.deepcopy(schema)
    out["fields"].append({"name": "tenant", "type": ["null", "string"], "default": None})
    return out


def test_a_transitive_refusal_names_the_older_version_that_fails(
    registry: RegistryDouble,
) -> None:
    """Fails on the old client: it said "incompatible with the subject's latest version"
    although the latest is compatible and only version 1 is not."""
    subject = "escalations-value"
    ours = STORE.current(ENTRY)
    registry.add_version(subject, _with_symbol(ours))
    registry.add_version(subject, _with_tenant(ours))
    registry.set_level("BACKWARD_TRANSITIVE", subject)
    fake = FakeTime()

    with pytest.raises(ContractError) as info:
        asyncio.run(_client(registry.url, fake).id_for(ENTRY, subject))

    message = str(info.value)
    assert "compatibility BACKWARD_TRANSITIVE" in message, message
    assert "incompatible with version 1 (compatible with the latest, version 2)" in message
    assert "escalated_again" in message
    assert "latest version" not in message
    assert registry.versions(subject) == registry.versions(subject)[:2]
    assert registry.count("POST", f"/subjects/{subject}/versions") == 0


def test_under_backward_only_the_latest_counts(registry: RegistryDouble) -> None:
    subject = "escalations-value"
    ours = STORE.current(ENTRY)
    registry.add_version(subject, _with_symbol(ours))
    registry.add_version(subject, _with_tenant(ours))

    schema_id = asyncio.run(_client(registry.url, FakeTime()).id_for(ENTRY, subject))

    assert registry.versions(subject)[-1] == schema_id


# -- 4. `escalations schemas check` with SCHEMA_REGISTRY_URL -----------------------------------


@pytest.fixture
def keep_logging() -> Iterator[None]:
    import logging

    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_schemas_check_asks_the_registry_and_prints_its_ids(keep_logging: None) -> None:
    """Fails on the old command: it printed the committed ids (1, 2), never asking."""
    with running_registry(first_id=5) as registry:
        entry_id = registry.add_version("escalations-value", STORE.current(ENTRY))
        bus_id = registry.add_version("bus-events-value", STORE.current(BUS_EVENT))
        result = CliRunner().invoke(
            main, ["schemas", "check"], env={"SCHEMA_REGISTRY_URL": registry.url}
        )

    assert result.exit_code == 0, result.output
    assert (entry_id, bus_id) == (5, 6)
    assert f"{BUS_EVENT}: subject bus-events-value, version 1, id 6 at {registry.url}, ok" in (
        result.stdout
    )
    assert f"{ENTRY}: subject escalations-value, version 1, id 5" in result.stdout
    assert registry.count("POST", "/subjects/bus-events-value") == 1
    assert registry.count("POST", "/subjects/bus-events-value/versions") == 0


def test_schemas_check_names_the_versions_the_registry_refuses(keep_logging: None) -> None:
    with running_registry() as registry:
        subject = "escalations-value"
        registry.add_version(subject, _with_symbol(STORE.current(ENTRY)))
        registry.add_version(subject, _with_tenant(STORE.current(ENTRY)))
        registry.set_level("FULL_TRANSITIVE")
        result = CliRunner().invoke(
            main, ["schemas", "check"], env={"SCHEMA_REGISTRY_URL": registry.url}
        )
        assert registry.versions(subject) == registry.versions(subject)[:2]

    assert result.exit_code == 1, result.output
    assert "not registered at" in result.stdout  # the bus subject: new, nothing to test
    assert "problem: subject 'escalations-value'" in result.stderr
    assert "compatibility FULL_TRANSITIVE" in result.stderr
    assert "incompatible with version 1 (compatible with the latest, version 2)" in (result.stderr)
    assert json.dumps(STORE.current(ENTRY)) not in result.stderr


def test_the_grace_is_a_setting_that_may_be_zero() -> None:
    from streams.errors import ConfigError
    from streams.settings import load

    assert load({}).registry_unknown_id_grace_s == 60.0
    assert load({"ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE": "0"}).registry_unknown_id_grace_s == 0
    with pytest.raises(ConfigError, match="ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE='-1'"):
        load({"ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE": "-1"})
