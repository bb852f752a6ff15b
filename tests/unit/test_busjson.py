"""streams.core.busjson: the JSON form of bus events (README "What is kept" (the JSON form)) -> envelope datums.

Errors are InputLineError whose message names the line number and the field path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.core.busjson import BusJson
from streams.errors import EscalationsError, InputLineError

BUS = "escalations.bus."
CHILD = "escalations.bus.childgoal."

EXAMPLE_1 = (
    '{"session_id":"s-42","event_id":"e-1","occurred_at":"2026-11-24T21:40:44.474123Z",'
    ' "event":{"RouterEscalating":{"intent":"Small","target_mode":"WireWorker","preflight":true}}}'
)
EXAMPLE_2 = (
    '{"session_id":"s-42","event_id":"e-2","occurred_at":"2026-11-24T21:40:45Z",'
    ' "event":{"ChildGoalEvent":{"goal_id":"g1","event":"Cancelled"}}}'
)
EXAMPLE_3 = (
    '{"session_id":"s-42","event_id":"e-3","occurred_at":"2026-11-24T21:40:46Z",'
    ' "event":{"DisclosureLine":"some text"}}'
)


def line(event: Any, occurred_at: Any = "2026-11-24T21:40:44Z", **extra: Any) -> str:
    obj = {"session_id": "s-1", "event_id": "e-1", "occurred_at": occurred_at, "event": event}
    obj.update(extra)
    return json.dumps(obj)


def bad(bus_json: BusJson, text: str | bytes, line_no: int = 3) -> str:
    with pytest.raises(InputLineError) as info:
        bus_json.parse(text, line_no)
    err = info.value
    assert isinstance(err, EscalationsError)
    assert err.line_no == line_no
    message = str(err)
    assert message.startswith(f"line {line_no}: ")
    return message


# -- the design's examples ---------------------------------------------------------------------


def test_design_examples(bus_json: BusJson) -> None:
    assert bus_json.parse(EXAMPLE_1, 1) == {
        "session_id": "s-42",
        "event_id": "e-1",
        "occurred_at": 1_795_556_444_474_123,
        "event": (
            BUS + "RouterEscalating",
            {"intent": "Small", "target_mode": "WireWorker", "preflight": True},
        ),
    }
    assert bus_json.parse(EXAMPLE_2, 2) == {
        "session_id": "s-42",
        "event_id": "e-2",
        "occurred_at": 1_795_556_445_000_000,
        "event": (BUS + "ChildGoalEvent", {"goal_id": "g1", "event": (CHILD + "Cancelled", {})}),
    }
    assert bus_json.parse(EXAMPLE_3, 3) == {
        "session_id": "s-42",
        "event_id": "e-3",
        "occurred_at": 1_795_556_446_000_000,
        "event": (BUS + "DisclosureLine", {"line": "some text"}),
    }


def test_bytes_input(bus_json: BusJson) -> None:
    assert bus_json.parse(EXAMPLE_3.encode()) == bus_json.parse(EXAMPLE_3)


def test_every_variant(bus_json: BusJson, variant_case: tuple[str, Any, Any]) -> None:
    _, json_form, datum = variant_case
    assert bus_json.parse(line(json_form)) == {
        "session_id": "s-1",
        "event_id": "e-1",
        "occurred_at": 1_795_556_444_000_000,
        "event": datum,
    }


def test_every_variant_written_with_ascii_escapes(
    bus_json: BusJson, variant_case: tuple[str, Any, Any]
) -> None:
    _, json_form, datum = variant_case
    text = json.dumps(
        {
            "event": json_form,
            "occurred_at": "2026-11-24T21:40:44Z",
            "event_id": "é",
            "session_id": "🚀",
        },
        ensure_ascii=True,
        indent=2,
    )
    assert bus_json.parse(text)["event"] == datum


def test_unknown_fields_are_ignored(bus_json: BusJson) -> None:
    text = line({"DisclosureLine": "x"}, extra_top=1)
    assert bus_json.parse(text)["event"] == (BUS + "DisclosureLine", {"line": "x"})
    text = line({"Refused": {"reason": "r", "intent": "Small", "later": [1, 2]}})
    assert bus_json.parse(text)["event"] == (BUS + "Refused", {"reason": "r", "intent": "Small"})


def test_hostile_strings_survive(bus_json: BusJson) -> None:
    hostile = '"\\\x00\x1f\x7f\u2028\u2029🚀é' + "z" * 300
    for ensure_ascii in (True, False):
        text = json.dumps(
            {
                "session_id": hostile,
                "event_id": hostile,
                "occurred_at": "2026-11-24T21:40:44Z",
                "event": {
                    "ChildGoalEvent": {"goal_id": hostile, "event": {"Failed": {"reason": hostile}}}
                },
            },
            ensure_ascii=ensure_ascii,
        )
        datum = bus_json.parse(text)
        assert datum["session_id"] == datum["event_id"] == hostile
        assert datum["event"] == (
            BUS + "ChildGoalEvent",
            {"goal_id": hostile, "event": (CHILD + "Failed", {"reason": hostile})},
        )


# -- optional fields ----------------------------------------------------------------------------


def test_missing_optional_fields_are_none(bus_json: BusJson) -> None:
    assert bus_json.parse(line({"WorkerProgress": {"worker_id": "w1"}}))["event"] == (
        BUS + "WorkerProgress",
        {"worker_id": "w1", "percent": None, "message": None},
    )
    child = {
        "ChildGoalEvent": {
            "goal_id": "g",
            "event": {"SliceOpened": {"slice_id": "s", "worktree": "/w"}},
        }
    }
    assert bus_json.parse(line(child))["event"] == (
        BUS + "ChildGoalEvent",
        {
            "goal_id": "g",
            "event": (CHILD + "SliceOpened", {"slice_id": "s", "worktree": "/w", "pr_url": None}),
        },
    )


def test_null_optional_fields_are_none(bus_json: BusJson) -> None:
    text = line({"WorkerProgress": {"worker_id": "w1", "percent": None, "message": None}})
    assert bus_json.parse(text)["event"] == (
        BUS + "WorkerProgress",
        {"worker_id": "w1", "percent": None, "message": None},
    )


def test_integer_for_a_float_field(bus_json: BusJson) -> None:
    text = line({"WorkerProgress": {"worker_id": "w1", "percent": 50}})
    result = bus_json.parse(text)["event"][1]["percent"]
    assert result == 50.0
    assert isinstance(result, float)


@pytest.mark.parametrize("value", [0, 1, 4_294_967_295])
def test_u32_bounds_accepted(bus_json: BusJson, value: int) -> None:
    text = line({"WorkerCompleted": {"worker_id": "w", "files_touched": value, "ok": True}})
    assert bus_json.parse(text)["event"][1]["files_touched"] == value


# -- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-11-24T21:40:44Z", 1_795_556_444_000_000),
        ("2026-11-24T21:40:44.474Z", 1_795_556_444_474_000),
        ("2026-11-24T21:40:44.474123Z", 1_795_556_444_474_123),
        ("2026-11-24T21:40:44.474123000Z", 1_795_556_444_474_123),
        ("2026-11-24T21:40:44.4Z", 1_795_556_444_400_000),
        ("2026-11-24T23:40:44.474123+02:00", 1_795_556_444_474_123),
        ("2026-11-24T16:10:44.474123-05:30", 1_795_556_444_474_123),
        ("2026-11-24T21:40:44+00:00", 1_795_556_444_000_000),
        ("2026-11-24T21:40:44-00:00", 1_795_556_444_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("1969-07-20T20:17:40.123456Z", -14_182_939_876_544),
        ("2024-02-29T12:00:00Z", 1_709_208_000_000_000),
        ("0001-01-01T00:00:00Z", -62_135_596_800_000_000),
        ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
        ("0001-01-01T01:00:00+01:00", -62_135_596_800_000_000),
    ],
)
def test_timestamps(bus_json: BusJson, text: str, micros: int) -> None:
    assert bus_json.parse(line({"DisclosureLine": "x"}, text))["occurred_at"] == micros


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-11-24", "is not RFC 3339"),
        ("2026-11-24T21:40:44", "is not RFC 3339"),  # no offset
        ("2026-11-24T21:40Z", "is not RFC 3339"),
        ("26-11-24T21:40:44Z", "is not RFC 3339"),
        ("2026-11-24T21:40:44.Z", "is not RFC 3339"),
        ("2026-11-24T21:40:44.1234567890Z", "is not RFC 3339"),
        ("2026-11-24T21:40:44+0200", "is not RFC 3339"),
        (" 2026-11-24T21:40:44Z", "is not RFC 3339"),
        ("2026-11-24T21:40:44Z ", "is not RFC 3339"),
        ("10000-01-01T00:00:00Z", "is not RFC 3339"),
        ("", "is not RFC 3339"),
        ("2026-02-30T00:00:00Z", "is not a calendar date"),
        ("2025-02-29T00:00:00Z", "is not a calendar date"),
        ("2026-13-01T00:00:00Z", "is not a calendar date"),
        ("2026-00-10T00:00:00Z", "is not a calendar date"),
        ("2026-04-31T00:00:00Z", "is not a calendar date"),
        ("2026-11-24T24:00:00Z", "is not a valid time of day"),
        ("2026-11-24T21:60:00Z", "is not a valid time of day"),
        ("2026-11-24T21:40:61Z", "is not a valid time of day"),
        ("2026-11-24T21:40:44.123456789Z", "sub-microsecond"),
        ("2026-11-24T21:40:44.0000001Z", "sub-microsecond"),
        ("0000-12-31T23:59:59Z", "outside years 0001..9999"),
        ("0001-01-01T00:30:00+01:00", "outside years 0001..9999"),
        ("9999-12-31T23:59:59-00:01", "outside years 0001..9999"),
    ],
)
def test_invalid_timestamps(bus_json: BusJson, text: str, reason: str) -> None:
    message = bad(bus_json, line({"DisclosureLine": "x"}, text))
    assert "occurred_at" in message
    assert reason in message
    assert repr(text) in message


@pytest.mark.parametrize(
    "text",
    [
        "\uff12\uff10\uff12\uff16-11-24T21:40:44Z",  # full-width digits: not RFC 3339's DIGIT
        "2026-11-24T21:40:44.\u0664\u0667\u0664Z",  # Arabic-Indic digits in the fraction
        "\u0968\u0966\u0968\u096c-11-24T21:40:44Z",  # Devanagari digits
    ],
)
def test_non_ascii_digits_in_timestamps_are_refused(bus_json: BusJson, text: str) -> None:
    message = bad(bus_json, line({"DisclosureLine": "x"}, text))
    assert "occurred_at" in message


@pytest.mark.parametrize(
    "text", ["2026-11-24T21:40:44+02:60", "2026-11-24T21:40:44+02:99", "2026-11-24T21:40:44+24:00"]
)
def test_offsets_out_of_range_are_refused(bus_json: BusJson, text: str) -> None:
    # RFC 3339 time-numoffset: hours 00-23, minutes 00-59 (chrono refuses the rest too).
    message = bad(bus_json, line({"DisclosureLine": "x"}, text))
    assert "occurred_at" in message


@pytest.mark.parametrize("value", [1_795_556_444, None, True, ["2026-11-24T21:40:44Z"]])
def test_timestamp_that_is_not_a_string(bus_json: BusJson, value: Any) -> None:
    message = bad(bus_json, line({"DisclosureLine": "x"}, value))
    assert "occurred_at: expected an RFC 3339 string" in message


# -- errors name the line and the field -----------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["not json", "{", '{"session_id": "s"', "", "   ", "\x00", '{"a":1} {"b":2}']
)
def test_not_json(bus_json: BusJson, text: str) -> None:
    assert "not JSON" in bad(bus_json, text)


def test_invalid_utf8_bytes(bus_json: BusJson) -> None:
    assert "not JSON" in bad(bus_json, b'{"session_id":"\xff"}')


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "list"), ('"s"', "str"), ("1", "int"), ("null", "NoneType"), ("true", "bool")],
)
def test_not_an_object(bus_json: BusJson, text: str, kind: str) -> None:
    assert bad(bus_json, text, 7) == f"line 7: expected a JSON object, got {kind}"


@pytest.mark.parametrize("field", ["session_id", "event_id", "occurred_at", "event"])
def test_missing_envelope_field(bus_json: BusJson, field: str) -> None:
    obj = json.loads(line({"DisclosureLine": "x"}))
    del obj[field]
    assert bad(bus_json, json.dumps(obj), 12) == f"line 12: {field}: missing"


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (
            {"RouterEscalating": {"intent": "Small", "target_mode": "Idle"}},
            "event.RouterEscalating.preflight",
        ),
        ({"WorkerStarted": {"worker_id": "w", "task": "t"}}, "event.WorkerStarted.kind"),
        ({"ChildGoalEvent": {"event": "Cancelled"}}, "event.ChildGoalEvent.goal_id"),
        ({"ChildGoalEvent": {"goal_id": "g"}}, "event.ChildGoalEvent.event"),
        (
            {
                "ChildGoalEvent": {
                    "goal_id": "g",
                    "event": {"GateTransition": {"gate": "x", "to": "y"}},
                }
            },
            "event.ChildGoalEvent.event.GateTransition.from",
        ),
        (
            {
                "ChildGoalEvent": {
                    "goal_id": "g",
                    "event": {"PlanUpdated": {"revision": 1, "nodes": [{"id": "a", "label": "b"}]}},
                }
            },
            "event.ChildGoalEvent.event.PlanUpdated.nodes[0].status",
        ),
        (
            {"PreflightRequest": {"kind": "LargeEscalation", "headline": "h", "timeout_ms": 1}},
            "event.PreflightRequest.ticket_id",
        ),
    ],
)
def test_missing_variant_field(bus_json: BusJson, event: Any, path: str) -> None:
    assert bad(bus_json, line(event), 4) == f"line 4: {path}: missing"


@pytest.mark.parametrize(
    ("event", "path", "reason"),
    [
        (
            {"WorkerStarted": {"worker_id": 7, "kind": "k", "task": "t"}},
            "event.WorkerStarted.worker_id",
            "expected a string, got int",
        ),
        ({"DisclosureLine": 42}, "event.DisclosureLine.line", "expected a string, got int"),
        ({"DisclosureLine": ["x"]}, "event.DisclosureLine.line", "expected a string, got list"),
        (
            {"WorkerCompleted": {"worker_id": "w", "files_touched": 1, "ok": "yes"}},
            "event.WorkerCompleted.ok",
            "expected bool, got str",
        ),
        (
            {"WorkerCompleted": {"worker_id": "w", "files_touched": 1, "ok": 1}},
            "event.WorkerCompleted.ok",
            "expected bool, got int",
        ),
        (
            {"ChildGoalCreated": {"goal_id": "g", "parent_conv_id": "c", "plan": "a"}},
            "event.ChildGoalCreated.plan",
            "expected list, got str",
        ),
        (
            {"ChildGoalCreated": {"goal_id": "g", "parent_conv_id": "c", "plan": ["a", 2]}},
            "event.ChildGoalCreated.plan[1]",
            "expected a string, got int",
        ),
        (
            {"CostDelta": {"source": "s", "tokens_in": 1, "tokens_out": 2, "usd": "1.0"}},
            "event.CostDelta.usd",
            "expected a number, got str",
        ),
        (
            {"CostDelta": {"source": "s", "tokens_in": 1, "tokens_out": 2, "usd": True}},
            "event.CostDelta.usd",
            "expected a number, got bool",
        ),
        (
            {"WorkerProgress": {"worker_id": "w", "message": 3}},
            "event.WorkerProgress.message",
            "expected a string, got int",
        ),
        (
            {"ChildGoalEvent": {"goal_id": "g", "event": {"Failed": "oom"}}},
            "event.ChildGoalEvent.event.Failed",
            "expected dict, got str",
        ),
        (
            {
                "ChildGoalEvent": {
                    "goal_id": "g",
                    "event": {"PlanUpdated": {"revision": 1, "nodes": [7]}},
                }
            },
            "event.ChildGoalEvent.event.PlanUpdated.nodes[0]",
            "expected dict, got int",
        ),
    ],
)
def test_wrong_type(bus_json: BusJson, event: Any, path: str, reason: str) -> None:
    assert bad(bus_json, line(event), 5) == f"line 5: {path}: {reason}"


@pytest.mark.parametrize("field", ["session_id", "event_id"])
def test_envelope_string_of_wrong_type(bus_json: BusJson, field: str) -> None:
    obj = json.loads(line({"DisclosureLine": "x"}))
    obj[field] = 1
    assert bad(bus_json, json.dumps(obj), 2) == f"line 2: {field}: expected a string, got int"


BUS_NAMES = (
    "ClassifierDecided, RouterEscalating, WorkerStarted, WorkerProgress, WorkerCompleted, "
    "ChildGoalCreated, ChildGoalEvent, CostDelta, PreflightRequest, PreflightResponse, "
    "DisclosureLine, Refused, CostSoftCapWarning"
)
CHILD_NAMES = (
    "Created, PlanUpdated, WorkerStarted, WorkerProgress, WorkerCompleted, GateTransition, "
    "SliceOpened, ProofReady, Failed, Cancelled"
)


def test_unknown_bus_variant(bus_json: BusJson) -> None:
    message = bad(bus_json, line({"FutureThing": {"note": "n"}}), 9)
    assert message == f"line 9: event: unknown variant 'FutureThing' (known: {BUS_NAMES})"


def test_unknown_unit_bus_variant(bus_json: BusJson) -> None:
    message = bad(bus_json, line("Stopped"), 9)
    assert message == f"line 9: event: unknown variant 'Stopped' (known: {BUS_NAMES})"


def test_variant_names_are_case_sensitive(bus_json: BusJson) -> None:
    message = bad(bus_json, line({"refused": {"reason": "r", "intent": "Small"}}), 9)
    assert "unknown variant 'refused'" in message


def test_unknown_child_variant(bus_json: BusJson) -> None:
    event = {"ChildGoalEvent": {"goal_id": "g", "event": {"Paused": {}}}}
    message = bad(bus_json, line(event), 10)
    assert message == (
        f"line 10: event.ChildGoalEvent.event: unknown variant 'Paused' (known: {CHILD_NAMES})"
    )


@pytest.mark.parametrize(
    "event",
    [{}, {"DisclosureLine": "a", "Refused": {"reason": "r", "intent": "Small"}}, [], 5, None],
)
def test_event_not_externally_tagged(bus_json: BusJson, event: Any) -> None:
    message = bad(bus_json, line(event), 6)
    assert message.startswith('line 6: event: expected {"Variant": ...} or "UnitVariant" (')
    assert "RouterEscalating" in message


def test_struct_variant_written_bare(bus_json: BusJson) -> None:
    assert (
        bad(bus_json, line("RouterEscalating")) == "line 3: event: RouterEscalating needs a value"
    )


def test_newtype_variant_with_null(bus_json: BusJson) -> None:
    assert (
        bad(bus_json, line({"DisclosureLine": None}))
        == "line 3: event: DisclosureLine needs a value"
    )


def test_unit_variant_with_a_body(bus_json: BusJson) -> None:
    event = {"ChildGoalEvent": {"goal_id": "g", "event": {"Cancelled": {"why": 1}}}}
    message = bad(bus_json, line(event))
    assert message == (
        'line 3: event.ChildGoalEvent.event: Cancelled is a unit variant, written as "Cancelled"'
    )


@pytest.mark.parametrize(
    ("event", "path", "symbols"),
    [
        (
            {"RouterEscalating": {"intent": "Huge", "target_mode": "Idle", "preflight": True}},
            "event.RouterEscalating.intent",
            "Trivial, Small, Medium, Large",
        ),
        (
            {"RouterEscalating": {"intent": "small", "target_mode": "Idle", "preflight": True}},
            "event.RouterEscalating.intent",
            "Trivial, Small, Medium, Large",
        ),
        (
            {"RouterEscalating": {"intent": "Small", "target_mode": "Sleeping", "preflight": True}},
            "event.RouterEscalating.target_mode",
            "Idle, DirectLlm, WireWorker, PlannerWorkers, GoalRun",
        ),
        (
            {"Refused": {"reason": "r", "intent": 1}},
            "event.Refused.intent",
            "Trivial, Small, Medium, Large",
        ),
        (
            {"Refused": {"reason": "r", "intent": None}},
            "event.Refused.intent",
            "Trivial, Small, Medium, Large",
        ),
        (
            {
                "PreflightRequest": {
                    "kind": "Big",
                    "headline": "h",
                    "timeout_ms": 1,
                    "ticket_id": "t",
                }
            },
            "event.PreflightRequest.kind",
            "LargeEscalation, MediumLowConfidence, SmallOverProtectedPath, SmallOverManyFiles, "
            "QueueLargeOnActiveLarge, QueueMediumAtConcurrencyCap",
        ),
        (
            {"PreflightResponse": "Maybe"},
            "event.PreflightResponse.action",
            "Accept, Explain, Downgrade, Cancel, Timeout",
        ),
    ],
)
def test_bad_enum_value(bus_json: BusJson, event: Any, path: str, symbols: str) -> None:
    message = bad(bus_json, line(event), 8)
    assert message.startswith(f"line 8: {path}: ")
    assert message.endswith(f" is not one of {symbols}")


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (
            {"RouterEscalating": {"intent": ["Small"], "target_mode": "Idle", "preflight": True}},
            "event.RouterEscalating.intent",
        ),
        (
            {
                "RouterEscalating": {
                    "intent": "Small",
                    "target_mode": {"Idle": None},
                    "preflight": True,
                }
            },
            "event.RouterEscalating.target_mode",
        ),
        ({"PreflightResponse": {"action": "Accept"}}, "event.PreflightResponse.action"),
    ],
)
def test_enum_value_of_a_container_type(bus_json: BusJson, event: Any, path: str) -> None:
    # A list or an object where an enum symbol belongs is bad input, reported like any other.
    message = bad(bus_json, line(event), 8)
    assert message.startswith(f"line 8: {path}: ")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"),
        (2**32, "4294967296"),
        (2**64, "18446744073709551616"),
        (True, "True"),
        (False, "False"),
        (1.0, "1.0"),
        (1.5, "1.5"),
        ("1", "'1'"),
        (None, "None"),
    ],
)
def test_u32_out_of_range_or_wrong_type(bus_json: BusJson, value: Any, shown: str) -> None:
    event = {"WorkerCompleted": {"worker_id": "w", "files_touched": value, "ok": True}}
    assert bad(bus_json, line(event), 11) == (
        f"line 11: event.WorkerCompleted.files_touched: {shown} is not an unsigned 32-bit "
        "integer (0..4294967295)"
    )


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (
            {
                "ClassifierDecided": {
                    "intent": "Small",
                    "confidence": 0.5,
                    "latency_ms": -1,
                    "reasoning": "r",
                    "cached": True,
                    "fallback": True,
                }
            },
            "event.ClassifierDecided.latency_ms",
        ),
        (
            {"CostDelta": {"source": "s", "tokens_in": 2**32, "tokens_out": 0, "usd": 0.0}},
            "event.CostDelta.tokens_in",
        ),
        (
            {"CostDelta": {"source": "s", "tokens_in": 0, "tokens_out": -5, "usd": 0.0}},
            "event.CostDelta.tokens_out",
        ),
        (
            {
                "PreflightRequest": {
                    "kind": "LargeEscalation",
                    "headline": "h",
                    "timeout_ms": True,
                    "ticket_id": "t",
                }
            },
            "event.PreflightRequest.timeout_ms",
        ),
        (
            {
                "ChildGoalEvent": {
                    "goal_id": "g",
                    "event": {"PlanUpdated": {"revision": -1, "nodes": []}},
                }
            },
            "event.ChildGoalEvent.event.PlanUpdated.revision",
        ),
        (
            {
                "ChildGoalEvent": {
                    "goal_id": "g",
                    "event": {"WorkerCompleted": {"worker_id": "w", "files": 2**32, "ok": True}},
                }
            },
            "event.ChildGoalEvent.event.WorkerCompleted.files",
        ),
    ],
)
def test_every_u32_field_is_checked(bus_json: BusJson, event: Any, path: str) -> None:
    message = bad(bus_json, line(event), 11)
    assert message.startswith(f"line 11: {path}: ")
    assert message.endswith("is not an unsigned 32-bit integer (0..4294967295)")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (
            '{"session_id":"\\ud800","event_id":"e","occurred_at":"2026-11-24T21:40:44Z","event":{"DisclosureLine":"x"}}',
            "session_id",
        ),
        (
            '{"session_id":"s","event_id":"\\udfff","occurred_at":"2026-11-24T21:40:44Z","event":{"DisclosureLine":"x"}}',
            "event_id",
        ),
        (
            '{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z","event":{"DisclosureLine":"a\\ud800b"}}',
            "event.DisclosureLine.line",
        ),
        (
            '{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z","event":{"ChildGoalCreated":{"goal_id":"g","parent_conv_id":"c","plan":["ok","\\udc00"]}}}',
            "event.ChildGoalCreated.plan[1]",
        ),
        (
            '{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z","event":{"ChildGoalEvent":{"goal_id":"g","event":{"Failed":{"reason":"\\ude00\\ud800"}}}}}',
            "event.ChildGoalEvent.event.Failed.reason",
        ),
    ],
)
def test_lone_surrogate(bus_json: BusJson, text: str, path: str) -> None:
    assert bad(bus_json, text, 13) == (
        f"line 13: {path}: contains a lone surrogate (not valid UTF-8)"
    )


def test_surrogate_pair_escape_is_a_character(bus_json: BusJson) -> None:
    text = line({"DisclosureLine": "x"}).replace('"x"', '"\\ud83d\\ude80"')
    assert bus_json.parse(text)["event"] == (BUS + "DisclosureLine", {"line": "🚀"})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_refused(bus_json: BusJson, literal: str) -> None:
    # Not JSON (RFC 8259); serde_json refuses them.
    text = line({"CostSoftCapWarning": {"current_usd": 0.0, "soft_cap_usd": 5.0}})
    text = text.replace('"current_usd": 0.0', f'"current_usd": {literal}')
    assert literal in text
    bad(bus_json, text)


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"a":' * 100_000, '{"session_id":' + "[" * 50_000]
)
def test_deeply_nested_json_is_bad_input(bus_json: BusJson, text: str) -> None:
    # serde_json stops at depth 128 with an error; the line must not crash the command.
    bad(bus_json, text)


# -- parse_lines -----------------------------------------------------------------------------------


def test_parse_lines_skips_blank_lines_and_counts_them(bus_json: BusJson) -> None:
    lines = [EXAMPLE_1 + "\n", "\n", "   \n", EXAMPLE_3 + "\n", "oops\n"]
    parsed = bus_json.parse_lines(iter(lines))
    assert next(parsed)["event_id"] == "e-1"
    assert next(parsed)["event_id"] == "e-3"
    with pytest.raises(InputLineError) as info:
        next(parsed)
    assert info.value.line_no == 5
    assert str(info.value).startswith("line 5: not JSON")
