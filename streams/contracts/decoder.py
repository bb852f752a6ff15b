"""Wire-format decoding with the writer's schema, fetched by id from the id source (cached)."""

from __future__ import annotations

from typing import Any

from streams.contracts.codec import Codec, schema_id_of
from streams.contracts.registry import SchemaIds
from streams.errors import Coordinates

__all__ = ["Decoder"]


class Decoder:
    """Wire-format decoding with writer schemas fetched by id (cached in the codec)."""

    def __init__(self, codec: Codec, ids: SchemaIds) -> None:
        self.codec = codec
        self.ids = ids

    async def decode(self, value: bytes | None, where: Coordinates) -> dict[str, Any]:
        schema_id = schema_id_of(value)
        if schema_id is not None and not self.codec.knows(schema_id):
            schema = await self.ids.fetch(schema_id)
            if schema is not None:
                self.codec.add(schema_id, schema)
        return self.codec.decode(value, where)[1]
