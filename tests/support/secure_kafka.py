"""Secured Kafka clusters for tests: Tansu behind stunnel (TLS, mTLS) and/or the SASL front.

Tansu 0.6 has no usable TLS or SASL of its own, so each mode puts fronts before its plain listener
and makes Tansu advertise the outermost front's port (clients then reach every broker connection
through the fronts):

======================  =======================================================================
mode                    client ─► ... ─► Tansu
======================  =======================================================================
``SSL``                 stunnel (TLS, server certificate from the test CA) ─► Tansu
``MTLS``                stunnel (TLS, client certificate required and checked) ─► Tansu
``SASL_PLAINTEXT``      SASL front (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) ─► Tansu
``SASL_SSL``            stunnel (TLS) ─► SASL front ─► Tansu
======================  =======================================================================

``SecureCluster.env`` holds the variables the job needs to reach it (``env.update(cluster.env)``).
Everything a cluster starts it stops, by PID (processes) or by joining (the front's thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

from streams.ops.broker import EmbeddedBroker
from tests.doubles.sasl_front import MECHANISMS, SaslFront
from tests.support.tls import Certs, Stunnel, free_port

__all__ = ["DEFAULT_USERS", "MODES", "Mode", "SecureCluster"]

Mode = Literal["SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL"]
MODES: tuple[Mode, ...] = ("SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL")

#: The SASL users every cluster accepts, unless told otherwise.
DEFAULT_USERS: Mapping[str, str] = {"svc": "svc-secret-1", "other": "other-secret-2"}


class SecureCluster:
    """One Tansu broker reachable only through the fronts of ``mode`` (see the module docstring).

    ``mechanism`` is the one put into ``env``; the front offers ``mechanisms``. ``server_cert`` and
    ``server_key`` replace the TLS server's certificate (e.g. one for another host name).
    """

    def __init__(
        self,
        mode: Mode,
        certs: Certs,
        directory: Path,
        *,
        users: Mapping[str, str] = DEFAULT_USERS,
        mechanisms: Iterable[str] = MECHANISMS,
        mechanism: str = "SCRAM-SHA-512",
        server_cert: Path | None = None,
        server_key: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode: Mode = mode
        self.certs = certs
        self.directory = directory
        self.users = dict(users)
        self.mechanisms = tuple(mechanisms)
        self.mechanism = mechanism
        self.server_cert = server_cert or certs.server_cert
        self.server_key = server_key or certs.server_key
        self.tansu: EmbeddedBroker | None = None
        self.stunnel: Stunnel | None = None
        self.front: SaslFront | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def uses_tls(self) -> bool:
        return self.mode in ("SSL", "MTLS", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.mode in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def username(self) -> str:
        return next(iter(self.users))

    @property
    def env(self) -> dict[str, str]:
        """What the job needs to reach this cluster: bootstrap, protocol, CA, client cert, SASL."""
        protocol = "SSL" if self.mode == "MTLS" else self.mode
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_SECURITY_PROTOCOL": protocol}
        if self.uses_tls:
            env["KAFKA_SSL_CA_LOCATION"] = str(self.certs.ca)
        if self.mode == "MTLS":
            env["KAFKA_SSL_CERTIFICATE_LOCATION"] = str(self.certs.client_cert)
            env["KAFKA_SSL_KEY_LOCATION"] = str(self.certs.client_key_encrypted)
            env["KAFKA_SSL_KEY_PASSWORD"] = self.certs.client_key_password
        if self.uses_sasl:
            env["KAFKA_SASL_MECHANISM"] = self.mechanism
            env["KAFKA_SASL_USERNAME"] = self.username
            env["KAFKA_SASL_PASSWORD"] = self.users[self.username]
        return env

    def start(self) -> SecureCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        broker_port = free_port()
        tls_port = free_port() if self.uses_tls else 0
        if self.uses_sasl:
            self.front = SaslFront(
                ("127.0.0.1", broker_port), self.users, mechanisms=self.mechanisms
            ).start()
        self.port = tls_port or (self.front.port if self.front else broker_port)
        self.tansu = EmbeddedBroker(
            broker_port, self.directory / "tansu.log", advertised_port=self.port
        ).start()
        if self.uses_tls:
            behind = self.front.port if self.front else broker_port
            self.stunnel = Stunnel(self.directory / "stunnel").start(
                tls_port,
                behind,
                self.server_cert,
                self.server_key,
                ca=self.certs.ca,
                require_client_cert=self.mode == "MTLS",
            )

    def stop(self) -> None:
        """Stop whatever was started, outermost first."""
        stunnel, front, tansu = self.stunnel, self.front, self.tansu
        self.stunnel = self.front = self.tansu = None
        try:
            if stunnel is not None:
                stunnel.stop()
            if front is not None:
                front.stop()
        finally:
            if tansu is not None:
                tansu.stop()

    def logs(self) -> str:
        """The broker's and stunnel's logs, for assertion messages."""
        parts = []
        for path in (self.directory / "tansu.log", self.directory / "stunnel" / "stunnel.log"):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> SecureCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
