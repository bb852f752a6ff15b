"""The registry's HTTP client: python-schema-registry-client, retried, its failures explained.

:class:`RegistryClient` builds the library's client (our auth, TLS and response screen on
every request) and runs each call through :meth:`RegistryClient.ask`: transient failures
(connection errors, timeouts, HTTP 5xx and 429) are retried with backoff (0.2 s doubling to
5 s) until a deadline, or for good; anything else leaves as RegistryError or ContractError,
``from`` the original. While calls fail, :meth:`RegistryClient.waiting` says why (the worker's
``/healthz`` shows it). Every message shows the URL masked, and text from the library or
httpx (which may quote the URL whole) redacted of the URL's secrets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from schema_registry.client.errors import ClientError

from streams.contracts.answers import (
    AUTH_VARIABLE,
    FAILURES,
    URL_VARIABLE,
    Answer,
    answer_text,
    screen,
    server_message,
    tls_problem,
    transient,
)
from streams.errors import ContractError, EscalationsError, RegistryError
from streams.security import mask_url, redact, url_secrets

__all__ = ["ClientSecurity", "RegistryClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClientSecurity(Protocol):
    """Auth and TLS for the registry's httpx client (``streams.security.RegistrySecurity``)."""

    def client_kwargs(self) -> dict[str, Any]:
        """``httpx.AsyncClient`` options: ``auth`` (None: none) and maybe ``verify``."""


class RegistryClient:
    """The library's client, with retries, failure logging and explained errors."""

    def __init__(
        self,
        url: str,
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
        self.startup_timeout_s = startup_timeout_s
        self.backoff_s = backoff_s
        self.log_every_s = log_every_s
        self.request_timeout_s = request_timeout_s
        self._secrets = url_secrets(url)
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._failures = 0
        self._logged_at = 0.0
        self._problem = ""  # the last failure, while failing
        try:
            urlsplit(url).port  # noqa: B018 (raises ValueError on a malformed port)
            self.client = AsyncSchemaRegistryClient(
                url=url, timeout=httpx.Timeout(request_timeout_s)
            )
        except (AssertionError, ValueError) as exc:  # the library asserts the URL's scheme
            raise RegistryError(
                f"{URL_VARIABLE}={self.masked_url!r} is not a registry URL: {self.hide(exc)} "
                f"(e.g. {URL_VARIABLE}=https://schema-registry:8081)"
            ) from exc
        # Every request makes a new httpx.AsyncClient from this dict (~20 ms each with a fresh
        # SSL context). Without credentials the library would send an empty Basic header; user
        # info in the URL it turns into auth itself.
        options: dict[str, Any] = self.client.client_kwargs
        if security is not None:
            options.update(security.client_kwargs())
        elif "@" not in urlsplit(url).netloc:
            options["auth"] = None
        if "verify" not in options:  # built once: httpx would load the CA bundle per request
            options["verify"] = httpx.create_ssl_context()
        hooks: dict[str, list[Any]] = options.setdefault("event_hooks", {})
        hooks.setdefault("response", []).append(screen)

    def waiting(self) -> str | None:
        """Why calls wait: the registry failing, or not knowing an id yet; None: they do not."""
        if self._failing_since is None:
            return None
        return (
            f"waiting for the schema registry {self.masked_url} for "
            f"{self._clock() - self._failing_since:.0f}s ({self._failures} failed attempts; the "
            f"last: {self._problem})"
        )

    def hide(self, text: object) -> str:
        """Text from the library or httpx, the URL's secrets redacted."""
        return redact(str(text), self._secrets)

    async def ask(
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
                problem = self.hide(problem)
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    self.answered(quiet=True)
                    raise RegistryError(
                        f"{URL_VARIABLE}={self.masked_url}: the schema registry did not answer "
                        f"within {self.startup_timeout_s:g}s ({what}: {attempts} attempts, the "
                        f"last: {problem}); check {URL_VARIABLE} and that the registry is up "
                        f"(e.g. {URL_VARIABLE}=http://schema-registry:8081)"
                    ) from exc
                self.failed(what, problem)
                await self._sleep(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 2, cap)
            else:
                self.answered()
                return result

    def _refusal(self, what: str, exc: BaseException) -> EscalationsError:
        """The error for a failure retrying cannot heal."""
        status = exc.status if isinstance(exc, Answer) else None
        if isinstance(exc, ClientError) and exc.http_code in (401, 403, 409, 422):
            status = exc.http_code
        text = self.hide(answer_text(exc))
        if status == 401:
            return RegistryError(
                f"{URL_VARIABLE}={self.masked_url}: the registry refused our credentials "
                f"({text}) {what}: check {AUTH_VARIABLE} "
                f"(e.g. {AUTH_VARIABLE}=escalation-stream:s3cret)"
            )
        if status == 403:
            return RegistryError(
                f"{URL_VARIABLE}={self.masked_url}: the registry denied access "
                f"({text}) {what}: check the user in {AUTH_VARIABLE} and its permissions"
            )
        if status in (409, 422) and isinstance(exc, ClientError):
            verdict = "incompatible" if status == 409 else "invalid"
            return ContractError(
                f"{self.masked_url} refused {what} as {verdict} (HTTP {status}: "
                f"{self.hide(server_message(exc))})"
            )
        problem = tls_problem(exc)
        if problem is not None:
            return RegistryError(f"{URL_VARIABLE}={self.masked_url}: {what}: {problem}")
        return RegistryError(f"{URL_VARIABLE}={self.masked_url}: {what} failed: {text}")

    def failed(self, what: str, problem: str) -> None:
        """One more failed attempt: the first is logged, then one line every ``log_every_s``."""
        now = self._clock()
        self._failures += 1
        self._problem = f"{what}: {problem}"
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

    def answered(self, *, quiet: bool = False) -> None:
        """The registry answered (``quiet``: the failing spell ended otherwise)."""
        if self._failing_since is not None and not quiet and self.holding():
            return  # something else still waits for it (an id within its grace)
        if self._failing_since is not None and not quiet:
            log.warning(
                "schema registry %s answers again after %.1fs (%d failed attempts)",
                self.masked_url,
                self._clock() - self._failing_since,
                self._failures,
            )
        self._failing_since = None
        self._failures = 0

    def holding(self) -> bool:
        """Whether a wait other than for an answer is in progress (overridden)."""
        return False
