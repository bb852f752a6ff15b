"""Our schema against a registry subject: registered, or which of its versions refuse it.

A schema the subject does not hold yet is tested against the subject's latest version
(``POST /compatibility/subjects/{subject}/versions/latest?verbose=true``). When that fails, or
the subject's compatibility level (``GET /config/{subject}``, else ``GET /config``) is a
``*_TRANSITIVE`` one, it is tested against each version the level covers
(``.../versions/{v}?verbose=true``), so that a refusal names the versions that fail: under
``BACKWARD_TRANSITIVE`` a schema may be compatible with the latest version and not with an
older one (Karapace then refuses it against "latest" with messages that name no version;
Confluent's registry tests "latest" alone and refuses the registration).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from streams.contracts.client import RegistryClient
from streams.errors import ContractError, RegistryError

__all__ = ["RegistryCheck", "check_subject", "refusal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegistryCheck:
    """Our schema against a subject: registered (its id and version), or what testing said."""

    name: str
    subject: str
    schema_id: int | None = None  # registered under this id
    version: int | None = None
    level: str | None = None  # the subject's compatibility level, when it was asked
    #: Versions the schema is not compatible with, each with the registry's messages.
    failing: dict[int, list[str]] = field(default_factory=dict)
    #: The registry's messages when it refused without naming versions.
    messages: list[str] = field(default_factory=list)
    latest: int | None = None  # the subject's latest version, when it was asked

    @property
    def compatible(self) -> bool:
        return not self.failing and not self.messages


async def check_subject(
    client: RegistryClient, name: str, schema: dict[str, Any], subject: str, deadline: float
) -> RegistryCheck:
    """``schema`` (our current ``name``) against ``subject``, registering nothing."""
    api = client.client
    found = await client.ask(
        f"looking up {name} in subject {subject!r}",
        lambda timeout: api.check_version(subject, schema, timeout=timeout),
        deadline,
    )
    if found is not None:
        log.info(
            "schema %s is id %s (version %s of subject %s) at %s",
            name,
            found.schema_id,
            found.version,
            subject,
            client.masked_url,
        )
        return RegistryCheck(name, subject, int(found.schema_id), int(found.version))

    async def verdict(version: int | str) -> tuple[bool, list[str]] | None:
        answer = await client.ask(
            f"testing {name} against version {version} of subject {subject!r}",
            lambda timeout: api.test_compatibility(
                subject, schema, version=version, verbose=True, timeout=timeout
            ),
            deadline,
        )
        if not isinstance(answer, dict):
            return None
        messages = [client.hide(m) for m in answer.get("messages") or []]
        return bool(answer.get("is_compatible", False)), messages

    latest = await verdict("latest")
    # None: the subject has no version to test against (404), or the schema is invalid (422,
    # which registering reports again with the registry's reason).
    if latest is None:
        return RegistryCheck(name, subject)
    level = await _level(client, subject, deadline)
    if not (level or "").endswith("_TRANSITIVE"):
        messages = [] if latest[0] else latest[1] or ["no details"]
        return RegistryCheck(name, subject, level=level, messages=messages)
    versions = await client.ask(
        f"listing the versions of subject {subject!r}",
        lambda timeout: api.get_versions(subject, timeout=timeout),
        deadline,
    )
    numbers = sorted(int(v) for v in versions or [])
    last = numbers[-1] if numbers else None
    failing: dict[int, list[str]] = {}
    for number in numbers:
        answer = await verdict(number)
        if answer is not None and not answer[0]:
            failing[number] = answer[1]
    messages = [] if failing or latest[0] else latest[1] or ["no details"]
    return RegistryCheck(
        name, subject, level=level, failing=failing, messages=messages, latest=last
    )


async def _level(client: RegistryClient, subject: str, deadline: float) -> str | None:
    """The subject's compatibility level, else the registry's; None: it does not say."""
    api = client.client
    for scope in (subject, None):

        async def read(timeout: float, scope: str | None = scope) -> str:
            level: str = await api.get_compatibility(scope, timeout=timeout)
            return level

        try:
            return await client.ask(
                f"reading the compatibility level of {scope or 'the registry'}", read, deadline
            )
        except ContractError:
            raise
        except RegistryError:
            continue  # 40408: the subject has no level of its own
    return None


def refusal(verdict: RegistryCheck, masked_url: str) -> str:
    """Why ``verdict``'s schema is refused, naming the versions that fail."""
    where = f"subject {verdict.subject!r} at {masked_url}"
    if verdict.level:
        where += f" (compatibility {verdict.level})"
    what = f"schemas/{verdict.name}.avsc is not registered there and the registry calls it"
    if not verdict.failing:
        messages = "; ".join(verdict.messages) or "no details"
        return (
            f"{where}: {what} incompatible with the subject's latest version: {messages}; "
            "refusing it"
        )
    numbers = sorted(verdict.failing)
    detail = "; ".join(
        f"version {n}: {'; '.join(verdict.failing[n]) or 'no details'}" for n in numbers
    )
    latest = verdict.latest
    compatible_latest = latest is not None and latest not in verdict.failing
    tail = f" (compatible with the latest, version {latest})" if compatible_latest else ""
    which = ", ".join(str(n) for n in numbers)
    return (
        f"{where}: {what} incompatible with version{'s' if len(numbers) > 1 else ''} "
        f"{which}{tail}: {detail}; refusing it"
    )
