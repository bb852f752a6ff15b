"""Pure: the headers of a dead-lettered record (the original key, value and headers kept)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from streams.errors import Coordinates, RecordError

__all__ = [
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "PREFIX",
    "SCHEMA_ID",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "Headers",
    "dead_letter_headers",
    "header",
]

PREFIX: Final = "escalations."
ERROR_CLASS: Final = PREFIX + "error.class"
ERROR_MESSAGE: Final = PREFIX + "error.message"
SOURCE_TOPIC: Final = PREFIX + "source.topic"
SOURCE_PARTITION: Final = PREFIX + "source.partition"
SOURCE_OFFSET: Final = PREFIX + "source.offset"
SCHEMA_ID: Final = PREFIX + "schema.id"
MAX_MESSAGE_BYTES: Final = 2000

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    error: RecordError, original: Iterable[tuple[str, bytes]] | None = None
) -> Headers:
    """The record's own headers (minus any earlier dead-letter ones), then what failed where."""
    where: Coordinates = error.where
    headers: Headers = [(k, v) for k, v in (original or ()) if not k.startswith(PREFIX)]
    headers += [
        (ERROR_CLASS, type(error).__name__.encode()),
        (ERROR_MESSAGE, _truncated(str(error))),
        (SOURCE_TOPIC, where.topic.encode()),
        (SOURCE_PARTITION, str(where.partition).encode()),
        (SOURCE_OFFSET, str(where.offset).encode()),
    ]
    if error.schema_id is not None:
        headers.append((SCHEMA_ID, str(error.schema_id).encode()))
    return headers


def _truncated(message: str) -> bytes:
    """At most MAX_MESSAGE_BYTES of UTF-8, cut at a character boundary."""
    raw = message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None
