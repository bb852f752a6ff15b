"""``escalations schemas check`` against SCHEMA_REGISTRY_URL: each schema against its subject.

Nothing is registered: a schema the subject holds is reported with the registry's id and
version; one it does not hold yet is tested for compatibility (every version under a
``*_TRANSITIVE`` level), and a refusal names the versions that fail.
"""

from __future__ import annotations

from streams.contracts.compatibility import RegistryCheck, refusal
from streams.contracts.registry import HttpRegistry
from streams.contracts.schemas import BUS_EVENT, ENTRY, SchemaStore
from streams.settings import Settings

__all__ = ["check_registry"]


async def check_registry(settings: Settings, store: SchemaStore) -> tuple[list[str], list[str]]:
    """(lines to print, problems) for each schema against ``<topic>-value`` at the registry."""
    url = settings.schema_registry_url
    if not url:
        raise ValueError("no SCHEMA_REGISTRY_URL to check against")
    registry = HttpRegistry(
        url,
        store,
        security=settings.registry,
        startup_timeout_s=settings.registry_startup_timeout_s,
    )
    pairs = ((BUS_EVENT, settings.input_topic), (ENTRY, settings.output_topic))
    verdicts = [await registry.check(name, f"{topic}-value") for name, topic in pairs]
    lines: list[str] = []
    problems: list[str] = []
    for verdict in verdicts:
        if verdict.schema_id is not None:
            lines.append(
                f"{verdict.name}: subject {verdict.subject}, version {verdict.version}, "
                f"id {verdict.schema_id} at {registry.masked_url}, ok"
            )
        elif verdict.compatible:
            lines.append(_unregistered(verdict, registry.masked_url))
        else:
            problems.append(refusal(verdict, registry.masked_url))
    return lines, problems


def _unregistered(verdict: RegistryCheck, where: str) -> str:
    level = f" under {verdict.level}" if verdict.level else ""
    return (
        f"{verdict.name}: subject {verdict.subject}: not registered at {where}, compatible"
        f"{level} (escalations schemas register registers it), ok"
    )
