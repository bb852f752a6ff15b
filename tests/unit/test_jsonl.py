"""streams.core.jsonl: the exact bytes serde_json writes for the seed's entry (README "What is kept, and the line it becomes").

Every expectation is written out literally, as serde_json 1.x and chrono 0.4 produce it.
"""

from __future__ import annotations

import json

import pytest

from streams.core.jsonl import TS_MAX_US, TS_MIN_US, render, rfc3339, ts_in_range
from streams.core.mapping import EscalationEntry

TS = 1_795_556_444_474_123  # 2026-11-24T21:40:44.474123Z
SECONDS = 1_795_556_444  # 2026-11-24T21:40:44Z


def make(
    summary: str = "s",
    *,
    ts_us: int = TS,
    kind: str = "failed",
    goal_id: str | None = None,
    intent: str | None = None,
    auto_proceed: bool = False,
) -> EscalationEntry:
    return EscalationEntry(ts_us, kind, goal_id, intent, summary, None, auto_proceed)


def summary_bytes(line: bytes) -> bytes:
    """The JSON text of ``summary`` in a rendered line (between the fixed neighbour keys)."""
    _, rest = line.split(b',"summary":', 1)
    assert rest.endswith(b',"confidence":null,"auto_proceed":false}\n')
    return rest[: -len(b',"confidence":null,"auto_proceed":false}\n')]


# -- whole lines -----------------------------------------------------------------------------


def test_router_escalation_line() -> None:
    entry = make(
        "escalating to wireworker", kind="router_escalation", intent="small", auto_proceed=False
    )
    assert render(entry) == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"router_escalation","goal_id":null,'
        b'"intent":"small","summary":"escalating to wireworker","confidence":null,'
        b'"auto_proceed":false}\n'
    )


def test_auto_proceed_true_line() -> None:
    entry = make(
        "escalating to goalrun", kind="router_escalation", intent="large", auto_proceed=True
    )
    assert render(entry) == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"router_escalation","goal_id":null,'
        b'"intent":"large","summary":"escalating to goalrun","confidence":null,'
        b'"auto_proceed":true}\n'
    )


def test_goal_line_with_goal_id_and_null_intent() -> None:
    entry = make("gate test: running -> passed", kind="gate_transition", goal_id="g1")
    assert render(entry) == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"gate_transition","goal_id":"g1",'
        b'"intent":null,"summary":"gate test: running -> passed","confidence":null,'
        b'"auto_proceed":false}\n'
    )


def test_whole_second_line() -> None:
    entry = make("goal cancelled", ts_us=SECONDS * 1_000_000, kind="cancelled", goal_id="g1")
    assert render(entry) == (
        b'{"ts":"2026-11-24T21:40:44Z","kind":"cancelled","goal_id":"g1","intent":null,'
        b'"summary":"goal cancelled","confidence":null,"auto_proceed":false}\n'
    )


@pytest.mark.parametrize(
    "kind",
    [
        "router_escalation",
        "worker_started",
        "worker_completed",
        "goal_created",
        "gate_transition",
        "proof_ready",
        "cancelled",
        "failed",
        "refused",
    ],
)
def test_every_kind_is_written_as_is(kind: str) -> None:
    line = render(make("x", ts_us=0, kind=kind))
    assert line == (
        b'{"ts":"1970-01-01T00:00:00Z","kind":"' + kind.encode() + b'","goal_id":null,'
        b'"intent":null,"summary":"x","confidence":null,"auto_proceed":false}\n'
    )


def test_exactly_one_newline_and_no_spaces() -> None:
    line = render(make("no-spaces-here", goal_id="g", intent="medium"))
    assert line.count(b"\n") == 1
    assert line.endswith(b"}\n")
    assert b" " not in line


def test_confidence_other_than_null_is_refused() -> None:
    entry = EscalationEntry(TS, "refused", None, "large", "r", 0.5, False)
    with pytest.raises(ValueError, match="confidence"):
        render(entry)


# -- string escapes: serde_json's exact spelling --------------------------------------------


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\x00", b"\\u0000"),
        ("\x01", b"\\u0001"),
        ("\x02", b"\\u0002"),
        ("\x03", b"\\u0003"),
        ("\x04", b"\\u0004"),
        ("\x05", b"\\u0005"),
        ("\x06", b"\\u0006"),
        ("\x07", b"\\u0007"),
        ("\x08", b"\\b"),
        ("\x09", b"\\t"),
        ("\x0a", b"\\n"),
        ("\x0b", b"\\u000b"),
        ("\x0c", b"\\f"),
        ("\x0d", b"\\r"),
        ("\x0e", b"\\u000e"),
        ("\x0f", b"\\u000f"),
        ("\x10", b"\\u0010"),
        ("\x11", b"\\u0011"),
        ("\x12", b"\\u0012"),
        ("\x13", b"\\u0013"),
        ("\x14", b"\\u0014"),
        ("\x15", b"\\u0015"),
        ("\x16", b"\\u0016"),
        ("\x17", b"\\u0017"),
        ("\x18", b"\\u0018"),
        ("\x19", b"\\u0019"),
        ("\x1a", b"\\u001a"),
        ("\x1b", b"\\u001b"),
        ("\x1c", b"\\u001c"),
        ("\x1d", b"\\u001d"),
        ("\x1e", b"\\u001e"),
        ("\x1f", b"\\u001f"),
        ('"', b'\\"'),
        ("\\", b"\\\\"),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else None,
)
def test_escaped_characters(char: str, escaped: bytes) -> None:
    line = render(make(f"<{char}>"))
    assert summary_bytes(line) == b'"<' + escaped + b'>"'


def test_all_control_characters_in_one_string() -> None:
    hostile = "".join(chr(c) for c in range(0x20))
    assert summary_bytes(render(make(hostile))) == (
        b'"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r'
        b"\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018"
        b'\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"'
    )


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("\x7f", b"\x7f"),  # DEL is not a control character for JSON
        ("\u2028", b"\xe2\x80\xa8"),  # LINE SEPARATOR: serde_json does not escape it
        ("\u2029", b"\xe2\x80\xa9"),  # PARAGRAPH SEPARATOR
        ("\u0080", b"\xc2\x80"),  # C1 control: raw
        ("\u00e9", b"\xc3\xa9"),  # é
        ("\u65e5\u672c", b"\xe6\x97\xa5\xe6\x9c\xac"),  # 日本
        ("\U0001f680", b"\xf0\x9f\x9a\x80"),  # 🚀 as raw UTF-8, not a surrogate pair
        ("\ufeff", b"\xef\xbb\xbf"),  # BOM inside a string
        ("\U0010ffff", b"\xf4\x8f\xbf\xbf"),
        ("/", b"/"),  # serde_json does not escape the solidus
        ("'", b"'"),
        ("<>&", b"<>&"),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else None,
)
def test_unescaped_characters_are_raw_utf8(text: str, raw: bytes) -> None:
    assert summary_bytes(render(make(text))) == b'"' + raw + b'"'


def test_hostile_goal_id_and_summary() -> None:
    entry = make(
        'he said "stop"\\ \U0001f525 \u00fcber\n',
        kind="failed",
        goal_id='g"1\\\t\u2028',
    )
    assert render(entry) == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"failed","goal_id":"g\\"1\\\\\\t\xe2\x80\xa8",'
        b'"intent":null,"summary":"he said \\"stop\\"\\\\ \xf0\x9f\x94\xa5 \xc3\xbcber\\n",'
        b'"confidence":null,"auto_proceed":false}\n'
    )


def test_escape_lookalikes_are_escaped_not_interpreted() -> None:
    # A literal backslash-u in the input is a backslash followed by "u".
    assert summary_bytes(render(make("\\u0000 \\n"))) == b'"\\\\u0000 \\\\n"'


def test_empty_strings() -> None:
    line = render(make("", goal_id=""))
    assert line == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"failed","goal_id":"","intent":null,'
        b'"summary":"","confidence":null,"auto_proceed":false}\n'
    )


def test_300_character_strings() -> None:
    summary = 'a"\\' * 100
    goal = "\u00e9" * 300
    line = render(make(summary, goal_id=goal))
    assert len(summary) == len(goal) == 300
    assert line == (
        b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"failed","goal_id":"'
        + b"\xc3\xa9" * 300
        + b'","intent":null,"summary":"'
        + b'a\\"\\\\' * 100
        + b'","confidence":null,"auto_proceed":false}\n'
    )


def test_long_string_of_control_characters() -> None:
    line = render(make("\x01\n" * 150))
    assert summary_bytes(line) == b'"' + b"\\u0001\\n" * 150 + b'"'


# -- timestamps: chrono's RFC 3339 (AutoSi, Z) ------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (SECONDS, 0, "2026-11-24T21:40:44Z"),
        (SECONDS, 474_000_000, "2026-11-24T21:40:44.474Z"),
        (SECONDS, 474_123_000, "2026-11-24T21:40:44.474123Z"),
        (SECONDS, 474_123_456, "2026-11-24T21:40:44.474123456Z"),
        (SECONDS, 100_000_000, "2026-11-24T21:40:44.100Z"),
        (SECONDS, 1_000_000, "2026-11-24T21:40:44.001Z"),
        (SECONDS, 120_000, "2026-11-24T21:40:44.000120Z"),
        (SECONDS, 1_000, "2026-11-24T21:40:44.000001Z"),
        (SECONDS, 1, "2026-11-24T21:40:44.000000001Z"),
        (SECONDS, 999_999_999, "2026-11-24T21:40:44.999999999Z"),
        (0, 0, "1970-01-01T00:00:00Z"),
        (0, 500_000_000, "1970-01-01T00:00:00.500Z"),
        (-1, 0, "1969-12-31T23:59:59Z"),
        (1_709_208_000, 0, "2024-02-29T12:00:00Z"),
        (-14_182_940, 123_456_000, "1969-07-20T20:17:40.123456Z"),
        (-2_208_988_800, 1_000, "1900-01-01T00:00:00.000001Z"),
        (-62_135_596_800, 0, "0001-01-01T00:00:00Z"),
        (253_402_300_799, 999_999_000, "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_rfc3339(seconds: int, nanos: int, text: str) -> None:
    assert rfc3339(seconds, nanos) == text


@pytest.mark.parametrize(
    ("ts_us", "ts"),
    [
        (TS, b"2026-11-24T21:40:44.474123Z"),
        (1_795_556_444_474_000, b"2026-11-24T21:40:44.474Z"),
        (1_795_556_444_000_000, b"2026-11-24T21:40:44Z"),
        (1_795_556_444_000_001, b"2026-11-24T21:40:44.000001Z"),
        (1_795_556_444_100_000, b"2026-11-24T21:40:44.100Z"),
        (0, b"1970-01-01T00:00:00Z"),
        (1, b"1970-01-01T00:00:00.000001Z"),
        (-1, b"1969-12-31T23:59:59.999999Z"),
        (-1_500_000, b"1969-12-31T23:59:58.500Z"),
        (-14_182_939_876_544, b"1969-07-20T20:17:40.123456Z"),
        (-2_208_988_799_999_999, b"1900-01-01T00:00:00.000001Z"),
        (-62_135_596_800_000_000, b"0001-01-01T00:00:00Z"),
        (253_402_300_799_999_999, b"9999-12-31T23:59:59.999999Z"),
    ],
)
def test_render_ts(ts_us: int, ts: bytes) -> None:
    assert render(make("x", ts_us=ts_us)) == (
        b'{"ts":"' + ts + b'","kind":"failed","goal_id":null,"intent":null,"summary":"x",'
        b'"confidence":null,"auto_proceed":false}\n'
    )


def test_ts_bounds_are_years_0001_and_9999() -> None:
    assert TS_MIN_US == -62_135_596_800_000_000
    assert TS_MAX_US == 253_402_300_799_999_999
    assert render(make(ts_us=TS_MIN_US)).startswith(b'{"ts":"0001-01-01T00:00:00Z",')
    assert render(make(ts_us=TS_MAX_US)).startswith(b'{"ts":"9999-12-31T23:59:59.999999Z",')
    assert ts_in_range(TS_MIN_US)
    assert ts_in_range(TS_MAX_US)
    assert not ts_in_range(TS_MIN_US - 1)
    assert not ts_in_range(TS_MAX_US + 1)


def test_entry_keys_are_the_order_render_writes() -> None:
    from streams.core.jsonl import ENTRY_KEYS

    line = render(EscalationEntry(0, "refused", None, "small", "no", None, False))
    assert tuple(json.loads(line)) == ENTRY_KEYS
