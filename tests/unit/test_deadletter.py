"""streams.deadletter: the headers of a dead-lettered record say what failed and where."""

from __future__ import annotations

import pytest

from streams.core.deadletter import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    MAX_MESSAGE_BYTES,
    SCHEMA_ID,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    dead_letter_headers,
    header,
)
from streams.errors import (
    Coordinates,
    InvalidRecordError,
    NotFramedError,
    RecordError,
    UnknownSchemaIdError,
)

WHERE = Coordinates("bus-events", 2, 1234)


def test_header_names() -> None:
    assert (
        ERROR_CLASS,
        ERROR_MESSAGE,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        SCHEMA_ID,
    ) == (
        "escalations.error.class",
        "escalations.error.message",
        "escalations.source.topic",
        "escalations.source.partition",
        "escalations.source.offset",
        "escalations.schema.id",
    )


def test_headers_of_an_error_with_a_schema_id() -> None:
    error = UnknownSchemaIdError("schema id 77 is not known", where=WHERE, schema_id=77)

    assert dead_letter_headers(error) == [
        ("escalations.error.class", b"UnknownSchemaIdError"),
        ("escalations.error.message", b"bus-events[2]@1234: schema id 77 is not known"),
        ("escalations.source.topic", b"bus-events"),
        ("escalations.source.partition", b"2"),
        ("escalations.source.offset", b"1234"),
        ("escalations.schema.id", b"77"),
    ]


def test_headers_of_an_error_without_a_schema_id_have_none() -> None:
    error = NotFramedError("3 bytes, too short", where=WHERE)

    headers = dead_letter_headers(error)

    assert headers == [
        ("escalations.error.class", b"NotFramedError"),
        ("escalations.error.message", b"bus-events[2]@1234: 3 bytes, too short"),
        ("escalations.source.topic", b"bus-events"),
        ("escalations.source.partition", b"2"),
        ("escalations.source.offset", b"1234"),
    ]
    assert header(headers, SCHEMA_ID) is None


def test_schema_id_zero_is_still_a_schema_id() -> None:
    error = InvalidRecordError("session id is empty", where=WHERE, schema_id=0)
    assert header(dead_letter_headers(error), SCHEMA_ID) == "0"


def test_unknown_coordinates_are_minus_one() -> None:
    error = RecordError("no value", where=Coordinates("escalations"))
    headers = dead_letter_headers(error)
    assert header(headers, SOURCE_TOPIC) == "escalations"
    assert header(headers, SOURCE_PARTITION) == "-1"
    assert header(headers, SOURCE_OFFSET) == "-1"
    assert header(headers, ERROR_CLASS) == "RecordError"


def test_original_headers_are_kept_in_order_before_the_dead_letter_ones() -> None:
    original = [
        ("trace-id", b"abc"),
        ("content-type", b"avro/binary"),
        ("trace-id", b"def"),  # repeated keys are kept
        ("empty", b""),
        ("binary", b"\x00\xff"),
    ]
    error = NotFramedError("magic byte is 1", where=WHERE)

    headers = dead_letter_headers(error, original)

    assert headers[: len(original)] == original
    assert [k for k, _ in headers[len(original) :]] == [
        ERROR_CLASS,
        ERROR_MESSAGE,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
    ]


def test_earlier_dead_letter_headers_are_replaced_not_repeated() -> None:
    original = [
        ("escalations.error.class", b"AvroBodyError"),
        ("keep-me", b"1"),
        ("escalations.source.offset", b"9"),
        ("escalations.anything", b"x"),
        ("escalationsX", b"no dot: kept"),
        ("x-escalations.y", b"prefix elsewhere: kept"),
        ("Escalations.case", b"other case: kept"),
    ]
    error = InvalidRecordError("session id is empty", where=WHERE, schema_id=3)

    headers = dead_letter_headers(error, original)

    assert headers == [
        ("keep-me", b"1"),
        ("escalationsX", b"no dot: kept"),
        ("x-escalations.y", b"prefix elsewhere: kept"),
        ("Escalations.case", b"other case: kept"),
        ("escalations.error.class", b"InvalidRecordError"),
        ("escalations.error.message", b"bus-events[2]@1234: session id is empty"),
        ("escalations.source.topic", b"bus-events"),
        ("escalations.source.partition", b"2"),
        ("escalations.source.offset", b"1234"),
        ("escalations.schema.id", b"3"),
    ]
    assert header(headers, ERROR_CLASS) == "InvalidRecordError"
    assert header(headers, SOURCE_OFFSET) == "1234"


def test_original_headers_are_not_modified() -> None:
    original = [("escalations.error.class", b"Old"), ("k", b"v")]
    dead_letter_headers(NotFramedError("x", where=WHERE), original)
    assert original == [("escalations.error.class", b"Old"), ("k", b"v")]


def test_a_long_ascii_message_is_cut_to_the_limit() -> None:
    error = InvalidRecordError("x" * 5000, where=WHERE)

    value = dict(dead_letter_headers(error))[ERROR_MESSAGE]

    assert len(value) == MAX_MESSAGE_BYTES
    assert value == str(error).encode()[:MAX_MESSAGE_BYTES]
    assert value.startswith(b"bus-events[2]@1234: xxx")


def test_a_message_at_the_limit_is_kept_whole() -> None:
    prefix = len(str(Coordinates("bus-events", 2, 1234))) + 2  # "...: "
    error = InvalidRecordError("y" * (MAX_MESSAGE_BYTES - prefix), where=WHERE)
    value = dict(dead_letter_headers(error))[ERROR_MESSAGE]
    assert value == str(error).encode()
    assert len(value) == MAX_MESSAGE_BYTES


def test_a_long_multibyte_message_is_cut_to_valid_utf8_within_the_limit() -> None:
    # "bus-events[2]@12345: " is 21 bytes, so the limit falls inside a 2-byte "é".
    error = InvalidRecordError("é" * 2000, where=Coordinates("bus-events", 2, 12345))
    full = str(error).encode()

    value = dict(dead_letter_headers(error))[ERROR_MESSAGE]

    assert len(value) <= MAX_MESSAGE_BYTES
    text = value.decode("utf-8")  # strict: a consumer must be able to read the header
    assert str(error).startswith(text)
    assert len(value) >= MAX_MESSAGE_BYTES - 3
    assert full.startswith(value)


def test_a_message_with_a_lone_surrogate_still_makes_a_header() -> None:
    error = InvalidRecordError("session id 'a\udcffb' is not UTF-8", where=WHERE)
    value = dict(dead_letter_headers(error))[ERROR_MESSAGE]
    assert value == b"bus-events[2]@1234: session id 'a?b' is not UTF-8"


@pytest.mark.parametrize(
    ("headers", "name", "found"),
    [
        ([("a", b"1"), ("b", b"2")], "b", "2"),
        ([("a", b"1"), ("a", b"2")], "a", "1"),  # the first one wins
        ([("a", b"")], "a", ""),
        ([("a", b"caf\xc3\xa9")], "a", "café"),
        ([("a", b"\xff")], "a", "\ufffd"),  # undecodable bytes are shown, not raised
        ([("a", b"1")], "A", None),  # names are case-sensitive
        ([], "a", None),
    ],
)
def test_header_finds_values(
    headers: list[tuple[str, bytes]], name: str, found: str | None
) -> None:
    assert header(headers, name) == found


def test_header_reads_every_dead_letter_header() -> None:
    error = UnknownSchemaIdError("schema id 9 is not known", where=WHERE, schema_id=9)
    headers = dead_letter_headers(error, [("k", b"v")])
    assert {
        name: header(headers, name)
        for name in (
            "k",
            ERROR_CLASS,
            ERROR_MESSAGE,
            SOURCE_TOPIC,
            SOURCE_PARTITION,
            SOURCE_OFFSET,
            SCHEMA_ID,
        )
    } == {
        "k": "v",
        ERROR_CLASS: "UnknownSchemaIdError",
        ERROR_MESSAGE: "bus-events[2]@1234: schema id 9 is not known",
        SOURCE_TOPIC: "bus-events",
        SOURCE_PARTITION: "2",
        SOURCE_OFFSET: "1234",
        SCHEMA_ID: "9",
    }
