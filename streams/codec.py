"""The only module that imports fastavro: Confluent wire format, writer-schema decode.

Wire format: magic byte ``0``, the schema id as 4 bytes big-endian, then the Avro body.
Decoding always uses the *writer's* schema (looked up by the id) and must consume exactly
all bytes: fastavro otherwise turns wrongly framed bytes into plausible garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import fastavro

from streams.errors import (
    AvroBodyError,
    Coordinates,
    NotFramedError,
    TrailingBytesError,
    UnknownSchemaIdError,
)

MAGIC = 0
HEADER = struct.Struct(">bI")

# What fastavro raises on truncated or garbage bodies (it has no exception type of its own).
_BODY_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    struct.error,
    MemoryError,
)


def _without_logical_types(schema: Any) -> Any:
    """The same binary layout with plain ints: no datetime conversions on the hot path."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def schema_name(schema: Mapping[str, Any]) -> str:
    name = str(schema.get("name", "?"))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def schema_id_of(value: bytes | None) -> int | None:
    """The schema id in a framed value's header, or None when it is not framed."""
    if value is None or len(value) < HEADER.size or value[0] != MAGIC:
        return None
    return int(HEADER.unpack_from(value)[1])


class Codec:
    """Encodes and decodes wire-format records; timestamps stay integer microseconds."""

    def __init__(self, schemas: Mapping[int, Mapping[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self._parsed: dict[int, Any] = {}
        self._names: dict[int, str] = {}
        for schema_id, schema in dict(schemas).items():
            self.add(schema_id, schema)

    def add(self, schema_id: int, schema: Mapping[str, Any]) -> None:
        self._parsed[schema_id] = fastavro.parse_schema(
            _without_logical_types(dict(schema)), _write_hint=False
        )
        self._names[schema_id] = schema_name(schema)

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._parsed

    def name_of(self, schema_id: int) -> str:
        return self._names[schema_id]

    def encode(self, schema_id: int, datum: Mapping[str, Any]) -> bytes:
        out = BytesIO()
        out.write(HEADER.pack(MAGIC, schema_id))
        fastavro.schemaless_writer(out, self._parsed[schema_id], datum)
        return out.getvalue()

    def decode(self, value: bytes | None, where: Coordinates) -> tuple[int, dict[str, Any]]:
        """(schema id, record) of a framed value; a typed DecodeError for anything else."""
        size = 0 if value is None else len(value)
        if value is None or size < HEADER.size:
            raise NotFramedError(
                f"value of {size} bytes is too short for the Confluent wire format "
                f"(needs at least {HEADER.size}: magic byte 0 and a 4-byte schema id)",
                where=where,
            )
        if value[0] != MAGIC:
            raise NotFramedError(
                f"value of {size} bytes is not in the Confluent wire format "
                f"(first byte is 0x{value[0]:02x}, not the magic byte 0x00)",
                where=where,
            )
        schema_id = int(HEADER.unpack_from(value)[1])
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            known = ", ".join(str(i) for i in sorted(self._parsed)) or "none"
            raise UnknownSchemaIdError(
                f"schema id {schema_id} is not known (known ids: {known}); "
                f"value of {size} bytes",
                where=where,
                schema_id=schema_id,
            )
        body = BytesIO(value)
        body.seek(HEADER.size)
        body_size = size - HEADER.size
        try:
            record = fastavro.schemaless_reader(body, parsed, None, return_record_name=True)
        except _BODY_ERRORS as exc:
            raise AvroBodyError(
                f"Avro body of {body_size} bytes is not a valid {self._names[schema_id]} "
                f"(schema id {schema_id}); failed at byte {body.tell() - HEADER.size}: "
                f"{type(exc).__name__}: {exc}",
                where=where,
                schema_id=schema_id,
            ) from exc
        consumed = body.tell() - HEADER.size
        if consumed != body_size:
            raise TrailingBytesError(
                f"schema id {schema_id} ({self._names[schema_id]}) read {consumed} of the "
                f"{body_size} body bytes; {body_size - consumed} trailing bytes",
                where=where,
                schema_id=schema_id,
            )
        if not isinstance(record, dict):
            raise AvroBodyError(
                f"schema id {schema_id} is not a record schema", where=where, schema_id=schema_id
            )
        return schema_id, record
