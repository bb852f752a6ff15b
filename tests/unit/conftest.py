"""Shared fixtures for the pure core: the committed contracts and a catalogue of every variant.

``VARIANTS`` lists every bus event variant and every child-goal variant once, as the JSON form
of the envelope's ``event`` (serde's externally tagged shape, README "What is kept" (the JSON form)) next to the datum
fastavro reads and writes (``(full name, fields)`` pairs). A test that takes a ``variant_case``
argument runs once per entry (see ``pytest_generate_tests``).
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.contracts.codec import Codec
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.busjson import BusJson
from streams.errors import Coordinates

BUS = "escalations.bus."
CHILD = "escalations.bus.childgoal."


def _child(name: str, json_form: Any, fields: dict[str, Any]) -> tuple[str, Any, Any]:
    return (
        f"ChildGoalEvent/{name}",
        {"ChildGoalEvent": {"goal_id": "g1", "event": json_form}},
        (BUS + "ChildGoalEvent", {"goal_id": "g1", "event": (CHILD + name, fields)}),
    )


#: (test id, JSON form of ``event``, datum of ``event``). Floats are exact in float32.
VARIANTS: list[tuple[str, Any, Any]] = [
    (
        "ClassifierDecided",
        {
            "ClassifierDecided": {
                "intent": "Medium",
                "confidence": 0.75,
                "latency_ms": 120,
                "reasoning": "looks medium",
                "cached": True,
                "fallback": False,
            }
        },
        (
            BUS + "ClassifierDecided",
            {
                "intent": "Medium",
                "confidence": 0.75,
                "latency_ms": 120,
                "reasoning": "looks medium",
                "cached": True,
                "fallback": False,
            },
        ),
    ),
    (
        "RouterEscalating",
        {"RouterEscalating": {"intent": "Small", "target_mode": "WireWorker", "preflight": True}},
        (
            BUS + "RouterEscalating",
            {"intent": "Small", "target_mode": "WireWorker", "preflight": True},
        ),
    ),
    (
        "WorkerStarted",
        {"WorkerStarted": {"worker_id": "w1", "kind": "edit", "task": "rename"}},
        (BUS + "WorkerStarted", {"worker_id": "w1", "kind": "edit", "task": "rename"}),
    ),
    (
        "WorkerProgress",
        {"WorkerProgress": {"worker_id": "w1", "percent": 50.5, "message": "halfway"}},
        (BUS + "WorkerProgress", {"worker_id": "w1", "percent": 50.5, "message": "halfway"}),
    ),
    (
        "WorkerCompleted",
        {"WorkerCompleted": {"worker_id": "w1", "files_touched": 4294967295, "ok": True}},
        (BUS + "WorkerCompleted", {"worker_id": "w1", "files_touched": 4294967295, "ok": True}),
    ),
    (
        "ChildGoalCreated",
        {"ChildGoalCreated": {"goal_id": "g1", "parent_conv_id": "c1", "plan": ["a", "b"]}},
        (BUS + "ChildGoalCreated", {"goal_id": "g1", "parent_conv_id": "c1", "plan": ["a", "b"]}),
    ),
    _child("Created", {"Created": {"goal_id": "g2", "plan": []}}, {"goal_id": "g2", "plan": []}),
    _child(
        "PlanUpdated",
        {
            "PlanUpdated": {
                "revision": 2,
                "nodes": [
                    {"id": "n1", "label": "write", "status": "done"},
                    {"id": "n2", "label": "test", "status": "pending"},
                ],
            }
        },
        {
            "revision": 2,
            "nodes": [
                {"id": "n1", "label": "write", "status": "done"},
                {"id": "n2", "label": "test", "status": "pending"},
            ],
        },
    ),
    _child(
        "WorkerStarted",
        {"WorkerStarted": {"worker_id": "w2", "task": "lint"}},
        {"worker_id": "w2", "task": "lint"},
    ),
    _child(
        "WorkerProgress",
        {"WorkerProgress": {"worker_id": "w2", "msg": "50%"}},
        {"worker_id": "w2", "msg": "50%"},
    ),
    _child(
        "WorkerCompleted",
        {"WorkerCompleted": {"worker_id": "w2", "files": 0, "ok": False}},
        {"worker_id": "w2", "files": 0, "ok": False},
    ),
    _child(
        "GateTransition",
        {"GateTransition": {"gate": "test", "from": "running", "to": "passed"}},
        {"gate": "test", "from": "running", "to": "passed"},
    ),
    _child(
        "SliceOpened",
        {"SliceOpened": {"slice_id": "s1", "worktree": "/wt/s1", "pr_url": "https://x/pr/1"}},
        {"slice_id": "s1", "worktree": "/wt/s1", "pr_url": "https://x/pr/1"},
    ),
    _child("ProofReady", {"ProofReady": {"path": "/tmp/proof.md"}}, {"path": "/tmp/proof.md"}),
    _child("Failed", {"Failed": {"reason": "oom"}}, {"reason": "oom"}),
    _child("Cancelled", "Cancelled", {}),
    (
        "CostDelta",
        {"CostDelta": {"source": "llm", "tokens_in": 100, "tokens_out": 50, "usd": 0.01}},
        (BUS + "CostDelta", {"source": "llm", "tokens_in": 100, "tokens_out": 50, "usd": 0.01}),
    ),
    (
        "PreflightRequest",
        {
            "PreflightRequest": {
                "kind": "LargeEscalation",
                "headline": "big change",
                "timeout_ms": 30000,
                "ticket_id": "t-1",
            }
        },
        (
            BUS + "PreflightRequest",
            {
                "kind": "LargeEscalation",
                "headline": "big change",
                "timeout_ms": 30000,
                "ticket_id": "t-1",
            },
        ),
    ),
    (
        "PreflightResponse",
        {"PreflightResponse": "Accept"},
        (BUS + "PreflightResponse", {"action": "Accept"}),
    ),
    (
        "DisclosureLine",
        {"DisclosureLine": "some text"},
        (BUS + "DisclosureLine", {"line": "some text"}),
    ),
    (
        "Refused",
        {"Refused": {"reason": "cost cap", "intent": "Large"}},
        (BUS + "Refused", {"reason": "cost cap", "intent": "Large"}),
    ),
    (
        "CostSoftCapWarning",
        {"CostSoftCapWarning": {"current_usd": 4.5, "soft_cap_usd": 5.0}},
        (BUS + "CostSoftCapWarning", {"current_usd": 4.5, "soft_cap_usd": 5.0}),
    ),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant_case" in metafunc.fixturenames:
        metafunc.parametrize("variant_case", VARIANTS, ids=[v[0] for v in VARIANTS])


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    """The committed contracts in schemas/."""
    return SchemaStore()


@pytest.fixture(scope="session")
def bus_json(store: SchemaStore) -> BusJson:
    return BusJson(store.current(BUS_EVENT))


@pytest.fixture(scope="session")
def codec(store: SchemaStore) -> Codec:
    return Codec(store.by_id())


@pytest.fixture
def where() -> Coordinates:
    return Coordinates("bus-events", 2, 1234)
