"""Schema ids: a real registry over HTTP, or the committed id file in ``schemas/``.

:class:`HttpRegistry` talks to a Confluent-compatible registry through
python-schema-registry-client, and every error of that client (httpx's included) leaves this
module as :class:`~streams.errors.RegistryError` (or ContractError), ``from`` the original:

- ``check`` looks our schema up (``POST /subjects/{subject}``): a schema the subject already
  holds is used whatever its latest version is (a producer may have evolved it). A schema the
  subject does not hold yet is tested for compatibility (``streams.contracts.compatibility``:
  the latest version, and each version under a ``*_TRANSITIVE`` level). ``id_for`` is
  ``check``, then registering what is not there; a schema the registry calls incompatible is
  refused with ContractError naming the subject, the level, the versions that fail and the
  registry's messages.
- Transient failures (connection errors, timeouts, HTTP 5xx and 429) are retried with backoff
  (0.2 s doubling to 5 s; ``streams.contracts.client``). ``id_for`` (at start) retries for
  ``startup_timeout_s``, then raises RegistryError naming SCHEMA_REGISTRY_URL. ``fetch`` (the
  decode path) retries for as long as it takes: the batch in hand waits, nothing is
  dead-lettered or committed for it, and the worker's ``/healthz`` turns 503 once the batch
  outlasts ESCALATIONS_STALL_TIMEOUT, its reason saying what the registry answered. The first
  failure is logged, then at most every ``log_every_s`` with a count; the logs name the URL
  (password masked) and what was asked (the schema id).
- HTTP 401/403 are never retried: RegistryError naming SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO.
  A certificate we do not trust: RegistryError naming SCHEMA_REGISTRY_SSL_CA_LOCATION.
- A 404 for an id (Confluent's error body) is most likely a registry that is behind, not a
  wrong id: one that has just started serves HTTP before it has read its schemas topic (404 for
  ids it has, ~6 s for Karapace), a follower behind a load balancer lags its leader. So
  ``fetch`` asks again with backoff for ``unknown_id_grace_s``
  (ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE) from the first 404 for that id, the batch waiting and ``waiting()`` saying why (the
  worker's ``/healthz`` shows it); only then it returns None and the record is dead-lettered
  (UnknownSchemaIdError). An id that outlived its grace is not granted another one: later 404s
  for it are answered at once.
- Every message and log line shows the URL masked, and text from the client library or httpx
  (which may quote the URL whole) redacted of the URL's secrets.

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
from typing import Any, Protocol

from fastavro.schema import SchemaParseException

from streams.contracts.answers import Unreadable
from streams.contracts.client import ClientSecurity, RegistryClient
from streams.contracts.compatibility import RegistryCheck, check_subject, refusal
from streams.contracts.schemas import SchemaStore
from streams.errors import ContractError

__all__ = [
    "GRACE_VARIABLE",
    "ClientSecurity",
    "HttpRegistry",
    "IdFile",
    "RegistryCheck",
    "SchemaIds",
    "open_ids",
]

log = logging.getLogger(__name__)

GRACE_VARIABLE = "ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE"


class SchemaIds(Protocol):
    """Where wire-format schema ids come from."""

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema with this id, or None when the source does not know it."""

    async def id_for(self, name: str, subject: str) -> int:
        """The id to write the current schema ``name`` with, registering it if needed."""

    def known(self) -> dict[int, dict[str, Any]]:
        """Writer schemas known without asking anyone (the codec starts with them)."""

    def waiting(self) -> str | None:
        """What the source is waiting for (a registry that fails, or is behind), or None."""


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

    def waiting(self) -> str | None:
        return None


class _NotFound(Exception):
    """The registry answered 404 for a schema id (within the grace: asked again)."""


class HttpRegistry(RegistryClient):
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
        unknown_id_grace_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.2, 5.0),
        log_every_s: float = 10.0,
        request_timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            url,
            security=security,
            startup_timeout_s=startup_timeout_s,
            backoff_s=backoff_s,
            log_every_s=log_every_s,
            request_timeout_s=request_timeout_s,
            sleep=sleep,
            clock=clock,
        )
        self.store = store
        self.unknown_id_grace_s = unknown_id_grace_s
        self._not_found: dict[int, float] = {}  # id -> its first 404 (within its grace)
        self._unknown: set[int] = set()  # ids that outlived their grace

    def known(self) -> dict[int, dict[str, Any]]:
        return {}  # every writer schema is fetched by id, then cached by the codec

    def holding(self) -> bool:
        return bool(self._not_found)

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema with this id (None: the registry does not know it after the grace,
        or it is not an Avro schema: the record is then dead-lettered, not the worker stopped).

        Waits for as long as the registry is unreachable or overloaded, and for up to
        ``unknown_id_grace_s`` while it answers that it does not know the id.
        """
        what = f"fetching schema id {schema_id}"

        async def get(timeout: float) -> Any:
            try:
                found = await self.client.get_by_id(schema_id, timeout=timeout)
            except json.JSONDecodeError:
                raise  # the answer is not JSON: the registry's (or a proxy's) fault
            except (ValueError, SchemaParseException) as exc:  # e.g. a PROTOBUF schema
                raise Unreadable(str(exc)) from exc
            if found is None:  # the screen lets only a registry's own 404 through
                raise _NotFound
            return found

        found: Any = None
        problem: str | None = None
        delay, cap = self.backoff_s
        while True:
            try:
                found = await self.ask(what, get, deadline=None)
            except Unreadable as exc:
                problem = str(exc)
            except _NotFound:
                remaining = self._grace_left(schema_id, what)
                if remaining is not None:
                    await self._sleep(min(delay, remaining))
                    delay = min(delay * 2, cap)
                    continue
            break
        if self._not_found.pop(schema_id, None) is not None:
            self.answered()
        if found is not None and getattr(found, "schema_type", "AVRO") != "AVRO":
            found, problem = None, f"a {found.schema_type} schema"
        if problem is not None:
            log.warning(
                "schema id %s at %s is not an Avro schema this job reads (%s): unknown id",
                schema_id,
                self.masked_url,
                self.hide(problem),
            )
        if found is None:
            return None
        raw = found.raw_schema
        return json.loads(raw) if isinstance(raw, str) else dict(raw)

    def _grace_left(self, schema_id: int, what: str) -> float | None:
        """Seconds of ``schema_id``'s grace left after a 404 (None: spent, it is unknown)."""
        if schema_id in self._unknown:
            return None
        now = self._clock()
        first = self._not_found.setdefault(schema_id, now)
        remaining = first + self.unknown_id_grace_s - now
        if remaining > 0:
            self.failed(
                what,
                "HTTP 404: Schema not found (error code 40403): the registry may be starting "
                f"or a follower behind; its records wait up to {GRACE_VARIABLE}="
                f"{self.unknown_id_grace_s:g}s before they are dead-lettered",
            )
            return remaining
        del self._not_found[schema_id]
        if len(self._unknown) >= 1024:  # ids come from input: keep the memo bounded
            self._unknown.clear()
        self._unknown.add(schema_id)
        log.warning(
            "schema registry %s still does not know schema id %s after %.0fs (%s=%g): "
            "an unknown id, its records are dead-lettered",
            self.masked_url,
            schema_id,
            now - first,
            GRACE_VARIABLE,
            self.unknown_id_grace_s,
        )
        if not self._not_found:
            self.answered(quiet=True)
        return None

    async def check(self, name: str, subject: str, deadline: float | None = None) -> RegistryCheck:
        """Our current schema ``name`` against ``subject``, registering nothing."""
        if deadline is None:
            deadline = self._clock() + self.startup_timeout_s
        return await check_subject(self, name, self.store.current(name), subject, deadline)

    async def id_for(self, name: str, subject: str) -> int:
        """Our current schema's id in ``subject``: looked up first, else registered.

        Refuses (ContractError) a schema the subject does not hold when the registry calls it
        incompatible with one of the subject's versions (its latest, or any of them under a
        ``*_TRANSITIVE`` level), naming those versions.
        """
        deadline = self._clock() + self.startup_timeout_s
        verdict = await self.check(name, subject, deadline)
        if verdict.schema_id is not None:
            return verdict.schema_id
        if not verdict.compatible:
            raise ContractError(refusal(verdict, self.masked_url))
        schema = self.store.current(name)
        schema_id = await self.ask(
            f"registering {name} in subject {subject!r}",
            lambda timeout: self.client.register(subject, schema, timeout=timeout),
            deadline,
        )
        log.info(
            "registered %s as id %s in subject %s at %s", name, schema_id, subject, self.masked_url
        )
        return int(schema_id)


def open_ids(
    url: str | None,
    store: SchemaStore | None = None,
    *,
    security: ClientSecurity | None = None,
    startup_timeout_s: float = 60.0,
    unknown_id_grace_s: float = 60.0,
) -> IdFile | HttpRegistry:
    """The registry at ``url``, or the committed id file when no registry is configured."""
    store = store or SchemaStore()
    if not url:
        return IdFile(store)
    return HttpRegistry(
        url,
        store,
        security=security,
        startup_timeout_s=startup_timeout_s,
        unknown_id_grace_s=unknown_id_grace_s,
    )
