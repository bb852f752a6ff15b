"""Schema ids: a real registry over HTTP, or the committed id file in ``schemas/``."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from streams.contracts.schemas import SchemaStore
from streams.errors import ContractError, RegistryError

log = logging.getLogger(__name__)


class SchemaIds(Protocol):
    """Where wire-format schema ids come from."""

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema with this id, or None when the source does not know it."""

    async def id_for(self, name: str, subject: str) -> int:
        """The id to write the current schema ``name`` with, registering it if needed."""

    def known(self) -> dict[int, dict[str, Any]]:
        """Writer schemas known without asking anyone (the codec starts with them)."""


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
    """A Confluent-compatible schema registry, through python-schema-registry-client."""

    def __init__(self, url: str, store: SchemaStore) -> None:
        from schema_registry.client import AsyncSchemaRegistryClient

        self.url = url
        self.store = store
        self._client = AsyncSchemaRegistryClient(url=url)

    def known(self) -> dict[int, dict[str, Any]]:
        return {}  # every writer schema is fetched by id, then cached by the codec

    async def fetch(self, schema_id: int) -> dict[str, Any] | None:
        from schema_registry.client.errors import ClientError

        try:
            found = await self._client.get_by_id(schema_id)
        except (ClientError, OSError) as exc:
            raise RegistryError(f"{self.url}: cannot fetch schema id {schema_id}: {exc}") from exc
        if found is None:
            return None
        raw = found.raw_schema
        return json.loads(raw) if isinstance(raw, str) else dict(raw)

    async def id_for(self, name: str, subject: str) -> int:
        """Register the current schema under ``subject``; refuse it when the registry says no."""
        from schema_registry.client.errors import ClientError

        schema = self.store.current(name)
        try:
            if await self._client.get_schema(subject) is not None:
                compatible = await self._client.test_compatibility(subject, schema)
                if not compatible:
                    raise ContractError(
                        f"{self.url}: schemas/{name}.avsc is not compatible with the latest "
                        f"version of subject {subject!r}; refusing to start"
                    )
            schema_id = await self._client.register(subject, schema)
        except (ClientError, OSError) as exc:
            raise RegistryError(
                f"{self.url}: cannot register {name} as {subject!r}: {exc}"
            ) from exc
        log.info("schema %s is id %s in subject %s at %s", name, schema_id, subject, self.url)
        return int(schema_id)


def open_ids(url: str | None, store: SchemaStore | None = None) -> IdFile | HttpRegistry:
    store = store or SchemaStore()
    return HttpRegistry(url, store) if url else IdFile(store)
