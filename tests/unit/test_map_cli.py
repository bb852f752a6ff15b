"""`escalations map`: JSON-form bus events on stdin -> the exact JSONL lines on stdout.

Runs the real command in a subprocess and compares its bytes with an independent reference
implementation of README "What is kept, and the line it becomes" written below (it imports nothing from ``streams``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

MAP = [sys.executable, "-m", "streams.cli", "map"]

EXAMPLES = (
    b'{"session_id":"s-42","event_id":"e-1","occurred_at":"2026-11-24T21:40:44.474123Z",'
    b' "event":{"RouterEscalating":{"intent":"Small","target_mode":"WireWorker",'
    b'"preflight":true}}}\n'
    b'{"session_id":"s-42","event_id":"e-2","occurred_at":"2026-11-24T21:40:45Z",'
    b' "event":{"ChildGoalEvent":{"goal_id":"g1","event":"Cancelled"}}}\n'
    b'{"session_id":"s-42","event_id":"e-3","occurred_at":"2026-11-24T21:40:46Z",'
    b' "event":{"DisclosureLine":"some text"}}\n'
)
EXAMPLE_OUTPUT = (
    b'{"ts":"2026-11-24T21:40:44.474123Z","kind":"router_escalation","goal_id":null,'
    b'"intent":"small","summary":"escalating to wireworker","confidence":null,'
    b'"auto_proceed":false}\n'
    b'{"ts":"2026-11-24T21:40:45Z","kind":"cancelled","goal_id":"g1","intent":null,'
    b'"summary":"goal cancelled","confidence":null,"auto_proceed":false}\n'
)
GOOD_1 = EXAMPLES.splitlines(keepends=True)[0]
GOOD_2 = EXAMPLES.splitlines(keepends=True)[1]
OUT_1 = EXAMPLE_OUTPUT.splitlines(keepends=True)[0]
OUT_2 = EXAMPLE_OUTPUT.splitlines(keepends=True)[1]


def run_map(
    stdin: bytes, tmp_path: Path, env: dict[str, str] | None = None, argv: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"}
    environ.update(env or {})
    return subprocess.run(
        argv or MAP,
        input=stdin,
        capture_output=True,
        cwd=tmp_path,
        env=environ,
        timeout=60,
        check=False,
    )


# -- the design's examples and the basic contract ------------------------------------------------


def test_design_examples(tmp_path: Path) -> None:
    result = run_map(EXAMPLES, tmp_path)
    assert result.stderr == b""
    assert result.returncode == 0
    assert result.stdout == EXAMPLE_OUTPUT


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "escalations"
    result = run_map(EXAMPLES, tmp_path, argv=[str(script), "map"])
    assert (result.returncode, result.stdout, result.stderr) == (0, EXAMPLE_OUTPUT, b"")


def test_dropped_events_print_nothing(tmp_path: Path) -> None:
    dropped = (
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"RouterEscalating":{"intent":"Trivial","target_mode":"DirectLlm","preflight":false}}}\n'
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"CostDelta":{"source":"llm","tokens_in":100,"tokens_out":50,"usd":0.01}}}\n'
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"PreflightResponse":"Accept"}}\n'
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"ChildGoalEvent":{"goal_id":"g","event":{"SliceOpened":{"slice_id":"s","worktree":"/w"}}}}}\n'
    )
    result = run_map(dropped, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_empty_input(tmp_path: Path) -> None:
    result = run_map(b"", tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_order_is_kept(tmp_path: Path) -> None:
    stdin = GOOD_2 + GOOD_1 + GOOD_2 + b"\n  \n" + GOOD_1
    result = run_map(stdin, tmp_path)
    assert result.returncode == 0
    assert result.stdout == OUT_2 + OUT_1 + OUT_2 + OUT_1


def test_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    result = run_map(GOOD_1.rstrip(b"\n") + b"\r\n" + GOOD_2.rstrip(b"\n"), tmp_path)
    assert result.returncode == 0
    assert result.stdout == OUT_1 + OUT_2


def test_malformed_line_3_after_two_good_lines(tmp_path: Path) -> None:
    result = run_map(GOOD_1 + GOOD_2 + b'{"session_id": oops}\n' + GOOD_1, tmp_path)
    assert result.returncode == 1
    assert result.stdout == OUT_1 + OUT_2
    stderr = result.stderr.decode()
    assert stderr.startswith("escalations: error: line 3: not JSON")
    assert "Traceback" not in stderr


def test_blank_lines_count_in_line_numbers(tmp_path: Path) -> None:
    result = run_map(GOOD_1 + b"\n" + b'{"session_id":"s"}\n', tmp_path)
    assert result.returncode == 1
    assert result.stdout == OUT_1
    assert result.stderr.decode() == "escalations: error: line 3: event_id: missing\n"


def test_bad_field_names_the_line_and_the_path(tmp_path: Path) -> None:
    bad = (
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"WorkerCompleted":{"worker_id":"w","files_touched":-1,"ok":true}}}\n'
    )
    result = run_map(GOOD_1 + bad, tmp_path)
    assert result.returncode == 1
    assert result.stdout == OUT_1
    assert result.stderr.decode() == (
        "escalations: error: line 2: event.WorkerCompleted.files_touched: -1 is not an unsigned "
        "32-bit integer (0..4294967295)\n"
    )


def test_good_lines_beyond_one_buffer_are_all_written_before_the_error(tmp_path: Path) -> None:
    result = run_map(GOOD_1 * 5000 + b"[]\n", tmp_path)
    assert result.returncode == 1
    assert result.stdout == OUT_1 * 5000
    assert result.stderr.decode() == (
        "escalations: error: line 5001: expected a JSON object, got list\n"
    )


@pytest.mark.parametrize(
    "bad",
    [
        b"[" * 100_000,  # nesting deeper than any parser allows
        b'{"session_id":"s","event_id":"e","occurred_at":"0000-06-01T00:00:00Z",'
        b'"event":{"DisclosureLine":"x"}}',  # year 0
        b'{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        b'"event":{"Refused":{"reason":"r","intent":["Large"]}}}',  # enum value of a list
    ],
    ids=["deep-nesting", "year-0", "enum-list"],
)
def test_any_malformed_line_is_an_error_not_a_crash(tmp_path: Path, bad: bytes) -> None:
    result = run_map(GOOD_1 + GOOD_2 + bad + b"\n", tmp_path)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert result.returncode == 1
    assert result.stdout == OUT_1 + OUT_2
    assert stderr.startswith("escalations: error: line 3: ")


def test_invalid_utf8_is_a_line_error_with_a_strict_locale(tmp_path: Path) -> None:
    # A user whose locale is e.g. en_US.UTF-8 has a strict UTF-8 stdin: same as this.
    bad = b'{"session_id":"s\xff","event_id":"e"}\n'
    result = run_map(GOOD_1 + GOOD_2 + bad, tmp_path, env={"PYTHONIOENCODING": "utf-8:strict"})
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert result.returncode == 1
    assert result.stdout == OUT_1 + OUT_2
    assert stderr.startswith("escalations: error: line 3: ")


def test_invalid_utf8_is_a_line_error(tmp_path: Path) -> None:
    bad = b'{"session_id":"s\xff","event_id":"e"}\n'
    result = run_map(GOOD_1 + GOOD_2 + bad, tmp_path)
    assert result.returncode == 1
    assert result.stdout == OUT_1 + OUT_2
    assert result.stderr.decode(errors="replace").startswith("escalations: error: line 3: ")


def test_input_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    # The JSON form is UTF-8 (RFC 8259); a Latin-1 terminal must not turn "é" into "Ã©".
    stdin = (
        '{"session_id":"s","event_id":"e","occurred_at":"2026-11-24T21:40:44Z",'
        '"event":{"Refused":{"reason":"trop cher: 5 € 🚀","intent":"Small"}}}\n'
    ).encode()
    result = run_map(stdin, tmp_path, env={"PYTHONIOENCODING": "latin-1"})
    assert result.returncode == 0
    assert result.stdout == (
        b'{"ts":"2026-11-24T21:40:44Z","kind":"refused","goal_id":null,"intent":"small",'
        b'"summary":"trop cher: 5 \xe2\x82\xac \xf0\x9f\x9a\x80","confidence":null,'
        b'"auto_proceed":false}\n'
    )


# -- an independent reference implementation of README "What is kept, and the line it becomes" -------------------------------------

EPOCH = datetime(1970, 1, 1)
TS_MIN = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
TS_MAX = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
DAY = 86_400_000_000


def ref_ts(us: int) -> str:
    dt = EPOCH + timedelta(microseconds=us)
    text = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    if dt.microsecond == 0:
        return text + "Z"
    if dt.microsecond % 1000 == 0:
        return f"{text}.{dt.microsecond // 1000:03d}Z"
    return f"{text}.{dt.microsecond:06d}Z"


def js(value: str | None) -> str:
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ref_line(
    us: int, kind: str, goal_id: str | None, intent: str | None, summary: str, auto: bool
) -> bytes:
    text = (
        "{"
        f'"ts":"{ref_ts(us)}",'
        f'"kind":{js(kind)},'
        f'"goal_id":{js(goal_id)},'
        f'"intent":{js(intent)},'
        f'"summary":{js(summary)},'
        '"confidence":null,'
        f'"auto_proceed":{"true" if auto else "false"}'
        "}\n"
    )
    return text.encode("utf-8")


def ref_map(event: Any, us: int) -> bytes | None:
    """The table of README "What is kept, and the line it becomes", applied to the JSON form of ``event``."""
    ((name, body),) = event.items()
    if name == "RouterEscalating":
        if body["intent"] == "Trivial":
            return None
        summary = ("escalating to " + body["target_mode"]).lower()
        return ref_line(
            us, "router_escalation", None, body["intent"].lower(), summary, not body["preflight"]
        )
    if name == "WorkerStarted":
        summary = f"{body['kind']}: {body['task']} ({body['worker_id']})"
        return ref_line(us, "worker_started", None, None, summary, False)
    if name == "WorkerCompleted":
        summary = body["worker_id"] + (" completed" if body["ok"] else " failed")
        return ref_line(us, "worker_completed", None, None, summary, False)
    if name == "ChildGoalCreated":
        return ref_line(us, "goal_created", body["goal_id"], None, "child goal created", False)
    if name == "Refused":
        return ref_line(us, "refused", None, body["intent"].lower(), body["reason"], False)
    if name != "ChildGoalEvent":
        return None
    goal, child = body["goal_id"], body["event"]
    if child == "Cancelled":
        return ref_line(us, "cancelled", goal, None, "goal cancelled", False)
    ((child_name, fields),) = child.items()
    if child_name == "GateTransition":
        summary = f"gate {fields['gate']}: {fields['from']} -> {fields['to']}"
        return ref_line(us, "gate_transition", goal, None, summary, False)
    if child_name == "ProofReady":
        return ref_line(us, "proof_ready", goal, None, "proof ready at " + fields["path"], False)
    if child_name == "Failed":
        return ref_line(us, "failed", goal, None, fields["reason"], False)
    return None


# -- a seeded random corpus -----------------------------------------------------------------------

INTENTS = ["Trivial", "Small", "Medium", "Large"]
MODES = ["Idle", "DirectLlm", "WireWorker", "PlannerWorkers", "GoalRun"]
PREFLIGHT_KINDS = [
    "LargeEscalation",
    "MediumLowConfidence",
    "SmallOverProtectedPath",
    "SmallOverManyFiles",
    "QueueLargeOnActiveLarge",
    "QueueMediumAtConcurrencyCap",
]
ACTIONS = ["Accept", "Explain", "Downgrade", "Cancel", "Timeout"]
BUS_VARIANTS = [
    "ClassifierDecided",
    "RouterEscalating",
    "WorkerStarted",
    "WorkerProgress",
    "WorkerCompleted",
    "ChildGoalCreated",
    "ChildGoalEvent",
    "CostDelta",
    "PreflightRequest",
    "PreflightResponse",
    "DisclosureLine",
    "Refused",
    "CostSoftCapWarning",
]
CHILD_VARIANTS = [
    "Created",
    "PlanUpdated",
    "WorkerStarted",
    "WorkerProgress",
    "WorkerCompleted",
    "GateTransition",
    "SliceOpened",
    "ProofReady",
    "Failed",
    "Cancelled",
]
ALPHABET = (
    [chr(c) for c in range(0x20)]
    + list("\"\\/'{}%s -:>()")
    + ["\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "é", "ß", "日", "€", "🚀", "\U0010ffff"]
    + list("abcXYZ019")
)
HOSTILE = [
    "",
    " ",
    '"',
    "\\",
    "\\u0000",
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028\u2029",
    "🚀🔥👩\u200d💻",
    "é日本語",
    "{kind}: {task}",
    "%s%d",
    "x" * 300,
    '"\\' * 150,
    "".join(chr(c) for c in range(0x20)),
]


class Corpus:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seen: set[str] = set()

    def s(self) -> str:
        rng = self.rng
        if rng.random() < 0.25:
            return rng.choice(HOSTILE)
        n = rng.choice([0, 1, 3, 8, 20, 60, 300])
        return "".join(rng.choice(ALPHABET) for _ in range(n))

    def u32(self) -> int:
        return self.rng.choice([0, 1, 2**31 - 1, 2**31, 2**32 - 1, self.rng.randrange(2**32)])

    def num(self) -> float | int:
        return self.rng.choice([0, 1, 0.5, -2.25, 1e-30, 3.4e38, self.rng.uniform(-1e9, 1e9)])

    def pick(self, kind: str, values: list[str]) -> str:
        value = self.rng.choice(values)
        self.seen.add(f"{kind}:{value}")
        return value

    def shuffled(self, obj: dict[str, Any]) -> dict[str, Any]:
        items = list(obj.items())
        self.rng.shuffle(items)
        return dict(items)

    def child(self) -> Any:
        name = self.pick("child", CHILD_VARIANTS)
        s, u32, rng = self.s, self.u32, self.rng
        if name == "Cancelled":
            return "Cancelled"
        fields: dict[str, Any] = {
            "Created": lambda: {"goal_id": s(), "plan": [s() for _ in range(rng.randrange(3))]},
            "PlanUpdated": lambda: {
                "revision": u32(),
                "nodes": [
                    {"id": s(), "label": s(), "status": s()} for _ in range(rng.randrange(3))
                ],
            },
            "WorkerStarted": lambda: {"worker_id": s(), "task": s()},
            "WorkerProgress": lambda: {"worker_id": s(), "msg": s()},
            "WorkerCompleted": lambda: {"worker_id": s(), "files": u32(), "ok": rng.random() < 0.5},
            "GateTransition": lambda: {"gate": s(), "from": s(), "to": s()},
            "SliceOpened": lambda: self.optional({"slice_id": s(), "worktree": s()}, "pr_url", s),
            "ProofReady": lambda: {"path": s()},
            "Failed": lambda: {"reason": s()},
        }[name]()
        return {name: self.shuffled(fields)}

    def optional(self, obj: dict[str, Any], key: str, make: Any) -> dict[str, Any]:
        choice = self.rng.randrange(3)
        if choice == 1:
            obj[key] = None
        elif choice == 2:
            obj[key] = make()
        return obj

    def event(self) -> Any:
        name = self.pick("bus", BUS_VARIANTS)
        s, u32, num, rng = self.s, self.u32, self.num, self.rng
        flag = lambda: rng.random() < 0.5  # noqa: E731
        if name == "PreflightResponse":
            return {name: self.pick("action", ACTIONS)}
        if name == "DisclosureLine":
            return {name: s()}
        if name == "ChildGoalEvent":
            return {name: self.shuffled({"goal_id": s(), "event": self.child()})}
        body: dict[str, Any] = {
            "ClassifierDecided": lambda: {
                "intent": self.pick("intent", INTENTS),
                "confidence": num(),
                "latency_ms": u32(),
                "reasoning": s(),
                "cached": flag(),
                "fallback": flag(),
            },
            "RouterEscalating": lambda: {
                "intent": self.pick("intent", INTENTS),
                "target_mode": self.pick("mode", MODES),
                "preflight": flag(),
            },
            "WorkerStarted": lambda: {"worker_id": s(), "kind": s(), "task": s()},
            "WorkerProgress": lambda: self.optional(
                self.optional({"worker_id": s()}, "percent", num), "message", s
            ),
            "WorkerCompleted": lambda: {"worker_id": s(), "files_touched": u32(), "ok": flag()},
            "ChildGoalCreated": lambda: {
                "goal_id": s(),
                "parent_conv_id": s(),
                "plan": [s() for _ in range(rng.randrange(4))],
            },
            "CostDelta": lambda: {
                "source": s(),
                "tokens_in": u32(),
                "tokens_out": u32(),
                "usd": num(),
            },
            "PreflightRequest": lambda: {
                "kind": self.pick("preflight_kind", PREFLIGHT_KINDS),
                "headline": s(),
                "timeout_ms": u32(),
                "ticket_id": s(),
            },
            "Refused": lambda: {"reason": s(), "intent": self.pick("intent", INTENTS)},
            "CostSoftCapWarning": lambda: {"current_usd": num(), "soft_cap_usd": num()},
        }[name]()
        return {name: self.shuffled(body)}

    def instant(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return rng.choice([TS_MIN, TS_MAX, 0, -1, 1])
        if r < 0.6:
            seconds = rng.randrange(1_767_225_600, 1_798_761_600)  # 2026
        elif r < 0.75:
            seconds = rng.randrange(-2_208_988_800, 0)  # 1900..1969
        else:
            seconds = rng.randrange(TS_MIN // 1_000_000 + 86_400, TS_MAX // 1_000_000 - 86_400)
        micros = rng.choice([0, 0, rng.randrange(1000) * 1000, rng.randrange(1_000_000)])
        return seconds * 1_000_000 + micros

    def timestamp_text(self, us: int) -> str:
        """RFC 3339 in one of its many spellings: fraction widths, offsets."""
        rng = self.rng
        offset = 0
        if TS_MIN + DAY < us < TS_MAX - DAY and rng.random() < 0.3:
            offset = rng.choice(
                [60, 120, -300, 330, -570, 765, 14 * 60, -12 * 60, rng.randrange(-1439, 1440)]
            )
        local = EPOCH + timedelta(microseconds=us + offset * 60_000_000)
        text = (
            f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
            f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        )
        six = f"{local.microsecond:06d}"
        if local.microsecond == 0:
            text += rng.choice(["", ".0", ".000", ".000000", ".000000000"])
        else:
            text += "." + rng.choice([six, six + "000", six.rstrip("0")])
        if offset == 0:
            return text + rng.choice(["Z", "Z", "Z", "+00:00", "-00:00"])
        sign = "+" if offset > 0 else "-"
        return f"{text}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"

    def line(self) -> tuple[bytes, bytes | None]:
        rng = self.rng
        us = self.instant()
        event = self.event()
        envelope: dict[str, Any] = {
            "session_id": self.s(),
            "event_id": self.s(),
            "occurred_at": self.timestamp_text(us),
            "event": event,
        }
        if rng.random() < 0.05:
            envelope["from_the_future"] = {"ignored": [1, 2, 3]}
        text = json.dumps(
            self.shuffled(envelope),
            ensure_ascii=rng.random() < 0.5,
            separators=rng.choice([(",", ":"), (", ", ": ")]),
        )
        return text.encode("utf-8") + b"\n", ref_map(event, us)


def test_random_corpus_matches_the_reference(tmp_path: Path) -> None:
    corpus = Corpus(seed=20261124)
    stdin: list[bytes] = []
    expected: list[bytes] = []
    for _ in range(4000):
        line, out = corpus.line()
        stdin.append(line)
        if corpus.rng.random() < 0.01:
            stdin.append(b"\n")
        if out is not None:
            expected.append(out)

    # The corpus covers every variant and every enum value, kept and dropped.
    assert {v for v in corpus.seen if v.startswith("bus:")} == {f"bus:{v}" for v in BUS_VARIANTS}
    assert {v for v in corpus.seen if v.startswith("child:")} == {
        f"child:{v}" for v in CHILD_VARIANTS
    }
    for kind, values in [
        ("intent", INTENTS),
        ("mode", MODES),
        ("preflight_kind", PREFLIGHT_KINDS),
        ("action", ACTIONS),
    ]:
        assert {v for v in corpus.seen if v.startswith(kind + ":")} == {
            f"{kind}:{v}" for v in values
        }
    assert 1000 < len(expected) < 4000

    result = run_map(b"".join(stdin), tmp_path)
    assert result.stderr == b""
    assert result.returncode == 0
    actual = result.stdout.splitlines(keepends=True)
    for i, (got, want) in enumerate(zip(actual, expected, strict=False)):
        assert got == want, f"output line {i + 1} differs"
    assert len(actual) == len(expected)
    assert result.stdout == b"".join(expected)


def test_reference_agrees_with_the_design_examples() -> None:
    # The reference itself, checked against the literal lines of the design.
    first = ref_map(
        {"RouterEscalating": {"intent": "Small", "target_mode": "WireWorker", "preflight": True}},
        1_795_556_444_474_123,
    )
    second = ref_map(
        {"ChildGoalEvent": {"goal_id": "g1", "event": "Cancelled"}}, 1_795_556_445_000_000
    )
    assert first == OUT_1
    assert second == OUT_2
    assert ref_map({"DisclosureLine": "some text"}, 0) is None
    assert ref_ts(TS_MIN) == "0001-01-01T00:00:00Z"
    assert ref_ts(TS_MAX) == "9999-12-31T23:59:59.999999Z"
    assert ref_ts(-1) == "1969-12-31T23:59:59.999999Z"
    assert ref_ts(1_795_556_444_474_000) == "2026-11-24T21:40:44.474Z"
