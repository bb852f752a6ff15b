"""Wire-format decoding with the writer's schema, fetched by id from the id source (cached).

A schema id the codec does not know yet is fetched from the id source. Against a registry
that fetch waits while the registry is unreachable (``HttpRegistry.fetch`` retries transient
failures with backoff), so the batch in hand waits with it: nothing is dead-lettered or
committed meanwhile; so does a registry that answers 404 for the id, for the id's grace
(``HttpRegistry.unknown_id_grace_s``: a registry that has just restarted, or a follower behind,
does not know ids it will know). Only an id the source answers it does not know (None) makes
the record an UnknownSchemaIdError (a dead letter); that answer is remembered for
``unknown_ttl_s``, so a burst of records naming the same unknown id costs one question, not one
each. Any other
failure of the source (RegistryError) is raised: it is not the record's fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streams.contracts.codec import Codec, schema_id_of
from streams.contracts.registry import SchemaIds
from streams.errors import Coordinates

__all__ = ["Decoder"]


class Decoder:
    """Wire-format decoding with writer schemas fetched by id (cached in the codec)."""

    def __init__(
        self,
        codec: Codec,
        ids: SchemaIds,
        *,
        unknown_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.codec = codec
        self.ids = ids
        self.unknown_ttl_s = unknown_ttl_s
        self._clock = clock
        self._unknown: dict[int, float] = {}  # id -> when the source said it does not know it

    async def decode(self, value: bytes | None, where: Coordinates) -> dict[str, Any]:
        schema_id = schema_id_of(value)
        if schema_id is not None and not self.codec.knows(schema_id):
            await self._learn(schema_id)
        return self.codec.decode(value, where)[1]

    async def _learn(self, schema_id: int) -> None:
        asked = self._unknown.get(schema_id)
        if asked is not None and self._clock() - asked < self.unknown_ttl_s:
            return
        schema = await self.ids.fetch(schema_id)
        if schema is None:
            if len(self._unknown) >= 1024:  # ids come from input: keep the memo bounded
                self._unknown.clear()
            self._unknown[schema_id] = self._clock()
            return
        self._unknown.pop(schema_id, None)
        if not self.codec.knows(schema_id):  # another stage may have learned it meanwhile
            self.codec.add(schema_id, schema)
