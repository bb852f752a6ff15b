"""The only module that imports fastavro: Confluent wire format, writer-schema decode.

Wire format: magic byte ``0``, the schema id as 4 bytes big-endian, then the Avro body.
Decoding always uses the *writer's* schema (looked up by the id) and must consume exactly
all bytes: fastavro otherwise turns wrongly framed bytes into plausible garbage. For the
same reason every decoded body is walked once more to check what fastavro lets through:
union and enum indexes (it reads -1 as the last branch or symbol, Python style), booleans
other than 0x00/0x01, ints beyond 32 and longs beyond 64 bits.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
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

__all__ = ["HEADER", "MAGIC", "Codec", "schema_id_of", "schema_name"]

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


class _Invalid(Exception):
    """Bytes fastavro reads but the Avro specification forbids; ``pos`` is where they start."""

    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(reason)
        self.pos = pos


#: Checks the value at ``pos`` of a body fastavro has already read; returns the position after it.
_Check = Callable[[bytes, int], int]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at ``pos``: (value, position after it)."""
    byte = buf[pos]
    if byte < 0x80:  # the common case: one byte
        return (byte >> 1) ^ -(byte & 1), pos + 1
    start, n, shift = pos, byte & 0x7F, 7
    while byte >= 0x80:
        pos += 1
        byte = buf[pos]
        n |= (byte & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise _Invalid(start, f"a varint of {pos + 1 - start} bytes is wider than 64 bits")
    return (n >> 1) ^ -(n & 1), pos + 1


def _skip_varint(buf: bytes, pos: int) -> int:
    return pos + 1 if buf[pos] < 0x80 else _varint(buf, pos)[1]


def _check_int(buf: bytes, pos: int) -> int:
    value, after = _varint(buf, pos)
    if not -(2**31) <= value < 2**31:
        raise _Invalid(pos, f"int {value} is outside the 32-bit range")
    return after


def _check_boolean(buf: bytes, pos: int) -> int:
    if buf[pos] > 1:
        raise _Invalid(pos, f"boolean byte 0x{buf[pos]:02x} is neither 0x00 nor 0x01")
    return pos + 1


def _skip_bytes(buf: bytes, pos: int) -> int:
    byte = buf[pos]
    if byte < 0x80 and not byte & 1:  # the common case: a length of 0..63
        return pos + 1 + (byte >> 1)
    size, after = _varint(buf, pos)
    if size < 0:
        raise _Invalid(pos, f"length {size} is negative")
    return after + size


_PRIMITIVE_CHECKS: dict[str, _Check] = {
    "null": lambda buf, pos: pos,
    "boolean": _check_boolean,
    "int": _check_int,
    "long": _skip_varint,
    "float": lambda buf, pos: pos + 4,
    "double": lambda buf, pos: pos + 8,
    "bytes": _skip_bytes,
    "string": _skip_bytes,
}


def _checker(schema: Any, named: dict[str, _Check]) -> _Check:
    """The check of a parsed schema (fastavro's: full names, references by name)."""
    if isinstance(schema, list):
        return _indexed("union index", [_checker(s, named) for s in schema])
    if isinstance(schema, str):
        return _PRIMITIVE_CHECKS.get(schema) or named[schema]
    kind = schema["type"]
    if kind in ("record", "error"):
        fields: list[_Check] = []
        named[schema["name"]] = check = _record(fields)  # before its fields: may be recursive
        fields.extend(_checker(field["type"], named) for field in schema["fields"])
        return check
    if kind == "enum":
        named[schema["name"]] = check = _indexed(
            "enum index", [_PRIMITIVE_CHECKS["null"]] * len(schema["symbols"])
        )
        return check
    if kind == "fixed":
        size = int(schema["size"])
        named[schema["name"]] = check = lambda buf, pos: pos + size
        return check
    if kind == "array":
        return _blocks(_checker(schema["items"], named))
    if kind == "map":
        values = _checker(schema["values"], named)
        return _blocks(lambda buf, pos: values(buf, _skip_bytes(buf, pos)))
    return _checker(kind, named)  # {"type": "long"} once the logical type is gone


def _record(fields: list[_Check]) -> _Check:
    def check(buf: bytes, pos: int) -> int:
        for field in fields:
            pos = field(buf, pos)
        return pos

    return check


def _indexed(what: str, branches: list[_Check]) -> _Check:
    """A union (a branch per index) or an enum (nothing follows the index)."""
    count = len(branches)

    def check(buf: bytes, pos: int) -> int:
        index, after = _varint(buf, pos)
        if not 0 <= index < count:
            raise _Invalid(pos, f"{what} {index} is not in 0..{count - 1}")
        return branches[index](buf, after)

    return check


def _blocks(item: _Check) -> _Check:
    """Arrays and maps: blocks of items; a negative count is followed by the block's size."""

    def check(buf: bytes, pos: int) -> int:
        while True:
            count, pos = _varint(buf, pos)
            if count == 0:
                return pos
            if count < 0:
                count, pos = -count, _skip_varint(buf, pos)
            for _ in range(count):
                pos = item(buf, pos)

    return check


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
        self._checks: dict[int, _Check] = {}
        self._names: dict[int, str] = {}
        for schema_id, schema in dict(schemas).items():
            self.add(schema_id, schema)

    def add(self, schema_id: int, schema: Mapping[str, Any]) -> None:
        # Keep fastavro's "parsed" hint: without it every read and write parses the schema
        # again (~40 µs a record instead of ~4 µs).
        parsed = fastavro.parse_schema(_without_logical_types(dict(schema)))
        self._parsed[schema_id] = parsed
        self._checks[schema_id] = _checker(parsed, {})
        self._names[schema_id] = schema_name(schema)

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._parsed

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
                f"schema id {schema_id} is not known (known ids: {known}); value of {size} bytes",
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
        try:
            self._checks[schema_id](value, HEADER.size)
        except _Invalid as exc:
            raise AvroBodyError(
                f"Avro body of {body_size} bytes is not a valid {self._names[schema_id]} "
                f"(schema id {schema_id}); failed at byte {exc.pos - HEADER.size}: {exc}",
                where=where,
                schema_id=schema_id,
            ) from None
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
