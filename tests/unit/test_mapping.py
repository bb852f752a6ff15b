"""streams.core.mapping: the seed's ``entry_from_event`` rules (the seed escalation_log.rs, README "What is kept, and the line it becomes").

The first twelve tests are the seed's own ``#[test]``s, same names and same assertions. The rest
pin every variant, every enum value and the exact entry for every kept kind.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.mapping import (
    FILTERED,
    UNKNOWN_VARIANT,
    EscalationEntry,
    drop_reason,
    entry_from_event,
)

BUS = "escalations.bus."
CHILD = "escalations.bus.childgoal."
TS = 1_795_556_444_474_123  # 2026-11-24T21:40:44.474123Z

INTENTS = ["Trivial", "Small", "Medium", "Large"]
MODES = ["Idle", "DirectLlm", "WireWorker", "PlannerWorkers", "GoalRun"]


def bus(name: str, /, **fields: Any) -> tuple[str, dict[str, Any]]:
    return (BUS + name, fields)


def child_goal(goal_id: str, name: str, /, **fields: Any) -> tuple[str, dict[str, Any]]:
    return (BUS + "ChildGoalEvent", {"goal_id": goal_id, "event": (CHILD + name, fields)})


# -- the seed's tests, ported -------------------------------------------------------------


def test_entry_from_classifier_decided_returns_none() -> None:
    ev = bus(
        "ClassifierDecided",
        intent="Small",
        confidence=0.9,
        latency_ms=100,
        reasoning="test",
        cached=False,
        fallback=False,
    )
    assert entry_from_event(ev, ts_us=TS) is None


def test_entry_from_router_escalating_trivial_returns_none() -> None:
    ev = bus("RouterEscalating", intent="Trivial", target_mode="DirectLlm", preflight=False)
    assert entry_from_event(ev, ts_us=TS) is None


def test_entry_from_router_escalating_small_returns_some() -> None:
    ev = bus("RouterEscalating", intent="Small", target_mode="WireWorker", preflight=True)
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "router_escalation"
    assert entry.intent == "small"
    assert not entry.auto_proceed


def test_entry_from_worker_started_returns_some() -> None:
    ev = bus("WorkerStarted", worker_id="w1", kind="edit", task="rename")
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "worker_started"


def test_entry_from_worker_completed_ok_returns_some() -> None:
    ev = bus("WorkerCompleted", worker_id="w1", files_touched=3, ok=True)
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "worker_completed"
    assert "completed" in entry.summary


def test_entry_from_worker_completed_fail_returns_some() -> None:
    ev = bus("WorkerCompleted", worker_id="w1", files_touched=0, ok=False)
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "worker_completed"
    assert "failed" in entry.summary


def test_entry_from_child_goal_event_gate_transition() -> None:
    ev = child_goal("g1", "GateTransition", gate="test", **{"from": "running", "to": "passed"})
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "gate_transition"


def test_entry_from_child_goal_event_proof_ready() -> None:
    ev = child_goal("g1", "ProofReady", path="/tmp/proof.md")
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "proof_ready"


def test_entry_from_child_goal_event_cancelled() -> None:
    ev = child_goal("g1", "Cancelled")
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "cancelled"


def test_entry_from_child_goal_event_failed() -> None:
    ev = child_goal("g1", "Failed", reason="oom")
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "failed"
    assert entry.summary == "oom"


def test_entry_from_refused_returns_some() -> None:
    ev = bus("Refused", reason="cost cap", intent="Large")
    entry = entry_from_event(ev, ts_us=TS)
    assert entry is not None
    assert entry.kind == "refused"


def test_entry_from_cost_delta_returns_none() -> None:
    ev = bus("CostDelta", source="llm", tokens_in=100, tokens_out=50, usd=0.01)
    assert entry_from_event(ev, ts_us=TS) is None


# -- every kept kind: the exact entry (README "What is kept, and the line it becomes") ----------------------------------------


def entry(
    kind: str, goal_id: str | None, intent: str | None, summary: str, auto: bool = False
) -> EscalationEntry:
    return EscalationEntry(TS, kind, goal_id, intent, summary, None, auto)


KEPT = [
    pytest.param(
        bus("RouterEscalating", intent="Medium", target_mode="PlannerWorkers", preflight=False),
        entry("router_escalation", None, "medium", "escalating to plannerworkers", auto=True),
        id="RouterEscalating",
    ),
    pytest.param(
        bus("WorkerStarted", worker_id="w1", kind="edit", task="rename"),
        entry("worker_started", None, None, "edit: rename (w1)"),
        id="WorkerStarted",
    ),
    pytest.param(
        bus("WorkerCompleted", worker_id="w1", files_touched=3, ok=True),
        entry("worker_completed", None, None, "w1 completed"),
        id="WorkerCompleted-ok",
    ),
    pytest.param(
        bus("WorkerCompleted", worker_id="w7", files_touched=0, ok=False),
        entry("worker_completed", None, None, "w7 failed"),
        id="WorkerCompleted-failed",
    ),
    pytest.param(
        bus("ChildGoalCreated", goal_id="g9", parent_conv_id="c1", plan=["a", "b"]),
        entry("goal_created", "g9", None, "child goal created"),
        id="ChildGoalCreated",
    ),
    pytest.param(
        child_goal("g1", "GateTransition", gate="test", **{"from": "running", "to": "passed"}),
        entry("gate_transition", "g1", None, "gate test: running -> passed"),
        id="GateTransition",
    ),
    pytest.param(
        child_goal("g2", "ProofReady", path="/tmp/proof.md"),
        entry("proof_ready", "g2", None, "proof ready at /tmp/proof.md"),
        id="ProofReady",
    ),
    pytest.param(
        child_goal("g3", "Failed", reason="oom"),
        entry("failed", "g3", None, "oom"),
        id="Failed",
    ),
    pytest.param(
        child_goal("g4", "Cancelled"),
        entry("cancelled", "g4", None, "goal cancelled"),
        id="Cancelled",
    ),
    pytest.param(
        bus("Refused", reason="cost cap", intent="Large"),
        entry("refused", None, "large", "cost cap"),
        id="Refused",
    ),
]


@pytest.mark.parametrize(("event", "expected"), KEPT)
def test_every_kept_kind_gives_the_exact_entry(
    event: tuple[str, dict[str, Any]], expected: EscalationEntry
) -> None:
    assert entry_from_event(event, ts_us=TS) == expected


# -- every dropped variant ------------------------------------------------------------------

DROPPED = [
    pytest.param(
        bus(
            "ClassifierDecided",
            intent="Large",
            confidence=0.5,
            latency_ms=1,
            reasoning="r",
            cached=True,
            fallback=True,
        ),
        id="ClassifierDecided",
    ),
    pytest.param(
        bus("RouterEscalating", intent="Trivial", target_mode="GoalRun", preflight=True),
        id="RouterEscalating-Trivial",
    ),
    pytest.param(
        bus("WorkerProgress", worker_id="w1", percent=None, message=None), id="WorkerProgress"
    ),
    pytest.param(
        bus("CostDelta", source="llm", tokens_in=1, tokens_out=2, usd=0.5), id="CostDelta"
    ),
    pytest.param(
        bus(
            "PreflightRequest",
            kind="LargeEscalation",
            headline="h",
            timeout_ms=1000,
            ticket_id="t1",
        ),
        id="PreflightRequest",
    ),
    pytest.param(bus("PreflightResponse", action="Accept"), id="PreflightResponse"),
    pytest.param(bus("DisclosureLine", line="some text"), id="DisclosureLine"),
    pytest.param(
        bus("CostSoftCapWarning", current_usd=4.5, soft_cap_usd=5.0), id="CostSoftCapWarning"
    ),
    pytest.param(child_goal("g1", "Created", goal_id="g1", plan=["x"]), id="child-Created"),
    pytest.param(
        child_goal(
            "g1", "PlanUpdated", revision=2, nodes=[{"id": "n", "label": "l", "status": "s"}]
        ),
        id="child-PlanUpdated",
    ),
    pytest.param(
        child_goal("g1", "WorkerStarted", worker_id="w", task="t"), id="child-WorkerStarted"
    ),
    pytest.param(
        child_goal("g1", "WorkerProgress", worker_id="w", msg="m"), id="child-WorkerProgress"
    ),
    pytest.param(
        child_goal("g1", "WorkerCompleted", worker_id="w", files=1, ok=True),
        id="child-WorkerCompleted",
    ),
    pytest.param(
        child_goal("g1", "SliceOpened", slice_id="s", worktree="/wt", pr_url=None),
        id="child-SliceOpened",
    ),
]


@pytest.mark.parametrize("event", DROPPED)
def test_every_dropped_variant_returns_none_and_is_filtered(
    event: tuple[str, dict[str, Any]],
) -> None:
    assert entry_from_event(event, ts_us=TS) is None
    assert drop_reason(event) == FILTERED == "filtered"


UNKNOWN = [
    pytest.param(bus("FutureThing", note="from a newer producer"), id="bus-FutureThing"),
    pytest.param(("escalations.bus.Refusedd", {"reason": "r", "intent": "Large"}), id="typo"),
    pytest.param(("RouterEscalating", {"intent": "Small"}), id="no-namespace"),
    pytest.param(("other.ns.Refused", {"reason": "r", "intent": "Large"}), id="other-namespace"),
    pytest.param(child_goal("g1", "FutureChild", note="new"), id="child-FutureChild"),
    pytest.param(
        (BUS + "ChildGoalEvent", {"goal_id": "g1", "event": (BUS + "Failed", {"reason": "r"})}),
        id="child-wrong-namespace",
    ),
]


@pytest.mark.parametrize("event", UNKNOWN)
def test_unknown_variants_return_none_and_are_counted_as_unknown(
    event: tuple[str, dict[str, Any]],
) -> None:
    assert entry_from_event(event, ts_us=TS) is None
    assert drop_reason(event) == UNKNOWN_VARIANT == "unknown_variant"


# -- every enum value -----------------------------------------------------------------------


@pytest.mark.parametrize("intent", INTENTS)
def test_router_escalating_every_intent(intent: str) -> None:
    ev = bus("RouterEscalating", intent=intent, target_mode="WireWorker", preflight=True)
    result = entry_from_event(ev, ts_us=TS)
    if intent == "Trivial":
        assert result is None
        assert drop_reason(ev) == "filtered"
    else:
        assert result == entry(
            "router_escalation", None, intent.lower(), "escalating to wireworker", auto=False
        )


@pytest.mark.parametrize(
    ("intent", "expected"),
    [("Trivial", "trivial"), ("Small", "small"), ("Medium", "medium"), ("Large", "large")],
)
def test_refused_every_intent_trivial_included(intent: str, expected: str) -> None:
    ev = bus("Refused", reason="no budget", intent=intent)
    assert entry_from_event(ev, ts_us=TS) == entry("refused", None, expected, "no budget")


@pytest.mark.parametrize(
    ("mode", "summary"),
    [
        ("Idle", "escalating to idle"),
        ("DirectLlm", "escalating to directllm"),
        ("WireWorker", "escalating to wireworker"),
        ("PlannerWorkers", "escalating to plannerworkers"),
        ("GoalRun", "escalating to goalrun"),
    ],
)
def test_router_escalating_every_mode_lowercased(mode: str, summary: str) -> None:
    ev = bus("RouterEscalating", intent="Large", target_mode=mode, preflight=False)
    assert entry_from_event(ev, ts_us=TS) == entry(
        "router_escalation", None, "large", summary, auto=True
    )


@pytest.mark.parametrize(("preflight", "auto_proceed"), [(True, False), (False, True)])
def test_auto_proceed_is_not_preflight(preflight: bool, auto_proceed: bool) -> None:
    ev = bus("RouterEscalating", intent="Small", target_mode="DirectLlm", preflight=preflight)
    result = entry_from_event(ev, ts_us=TS)
    assert result is not None
    assert result.auto_proceed is auto_proceed


@pytest.mark.parametrize("kind", ["worker_started", "goal_created", "refused", "cancelled"])
def test_auto_proceed_is_false_and_confidence_null_for_the_other_kinds(kind: str) -> None:
    events = {
        "worker_started": bus("WorkerStarted", worker_id="w", kind="k", task="t"),
        "goal_created": bus("ChildGoalCreated", goal_id="g", parent_conv_id="c", plan=[]),
        "refused": bus("Refused", reason="r", intent="Small"),
        "cancelled": child_goal("g", "Cancelled"),
    }
    result = entry_from_event(events[kind], ts_us=TS)
    assert result is not None
    assert result.kind == kind
    assert result.auto_proceed is False
    assert result.confidence is None


# -- ts is the event's occurred_at -----------------------------------------------------------


@pytest.mark.parametrize(
    "ts_us",
    [0, 1, -1, TS, -62_135_596_800_000_000, 253_402_300_799_999_999, -14_182_939_876_544],
)
def test_ts_is_the_given_occurred_at(ts_us: int) -> None:
    for ev in (
        bus("Refused", reason="r", intent="Small"),
        child_goal("g1", "Cancelled"),
        bus("WorkerCompleted", worker_id="w", files_touched=1, ok=True),
    ):
        result = entry_from_event(ev, ts_us=ts_us)
        assert result is not None
        assert result.ts_us == ts_us


def test_same_event_same_entry_replayable() -> None:
    ev = child_goal("g1", "Failed", reason="boom")
    assert entry_from_event(ev, ts_us=TS) == entry_from_event(ev, ts_us=TS)
    assert entry_from_event(ev, ts_us=TS) != entry_from_event(ev, ts_us=TS + 1)


# -- strings are taken verbatim ---------------------------------------------------------------

HOSTILE = 'a"b\\c\x00\x1f\x7f\u2028🚀 {kind} %s {} é\n'


def test_summaries_embed_strings_verbatim() -> None:
    h = HOSTILE
    assert entry_from_event(bus("WorkerStarted", worker_id=h, kind=h, task=h), ts_us=TS) == entry(
        "worker_started", None, None, f"{h}: {h} ({h})"
    )
    assert entry_from_event(
        bus("WorkerCompleted", worker_id=h, files_touched=0, ok=False), ts_us=TS
    ) == entry("worker_completed", None, None, h + " failed")
    assert entry_from_event(
        child_goal(h, "GateTransition", gate=h, **{"from": h, "to": h}), ts_us=TS
    ) == entry("gate_transition", h, None, f"gate {h}: {h} -> {h}")
    assert entry_from_event(child_goal(h, "ProofReady", path=h), ts_us=TS) == entry(
        "proof_ready", h, None, "proof ready at " + h
    )
    assert entry_from_event(child_goal(h, "Failed", reason=h), ts_us=TS) == entry(
        "failed", h, None, h
    )
    assert entry_from_event(bus("Refused", reason=h, intent="Medium"), ts_us=TS) == entry(
        "refused", None, "medium", h
    )


def test_mixed_case_strings_are_not_lowercased() -> None:
    # Only the router's summary is lowercased (the seed lowercases the whole formatted string).
    result = entry_from_event(bus("Refused", reason="Cost CAP", intent="Large"), ts_us=TS)
    assert result is not None
    assert result.summary == "Cost CAP"
    result = entry_from_event(child_goal("G-1", "Failed", reason="OOM"), ts_us=TS)
    assert result is not None
    assert (result.goal_id, result.summary) == ("G-1", "OOM")


def test_child_goal_entries_carry_the_outer_goal_id() -> None:
    # ChildGoalEvent's own goal_id, not any goal_id inside the child event.
    ev = child_goal("outer", "Failed", reason="r")
    result = entry_from_event(ev, ts_us=TS)
    assert result is not None
    assert result.goal_id == "outer"
