"""Secrets and files from the environment: ``<NAME>`` or ``<NAME>_FILE``, checked and never shown."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError

EXAMPLES = {
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


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A secret string: ``repr``/``str`` show ``Secret('***')``; ``reveal()`` gives the value."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class KeyNeedsPasswordError(Exception):
    """Raised by our password callback: OpenSSL must never prompt on a terminal."""


def client_context(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    password: Secret | None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key, password=password_callback(password))
    context.check_hostname = check_hostname
    return context


def password_callback(password: Secret | None) -> Callable[[], str]:
    if password is not None:
        return password.reveal

    def refuse() -> str:
        raise KeyNeedsPasswordError

    return refuse


def raw_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def secret_value(env: Mapping[str, str], name: str) -> Secret | None:
    """NAME or NAME_FILE (one trailing newline stripped); never both."""
    value, path = env.get(name, ""), raw_value(env, f"{name}_FILE")
    example = EXAMPLES[name]
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


def file_value(env: Mapping[str, str], name: str) -> Path | None:
    raw = raw_value(env, name)
    if raw is None:
        return None
    try:
        with open(raw, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(
            f"{name}={raw!r} cannot be read ({exc.strerror}); it must be a PEM file "
            f"(e.g. {name}={EXAMPLES[name]})"
        ) from None
    return Path(raw)


def check_pair(cert_var: str, cert: Path | None, key_var: str, key: Path | None) -> None:
    if (cert is None) != (key is None):
        have, need = (cert_var, key_var) if key is None else (key_var, cert_var)
        raise ConfigError(
            f"{have} is set but {need} is not: a client certificate needs its key "
            f"(e.g. {cert_var}={EXAMPLES[cert_var]} and {key_var}={EXAMPLES[key_var]})"
        )


def check_files(
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
            f"({getattr(exc, 'reason', None) or exc}; e.g. {ca_var}={EXAMPLES[ca_var]})"
        ) from None
    if cert is None:
        return
    try:
        context.load_cert_chain(cert, key, password=password_callback(password))
    except KeyNeedsPasswordError:
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
            f"{message} ({reason}; e.g. {cert_var}={EXAMPLES[cert_var]} "
            f"{key_var}={EXAMPLES[key_var]})"
        ) from None
