"""A deterministic generator of realistic bus events in the JSON form.

Used by ``escalations demo`` (the bundled sample), the integration tests and the
benchmarks. Every bus variant and child-goal variant appears; about 40% of the events
are not escalation-class and are filtered out by the job.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.core.jsonl import rfc3339

__all__ = ["ACTIONS", "INTENTS", "MODES", "PREFLIGHT_KINDS", "bus_events"]


def _enum_symbols(schema: Any, name: str) -> tuple[str, ...]:
    """The symbols of the enum ``name`` in the bus contract (wherever it is defined)."""
    if isinstance(schema, dict):
        if schema.get("type") == "enum" and schema.get("name") == name:
            return tuple(schema["symbols"])
        children: list[Any] = list(schema.values())
    elif isinstance(schema, list):
        children = schema
    else:
        return ()
    for child in children:
        found = _enum_symbols(child, name)
        if found:
            return found
    return ()


_BUS = SchemaStore().current(BUS_EVENT)
#: The enums' symbols, read from the contract so that the sample can never drift from it.
INTENTS = _enum_symbols(_BUS, "Intent")
MODES = _enum_symbols(_BUS, "ActiveMode")
PREFLIGHT_KINDS = _enum_symbols(_BUS, "PreflightKind")
ACTIONS = _enum_symbols(_BUS, "PreflightAction")
_TEXTS = (
    "rename the config loader",
    'fix "quoted" path C:\\tmp\\x',
    "résumé → naïve café ☕",
    "tab\there, newline\nthere",
    "emoji 🚀 and U+2028 \u2028 line sep",
    "plain",
)


def _event(rng: random.Random, i: int) -> dict[str, Any]:
    text = rng.choice(_TEXTS)
    goal = f"g{rng.randrange(20)}"
    worker = f"w{rng.randrange(50)}"
    child: list[Any] = [
        {
            "GateTransition": {
                "gate": rng.choice(("test", "lint", "review")),
                "from": "running",
                "to": rng.choice(("passed", "failed")),
            }
        },
        {"ProofReady": {"path": f"/tmp/proofs/{goal}/proof-{i}.md"}},
        {"Failed": {"reason": text}},
        "Cancelled",
        {"Created": {"goal_id": goal, "plan": ["a", "b"]}},
        {
            "PlanUpdated": {
                "revision": i % 7,
                "nodes": [{"id": "n1", "label": text, "status": "todo"}],
            }
        },
        {"WorkerStarted": {"worker_id": worker, "task": text}},
        {"WorkerProgress": {"worker_id": worker, "msg": "half way"}},
        {"WorkerCompleted": {"worker_id": worker, "files": i % 9, "ok": True}},
        {"SliceOpened": {"slice_id": f"s{i}", "worktree": "/tmp/wt", "pr_url": None}},
    ]
    kept: list[Any] = [
        {
            "RouterEscalating": {
                "intent": rng.choice(INTENTS),
                "target_mode": rng.choice(MODES),
                "preflight": rng.random() < 0.5,
            }
        },
        {
            "WorkerStarted": {
                "worker_id": worker,
                "kind": rng.choice(("edit", "plan")),
                "task": text,
            }
        },
        {
            "WorkerCompleted": {
                "worker_id": worker,
                "files_touched": i % 13,
                "ok": rng.random() < 0.8,
            }
        },
        {"ChildGoalCreated": {"goal_id": goal, "parent_conv_id": "c1", "plan": ["step 1"]}},
        {"ChildGoalEvent": {"goal_id": goal, "event": rng.choice(child[:4])}},
        {"Refused": {"reason": text, "intent": rng.choice(INTENTS)}},
    ]
    filtered: list[Any] = [
        {
            "ClassifierDecided": {
                "intent": rng.choice(INTENTS),
                "confidence": 0.5,
                "latency_ms": 12,
                "reasoning": text,
                "cached": False,
                "fallback": False,
            }
        },
        {"WorkerProgress": {"worker_id": worker, "percent": 0.5, "message": None}},
        {"ChildGoalEvent": {"goal_id": goal, "event": rng.choice(child[4:])}},
        {"CostDelta": {"source": "llm", "tokens_in": 100, "tokens_out": 50, "usd": 0.01}},
        {
            "PreflightRequest": {
                "kind": rng.choice(PREFLIGHT_KINDS),
                "headline": text,
                "timeout_ms": 30000,
                "ticket_id": f"t{i}",
            }
        },
        {"PreflightResponse": rng.choice(ACTIONS)},
        {"DisclosureLine": text},
        {"CostSoftCapWarning": {"current_usd": 1.5, "soft_cap_usd": 2.0}},
    ]
    return rng.choice(filtered) if rng.random() < 0.4 else rng.choice(kept)


def bus_events(count: int, sessions: int = 8, seed: int = 42) -> Iterator[str]:
    """``count`` JSON-form lines over ``sessions`` sessions, timestamps strictly increasing."""
    rng = random.Random(seed)
    base_s = 1_795_000_000  # 2026-11-18
    for i in range(count):
        micros = rng.choice((0, 474_000, 474_123, 5))
        seconds = base_s + i
        envelope = {
            "session_id": f"session-{rng.randrange(sessions):03d}",
            "event_id": f"e-{i}",
            "occurred_at": rfc3339(seconds, micros * 1000),
            "event": _event(rng, i),
        }
        yield json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
