"""streams.contracts.codec: Confluent wire format with the writer's schema; typed errors for bad bytes."""

from __future__ import annotations

import copy
import random
import struct
from typing import Any

import pytest

from streams.contracts.codec import Codec, schema_id_of
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.mapping import drop_reason, entry_from_event
from streams.errors import (
    AvroBodyError,
    Coordinates,
    DecodeError,
    NotFramedError,
    RecordError,
    TrailingBytesError,
    UnknownSchemaIdError,
)

BUS = "escalations.bus."
CHILD = "escalations.bus.childgoal."
WHERE = "bus-events[2]@1234"
TS = 1_795_556_444_474_123


def envelope(event: Any, **overrides: Any) -> dict[str, Any]:
    datum = {"session_id": "s-42", "event_id": "e-1", "occurred_at": TS, "event": event}
    datum.update(overrides)
    return datum


ENTRY_DATUM = {
    "session_id": "s-42",
    "ts": TS,
    "kind": "gate_transition",
    "goal_id": "g1",
    "intent": None,
    "summary": "gate test: running -> passed",
    "confidence": None,
    "auto_proceed": False,
    "source_topic": "bus-events",
    "source_partition": 2,
    "source_offset": 1234,
}


def zigzag(n: int) -> bytes:
    """Avro's variable-length zig-zag long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def avro_string(s: str) -> bytes:
    raw = s.encode()
    return zigzag(len(raw)) + raw


HEADER_1 = b"\x00\x00\x00\x00\x01"
ENVELOPE_PREFIX = avro_string("s") + avro_string("e") + zigzag(0)  # session, event id, ts=0


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_every_variant(
    codec: Codec, where: Coordinates, variant_case: tuple[str, Any, Any]
) -> None:
    _, _, event = variant_case
    datum = envelope(event)
    value = codec.encode(1, datum)
    assert value[:5] == HEADER_1
    assert codec.decode(value, where) == (1, datum)


@pytest.mark.parametrize(
    "overrides",
    [
        {"occurred_at": 0},
        {"occurred_at": -1},
        {"occurred_at": -62_135_596_800_000_000},
        {"occurred_at": 253_402_300_799_999_999},
        {"session_id": "", "event_id": ""},
        {"session_id": '\x00"\\\u2028🚀é' * 50, "event_id": "x" * 10_000},
    ],
)
def test_round_trip_envelope_fields(
    codec: Codec, where: Coordinates, overrides: dict[str, Any]
) -> None:
    datum = envelope((BUS + "DisclosureLine", {"line": "🚀\x00"}), **overrides)
    assert codec.decode(codec.encode(1, datum), where) == (1, datum)


def test_round_trip_optional_nulls(codec: Codec, where: Coordinates) -> None:
    for event in (
        (BUS + "WorkerProgress", {"worker_id": "w", "percent": None, "message": None}),
        (
            BUS + "ChildGoalEvent",
            {
                "goal_id": "g",
                "event": (
                    CHILD + "SliceOpened",
                    {"slice_id": "s", "worktree": "/w", "pr_url": None},
                ),
            },
        ),
    ):
        datum = envelope(event)
        assert codec.decode(codec.encode(1, datum), where) == (1, datum)


def test_round_trip_entry(codec: Codec, where: Coordinates) -> None:
    value = codec.encode(2, ENTRY_DATUM)
    assert value[:5] == b"\x00\x00\x00\x00\x02"
    assert codec.decode(value, where) == (2, ENTRY_DATUM)
    with_intent = dict(ENTRY_DATUM, goal_id=None, intent="large", kind="refused", summary="r")
    assert codec.decode(codec.encode(2, with_intent), where) == (2, with_intent)


def test_known_exact_bytes(codec: Codec) -> None:
    datum = envelope(
        (BUS + "DisclosureLine", {"line": "hi"}), session_id="s", event_id="e", occurred_at=1
    )
    # magic, id 1, "s", "e", ts 1 (zig-zag 2), branch 10 (zig-zag 20), "hi"
    assert codec.encode(1, datum) == b"\x00\x00\x00\x00\x01\x02s\x02e\x02\x14\x04hi"


def test_schema_id_of() -> None:
    assert schema_id_of(b"\x00\x00\x00\x03\xe8rest") == 1000
    assert schema_id_of(HEADER_1) == 1
    assert schema_id_of(b"\x00\x00\x00\x01") is None
    assert schema_id_of(b"\x01\x00\x00\x00\x01") is None
    assert schema_id_of(None) is None


def test_names(codec: Codec) -> None:
    assert codec.knows(1)
    assert codec.knows(2)
    assert not codec.knows(99)


# -- framing errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, b"", b"\x00", b"\x00\x00", b"\x00\x00\x00", b"\x00\x00\x00\x01"]
)
def test_too_short_is_not_framed(codec: Codec, where: Coordinates, value: bytes | None) -> None:
    size = 0 if value is None else len(value)
    with pytest.raises(NotFramedError) as info:
        codec.decode(value, where)
    err = info.value
    assert isinstance(err, DecodeError)
    assert isinstance(err, RecordError)
    assert err.where == where
    assert err.schema_id is None
    message = str(err)
    assert message.startswith(WHERE + ": ")
    assert f"value of {size} bytes is too short for the Confluent wire format" in message
    assert "needs at least 5" in message


@pytest.mark.parametrize(
    ("value", "first"),
    [
        (b'{"a":1}', "0x7b"),
        (b"\x01\x00\x00\x00\x01\x02s", "0x01"),
        (b"\xff\xff\xff\xff\xff", "0xff"),
        (b"hello world", "0x68"),
    ],
)
def test_wrong_magic_byte_is_not_framed(
    codec: Codec, where: Coordinates, value: bytes, first: str
) -> None:
    with pytest.raises(NotFramedError) as info:
        codec.decode(value, where)
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert f"value of {len(value)} bytes is not in the Confluent wire format" in message
    assert f"first byte is {first}" in message
    assert "magic byte 0x00" in message


@pytest.mark.parametrize("schema_id", [0, 3, 99, 1000, 2**32 - 1])
def test_unknown_schema_id(codec: Codec, where: Coordinates, schema_id: int) -> None:
    value = b"\x00" + struct.pack(">I", schema_id) + b"\x02s\x02e\x00\x14\x00"
    with pytest.raises(UnknownSchemaIdError) as info:
        codec.decode(value, where)
    err = info.value
    assert err.schema_id == schema_id
    assert err.where == where
    assert str(err) == (
        f"{WHERE}: schema id {schema_id} is not known (known ids: 1, 2); "
        f"value of {len(value)} bytes"
    )


def test_unknown_schema_id_with_no_schemas(where: Coordinates) -> None:
    with pytest.raises(UnknownSchemaIdError, match=r"schema id 1 is not known \(known ids: none\)"):
        Codec().decode(HEADER_1 + b"\x00", where)


def test_header_only_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    with pytest.raises(AvroBodyError) as info:
        codec.decode(HEADER_1, where)
    assert info.value.schema_id == 1
    assert str(info.value).startswith(
        f"{WHERE}: Avro body of 0 bytes is not a valid {BUS_EVENT} (schema id 1)"
    )


# -- truncation, trailing bytes, garbage ----------------------------------------------------------

RICH = envelope(
    (
        BUS + "ChildGoalEvent",
        {
            "goal_id": "g-🚀",
            "event": (
                CHILD + "PlanUpdated",
                {
                    "revision": 4_294_967_295,
                    "nodes": [
                        {"id": "n1", "label": "write é", "status": "done"},
                        {"id": "n2", "label": "", "status": "pending"},
                    ],
                },
            ),
        },
    )
)


@pytest.mark.parametrize(
    "datum",
    [
        RICH,
        envelope(
            (BUS + "CostDelta", {"source": "llm", "tokens_in": 7, "tokens_out": 9, "usd": 0.25})
        ),
        envelope((BUS + "WorkerProgress", {"worker_id": "w", "percent": 12.5, "message": "m"})),
    ],
    ids=["PlanUpdated", "CostDelta", "WorkerProgress"],
)
def test_every_truncation_is_a_decode_error(
    codec: Codec, where: Coordinates, datum: dict[str, Any]
) -> None:
    value = codec.encode(1, datum)
    for n in range(5, len(value)):
        with pytest.raises(DecodeError) as info:
            codec.decode(value[:n], where)
        err = info.value
        assert err.schema_id == 1, n
        assert str(err).startswith(WHERE + ": "), n
        if isinstance(err, AvroBodyError):
            assert f"Avro body of {n - 5} bytes is not a valid {BUS_EVENT} (schema id 1)" in str(
                err
            )


def test_every_truncation_of_an_entry(codec: Codec, where: Coordinates) -> None:
    value = codec.encode(2, ENTRY_DATUM)
    for n in range(5, len(value)):
        with pytest.raises(DecodeError):
            codec.decode(value[:n], where)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x01\x02", b"x" * 100])
def test_trailing_bytes(codec: Codec, where: Coordinates, extra: bytes) -> None:
    value = codec.encode(1, RICH)
    body = len(value) - 5
    with pytest.raises(TrailingBytesError) as info:
        codec.decode(value + extra, where)
    err = info.value
    assert err.schema_id == 1
    assert str(err) == (
        f"{WHERE}: schema id 1 ({BUS_EVENT}) read {body} of the {body + len(extra)} body bytes; "
        f"{len(extra)} trailing bytes"
    )


def test_random_garbage_bodies(codec: Codec, where: Coordinates) -> None:
    rng = random.Random(20261124)
    alphabets = [range(256), range(12), [0, 1, 2, 3, 4, 6, 8, 0x7F, 0x80, 0xFF]]
    outcomes: dict[str, int] = {}
    for _ in range(400):
        alphabet = rng.choice(alphabets)
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        for header in (HEADER_1, b"\x00\x00\x00\x00\x02"):
            try:
                schema_id, record = codec.decode(header + body, where)
            except DecodeError as exc:
                assert exc.where == where
                assert exc.schema_id == header[4]
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            else:
                assert schema_id == header[4]
                assert isinstance(record, dict)
                outcomes["decoded"] = outcomes.get("decoded", 0) + 1
    assert outcomes.get("AvroBodyError", 0) > 0


def test_flipped_bytes_of_a_valid_record(codec: Codec, where: Coordinates) -> None:
    rng = random.Random(7)
    value = bytearray(codec.encode(1, RICH))
    for _ in range(300):
        mutated = bytearray(value)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(5, len(mutated))] = rng.randrange(256)
        try:
            schema_id, record = codec.decode(bytes(mutated), where)
        except DecodeError:
            continue
        assert schema_id == 1
        assert isinstance(record, dict)


def test_invalid_utf8_in_a_string_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    for bad in (b"\xff", b"\xed\xa0\x80", b"\xc3"):  # not UTF-8, an encoded surrogate, truncated
        body = zigzag(len(bad)) + bad + avro_string("e") + zigzag(0) + zigzag(10) + avro_string("x")
        with pytest.raises(AvroBodyError):
            codec.decode(HEADER_1 + body, where)


def test_negative_union_index_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    # Avro: a union value is "an int specifying the zero-based position within the union".
    # Branch -1 must not silently decode as the last branch (CostSoftCapWarning).
    body = ENVELOPE_PREFIX + zigzag(-1) + struct.pack("<dd", 1.0, 2.0)
    with pytest.raises(AvroBodyError):
        codec.decode(HEADER_1 + body, where)


def test_union_index_past_the_end_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    body = ENVELOPE_PREFIX + zigzag(13) + avro_string("x")
    with pytest.raises(AvroBodyError) as info:
        codec.decode(HEADER_1 + body, where)
    assert info.value.schema_id == 1


def test_negative_enum_index_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    # RouterEscalating (branch 1) with intent index -1: must not decode as "Large".
    body = ENVELOPE_PREFIX + zigzag(1) + zigzag(-1) + zigzag(0) + b"\x00"
    with pytest.raises(AvroBodyError):
        codec.decode(HEADER_1 + body, where)


def test_enum_index_past_the_end_is_an_avro_body_error(codec: Codec, where: Coordinates) -> None:
    body = ENVELOPE_PREFIX + zigzag(1) + zigzag(4) + zigzag(0) + b"\x00"
    with pytest.raises(AvroBodyError):
        codec.decode(HEADER_1 + body, where)


def test_hand_written_body_decodes(codec: Codec, where: Coordinates) -> None:
    # The same layout as the invalid cases above, with valid indexes: the tests build real records.
    body = ENVELOPE_PREFIX + zigzag(1) + zigzag(3) + zigzag(4) + b"\x01"
    assert codec.decode(HEADER_1 + body, where) == (
        1,
        {
            "session_id": "s",
            "event_id": "e",
            "occurred_at": 0,
            "event": (
                BUS + "RouterEscalating",
                {"intent": "Large", "target_mode": "GoalRun", "preflight": True},
            ),
        },
    )


# -- forward compatibility: a newer writer's variants --------------------------------------------


def newer_envelope(store: SchemaStore, *, bus_variant: bool, child_variant: bool) -> dict[str, Any]:
    schema = copy.deepcopy(store.current(BUS_EVENT))
    event = next(f for f in schema["fields"] if f["name"] == "event")
    if bus_variant:
        event["type"].append(
            {
                "type": "record",
                "name": "FutureThing",
                "namespace": "escalations.bus",
                "fields": [{"name": "note", "type": "string"}],
            }
        )
    if child_variant:
        child_goal = next(b for b in event["type"] if b["name"] == "ChildGoalEvent")
        child_union = next(f for f in child_goal["fields"] if f["name"] == "event")
        child_union["type"].append(
            {
                "type": "record",
                "name": "Paused",
                "namespace": "escalations.bus.childgoal",
                "fields": [{"name": "until", "type": "string"}],
            }
        )
    return schema


def test_newer_bus_variant_decodes_and_is_dropped_as_unknown(
    store: SchemaStore, where: Coordinates
) -> None:
    codec = Codec(store.by_id())
    codec.add(1000, newer_envelope(store, bus_variant=True, child_variant=False))
    datum = envelope((BUS + "FutureThing", {"note": "from the future 🚀"}))
    value = codec.encode(1000, datum)
    assert value[:5] == b"\x00\x00\x00\x03\xe8"
    schema_id, record = codec.decode(value, where)
    assert schema_id == 1000
    assert record == datum
    assert record["event"] == ("escalations.bus.FutureThing", {"note": "from the future 🚀"})
    assert entry_from_event(record["event"], ts_us=record["occurred_at"]) is None
    assert drop_reason(record["event"]) == "unknown_variant"
    # The committed id 1 cannot encode it at all: the variant is not in the contract.
    with pytest.raises(ValueError):
        codec.encode(1, datum)


def test_newer_child_variant_decodes_and_is_dropped_as_unknown(
    store: SchemaStore, where: Coordinates
) -> None:
    codec = Codec(store.by_id())
    codec.add(1000, newer_envelope(store, bus_variant=False, child_variant=True))
    event = (
        BUS + "ChildGoalEvent",
        {"goal_id": "g1", "event": (CHILD + "Paused", {"until": "later"})},
    )
    datum = envelope(event)
    schema_id, record = codec.decode(codec.encode(1000, datum), where)
    assert (schema_id, record) == (1000, datum)
    assert record["event"][1]["event"] == ("escalations.bus.childgoal.Paused", {"until": "later"})
    assert entry_from_event(record["event"], ts_us=TS) is None
    assert drop_reason(record["event"]) == "unknown_variant"


def test_newer_writer_known_variants_still_map(store: SchemaStore, where: Coordinates) -> None:
    codec = Codec(store.by_id())
    codec.add(1000, newer_envelope(store, bus_variant=True, child_variant=True))
    event = (
        BUS + "ChildGoalEvent",
        {"goal_id": "g1", "event": (CHILD + "Failed", {"reason": "oom"})},
    )
    _, record = codec.decode(codec.encode(1000, envelope(event)), where)
    entry = entry_from_event(record["event"], ts_us=record["occurred_at"])
    assert entry is not None
    assert (entry.kind, entry.goal_id, entry.summary, entry.ts_us) == ("failed", "g1", "oom", TS)
