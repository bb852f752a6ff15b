"""Kafka's TLS and SASL settings (librdkafka's names) -> options for every client."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.security.secrets import (
    EXAMPLES,
    Secret,
    check_files,
    check_pair,
    client_context,
    file_value,
    raw_value,
    secret_value,
)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Set with a protocol without TLS, these mean someone believes TLS is on (refused).
# KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM is harmless there and allowed.
_SSL_VARS = (
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_SSL_CERTIFICATE_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",
    "KAFKA_SSL_KEY_PASSWORD",
)
_SASL_VARS = ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How to reach the Kafka cluster: protocol, TLS files, SASL mechanism and credentials."""

    protocol: str = "PLAINTEXT"
    ca_location: Path | None = None  # None: the system's CA store
    cert_location: Path | None = None
    key_location: Path | None = None
    key_password: Secret | None = None
    check_hostname: bool = True  # KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=https
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context (as ``aiokafka.helpers.create_ssl_context`` makes); None without TLS."""
        if not self.uses_tls:
            return None
        return client_context(
            self.ca_location,
            self.cert_location,
            self.key_location,
            self.key_password,
            self.check_hostname,
        )

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """For ``AIOKafkaConsumer``/``AIOKafkaProducer``/``AIOKafkaAdminClient``/``create_conn``."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.reveal()
        return kwargs

    def faust_credentials(self) -> Any | None:
        """Faust's ``broker_credentials``: ``SSLCredentials``, ``SASLCredentials`` or None."""
        if self.protocol == "PLAINTEXT":
            return None
        import faust

        context = self.ssl_context()
        if not self.uses_sasl:
            return faust.SSLCredentials(context)
        assert self.sasl_password is not None
        # Faust picks SASL_SSL exactly when it is given an ssl_context.
        return faust.SASLCredentials(
            username=self.sasl_username,
            password=self.sasl_password.reveal(),
            mechanism=self.sasl_mechanism,
            ssl_context=context,
        )

    def describe(self) -> str:
        """One safe line for the log, e.g. ``SASL_SSL, SCRAM-SHA-512 as user 'svc'``."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as user {self.sasl_username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_location}" if self.ca_location else "system CAs")
            if self.cert_location:
                parts.append(f"client certificate {self.cert_location}")
            if not self.check_hostname:
                parts.append("host name check off")
        return ", ".join(parts)

    def warnings(self) -> list[str]:
        """Settings that work but weaken security; the caller logs them."""
        found = []
        if self.protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            found.append(
                "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends "
                "the password in clear text: use SASL_SSL (or SCRAM-SHA-512)"
            )
        if self.uses_tls and not self.check_hostname:
            found.append(
                "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none: any certificate from the "
                "trusted CAs is accepted for any broker host name"
            )
        return found


def load_kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """Read and check the Kafka security settings; a wrong one raises ConfigError naming it."""
    protocol = (raw_value(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={env['KAFKA_SECURITY_PROTOCOL']!r} is not one of "
            f"{', '.join(PROTOCOLS)} (e.g. KAFKA_SECURITY_PROTOCOL=SASL_SSL)"
        )
    security = KafkaSecurity(protocol=protocol)
    if not security.uses_tls:
        _refuse_unused(env, _SSL_VARS, protocol, "TLS", "SSL")
    if not security.uses_sasl:
        _refuse_unused(env, _SASL_VARS, protocol, "SASL", "SASL_SSL")
    algorithm = (raw_value(env, "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM") or "https").lower()
    if algorithm not in ("https", "none"):
        raise ConfigError(
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM="
            f"{env['KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM']!r} must be https (check the "
            "broker's host name) or none (e.g. KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=https)"
        )
    cert = file_value(env, "KAFKA_SSL_CERTIFICATE_LOCATION")
    key = file_value(env, "KAFKA_SSL_KEY_LOCATION")
    check_pair("KAFKA_SSL_CERTIFICATE_LOCATION", cert, "KAFKA_SSL_KEY_LOCATION", key)
    key_password = secret_value(env, "KAFKA_SSL_KEY_PASSWORD")
    if key_password is not None and key is None:
        raise ConfigError(
            "KAFKA_SSL_KEY_PASSWORD is set but KAFKA_SSL_KEY_LOCATION is not "
            "(e.g. KAFKA_SSL_KEY_LOCATION=/etc/kafka/client.key)"
        )
    mechanism = raw_value(env, "KAFKA_SASL_MECHANISM")
    if mechanism is not None and mechanism.upper() not in MECHANISMS:
        raise ConfigError(
            f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(MECHANISMS)} "
            "(e.g. KAFKA_SASL_MECHANISM=SCRAM-SHA-512)"
        )
    username, password = (
        secret_value(env, "KAFKA_SASL_USERNAME"),
        secret_value(env, "KAFKA_SASL_PASSWORD"),
    )
    if security.uses_sasl:
        for name, value, example in (
            ("KAFKA_SASL_MECHANISM", mechanism, "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", username, EXAMPLES["KAFKA_SASL_USERNAME"]),
            ("KAFKA_SASL_PASSWORD", password, "s3cret or KAFKA_SASL_PASSWORD_FILE=/run/..."),
        ):
            if value is None:
                raise ConfigError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs {name} (e.g. {name}={example})"
                )
    security = KafkaSecurity(
        protocol=protocol,
        ca_location=file_value(env, "KAFKA_SSL_CA_LOCATION"),
        cert_location=cert,
        key_location=key,
        key_password=key_password,
        check_hostname=algorithm == "https",
        sasl_mechanism=mechanism.upper() if mechanism else None,
        sasl_username=username.reveal() if username else None,
        sasl_password=password,
    )
    if security.uses_tls:
        check_files(
            "KAFKA_SSL", security.ca_location, cert, key, key_password, "KAFKA_SSL_KEY_PASSWORD"
        )
    return security


def _refuse_unused(
    env: Mapping[str, str], names: tuple[str, ...], protocol: str, what: str, example: str
) -> None:
    for name in names:
        if raw_value(env, name) or raw_value(env, f"{name}_FILE"):
            raise ConfigError(
                f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use {what} "
                f"(e.g. KAFKA_SECURITY_PROTOCOL={example}, or unset {name})"
            )
