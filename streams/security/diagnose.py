"""Why a broker refused us, for the refusals that retrying cannot heal; and the check at start."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiokafka import errors as kafka_errors

from streams.errors import ConfigError, causes
from streams.security.kafka import MECHANISMS, KafkaSecurity

_HOSTNAME_MISMATCH = {62, 63, 64}  # X509_V_ERR_HOSTNAME/EMAIL/IP_ADDRESS_MISMATCH
# Alerts a server sends when it rejects our client certificate (or its absence).
_CLIENT_CERT_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "ACCESS_DENIED")


def unrecoverable(exc: BaseException) -> str | None:
    """For a connection or auth error that retrying cannot heal: what is wrong and which setting
    to check; None for transient errors (refused, reset, timeouts) and anything not recognised.
    """
    for error in causes(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = getattr(error, "verify_message", None) or str(error)
            if (
                getattr(error, "verify_code", None) in _HOSTNAME_MISMATCH
                or "mismatch" in detail.lower()
            ):
                return (
                    f"the broker's certificate is not valid for the host name we connected to "
                    f"({detail}): check KAFKA_BOOTSTRAP_SERVERS and the advertised listeners, "
                    "or (last resort) KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none"
                )
            return (
                f"we do not trust the broker's certificate ({detail}): check "
                "KAFKA_SSL_CA_LOCATION (the PEM bundle of the CA that signed the broker's certificate)"
            )
        if isinstance(error, ssl.SSLError):
            reason = str(getattr(error, "reason", None) or error)
            if "ALERT_" in reason and any(alert in reason for alert in _CLIENT_CERT_ALERTS):
                return (
                    f"the broker refused the TLS handshake ({reason}): it wants a client "
                    "certificate signed by a CA it trusts; check KAFKA_SSL_CERTIFICATE_LOCATION "
                    "and KAFKA_SSL_KEY_LOCATION"
                )
            if "WRONG_VERSION_NUMBER" in reason:
                return (
                    f"the broker does not speak TLS on this port ({reason}): check "
                    "KAFKA_SECURITY_PROTOCOL (e.g. SASL_PLAINTEXT or PLAINTEXT) and the port"
                )
        if isinstance(error, kafka_errors.SaslAuthenticationFailed):
            return (
                f"the broker refused our SASL credentials ({error}): check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD"
            )
        if isinstance(error, kafka_errors.UnsupportedSaslMechanismError):
            return (
                f"the broker does not offer our SASL mechanism ({error}): check "
                f"KAFKA_SASL_MECHANISM (one of {', '.join(MECHANISMS)})"
            )
        if isinstance(
            error,
            kafka_errors.TopicAuthorizationFailedError
            | kafka_errors.GroupAuthorizationFailedError
            | kafka_errors.ClusterAuthorizationFailedError,
        ):
            return (
                f"the broker denied access ({type(error).__name__}): grant ACLs to the principal "
                "of KAFKA_SASL_USERNAME (or of KAFKA_SSL_CERTIFICATE_LOCATION)"
            )
    return None


def _servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    found = []
    for server in bootstrap_servers.replace(";", ",").split(","):
        host, _, port = server.strip().removeprefix("kafka://").rpartition(":")
        if host:
            found.append((host.strip("[]"), int(port)))
    return found


def _listen_for_alert(host: str, port: int, context: ssl.SSLContext, wait: float) -> str | None:
    """Handshake again, write nothing, and read: a TLS 1.3 server that rejects our (missing)
    client certificate says so in an alert right after the handshake."""
    try:
        with (
            socket.create_connection((host, port), timeout=wait) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.recv(1)
    except ssl.SSLError as exc:
        return unrecoverable(exc)
    except OSError:  # timeout (nothing said: accepted) or reset
        return None
    return None


async def check_connection(
    bootstrap_servers: str, security: KafkaSecurity, *, timeout: float = 30.0
) -> None:
    """Connect and authenticate to the first bootstrap server that answers, as aiokafka does.

    aiokafka's ``start()`` hides why it could not connect; this raises ConfigError naming the
    setting when a server refused our TLS or SASL configuration, re-raises the last transient
    error (refused, reset, timeout) when no server answered, and returns when one accepted us.
    """
    from aiokafka.conn import create_conn

    last: BaseException | None = None
    for host, port in _servers(bootstrap_servers):
        kwargs = security.aiokafka_kwargs()
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout * 1000), **kwargs),
                timeout,
            )
        except (OSError, kafka_errors.KafkaError, TimeoutError) as exc:
            reason = unrecoverable(exc)
            if reason is None and security.uses_tls and _reset(exc):
                context = kwargs["ssl_context"]
                wait = min(timeout, 2.0)
                reason = await asyncio.to_thread(_listen_for_alert, host, port, context, wait)
            if reason is not None:
                raise ConfigError(f"cannot connect to Kafka at {host}:{port}: {reason}") from exc
            last = exc
            continue
        await conn.close()  # the future of the transport's end
        return
    if last is None:
        raise ConfigError(
            f"KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers!r} names no host:port "
            "(e.g. KAFKA_BOOTSTRAP_SERVERS=broker1:9092,broker2:9092)"
        )
    raise last


def _reset(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionError | EOFError) for e in causes(exc)) or (
        isinstance(exc, kafka_errors.KafkaConnectionError) and "closed" in str(exc)
    )
