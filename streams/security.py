"""Kafka and schema-registry security settings: parsed from an env mapping, built for the clients.

Variables use the librdkafka/Confluent names (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SSL_*``,
``KAFKA_SASL_*``, ``SCHEMA_REGISTRY_*``); every secret may also come from ``<NAME>_FILE``. Secrets
are held as :class:`Secret` and never appear in a ``repr``, a log line or an error message.

How aiokafka 0.14 fails (measured against Tansu behind stunnel and the SASL test front)
-------------------------------------------------------------------------------------
``AIOKafkaProducer.start()``, ``AIOKafkaConsumer.start()`` and ``AIOKafkaAdminClient.start()``
try each bootstrap server once and do **not** retry or hang: within milliseconds they raise
``KafkaConnectionError("Unable to bootstrap from [...]")`` with no ``__cause__``, for every failure
alike (wrong CA, missing client certificate, wrong password, mechanism not offered, and also a
plain "connection refused"). A Faust worker then exits with status 1 within ~2 s. The real error
is only logged (logger ``aiokafka``, ERROR, ``Unable connect to "host:port": <exc>``). So
``unrecoverable()`` of what ``start()`` raises is ``None``; to learn *why*, call
:func:`check_connection` first: it opens one connection the way aiokafka does
(``aiokafka.conn.create_conn``), which raises the real exception:

==============================  ===========================================================
failure                         what ``create_conn`` raises
==============================  ===========================================================
broker cert not from our CA     ``ssl.SSLCertVerificationError`` (verify_code 19/20/21)
broker cert for another host    ``ssl.SSLCertVerificationError`` (verify_code 62/64)
mTLS, no or unfit client        usually ``KafkaConnectionError("Connection at ... closed")``
cert (TLS 1.3)                  from ``ConnectionResetError`` (the server's alert is lost to
                                the reset; now and then the ``ssl.SSLError`` alert itself),
                                so ``check_connection`` repeats the handshake, writes
                                nothing and reads the alert (``ssl.SSLError``
                                ``TLSV13_ALERT_CERTIFICATE_REQUIRED`` /
                                ``SSLV3_ALERT_UNSUPPORTED_CERTIFICATE``)
mTLS, no client cert, TLS 1.2   ``ssl.SSLError`` ``SSLV3_ALERT_HANDSHAKE_FAILURE``
wrong SASL user or password     ``aiokafka.errors.SaslAuthenticationFailed`` (code 58)
SASL mechanism not offered      ``aiokafka.errors.UnsupportedSaslMechanismError`` (code 33;
                                its message is the connection's repr, not the mechanisms)
connection refused              ``ConnectionRefusedError`` (transient)
TLS client, plaintext port      nothing until ``request_timeout_ms`` (40 s by default), then
                                ``TimeoutError`` (transient: indistinguishable)
==============================  ===========================================================
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from aiokafka import errors as kafka_errors

from streams.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "PROTOCOLS",
    "KafkaSecurity",
    "RegistrySecurity",
    "Secret",
    "check_connection",
    "load_kafka_security",
    "load_registry_security",
    "mask_url",
    "unrecoverable",
]

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
_EXAMPLES = {
    "KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.pem",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/kafka/client.pem",
    "KAFKA_SSL_KEY_LOCATION": "/etc/kafka/client.key",
    "KAFKA_SSL_KEY_PASSWORD": "changeit",
    "KAFKA_SASL_USERNAME": "escalation-stream",
    "KAFKA_SASL_PASSWORD": "s3cret",
    "SCHEMA_REGISTRY_SSL_CA_LOCATION": "/etc/registry/ca.pem",
    "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": "/etc/registry/client.pem",
    "SCHEMA_REGISTRY_SSL_KEY_LOCATION": "/etc/registry/client.key",
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "escalation-stream:s3cret",
}
_HOSTNAME_MISMATCH = {62, 63, 64}  # X509_V_ERR_HOSTNAME/EMAIL/IP_ADDRESS_MISMATCH
# Alerts a server sends when it rejects our client certificate (or its absence).
_CLIENT_CERT_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "ACCESS_DENIED")


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A secret string: ``repr``/``str`` show ``Secret('***')``; ``reveal()`` gives the value."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class _KeyNeedsPasswordError(Exception):
    """Raised by our password callback: OpenSSL must never prompt on a terminal."""


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
        return _client_context(
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


@dataclass(frozen=True, slots=True)
class RegistrySecurity:
    """Basic auth and TLS files for the schema registry."""

    username: str | None = None
    password: Secret | None = None
    ca_location: Path | None = None
    cert_location: Path | None = None
    key_location: Path | None = None
    plain_http: bool = False  # the URL is http://

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context when a CA or client certificate is set; None: httpx's default trust."""
        if self.ca_location is None and self.cert_location is None:
            return None
        return _client_context(self.ca_location, self.cert_location, self.key_location, None)

    def client_kwargs(self) -> dict[str, Any]:
        """httpx client options for ``AsyncSchemaRegistryClient``: ``auth`` and maybe ``verify``.

        Its constructor has no ``verify`` parameter and uses ``ca_location`` only together with
        ``cert_location`` (and lets ``SSL_CERT_FILE`` override it), so apply these to the dict it
        hands to every ``httpx.AsyncClient``::

            client = AsyncSchemaRegistryClient(url=url)
            client.client_kwargs.update(security.client_kwargs())

        ``auth`` is None without credentials (the client would send an empty Basic header).
        """
        import httpx

        kwargs: dict[str, Any] = {"auth": None}
        if self.username is not None and self.password is not None:
            kwargs["auth"] = httpx.BasicAuth(self.username, self.password.reveal())
        context = self.ssl_context()
        if context is not None:
            kwargs["verify"] = context
        return kwargs

    def describe(self) -> str:
        parts = [f"basic auth as {self.username!r}" if self.username else "no auth"]
        if self.ca_location:
            parts.append(f"CA {self.ca_location}")
        if self.cert_location:
            parts.append(f"client certificate {self.cert_location}")
        return ", ".join(parts)

    def warnings(self) -> list[str]:
        if self.plain_http and self.password is not None:
            return ["SCHEMA_REGISTRY_URL is http://: the basic-auth password travels in clear"]
        return []


def _client_context(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    password: Secret | None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key, password=_password_callback(password))
    context.check_hostname = check_hostname
    return context


def _password_callback(password: Secret | None) -> Callable[[], str]:
    if password is not None:
        return password.reveal

    def refuse() -> str:
        raise _KeyNeedsPasswordError

    return refuse


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    """NAME or NAME_FILE (one trailing newline stripped); never both."""
    value, path = env.get(name, ""), _raw(env, f"{name}_FILE")
    example = _EXAMPLES[name]
    if value and path:
        raise ConfigError(
            f"{name} and {name}_FILE are both set: set one of them "
            f"(e.g. {name}_FILE=/run/secrets/{name.lower()})"
        )
    if path is None:
        return Secret(value) if value else None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{name}_FILE={path!r} cannot be read ({reason}); it must name a file holding "
            f"the value (e.g. {name}_FILE=/run/secrets/{name.lower()} containing {example})"
        ) from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise ConfigError(f"{name}_FILE={path!r} is empty (it should hold e.g. {example})")
    return Secret(text)


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = _raw(env, name)
    if raw is None:
        return None
    try:
        with open(raw, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(
            f"{name}={raw!r} cannot be read ({exc.strerror}); it must be a PEM file "
            f"(e.g. {name}={_EXAMPLES[name]})"
        ) from None
    return Path(raw)


def _pair(cert_var: str, cert: Path | None, key_var: str, key: Path | None) -> None:
    if (cert is None) != (key is None):
        have, need = (cert_var, key_var) if key is None else (key_var, cert_var)
        raise ConfigError(
            f"{have} is set but {need} is not: a client certificate needs its key "
            f"(e.g. {cert_var}={_EXAMPLES[cert_var]} and {key_var}={_EXAMPLES[key_var]})"
        )


def _check_files(
    prefix: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    password: Secret | None,
    password_var: str | None,
) -> None:
    """Load the TLS files once, so a bad file or password stops the start, not the first call."""
    ca_var, cert_var, key_var = (f"{prefix}_{n}_LOCATION" for n in ("CA", "CERTIFICATE", "KEY"))
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{ca_var}={str(ca)!r} is not a PEM bundle of CA certificates "
            f"({getattr(exc, 'reason', None) or exc}; e.g. {ca_var}={_EXAMPLES[ca_var]})"
        ) from None
    if cert is None:
        return
    try:
        context.load_cert_chain(cert, key, password=_password_callback(password))
    except _KeyNeedsPasswordError:
        fix = (
            f"set {password_var} (e.g. {password_var}_FILE=/run/secrets/key-password)"
            if password_var
            else f"decrypt it (e.g. openssl pkey -in {key} -out client.key)"
        )
        raise ConfigError(f"{key_var}={str(key)!r} holds an encrypted key: {fix}") from None
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", None) or exc)
        if "KEY_VALUES_MISMATCH" in reason:
            message = f"{key_var}={str(key)!r} is not the key of {cert_var}={str(cert)!r}"
        elif password is not None:
            message = (
                f"{password_var} does not decrypt {key_var}={str(key)!r}, or {cert_var}/"
                f"{key_var} are not a PEM certificate and key"
            )
        else:
            message = (
                f"{cert_var}={str(cert)!r}/{key_var}={str(key)!r} are not a PEM certificate and key"
            )
        raise ConfigError(
            f"{message} ({reason}; e.g. {cert_var}={_EXAMPLES[cert_var]} "
            f"{key_var}={_EXAMPLES[key_var]})"
        ) from None


def load_kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """Read and check the Kafka security settings; a wrong one raises ConfigError naming it."""
    protocol = (_raw(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
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
    algorithm = (_raw(env, "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM") or "https").lower()
    if algorithm not in ("https", "none"):
        raise ConfigError(
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM="
            f"{env['KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM']!r} must be https (check the "
            "broker's host name) or none (e.g. KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=https)"
        )
    cert = _file(env, "KAFKA_SSL_CERTIFICATE_LOCATION")
    key = _file(env, "KAFKA_SSL_KEY_LOCATION")
    _pair("KAFKA_SSL_CERTIFICATE_LOCATION", cert, "KAFKA_SSL_KEY_LOCATION", key)
    key_password = _secret(env, "KAFKA_SSL_KEY_PASSWORD")
    if key_password is not None and key is None:
        raise ConfigError(
            "KAFKA_SSL_KEY_PASSWORD is set but KAFKA_SSL_KEY_LOCATION is not "
            "(e.g. KAFKA_SSL_KEY_LOCATION=/etc/kafka/client.key)"
        )
    mechanism = _raw(env, "KAFKA_SASL_MECHANISM")
    if mechanism is not None and mechanism.upper() not in MECHANISMS:
        raise ConfigError(
            f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(MECHANISMS)} "
            "(e.g. KAFKA_SASL_MECHANISM=SCRAM-SHA-512)"
        )
    username, password = _secret(env, "KAFKA_SASL_USERNAME"), _secret(env, "KAFKA_SASL_PASSWORD")
    if security.uses_sasl:
        for name, value, example in (
            ("KAFKA_SASL_MECHANISM", mechanism, "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", username, _EXAMPLES["KAFKA_SASL_USERNAME"]),
            ("KAFKA_SASL_PASSWORD", password, "s3cret or KAFKA_SASL_PASSWORD_FILE=/run/..."),
        ):
            if value is None:
                raise ConfigError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs {name} (e.g. {name}={example})"
                )
    security = KafkaSecurity(
        protocol=protocol,
        ca_location=_file(env, "KAFKA_SSL_CA_LOCATION"),
        cert_location=cert,
        key_location=key,
        key_password=key_password,
        check_hostname=algorithm == "https",
        sasl_mechanism=mechanism.upper() if mechanism else None,
        sasl_username=username.reveal() if username else None,
        sasl_password=password,
    )
    if security.uses_tls:
        _check_files(
            "KAFKA_SSL", security.ca_location, cert, key, key_password, "KAFKA_SSL_KEY_PASSWORD"
        )
    return security


def _refuse_unused(
    env: Mapping[str, str], names: tuple[str, ...], protocol: str, what: str, example: str
) -> None:
    for name in names:
        if _raw(env, name) or _raw(env, f"{name}_FILE"):
            raise ConfigError(
                f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use {what} "
                f"(e.g. KAFKA_SECURITY_PROTOCOL={example}, or unset {name})"
            )


def load_registry_security(
    env: Mapping[str, str], url: str | None
) -> tuple[str | None, RegistrySecurity]:
    """The registry URL without user info, and its auth/TLS settings (checked like Kafka's)."""
    user_info = _secret(env, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
    username: str | None = None
    password: Secret | None = None
    if user_info is not None:
        username, colon, pw = user_info.reveal().partition(":")
        if not colon or not username:
            raise ConfigError(
                "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password "
                "(e.g. SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=escalation-stream:s3cret)"
            )
        password = Secret(pw)
    plain_http = False
    if url is not None:
        parts = urlsplit(url)
        plain_http = parts.scheme == "http"
        if "@" in parts.netloc:
            if user_info is not None:
                raise ConfigError(
                    f"SCHEMA_REGISTRY_URL={mask_url(url)!r} holds user info and "
                    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set too: set the credentials once "
                    "(e.g. SCHEMA_REGISTRY_URL=https://registry:8081)"
                )
            userinfo, _, host = parts.netloc.rpartition("@")
            name, _, pw = userinfo.partition(":")
            username, password = unquote(name), Secret(unquote(pw))
            url = urlunsplit(parts._replace(netloc=host))
    cert = _file(env, "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION")
    key = _file(env, "SCHEMA_REGISTRY_SSL_KEY_LOCATION")
    _pair("SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", cert, "SCHEMA_REGISTRY_SSL_KEY_LOCATION", key)
    security = RegistrySecurity(
        username=username,
        password=password,
        ca_location=_file(env, "SCHEMA_REGISTRY_SSL_CA_LOCATION"),
        cert_location=cert,
        key_location=key,
        plain_http=plain_http,
    )
    if plain_http and (security.ca_location or cert):
        raise ConfigError(
            "SCHEMA_REGISTRY_SSL_* files are set but SCHEMA_REGISTRY_URL is http:// "
            "(e.g. SCHEMA_REGISTRY_URL=https://registry:8081)"
        )
    if security.ca_location or cert:
        _check_files("SCHEMA_REGISTRY_SSL", security.ca_location, cert, key, None, None)
    return url, security


def mask_url(url: str) -> str:
    """``https://user:pass@host`` → ``https://user:***@host``; other URLs unchanged."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unrecoverable(exc: BaseException) -> str | None:
    """For a connection or auth error that retrying cannot heal: what is wrong and which setting
    to check; None for transient errors (refused, reset, timeouts) and anything not recognised.
    """
    for error in _chain(exc):
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
    return any(isinstance(e, ConnectionError | EOFError) for e in _chain(exc)) or (
        isinstance(exc, kafka_errors.KafkaConnectionError) and "closed" in str(exc)
    )
