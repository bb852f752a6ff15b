"""Contract tests: the Avro files in schemas/, their committed ids and history (README "Schemas")."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

from streams.contracts.schemas import (
    BUS_EVENT,
    ENTRY,
    SchemaStore,
    Version,
    check,
    compatibility_problems,
    default_dir,
    fingerprint,
    freeze,
)
from streams.errors import ContractError

SCHEMAS = default_dir()
AVSC = sorted(SCHEMAS.glob("*.avsc"))
HISTORY = sorted((SCHEMAS / "history").glob("*.avsc"))

#: README "What is kept" (the JSON form), in union order (appending is the only compatible change).
BUS_VARIANTS = {
    "ClassifierDecided": ["intent", "confidence", "latency_ms", "reasoning", "cached", "fallback"],
    "RouterEscalating": ["intent", "target_mode", "preflight"],
    "WorkerStarted": ["worker_id", "kind", "task"],
    "WorkerProgress": ["worker_id", "percent", "message"],
    "WorkerCompleted": ["worker_id", "files_touched", "ok"],
    "ChildGoalCreated": ["goal_id", "parent_conv_id", "plan"],
    "ChildGoalEvent": ["goal_id", "event"],
    "CostDelta": ["source", "tokens_in", "tokens_out", "usd"],
    "PreflightRequest": ["kind", "headline", "timeout_ms", "ticket_id"],
    "PreflightResponse": ["action"],
    "DisclosureLine": ["line"],
    "Refused": ["reason", "intent"],
    "CostSoftCapWarning": ["current_usd", "soft_cap_usd"],
}
CHILD_VARIANTS = {
    "Created": ["goal_id", "plan"],
    "PlanUpdated": ["revision", "nodes"],
    "WorkerStarted": ["worker_id", "task"],
    "WorkerProgress": ["worker_id", "msg"],
    "WorkerCompleted": ["worker_id", "files", "ok"],
    "GateTransition": ["gate", "from", "to"],
    "SliceOpened": ["slice_id", "worktree", "pr_url"],
    "ProofReady": ["path"],
    "Failed": ["reason"],
    "Cancelled": [],
}
ENUMS = {
    "escalations.bus.Intent": ["Trivial", "Small", "Medium", "Large"],
    "escalations.bus.ActiveMode": ["Idle", "DirectLlm", "WireWorker", "PlannerWorkers", "GoalRun"],
    "escalations.bus.PreflightKind": [
        "LargeEscalation",
        "MediumLowConfidence",
        "SmallOverProtectedPath",
        "SmallOverManyFiles",
        "QueueLargeOnActiveLarge",
        "QueueMediumAtConcurrencyCap",
    ],
    "escalations.bus.PreflightAction": ["Accept", "Explain", "Downgrade", "Cancel", "Timeout"],
}
#: The u32 counts of the original: Avro long, never int (README "What is kept" (the JSON form)).
U32_FIELDS = {
    ("ClassifierDecided", "latency_ms"),
    ("WorkerCompleted", "files_touched"),
    ("CostDelta", "tokens_in"),
    ("CostDelta", "tokens_out"),
    ("PreflightRequest", "timeout_ms"),
    ("PlanUpdated", "revision"),
    ("WorkerCompleted", "files"),
}


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def field(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


def walk_named(schema: Any, namespace: str = "") -> dict[str, dict[str, Any]]:
    """Every named type (record, enum) defined in a schema, by full name."""
    found: dict[str, dict[str, Any]] = {}
    if isinstance(schema, list):
        for s in schema:
            found.update(walk_named(s, namespace))
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name else f"{ns}.{name}"
            found[full] = schema
            namespace = ns
        if kind == "record":
            for f in schema["fields"]:
                found.update(walk_named(f["type"], namespace))
        elif kind == "array":
            found.update(walk_named(schema["items"], namespace))
        elif isinstance(kind, (dict, list)):
            found.update(walk_named(kind, namespace))
    return found


@pytest.fixture
def tmp_store(tmp_path: Path) -> SchemaStore:
    """A private copy of schemas/ to edit."""
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    return SchemaStore(tmp_path / "schemas")


def write(store: SchemaStore, name: str, schema: dict[str, Any]) -> None:
    (store.directory / f"{name}.avsc").write_text(json.dumps(schema, indent=2) + "\n")


# -- the files ------------------------------------------------------------------------------------


def test_there_are_the_two_contracts() -> None:
    assert [p.name for p in AVSC] == [f"{BUS_EVENT}.avsc", f"{ENTRY}.avsc"]
    assert BUS_EVENT == "escalations.bus.BusEventEnvelope"


@pytest.mark.parametrize("path", AVSC + HISTORY, ids=lambda p: p.name)
def test_parses_with_fastavro_and_avro(path: Path) -> None:
    schema = load(path)
    fastavro.parse_schema(schema)
    parsed = avro.schema.parse(path.read_text(encoding="utf-8"))
    assert parsed.fullname == schema["namespace"] + "." + schema["name"]


@pytest.mark.parametrize("path", AVSC, ids=lambda p: p.name)
def test_file_name_is_the_full_name(path: Path) -> None:
    schema = load(path)
    assert path.name == schema["namespace"] + "." + schema["name"] + ".avsc"


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.name)
def test_history_file_name_is_the_full_name_and_version(path: Path) -> None:
    schema = load(path)
    stem, version, ext = path.name.rsplit(".", 2)
    assert ext == "avsc"
    assert version.startswith("v")
    assert int(version[1:]) >= 1
    assert stem == schema["namespace"] + "." + schema["name"]


def test_envelope_fields(store: SchemaStore) -> None:
    schema = store.current(BUS_EVENT)
    assert [f["name"] for f in schema["fields"]] == [
        "session_id",
        "event_id",
        "occurred_at",
        "event",
    ]
    assert field(schema, "session_id")["type"] == "string"
    assert field(schema, "event_id")["type"] == "string"
    assert field(schema, "occurred_at")["type"] == {
        "type": "long",
        "logicalType": "timestamp-micros",
    }


def test_envelope_has_every_bus_variant_in_order(store: SchemaStore) -> None:
    union = field(store.current(BUS_EVENT), "event")["type"]
    assert [b["name"] for b in union] == list(BUS_VARIANTS)
    for branch in union:
        assert branch["type"] == "record"
        assert branch["namespace"] == "escalations.bus"
        assert [f["name"] for f in branch["fields"]] == BUS_VARIANTS[branch["name"]], branch["name"]


def test_envelope_has_every_child_goal_variant(store: SchemaStore) -> None:
    union = field(store.current(BUS_EVENT), "event")["type"]
    child_goal = next(b for b in union if b["name"] == "ChildGoalEvent")
    children = field(child_goal, "event")["type"]
    assert [c["name"] for c in children] == list(CHILD_VARIANTS)
    for child in children:
        assert child["namespace"] == "escalations.bus.childgoal"
        assert [f["name"] for f in child["fields"]] == CHILD_VARIANTS[child["name"]], child["name"]


def test_enums_have_exactly_the_designed_symbols(store: SchemaStore) -> None:
    named = walk_named(store.current(BUS_EVENT))
    enums = {name: s["symbols"] for name, s in named.items() if s["type"] == "enum"}
    assert enums == ENUMS


def test_counts_are_long_and_optionals_nullable(store: SchemaStore) -> None:
    named = walk_named(store.current(BUS_EVENT))
    longs = {
        (name.rsplit(".", 1)[1], f["name"])
        for name, s in named.items()
        if s["type"] == "record"
        for f in s["fields"]
        if f["type"] == "long"
    }
    assert longs == U32_FIELDS
    progress = named["escalations.bus.WorkerProgress"]
    assert field(progress, "percent")["type"] == ["null", "float"]
    assert field(progress, "message")["type"] == ["null", "string"]
    slice_opened = named["escalations.bus.childgoal.SliceOpened"]
    assert field(slice_opened, "pr_url")["type"] == ["null", "string"]


def test_entry_contract(store: SchemaStore) -> None:
    schema = store.current(ENTRY)
    assert [f["name"] for f in schema["fields"]] == [
        "session_id",
        "ts",
        "kind",
        "goal_id",
        "intent",
        "summary",
        "confidence",
        "auto_proceed",
        "source_topic",
        "source_partition",
        "source_offset",
    ]
    assert field(schema, "kind")["type"]["symbols"] == [
        "router_escalation",
        "worker_started",
        "worker_completed",
        "goal_created",
        "gate_transition",
        "proof_ready",
        "cancelled",
        "failed",
        "refused",
    ]
    assert field(schema, "ts")["type"] == {"type": "long", "logicalType": "timestamp-micros"}


# -- ids and history -------------------------------------------------------------------------------


def test_committed_contracts_check_clean(store: SchemaStore) -> None:
    assert check(store) == []


def test_committed_ids(store: SchemaStore) -> None:
    assert store.versions[BUS_EVENT][0] == Version(
        BUS_EVENT, 1, 1, store.versions[BUS_EVENT][0].fingerprint
    )
    assert store.versions[ENTRY][0].schema_id == 2
    assert store.current_id(BUS_EVENT) == store.latest(BUS_EVENT).schema_id
    assert store.current_id(ENTRY) == store.latest(ENTRY).schema_id
    ids = [v.schema_id for vs in store.versions.values() for v in vs]
    assert len(ids) == len(set(ids))
    assert set(store.by_id()) == set(ids)
    assert store.by_id()[1] == store.historical(BUS_EVENT, 1)
    assert store.by_id()[2] == store.historical(ENTRY, 1)


def test_ids_file_fingerprints_match_history(store: SchemaStore) -> None:
    for name, versions in store.versions.items():
        for v in versions:
            assert fingerprint(store.historical(name, v.version)) == v.fingerprint
            assert (SCHEMAS / "history" / f"{name}.v{v.version}.avsc").is_file()


def test_fingerprint_ignores_key_order_but_not_docs() -> None:
    a = {"type": "record", "name": "R", "fields": []}
    b = {"fields": [], "name": "R", "type": "record"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(dict(a, doc="x"))
    assert fingerprint(a).startswith("sha256:")


def test_changed_schema_without_a_new_id_is_refused(tmp_store: SchemaStore) -> None:
    schema = tmp_store.current(BUS_EVENT)
    schema["doc"] = schema["doc"] + " Edited."
    write(tmp_store, BUS_EVENT, schema)
    store = SchemaStore(tmp_store.directory)
    problems = check(store)
    assert len(problems) == 1
    assert f"schemas/{BUS_EVENT}.avsc changed since version 1 (id 1)" in problems[0]
    assert "escalations schemas freeze" in problems[0]
    with pytest.raises(ContractError, match="escalations schemas freeze"):
        store.current_id(BUS_EVENT)
    assert store.current_id(ENTRY) == 2


def test_changed_field_doc_is_a_change_too(tmp_store: SchemaStore) -> None:
    schema = tmp_store.current(ENTRY)
    field(schema, "summary")["doc"] = "new words"
    write(tmp_store, ENTRY, schema)
    with pytest.raises(ContractError, match=rf"{ENTRY}\.avsc changed since version 1 \(id 2\)"):
        SchemaStore(tmp_store.directory).current_id(ENTRY)


def test_edited_history_is_reported(tmp_store: SchemaStore) -> None:
    path = tmp_store.directory / "history" / f"{ENTRY}.v1.avsc"
    schema = load(path)
    schema["doc"] = "rewritten history"
    path.write_text(json.dumps(schema))
    problems = check(SchemaStore(tmp_store.directory))
    assert f"history/{ENTRY}.v1.avsc does not match its fingerprint" in problems


def test_duplicate_ids_are_reported(tmp_store: SchemaStore) -> None:
    ids_path = tmp_store.directory / "ids.json"
    ids = json.loads(ids_path.read_text())
    ids[ENTRY][0]["id"] = 1
    ids_path.write_text(json.dumps(ids))
    problems = check(SchemaStore(tmp_store.directory))
    assert f"id 1 is used by both {BUS_EVENT} v1 and {ENTRY} v1" in problems


def test_unreadable_ids_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"ids\.json"):
        SchemaStore(tmp_path)
    (tmp_path / "ids.json").write_text("{not json")
    with pytest.raises(ContractError, match="cannot read"):
        SchemaStore(tmp_path)


def test_missing_schema_file(tmp_store: SchemaStore) -> None:
    (tmp_store.directory / f"{ENTRY}.avsc").unlink()
    with pytest.raises(ContractError, match=f"cannot read schema .*{ENTRY}.avsc"):
        tmp_store.current(ENTRY)


# -- freeze and compatibility ----------------------------------------------------------------------


def with_future_variant(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    field(schema, "event")["type"].append(
        {
            "type": "record",
            "name": "FutureThing",
            "namespace": "escalations.bus",
            "fields": [{"name": "note", "type": "string"}],
        }
    )
    return schema


def test_freeze_a_compatible_change(tmp_store: SchemaStore) -> None:
    new = with_future_variant(tmp_store.current(BUS_EVENT))
    write(tmp_store, BUS_EVENT, new)
    assert compatibility_problems(new, tmp_store.historical(BUS_EVENT, 1)) == []

    version = freeze(tmp_store, BUS_EVENT)

    assert version == Version(BUS_EVENT, 2, 3, fingerprint(new))
    assert load(tmp_store.directory / "history" / f"{BUS_EVENT}.v2.avsc") == new
    reread = SchemaStore(tmp_store.directory)
    assert check(reread) == []
    assert reread.current_id(BUS_EVENT) == 3
    assert reread.current_id(ENTRY) == 2
    assert [v.schema_id for v in reread.versions[BUS_EVENT]] == [1, 3]
    by_id = reread.by_id()
    assert sorted(by_id) == [1, 2, 3]
    assert by_id[3] == new
    assert by_id[1] == tmp_store.historical(BUS_EVENT, 1)
    # Nothing changed since: freeze is a no-op.
    assert freeze(reread, BUS_EVENT) is None
    assert sorted(SchemaStore(tmp_store.directory).by_id()) == [1, 2, 3]


def test_freeze_with_no_change_is_none(tmp_store: SchemaStore) -> None:
    before = (tmp_store.directory / "ids.json").read_text()
    assert freeze(tmp_store, ENTRY) is None
    assert freeze(tmp_store, BUS_EVENT) is None
    assert (tmp_store.directory / "ids.json").read_text() == before


def test_adding_an_optional_entry_field_is_compatible(store: SchemaStore) -> None:
    new = store.current(ENTRY)
    new["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    assert compatibility_problems(new, store.historical(ENTRY, 1)) == []


def entry_with_required_field(store: SchemaStore) -> dict[str, Any]:
    new = store.current(ENTRY)
    new["fields"].append({"name": "severity", "type": "string"})
    return new


def entry_without_refused(store: SchemaStore) -> dict[str, Any]:
    new = store.current(ENTRY)
    field(new, "kind")["type"]["symbols"].remove("refused")
    return new


def bus_without_last_variant(store: SchemaStore) -> dict[str, Any]:
    new = store.current(BUS_EVENT)
    field(new, "event")["type"].pop()
    return new


def bus_without_intent_symbol(store: SchemaStore) -> dict[str, Any]:
    new = store.current(BUS_EVENT)
    intent = walk_named(new)["escalations.bus.Intent"]
    intent["symbols"].remove("Trivial")
    return new


@pytest.mark.parametrize(
    ("name", "make", "mentions"),
    [
        (ENTRY, entry_with_required_field, "severity"),
        (ENTRY, entry_without_refused, "refused"),
        (BUS_EVENT, bus_without_last_variant, "/fields/3/type/12"),
        (BUS_EVENT, bus_without_intent_symbol, "reader union lacking writer type"),
    ],
    ids=["required-field", "removed-kind", "removed-variant", "removed-intent"],
)
def test_incompatible_changes_are_detected_and_not_frozen(
    tmp_store: SchemaStore, name: str, make: Any, mentions: str
) -> None:
    new = make(tmp_store)
    problems = compatibility_problems(new, tmp_store.historical(name, 1))
    assert problems
    assert any(mentions in p for p in problems), problems

    write(tmp_store, name, new)
    ids_before = (tmp_store.directory / "ids.json").read_text()
    with pytest.raises(ContractError, match=f"{name} is not BACKWARD compatible: ") as info:
        freeze(tmp_store, name)
    assert mentions in str(info.value)
    assert (tmp_store.directory / "ids.json").read_text() == ids_before
    assert not (tmp_store.directory / "history" / f"{name}.v2.avsc").exists()
    problems = check(SchemaStore(tmp_store.directory))
    assert any(p.startswith(f"{name} cannot read version 1: ") for p in problems), problems
