"""What the registry's answers and failures mean: its own errors, a proxy's, TLS, transient.

python-schema-registry-client parses every body as JSON and hides statuses (``get_schema``
turns any non-2xx into None), so each answer is screened here before the library reads it.
"""

from __future__ import annotations

import json
import ssl

import httpx
from fastavro.schema import SchemaParseException
from schema_registry.client.errors import ClientError

from streams.errors import causes

__all__ = [
    "AUTH_VARIABLE",
    "CA_VARIABLE",
    "FAILURES",
    "URL_VARIABLE",
    "Answer",
    "Unreadable",
    "answer_text",
    "detail",
    "is_registry_error",
    "screen",
    "server_message",
    "tls_problem",
    "transient",
]

URL_VARIABLE = "SCHEMA_REGISTRY_URL"
AUTH_VARIABLE = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
CA_VARIABLE = "SCHEMA_REGISTRY_SSL_CA_LOCATION"


class Answer(Exception):
    """An HTTP answer the client library must not interpret itself (raised by the hook)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


#: What the client library and httpx raise (the library turns answers of an unexpected shape
#: into ValueError, KeyError, TypeError or AttributeError; fastavro a bad schema into
#: SchemaParseException).
FAILURES = (
    ClientError,
    Answer,
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    SchemaParseException,
)


class Unreadable(Exception):
    """The registry answered with a schema that is not Avro (or not valid)."""


def detail(response: httpx.Response) -> str:
    """``HTTP 503: <the registry's message> (error code 50003)``, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:200]
        return f"HTTP {response.status_code}" + (f": {text}" if text else "")
    if isinstance(body, dict) and "message" in body:
        code = f" (error code {body['error_code']})" if "error_code" in body else ""
        return f"HTTP {response.status_code}: {body['message']}{code}"
    return f"HTTP {response.status_code}: {json.dumps(body)[:200]}"


def is_registry_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error_code" in body


async def screen(response: httpx.Response) -> None:
    """httpx response hook: auth refusals, overload, server errors and foreign 404s raise."""
    status = response.status_code
    if status in (401, 403, 429) or status >= 500:
        await response.aread()
        raise Answer(status, detail(response))
    if status == 404:
        await response.aread()
        if not is_registry_error(response):
            raise Answer(status, f"not a schema registry's answer: {detail(response)}")


def tls_problem(exc: BaseException) -> str | None:
    """What is wrong with TLS to the registry (retrying cannot heal it), or None."""
    for error in causes(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = getattr(error, "verify_message", None) or str(error)
            return (
                f"we do not trust the registry's certificate ({detail}): check {CA_VARIABLE} "
                f"(e.g. {CA_VARIABLE}=/etc/registry/ca.pem) and the host name in {URL_VARIABLE}"
            )
        if isinstance(error, ssl.SSLError):
            reason = str(getattr(error, "reason", None) or error)
            if "WRONG_VERSION_NUMBER" in reason:
                return (
                    f"the registry does not speak TLS on this port ({reason}): check "
                    f"{URL_VARIABLE} (http:// or https://, and the port)"
                )
            if "ALERT" in reason:
                return (
                    f"the registry refused the TLS handshake ({reason}): check "
                    "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION and SCHEMA_REGISTRY_SSL_KEY_LOCATION"
                )
    return None


def transient(exc: BaseException) -> str | None:
    """A short description of a failure worth retrying; None when retrying cannot help."""
    if isinstance(exc, Answer):
        return exc.detail if exc.transient else None
    if isinstance(exc, ClientError):
        code = exc.http_code or 0
        return f"HTTP {code}: {exc}" if code == 429 or code >= 500 else None
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return None
    if isinstance(exc, httpx.TransportError) and tls_problem(exc) is None:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def server_message(exc: ClientError) -> str:
    body = exc.server_traceback
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc)


def answer_text(exc: BaseException) -> str:
    if isinstance(exc, Answer):
        return exc.detail
    if isinstance(exc, ClientError) and exc.http_code is not None:
        return f"HTTP {exc.http_code}: {server_message(exc)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
