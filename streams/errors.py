"""One small exception tree. Every error names what failed and where it came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "AvroBodyError",
    "BrokerError",
    "ConfigError",
    "ContractError",
    "Coordinates",
    "DecodeError",
    "EscalationsError",
    "InputLineError",
    "InvalidRecordError",
    "NotFramedError",
    "RecordError",
    "RegistryError",
    "SinkCorruptionError",
    "SinkError",
    "TrailingBytesError",
    "UnknownSchemaIdError",
    "causes",
]


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a record came from: topic, partition and offset (``-1`` when unknown)."""

    topic: str
    partition: int = -1
    offset: int = -1

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class EscalationsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EscalationsError):
    """A setting is missing or invalid; the message names the variable and a valid example."""


class ContractError(EscalationsError):
    """The schema files, their id file or their history disagree, or a registry refused them."""


class RegistryError(EscalationsError):
    """The schema registry could not be reached or answered with an error."""


class BrokerError(EscalationsError):
    """The embedded broker could not be started."""


class InputLineError(EscalationsError):
    """A line of JSON-form bus events is malformed; names the line number and the field."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


class RecordError(EscalationsError):
    """A Kafka record that cannot be processed: it goes to the dead-letter topic."""

    def __init__(self, message: str, *, where: Coordinates, schema_id: int | None = None) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.schema_id = schema_id


class DecodeError(RecordError):
    """A value is not a valid Confluent-framed Avro record of a known schema."""


class NotFramedError(DecodeError):
    """Too short for the wire format, or the magic byte is not 0."""


class UnknownSchemaIdError(DecodeError):
    """The 4-byte schema id is not known to the id file or the registry."""


class AvroBodyError(DecodeError):
    """The Avro body is truncated or garbage for the writer's schema."""


class TrailingBytesError(DecodeError):
    """The writer's schema consumed fewer bytes than the body holds."""


class InvalidRecordError(RecordError):
    """Decoded fine, but breaks the contract (an unsafe session id, a timestamp out of range)."""


class SinkError(EscalationsError):
    """The file sink cannot write or recover a state directory."""


class SinkCorruptionError(SinkError):
    """A state directory's file is shorter than its recorded position: data was lost outside us."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
