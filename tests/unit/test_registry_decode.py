"""The decode path against the registry adapter (respx): the batch waits for the registry, and
an id the registry does not know is asked once per memo window.

Sleep and clock are injected (a fake clock that sleeping advances), as in ``test_registry.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.schemas import ENTRY
from streams.errors import UnknownSchemaIdError
from tests.unit.test_registry import (
    SCHEMA_NOT_FOUND,
    STORE,
    URL,
    WHERE,
    FakeTime,
    _error,
    _ok,
    _registry,
)
from tests.unit.test_registry_production import _entry


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


async def test_decode_waits_for_the_registry_then_decodes(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    entry = STORE.current(ENTRY)
    value = Codec({1002: entry}).encode(1002, _entry())
    mock.get("/schemas/ids/1002").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            _error(503, 50003, "Error while forwarding the request"),
            _ok({"schema": json.dumps(entry)}),
        ]
    )
    decoder = Decoder(Codec({}), _registry(fake))

    assert (await decoder.decode(value, WHERE))["summary"] == "goal cancelled"
    assert fake.sleeps == [0.2, 0.4]


async def test_an_unknown_id_is_asked_once_per_ttl_and_is_a_record_error(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    value = Codec({4242: STORE.current(ENTRY)}).encode(4242, _entry())
    route = mock.get("/schemas/ids/4242").mock(return_value=SCHEMA_NOT_FOUND)
    registry = _registry(fake, unknown_id_grace_s=0.0)  # no grace: the memo alone
    decoder = Decoder(Codec({}), registry, clock=fake.clock, unknown_ttl_s=5.0)

    for _ in range(3):
        with pytest.raises(UnknownSchemaIdError):
            await decoder.decode(value, WHERE)
    assert route.call_count == 1
    fake.now += 6
    with pytest.raises(UnknownSchemaIdError):
        await decoder.decode(value, WHERE)
    assert route.call_count == 2
