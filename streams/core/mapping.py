"""Pure: a decoded bus event -> an escalation entry or None, exactly the seed's rules.

A decoded bus event is what fastavro returns with ``return_record_name=True``: the
``event`` union is a ``(full_name, fields)`` pair, and so is a child goal's ``event``.
The seed (``escalation_log.rs``, ``entry_from_event``) is the specification; the one
deliberate change is that ``ts`` is the event's ``occurred_at``, not the wall clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BUS",
    "CHILD",
    "FILTERED",
    "KNOWN_BUS_VARIANTS",
    "KNOWN_CHILD_VARIANTS",
    "UNKNOWN_VARIANT",
    "BusEvent",
    "EscalationEntry",
    "drop_reason",
    "entry_from_event",
]

BUS: Final = "escalations.bus."
CHILD: Final = "escalations.bus.childgoal."

#: A decoded union branch: (Avro full name, fields).
BusEvent = tuple[str, Mapping[str, Any]]

#: Every variant of the contract this code knows; anything else is a newer producer's.
KNOWN_BUS_VARIANTS: Final = frozenset(
    BUS + name
    for name in [
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
)
KNOWN_CHILD_VARIANTS: Final = frozenset(
    CHILD + name
    for name in [
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
)

# Why an event produced no entry (metrics labels).
FILTERED: Final = "filtered"
UNKNOWN_VARIANT: Final = "unknown_variant"


@dataclass(frozen=True, slots=True)
class EscalationEntry:
    """The seed's ``EscalationLogEntry``; ``ts_us`` is microseconds since the epoch, UTC."""

    ts_us: int
    kind: str
    goal_id: str | None
    intent: str | None
    summary: str
    confidence: float | None
    auto_proceed: bool


def entry_from_event(event: BusEvent, /, *, ts_us: int) -> EscalationEntry | None:
    """The seed's rules; None for every event that is not escalation-class."""
    name, f = event
    if name == BUS + "RouterEscalating":
        intent = f["intent"]
        if intent == "Trivial":
            return None
        return EscalationEntry(
            ts_us,
            "router_escalation",
            None,
            intent.lower(),
            f"escalating to {f['target_mode']}".lower(),
            None,
            not f["preflight"],
        )
    if name == BUS + "WorkerStarted":
        summary = f"{f['kind']}: {f['task']} ({f['worker_id']})"
        return EscalationEntry(ts_us, "worker_started", None, None, summary, None, False)
    if name == BUS + "WorkerCompleted":
        outcome = "completed" if f["ok"] else "failed"
        summary = f"{f['worker_id']} {outcome}"
        return EscalationEntry(ts_us, "worker_completed", None, None, summary, None, False)
    if name == BUS + "ChildGoalCreated":
        goal = f["goal_id"]
        return EscalationEntry(ts_us, "goal_created", goal, None, "child goal created", None, False)
    if name == BUS + "ChildGoalEvent":
        return _child_goal_entry(f["goal_id"], f["event"], ts_us)
    if name == BUS + "Refused":
        intent = f["intent"].lower()
        return EscalationEntry(ts_us, "refused", None, intent, f["reason"], None, False)
    return None


def _child_goal_entry(goal_id: str, event: BusEvent, ts_us: int) -> EscalationEntry | None:
    name, f = event
    if name == CHILD + "GateTransition":
        summary = f"gate {f['gate']}: {f['from']} -> {f['to']}"
        return EscalationEntry(ts_us, "gate_transition", goal_id, None, summary, None, False)
    if name == CHILD + "ProofReady":
        summary = f"proof ready at {f['path']}"
        return EscalationEntry(ts_us, "proof_ready", goal_id, None, summary, None, False)
    if name == CHILD + "Failed":
        return EscalationEntry(ts_us, "failed", goal_id, None, f["reason"], None, False)
    if name == CHILD + "Cancelled":
        return EscalationEntry(ts_us, "cancelled", goal_id, None, "goal cancelled", None, False)
    return None


def drop_reason(event: BusEvent, /) -> str:
    """Why ``entry_from_event`` returned None: a known non-escalation event, or an unknown one."""
    name, f = event
    if name not in KNOWN_BUS_VARIANTS:
        return UNKNOWN_VARIANT
    if name == BUS + "ChildGoalEvent" and f["event"][0] not in KNOWN_CHILD_VARIANTS:
        return UNKNOWN_VARIANT
    return FILTERED
