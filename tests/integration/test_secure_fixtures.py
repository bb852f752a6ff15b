"""The secure-cluster fixtures and ``streams.security`` against real aiokafka clients.

Each mode (TLS, mTLS, SASL_PLAINTEXT, SASL_SSL) gets one cluster for the whole module. A record
makes the round trip with the settings ``load_kafka_security`` builds from ``cluster.env``; each
misconfiguration fails within a bound, and the failure names the setting to fix.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError

from streams.errors import ConfigError
from streams.security import (
    check_connection,
    load_kafka_security,
    load_registry_security,
    unrecoverable,
)
from tests.support import tls
from tests.support.secure_kafka import SecureCluster
from tests.support.tls import Certs, free_port

pytestmark = pytest.mark.integration

#: How long a test's event loop keeps running after it, for the connections it closed.
CLOSING_S = 0.25


@pytest.fixture(autouse=True)
async def _connections_closed() -> AsyncIterator[None]:
    """aiokafka's ``stop()``, a failed ``start()`` and ``conn.close()`` close their connections
    without waiting for the transport: a TLS connection ends its shutdown on later iterations of
    the loop. Each test's loop runs a little longer, so that no socket is left to the garbage
    collector (whose warning would then fail whichever later test it ran in)."""
    yield
    await asyncio.sleep(CLOSING_S)


certs = tls.certs  # the session's test certificates (a fixture)

BOUND_S = 30  # every failure must surface within this
WRONG_PASSWORD = "wrong-password-never-shown"

#: name -> (mode, SecureCluster options)
CLUSTERS: dict[str, tuple[Any, Callable[[Certs], dict[str, Any]]]] = {
    "SSL": ("SSL", lambda c: {}),
    "MTLS": ("MTLS", lambda c: {}),
    "SASL_PLAINTEXT": ("SASL_PLAINTEXT", lambda c: {}),
    "SASL_SSL": ("SASL_SSL", lambda c: {}),
    "SCRAM_512_ONLY": ("SASL_PLAINTEXT", lambda c: {"mechanisms": ["SCRAM-SHA-512"]}),
    "OTHER_HOST": (
        "SSL",
        lambda c: {"server_cert": c.other_host_cert, "server_key": c.other_host_key},
    ),
}


class Clusters:
    """The module's clusters, each started on first use and all stopped at the end."""

    def __init__(self, certs: Certs, directory: Path) -> None:
        self.certs, self.directory = certs, directory
        self.started: dict[str, SecureCluster] = {}

    def __getitem__(self, name: str) -> SecureCluster:
        if name not in self.started:
            mode, options = CLUSTERS[name]
            cluster = SecureCluster(mode, self.certs, self.directory / name, **options(self.certs))
            self.started[name] = cluster.start()
        return self.started[name]

    def stop(self) -> None:
        for cluster in self.started.values():
            cluster.stop()


@pytest.fixture(scope="module")
def clusters(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    started = Clusters(certs, tmp_path_factory.mktemp("secure-clusters"))
    try:
        yield started
    finally:
        started.stop()


async def _round_trip(
    env: dict[str, str], group: bool = False
) -> list[tuple[bytes | None, bytes | None]]:
    """Produce one record and read it back (in a consumer group, committing, when ``group``)."""
    kwargs = load_kafka_security(env).aiokafka_kwargs()
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:8]
    topic = f"secure-{tag}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"value", key=b"session-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"secure-group-{tag}" if group else None,
        auto_offset_reset="earliest",
        **kwargs,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), BOUND_S)
        if group:
            await consumer.commit()
    finally:
        await consumer.stop()
    return [(record.key, record.value)]


ROUND_TRIPS = [
    ("SSL", None),
    ("MTLS", None),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_SSL", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
]


@pytest.mark.parametrize(
    ("name", "mechanism"), ROUND_TRIPS, ids=[f"{n}-{m}" for n, m in ROUND_TRIPS]
)
async def test_a_record_makes_the_round_trip(
    clusters: Clusters, name: str, mechanism: str | None
) -> None:
    cluster = clusters[name]
    env = dict(cluster.env)
    if mechanism is not None:
        env["KAFKA_SASL_MECHANISM"] = mechanism
    security = load_kafka_security(env)
    await asyncio.wait_for(check_connection(cluster.bootstrap, security), BOUND_S)
    assert await _round_trip(env) == [(b"session-1", b"value")], cluster.logs()
    if cluster.front is not None:  # the records went through the SASL front, authenticated
        assert (cluster.username, mechanism, True) in cluster.front.attempts


async def test_a_consumer_group_commits_through_tls_and_sasl(clusters: Clusters) -> None:
    """The group coordinator is reached through the fronts too (joining takes Tansu ~5 s)."""
    cluster = clusters["SASL_SSL"]
    assert await _round_trip(cluster.env, group=True) == [(b"session-1", b"value")]


#: (case, cluster, env changes, settings the reason must name, whether create_conn's own
#: exception always names them: not with mTLS (TLS 1.3), where the server's alert usually
#: reaches aiokafka as a bare connection reset)
FAILURES: list[tuple[str, str, Callable[[Certs], dict[str, str | None]], list[str], bool]] = [
    (
        "wrong CA",
        "SSL",
        lambda c: {"KAFKA_SSL_CA_LOCATION": str(c.other_ca)},
        ["KAFKA_SSL_CA_LOCATION"],
        True,
    ),
    (
        "system CAs only",
        "SSL",
        lambda c: {"KAFKA_SSL_CA_LOCATION": None},
        ["KAFKA_SSL_CA_LOCATION"],
        True,
    ),
    (
        "certificate for another host",
        "OTHER_HOST",
        lambda c: {},
        ["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"],
        True,
    ),
    (
        "no client certificate on mTLS",
        "MTLS",
        lambda c: {
            "KAFKA_SSL_CERTIFICATE_LOCATION": None,
            "KAFKA_SSL_KEY_LOCATION": None,
            "KAFKA_SSL_KEY_PASSWORD": None,
        },
        ["KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"],
        False,
    ),
    (
        "client certificate not for clients on mTLS",
        "MTLS",
        lambda c: {
            "KAFKA_SSL_CERTIFICATE_LOCATION": str(c.other_host_cert),
            "KAFKA_SSL_KEY_LOCATION": str(c.other_host_key),
            "KAFKA_SSL_KEY_PASSWORD": None,
        },
        ["KAFKA_SSL_CERTIFICATE_LOCATION"],
        False,
    ),
    (
        "wrong password, SCRAM-SHA-512",
        "SASL_PLAINTEXT",
        lambda c: {"KAFKA_SASL_PASSWORD": WRONG_PASSWORD},
        ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"],
        True,
    ),
    (
        "wrong password, PLAIN",
        "SASL_PLAINTEXT",
        lambda c: {"KAFKA_SASL_PASSWORD": WRONG_PASSWORD, "KAFKA_SASL_MECHANISM": "PLAIN"},
        ["KAFKA_SASL_PASSWORD"],
        True,
    ),
    (
        "unknown user, SCRAM-SHA-256",
        "SASL_PLAINTEXT",
        lambda c: {"KAFKA_SASL_USERNAME": "nobody", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
        ["KAFKA_SASL_USERNAME"],
        True,
    ),
    (
        "wrong password over TLS",
        "SASL_SSL",
        lambda c: {"KAFKA_SASL_PASSWORD": WRONG_PASSWORD},
        ["KAFKA_SASL_PASSWORD"],
        True,
    ),
    (
        "mechanism not offered",
        "SCRAM_512_ONLY",
        lambda c: {"KAFKA_SASL_MECHANISM": "PLAIN"},
        ["KAFKA_SASL_MECHANISM"],
        True,
    ),
]


def _env(cluster: SecureCluster, changes: dict[str, str | None]) -> dict[str, str]:
    merged: dict[str, str | None] = {**cluster.env, **changes}
    return {name: value for name, value in merged.items() if value is not None}


@pytest.mark.parametrize(
    ("case", "name", "changes", "names", "visible"), FAILURES, ids=[f[0] for f in FAILURES]
)
async def test_a_misconfiguration_fails_fast_and_names_the_setting(
    clusters: Clusters,
    certs: Certs,
    case: str,
    name: str,
    changes: Callable[[Certs], dict[str, str | None]],
    names: list[str],
    visible: bool,
) -> None:
    cluster = clusters[name]
    env = _env(cluster, changes(certs))
    security = load_kafka_security(env)
    secrets = [WRONG_PASSWORD, *cluster.users.values(), certs.client_key_password]

    # aiokafka's start() does not retry: it fails at once, with the cause hidden.
    for client in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        instance = client(bootstrap_servers=cluster.bootstrap, **security.aiokafka_kwargs())
        started = time.monotonic()
        try:
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap") as raised:
                await asyncio.wait_for(instance.start(), BOUND_S)
        finally:
            await instance.close() if client is AIOKafkaAdminClient else await instance.stop()
        assert time.monotonic() - started < 10, f"{client.__name__} took long to fail"
        assert raised.value.__cause__ is None

    # One connection as aiokafka opens it raises the real error ...
    try:
        conn = await asyncio.wait_for(
            create_conn("127.0.0.1", cluster.port, **security.aiokafka_kwargs()), BOUND_S
        )
    except Exception as exc:
        reason = unrecoverable(exc)
    else:
        conn.close()
        pytest.fail(f"{case}: the connection was accepted")
    if visible or reason is not None:
        assert reason is not None, case
        assert all(setting in reason for setting in names), reason
    # else: aiokafka saw only the reset that followed the TLS alert (a race): no hint in it

    # ... and check_connection turns it into a ConfigError naming the setting.
    with pytest.raises(ConfigError) as failed:
        await asyncio.wait_for(check_connection(cluster.bootstrap, security), BOUND_S)
    message = str(failed.value)
    assert all(setting in message for setting in names), message
    assert not any(secret in message for secret in secrets), message


async def test_a_refused_connection_is_transient(certs: Certs) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(certs.ca)}
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncio.wait_for(
            check_connection(f"127.0.0.1:{free_port()}", load_kafka_security(env)), BOUND_S
        )
    assert unrecoverable(refused.value) is None


def test_the_front_refuses_requests_before_authentication(clusters: Clusters) -> None:
    import socket
    import struct

    cluster = clusters["SASL_PLAINTEXT"]
    metadata_v1 = struct.pack(">hhih", 3, 1, 7, -1) + struct.pack(">i", -1)
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(metadata_v1)) + metadata_v1)
        assert sock.recv(4) == b""  # closed, as a SASL listener does


# --- schema registry over TLS with a client certificate and basic auth ------------------------


class _Registry(http.server.BaseHTTPRequestHandler):
    expected_auth = ""

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == self.expected_auth
        body = json.dumps(["bus-events-value"] if ok else {"error_code": 401}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused TLS handshakes are expected here


@contextlib.contextmanager
def _https_registry(certs: Certs, user: str, password: str) -> Iterator[str]:
    """A stand-in registry answering GET /subjects over mTLS, checking basic auth."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(_Registry):
        expected_auth = expected

    server = _QuietServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_registry_client_gets_tls_and_basic_auth(certs: Certs) -> None:
    import httpx
    from schema_registry.client import AsyncSchemaRegistryClient

    with _https_registry(certs, "svc", "registry-secret") as address:
        env = {
            "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs.ca),
            "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(certs.client_cert),
            "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(certs.client_key),
        }
        url, security = load_registry_security(env, f"https://svc:registry-secret@{address}")
        assert url == f"https://{address}"
        client = AsyncSchemaRegistryClient(url=url)
        client.client_kwargs.update(security.client_kwargs())
        assert await client.get_subjects() == ["bus-events-value"]

        # The client's own ca_location is ignored without a client certificate (certifi, or
        # SSL_CERT_FILE, is used instead): the test CA is not trusted that way.
        plain = AsyncSchemaRegistryClient(url=url, ca_location=str(certs.ca))
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await plain.get_subjects()
