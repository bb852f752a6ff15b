"""Schema ids: a real registry over HTTP, or the committed id file in ``schemas/``.

:class:`HttpRegistry` talks to a Confluent-compatible registry through
python-schema-registry-client, and every error of that client (httpx's included) leaves this
module as :class:`~streams.errors.RegistryError` (or ContractError), ``from`` the original:

- ``id_for`` looks our schema up first (``POST /subjects/{subject}``): a schema the subject
  already holds is used whatever its latest version is (a producer may have evolved it). Only a
  schema the subject does not hold yet is tested against its latest version
  (``POST /compatibility/subjects/{subject}/versions/latest``) and then registered; one the
  registry calls incompatible is refused with ContractError naming the subject and the
  registry's messages.
- Transient failures (connection errors, timeouts, HTTP 5xx and 429) are retried with backoff
  (0.2 s doubling to 5 s). ``id_for`` (at start) retries for ``startup_timeout_s``, then raises
  RegistryError naming SCHEMA_REGISTRY_URL. ``fetch`` (the decode path) retries for as long as
  it takes: the batch in hand waits, nothing is dead-lettered or committed for it, and the
  worker's ``/healthz`` turns 503 once the batch outlasts ESCALATIONS_STALL_TIMEOUT. The first
  failure is logged, then at most every ``log_every_s`` with a count; the logs name the URL
  (password masked) and what was asked (the schema id).
- HTTP 401/403 are never retried: RegistryError naming SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO.
  A certificate we do not trust: RegistryError naming SCHEMA_REGISTRY_SSL_CA_LOCATION.
- A 404 for an id (Confluent's error body) is an unknown id: ``fetch`` returns None, and the
  record is dead-lettered (UnknownSchemaIdError).

The client library interprets status codes per call (``get_schema`` turns a 500 into None, most
calls parse any body as JSON), so a response hook screens every answer first: 401/403, 429 and
5xx, and a 404 that is not a registry's, never reach the library's own handling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from fastavro.schema import SchemaParseException
from schema_registry.client.errors import ClientError

from streams.contracts.answers import (
    AUTH_VARIABLE,
    FAILURES,
    URL_VARIABLE,
    Answer,
    Unreadable,
    answer_text,
    screen,
    server_message,
    tls_problem,
    transient,
)
from streams.contracts.schemas import SchemaStore
from streams.errors import ContractError, EscalationsError, RegistryError
from streams.security import mask_url

__all__ = ["ClientSecurity", "HttpRegistry", "IdFile", "SchemaIds", "open_ids"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SchemaIds(Protocol):
    """Where wire-format schema ids come from."""

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema with this id, or None when the source does not know it."""

    async def id_for(self, name: str, subject: str) -> int:
        """The id to write the current schema ``name`` with, registering it if needed."""

    def known(self) -> dict[int, dict[str, Any]]:
        """Writer schemas known without asking anyone (the codec starts with them)."""


class ClientSecurity(Protocol):
    """Auth and TLS for the registry's httpx client (``streams.security.RegistrySecurity``)."""

    def client_kwargs(self) -> dict[str, Any]:
        """``httpx.AsyncClient`` options: ``auth`` (None: none) and maybe ``verify``."""


class IdFile:
    """The ids committed in ``schemas/ids.json`` (no registry configured)."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store
        self._by_id = store.by_id()

    def known(self) -> dict[int, dict[str, Any]]:
        return dict(self._by_id)

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        return self._by_id.get(schema_id)

    async def id_for(self, name: str, subject: str) -> int:
        return self.store.current_id(name)


class HttpRegistry:
    """A Confluent-compatible schema registry, through python-schema-registry-client.

    ``security`` supplies the httpx client's ``auth`` and ``verify`` (an ``ssl.SSLContext``);
    ``sleep`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        url: str,
        store: SchemaStore,
        *,
        security: ClientSecurity | None = None,
        startup_timeout_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.2, 5.0),
        log_every_s: float = 10.0,
        request_timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from schema_registry.client import AsyncSchemaRegistryClient

        self.url = url
        self.masked_url = mask_url(url)
        self.store = store
        self.startup_timeout_s = startup_timeout_s
        self.backoff_s = backoff_s
        self.log_every_s = log_every_s
        self.request_timeout_s = request_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._failures = 0
        self._logged_at = 0.0
        try:
            self._client = AsyncSchemaRegistryClient(
                url=url, timeout=httpx.Timeout(request_timeout_s)
            )
        except (AssertionError, ValueError) as exc:  # the library asserts the URL's scheme
            raise RegistryError(
                f"{URL_VARIABLE}={self.masked_url!r} is not a registry URL: {exc} "
                f"(e.g. {URL_VARIABLE}=https://schema-registry:8081)"
            ) from exc
        # Every request makes a new httpx.AsyncClient from this dict (~20 ms each with a fresh
        # SSL context). Without credentials the library would send an empty Basic header; user
        # info in the URL it turns into auth itself.
        options: dict[str, Any] = self._client.client_kwargs
        if security is not None:
            options.update(security.client_kwargs())
        elif "@" not in urlsplit(url).netloc:
            options["auth"] = None
        if "verify" not in options:  # built once: httpx would load the CA bundle per request
            options["verify"] = httpx.create_ssl_context()
        hooks: dict[str, list[Any]] = options.setdefault("event_hooks", {})
        hooks.setdefault("response", []).append(screen)

    def known(self) -> dict[int, dict[str, Any]]:
        return {}  # every writer schema is fetched by id, then cached by the codec

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema with this id (None: the registry does not know it, or it is not
        an Avro schema: the record is then dead-lettered, not the worker stopped).

        Waits for as long as the registry is unreachable or overloaded.
        """

        async def get(timeout: float) -> Any:
            try:
                return await self._client.get_by_id(schema_id, timeout=timeout)
            except json.JSONDecodeError:
                raise  # the answer is not JSON: the registry's (or a proxy's) fault
            except (ValueError, SchemaParseException) as exc:  # e.g. a PROTOBUF schema
                raise Unreadable(str(exc)) from exc

        found: Any = None
        problem: str | None = None
        try:
            found = await self._ask(f"fetching schema id {schema_id}", get, deadline=None)
        except Unreadable as exc:
            problem = str(exc)
        if found is not None and getattr(found, "schema_type", "AVRO") != "AVRO":
            found, problem = None, f"a {found.schema_type} schema"
        if problem is not None:
            log.warning(
                "schema id %s at %s is not an Avro schema this job reads (%s): unknown id",
                schema_id,
                self.masked_url,
                problem,
            )
        if found is None:
            return None
        raw = found.raw_schema
        return json.loads(raw) if isinstance(raw, str) else dict(raw)

    async def id_for(self, name: str, subject: str) -> int:
        """Our current schema's id in ``subject``: looked up first, else registered.

        Refuses (ContractError) a schema the subject does not hold when the registry calls it
        incompatible with the subject's latest version.
        """
        schema = self.store.current(name)
        deadline = self._clock() + self.startup_timeout_s
        found = await self._ask(
            f"looking up {name} in subject {subject!r}",
            lambda timeout: self._client.check_version(subject, schema, timeout=timeout),
            deadline,
        )
        if found is not None:
            log.info(
                "schema %s is id %s (version %s of subject %s) at %s",
                name,
                found.schema_id,
                found.version,
                subject,
                self.masked_url,
            )
            return int(found.schema_id)
        verdict = await self._ask(
            f"testing {name} against the latest version of subject {subject!r}",
            lambda timeout: self._client.test_compatibility(
                subject, schema, verbose=True, timeout=timeout
            ),
            deadline,
        )
        # False: the subject has no version to test against (404), or the schema is invalid
        # (422, which registering reports again with the registry's reason).
        if isinstance(verdict, dict) and not verdict.get("is_compatible", False):
            messages = "; ".join(str(m) for m in verdict.get("messages") or []) or "no details"
            raise ContractError(
                f"subject {subject!r} at {self.masked_url}: schemas/{name}.avsc is not "
                f"registered there and the registry calls it incompatible with the subject's "
                f"latest version: {messages}; refusing it"
            )
        schema_id = await self._ask(
            f"registering {name} in subject {subject!r}",
            lambda timeout: self._client.register(subject, schema, timeout=timeout),
            deadline,
        )
        log.info(
            "registered %s as id %s in subject %s at %s", name, schema_id, subject, self.masked_url
        )
        return int(schema_id)

    async def _ask(
        self, what: str, call: Callable[[float], Awaitable[T]], deadline: float | None
    ) -> T:
        """``call(timeout)``, retried with backoff while it fails transiently (until
        ``deadline``, or for good when None); anything else leaves wrapped."""
        delay, cap = self.backoff_s
        attempts = 0
        while True:
            timeout = self.request_timeout_s
            if deadline is not None:
                timeout = max(0.1, min(timeout, deadline - self._clock()))
            attempts += 1
            try:
                result = await call(timeout)
            except FAILURES as exc:
                problem = transient(exc)
                if problem is None:
                    raise self._refusal(what, exc) from exc
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    self._failing_since, self._failures = None, 0
                    raise RegistryError(
                        f"{URL_VARIABLE}={self.masked_url}: the schema registry did not answer "
                        f"within {self.startup_timeout_s:g}s ({what}: {attempts} attempts, the "
                        f"last: {problem}); check {URL_VARIABLE} and that the registry is up "
                        f"(e.g. {URL_VARIABLE}=http://schema-registry:8081)"
                    ) from exc
                self._failed(what, problem)
                await self._sleep(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 2, cap)
            else:
                self._answered()
                return result

    def _refusal(self, what: str, exc: BaseException) -> EscalationsError:
        """The error for a failure retrying cannot heal."""
        status = exc.status if isinstance(exc, Answer) else None
        if isinstance(exc, ClientError) and exc.http_code in (401, 403, 409, 422):
            status = exc.http_code
        if status == 401:
            return RegistryError(
                f"{URL_VARIABLE}={self.masked_url}: the registry refused our credentials "
                f"({answer_text(exc)}) {what}: check {AUTH_VARIABLE} "
                f"(e.g. {AUTH_VARIABLE}=escalation-stream:s3cret)"
            )
        if status == 403:
            return RegistryError(
                f"{URL_VARIABLE}={self.masked_url}: the registry denied access "
                f"({answer_text(exc)}) {what}: check the user in {AUTH_VARIABLE} and its "
                "permissions"
            )
        if status in (409, 422) and isinstance(exc, ClientError):
            verdict = "incompatible" if status == 409 else "invalid"
            return ContractError(
                f"{self.masked_url} refused {what} as {verdict} (HTTP {status}: "
                f"{server_message(exc)})"
            )
        problem = tls_problem(exc)
        if problem is not None:
            return RegistryError(f"{URL_VARIABLE}={self.masked_url}: {what}: {problem}")
        return RegistryError(f"{URL_VARIABLE}={self.masked_url}: {what} failed: {answer_text(exc)}")

    def _failed(self, what: str, problem: str) -> None:
        now = self._clock()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._logged_at = now
            log.warning(
                "schema registry %s: %s failed (%s); retrying with backoff",
                self.masked_url,
                what,
                problem,
            )
        elif now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            log.warning(
                "schema registry %s still failing after %.0fs (%d failed attempts): %s: %s",
                self.masked_url,
                now - self._failing_since,
                self._failures,
                what,
                problem,
            )

    def _answered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "schema registry %s answers again after %.1fs (%d failed attempts)",
                self.masked_url,
                self._clock() - self._failing_since,
                self._failures,
            )
        self._failing_since = None
        self._failures = 0


def open_ids(
    url: str | None,
    store: SchemaStore | None = None,
    *,
    security: ClientSecurity | None = None,
    startup_timeout_s: float = 60.0,
) -> IdFile | HttpRegistry:
    """The registry at ``url``, or the committed id file when no registry is configured."""
    store = store or SchemaStore()
    if not url:
        return IdFile(store)
    return HttpRegistry(url, store, security=security, startup_timeout_s=startup_timeout_s)
