"""The schema registry's basic auth and TLS settings -> options for its httpx client."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from streams.errors import ConfigError
from streams.security.masking import mask_url
from streams.security.secrets import (
    Secret,
    check_files,
    check_pair,
    client_context,
    file_value,
    secret_value,
)


@dataclass(frozen=True, slots=True)
class RegistrySecurity:
    """Basic auth and TLS files for the schema registry."""

    #: Not shown: with user info that is a token alone (``https://TOKEN@host``) it is the secret.
    username: str | None = field(default=None, repr=False)
    password: Secret | None = None
    ca_location: Path | None = None
    cert_location: Path | None = None
    key_location: Path | None = None
    plain_http: bool = False  # the URL is http://

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context when a CA or client certificate is set; None: httpx's default trust."""
        if self.ca_location is None and self.cert_location is None:
            return None
        return client_context(self.ca_location, self.cert_location, self.key_location, None)

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
        if self.username and self.password is not None and self.password.reveal():
            parts = [f"basic auth as {self.username!r}"]
        else:
            parts = ["basic auth with a token (not shown)" if self.username else "no auth"]
        if self.ca_location:
            parts.append(f"CA {self.ca_location}")
        if self.cert_location:
            parts.append(f"client certificate {self.cert_location}")
        return ", ".join(parts)

    def secrets(self) -> list[str]:
        """The values never to show: the password, or a user name that is a token alone."""
        if self.password is not None and self.password.reveal():
            return [self.password.reveal()]
        return [self.username] if self.username else []

    def warnings(self) -> list[str]:
        if self.plain_http and self.password is not None:
            return ["SCHEMA_REGISTRY_URL is http://: the basic-auth password travels in clear"]
        return []


def load_registry_security(
    env: Mapping[str, str], url: str | None
) -> tuple[str | None, RegistrySecurity]:
    """The registry URL without user info, and its auth/TLS settings (checked like Kafka's)."""
    user_info = secret_value(env, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
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
        plain_http = parts.scheme.lower() == "http"
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
    cert = file_value(env, "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION")
    key = file_value(env, "SCHEMA_REGISTRY_SSL_KEY_LOCATION")
    check_pair(
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", cert, "SCHEMA_REGISTRY_SSL_KEY_LOCATION", key
    )
    security = RegistrySecurity(
        username=username,
        password=password,
        ca_location=file_value(env, "SCHEMA_REGISTRY_SSL_CA_LOCATION"),
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
        check_files("SCHEMA_REGISTRY_SSL", security.ca_location, cert, key, None, None)
    return url, security
