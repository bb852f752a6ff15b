"""The registry adapter against an httpx-level double (respx): lookup first, retries, errors.

Sleep and clock are injected (a fake clock that sleeping advances), so the backoff and the
startup bound are checked without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import respx

from streams.contracts.registry import HttpRegistry, IdFile, open_ids
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.errors import (
    ContractError,
    Coordinates,
    EscalationsError,
    RegistryError,
)
from streams.security import load_registry_security
from tests.support import tls
from tests.support.tls import Certs

URL = "http://registry.test:8081"
SECRET_URL = "http://svc:pa55-w0rd-never-shown@registry.test:8081"
CT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
SUBJECT = "bus-events-value"
WHERE = Coordinates("bus-events", 0, 7)

STORE = SchemaStore()

certs = tls.certs  # the session's test certificates (a fixture)


def _error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "message": message}, headers=CT)


def _ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body, headers=CT)


SCHEMA_NOT_FOUND = _error(404, 40403, "Schema not found")
SUBJECT_NOT_FOUND = _error(404, 40401, f"Subject '{SUBJECT}' not found.")


class FakeTime:
    """A clock that only sleeping moves; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        # The compatibility level a new schema is tested under (BACKWARD: the latest version).
        router.get(url__regex=r"/config(/.*)?$").mock(
            return_value=_ok({"compatibilityLevel": "BACKWARD"})
        )
        yield router


def _registry(fake: FakeTime, url: str = URL, **kwargs: Any) -> HttpRegistry:
    return HttpRegistry(url, STORE, sleep=fake.sleep, clock=fake.clock, **kwargs)


def _bus_schema_text() -> str:
    return json.dumps(STORE.current(BUS_EVENT))


def _no_httpx_inside(exc: BaseException) -> None:
    """What leaves the adapter is ours; the library's error is only its cause."""
    assert isinstance(exc, EscalationsError)
    assert not isinstance(exc, httpx.HTTPError)
    assert exc.__cause__ is not None


# -- id_for: lookup first -----------------------------------------------------------------------


async def test_a_registered_schema_is_used_even_when_a_newer_version_is_latest(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    lookup = mock.post(f"/subjects/{SUBJECT}").mock(
        return_value=_ok({"subject": SUBJECT, "id": 1001, "version": 1, "schema": "{}"})
    )
    compatibility = mock.post(url__regex=r"/compatibility/.*").mock(
        return_value=_ok({"is_compatible": False, "messages": ["newer"]})
    )
    register = mock.post(f"/subjects/{SUBJECT}/versions").mock(return_value=_ok({"id": 9}))

    assert await _registry(fake).id_for(BUS_EVENT, SUBJECT) == 1001

    assert lookup.call_count == 1
    sent = json.loads(lookup.calls[0].request.content)
    assert json.loads(sent["schema"]) == STORE.current(BUS_EVENT)
    assert compatibility.call_count == 0
    assert register.call_count == 0


async def test_a_new_schema_the_registry_calls_incompatible_is_refused_with_its_messages(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    mock.post(f"/subjects/{SUBJECT}").mock(return_value=SCHEMA_NOT_FOUND)
    compatibility = mock.post(f"/compatibility/subjects/{SUBJECT}/versions/latest").mock(
        return_value=_ok(
            {"is_compatible": False, "messages": ["READER_FIELD_MISSING_DEFAULT_VALUE: tenant"]}
        )
    )
    register = mock.post(f"/subjects/{SUBJECT}/versions").mock(return_value=_ok({"id": 9}))

    with pytest.raises(ContractError) as info:
        await _registry(fake).id_for(BUS_EVENT, SUBJECT)

    message = str(info.value)
    assert repr(SUBJECT) in message
    assert "READER_FIELD_MISSING_DEFAULT_VALUE: tenant" in message
    assert BUS_EVENT in message
    assert compatibility.calls[0].request.url.params["verbose"] == "true"
    assert register.call_count == 0


async def test_a_new_compatible_schema_is_registered(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    mock.post(f"/subjects/{SUBJECT}").mock(return_value=SCHEMA_NOT_FOUND)
    mock.post(f"/compatibility/subjects/{SUBJECT}/versions/latest").mock(
        return_value=_ok({"is_compatible": True, "messages": []})
    )
    register = mock.post(f"/subjects/{SUBJECT}/versions").mock(return_value=_ok({"id": 1003}))

    assert await _registry(fake).id_for(BUS_EVENT, SUBJECT) == 1003
    assert register.call_count == 1


async def test_a_new_subject_is_registered_without_a_compatibility_verdict(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    mock.post(f"/subjects/{SUBJECT}").mock(return_value=SUBJECT_NOT_FOUND)
    mock.post(f"/compatibility/subjects/{SUBJECT}/versions/latest").mock(
        return_value=SUBJECT_NOT_FOUND
    )
    mock.post(f"/subjects/{SUBJECT}/versions").mock(return_value=_ok({"id": 1001}))

    assert await _registry(fake).id_for(BUS_EVENT, SUBJECT) == 1001


async def test_a_registration_refused_as_incompatible_is_a_contract_error(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    mock.post(f"/subjects/{SUBJECT}").mock(return_value=SCHEMA_NOT_FOUND)
    mock.post(f"/compatibility/subjects/{SUBJECT}/versions/latest").mock(
        return_value=_ok({"is_compatible": True})
    )
    mock.post(f"/subjects/{SUBJECT}/versions").mock(
        return_value=_error(409, 409, "Schema being registered is incompatible (transitive)")
    )

    with pytest.raises(ContractError, match=r"incompatible.*transitive") as info:
        await _registry(fake).id_for(BUS_EVENT, SUBJECT)
    assert repr(SUBJECT) in str(info.value)


# -- transient failures: retried with backoff --------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        _error(500, 50001, "Error in the backend data store"),
        _error(502, 502, "Bad Gateway"),
        httpx.Response(503, text="<html>503 Service Temporarily Unavailable</html>"),
        _error(429, 42901, "Request rate limit exceeded"),
    ],
    ids=[
        "connect-error",
        "connect-timeout",
        "read-timeout",
        "disconnect",
        "500",
        "502",
        "503-html",
        "429",
    ],
)
async def test_fetch_retries_transient_failures_then_succeeds(
    mock: respx.MockRouter, fake: FakeTime, failure: Any
) -> None:
    route = mock.get("/schemas/ids/1001").mock(
        side_effect=[failure, failure, failure, _ok({"schema": _bus_schema_text()})]
    )

    schema = await _registry(fake).fetch(1001)

    assert schema == STORE.current(BUS_EVENT)
    assert route.call_count == 4
    assert fake.sleeps == [0.2, 0.4, 0.8]


async def test_backoff_doubles_to_a_cap_and_the_decode_path_never_gives_up(
    mock: respx.MockRouter, fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Any] = [httpx.ConnectError("refused")] * 40
    mock.get("/schemas/ids/1001").mock(side_effect=[*failures, _ok({"schema": _bus_schema_text()})])

    with caplog.at_level(logging.WARNING, logger="streams.contracts.registry"):
        assert await _registry(fake).fetch(1001) is not None

    assert fake.sleeps[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert max(fake.sleeps) == 5.0
    assert len(fake.sleeps) == 40  # ~3 minutes of fake outage, no deadline
    messages = [r.getMessage() for r in caplog.records]
    failing = [m for m in messages if "schema id 1001" in m]
    # The first failure, then at most one line every 10 s with a count; then the recovery.
    assert 10 <= len(failing) <= 20, messages
    assert URL in failing[0]
    assert "failed attempts" in failing[1]
    assert "answers again" in messages[-1]


async def test_at_start_an_unreachable_registry_is_retried_for_a_bounded_time(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    mock.post(f"/subjects/{SUBJECT}").mock(side_effect=httpx.ConnectError("refused"))
    registry = _registry(fake, SECRET_URL, startup_timeout_s=60.0)

    with pytest.raises(RegistryError) as info:
        await registry.id_for(BUS_EVENT, SUBJECT)

    message = str(info.value)
    assert "SCHEMA_REGISTRY_URL=http://svc:***@registry.test:8081" in message
    assert "pa55-w0rd" not in message
    assert "60s" in message
    assert sum(fake.sleeps) == pytest.approx(60.0)
    _no_httpx_inside(info.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_an_auth_refusal_is_not_retried_and_names_the_credentials_variable(
    mock: respx.MockRouter, fake: FakeTime, status: int
) -> None:
    lookup = mock.post(f"/subjects/{SUBJECT}").mock(
        return_value=_error(status, status, "Unauthorized")
    )
    fetch = mock.get("/schemas/ids/1001").mock(return_value=_error(status, status, "Unauthorized"))
    registry = _registry(fake)

    with pytest.raises(RegistryError, match="SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") as start:
        await registry.id_for(BUS_EVENT, SUBJECT)
    with pytest.raises(RegistryError, match="SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") as decode:
        await registry.fetch(1001)

    assert lookup.call_count == fetch.call_count == 1
    assert fake.sleeps == []
    assert f"HTTP {status}" in str(start.value)
    _no_httpx_inside(decode.value)


async def test_an_unknown_id_is_none_once_its_grace_is_spent(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    route = mock.get("/schemas/ids/4242").mock(return_value=SCHEMA_NOT_FOUND)
    registry = _registry(fake, unknown_id_grace_s=60.0)

    assert await registry.fetch(4242) is None
    assert sum(fake.sleeps) == pytest.approx(60.0)
    asked = route.call_count
    assert asked > 10
    # Spent: the id is not granted another grace.
    assert await registry.fetch(4242) is None
    assert route.call_count == asked + 1
    assert sum(fake.sleeps) == pytest.approx(60.0)
    assert registry.waiting() is None


@pytest.mark.parametrize(
    "body",
    [
        {"schema": 'syntax = "proto3"; message M {}', "schemaType": "PROTOBUF"},
        {"schema": '{"type": "object"}', "schemaType": "JSON"},
        {"schema": '{"type": "no-such-avro-type"}'},
    ],
    ids=["protobuf", "json-schema", "bad-avro"],
)
async def test_an_id_of_a_schema_that_is_not_avro_is_unknown(
    mock: respx.MockRouter, fake: FakeTime, body: dict[str, str]
) -> None:
    """Bad input (a record framed with such an id) is dead-lettered, not the worker stopped."""
    mock.get("/schemas/ids/77").mock(return_value=_ok(body))
    assert await _registry(fake).fetch(77) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, text="<html>hello</html>"), "JSONDecodeError"),
        (httpx.Response(404, text="<html>no such page</html>"), "not a schema registry"),
        (_error(400, 400, "Bad request"), "HTTP 400"),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol"), "unsupported"),
    ],
    ids=["200-html", "404-html", "400", "unsupported-protocol"],
)
async def test_other_failures_are_wrapped_at_once(
    mock: respx.MockRouter, fake: FakeTime, answer: Any, expected: str
) -> None:
    mock.get("/schemas/ids/1001").mock(side_effect=[answer])

    with pytest.raises(RegistryError) as info:
        await _registry(fake).fetch(1001)

    message = str(info.value)
    assert expected in message
    assert URL in message and "schema id 1001" in message
    assert fake.sleeps == []
    _no_httpx_inside(info.value)


def test_a_certificate_we_do_not_trust_names_the_ca_variable(certs: Certs) -> None:
    """A real TLS handshake (a loopback listener with the test server certificate), our CA
    setting naming another CA: refused at once, not retried as an outage."""
    fake = FakeTime()
    with _tls_listener(certs) as port:
        url, security = load_registry_security(
            {"SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs.other_ca)}, f"https://127.0.0.1:{port}"
        )
        assert url is not None
        registry = _registry(fake, url, security=security)
        with pytest.raises(RegistryError, match="SCHEMA_REGISTRY_SSL_CA_LOCATION") as info:
            asyncio.run(registry.id_for(BUS_EVENT, SUBJECT))
    assert fake.sleeps == []
    _no_httpx_inside(info.value)


@contextmanager
def _tls_listener(certs: Certs) -> Iterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


# -- what the httpx client is given -----------------------------------------------------------


class FakeSecurity:
    def client_kwargs(self) -> dict[str, Any]:
        return {"auth": httpx.BasicAuth("svc", "s3cret")}


async def test_security_options_reach_every_request(mock: respx.MockRouter, fake: FakeTime) -> None:
    route = mock.get("/schemas/ids/1001").mock(return_value=_ok({"schema": _bus_schema_text()}))
    await _registry(fake, security=FakeSecurity()).fetch(1001)
    assert (
        route.calls[0].request.headers["Authorization"]
        == httpx.BasicAuth("svc", "s3cret")._auth_header
    )


async def test_without_credentials_no_authorization_header_is_sent(
    mock: respx.MockRouter, fake: FakeTime
) -> None:
    # The library alone sends "Basic Og==" (an empty user and password) to every registry.
    route = mock.get("/schemas/ids/1001").mock(return_value=_ok({"schema": _bus_schema_text()}))
    await _registry(fake).fetch(1001)
    assert "Authorization" not in route.calls[0].request.headers


def test_open_ids_without_a_url_is_the_id_file() -> None:
    assert isinstance(open_ids(None, STORE), IdFile)
    registry = open_ids(URL, STORE, security=FakeSecurity(), startup_timeout_s=5.0)
    assert isinstance(registry, HttpRegistry)
    assert registry.startup_timeout_s == 5.0
