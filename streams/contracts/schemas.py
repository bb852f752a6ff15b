"""The Avro contracts in ``schemas/``: the files, their committed ids and their history.

Layout (file name = Avro full name)::

    schemas/<full name>.avsc                 the current version of each contract
    schemas/history/<full name>.v<N>.avsc    every version ever given an id, frozen
    schemas/ids.json                         {full name: [{version, id, fingerprint}, ...]}

With no schema registry configured, the ids in ``ids.json`` are the wire-format schema ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streams.errors import ContractError

__all__ = [
    "BUS_EVENT",
    "CONTRACTS",
    "ENTRY",
    "SchemaStore",
    "Version",
    "check",
    "compatibility_problems",
    "default_dir",
    "fingerprint",
    "freeze",
]

BUS_EVENT: Final = "escalations.bus.BusEventEnvelope"
ENTRY: Final = "escalations.out.EscalationEntry"
CONTRACTS: Final = (BUS_EVENT, ENTRY)


def default_dir() -> Path:
    """``schemas/`` of a source checkout, else the copy packaged inside ``streams``."""
    package = Path(__file__).resolve().parent.parent  # streams/
    for candidate in (package.parent / "schemas", package / "_schemas"):
        if (candidate / "ids.json").is_file():
            return candidate
    raise ContractError(f"no schemas/ids.json next to {package} (broken installation?)")


def fingerprint(schema: Any) -> str:
    """SHA-256 of the schema's JSON with sorted keys: any change, docs and defaults included,
    needs a new version, as a registry gives one."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    version: int
    schema_id: int
    fingerprint: str


class SchemaStore:
    """Reads ``schemas/``: current schemas, frozen history and the committed ids."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_dir()
        ids_path = self.directory / "ids.json"
        try:
            raw = json.loads(ids_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ContractError(f"cannot read {ids_path}: {exc}") from exc
        self.versions: dict[str, list[Version]] = {
            name: [
                Version(name, int(v["version"]), int(v["id"]), str(v["fingerprint"]))
                for v in entries
            ]
            for name, entries in raw.items()
        }

    def current(self, name: str) -> dict[str, Any]:
        return self._read(self.directory / f"{name}.avsc")

    def historical(self, name: str, version: int) -> dict[str, Any]:
        return self._read(self.directory / "history" / f"{name}.v{version}.avsc")

    def latest(self, name: str) -> Version:
        try:
            return self.versions[name][-1]
        except (KeyError, IndexError) as exc:
            raise ContractError(f"{self.directory / 'ids.json'} has no id for {name}") from exc

    def by_id(self) -> dict[int, dict[str, Any]]:
        """Every committed id -> its frozen writer schema."""
        return {
            v.schema_id: self.historical(v.name, v.version)
            for versions in self.versions.values()
            for v in versions
        }

    def current_id(self, name: str) -> int:
        """The committed id of the current schema; refuses a schema changed without a new id."""
        latest = self.latest(name)
        actual = fingerprint(self.current(name))
        if actual != latest.fingerprint:
            raise ContractError(
                f"schemas/{name}.avsc changed since version {latest.version} (id "
                f"{latest.schema_id}) was frozen: run `escalations schemas freeze` to give it "
                "a new version and id"
            )
        return latest.schema_id

    def save_ids(self) -> None:
        data = {
            name: [
                {"version": v.version, "id": v.schema_id, "fingerprint": v.fingerprint}
                for v in versions
            ]
            for name, versions in self.versions.items()
        }
        (self.directory / "ids.json").write_text(json.dumps(data, indent=2) + "\n")

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ContractError(f"cannot read schema {path}: {exc}") from exc
        if not isinstance(schema, dict):
            raise ContractError(f"schema {path} is not a JSON object")
        return schema


def compatibility_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer`` (empty: compatible).

    BACKWARD, as a registry checks it: the new schema (reader) reads the previous (writer).
    """
    from avro.compatibility import (
        ReaderWriterCompatibilityChecker,
        SchemaCompatibilityType,
    )
    from avro.schema import parse

    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse(json.dumps(reader)), parse(json.dumps(writer)))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [
        f"{message} (at {location})"
        for message, location in zip(result.messages, result.locations, strict=False)
    ] or ["incompatible"]


def check(store: SchemaStore) -> list[str]:
    """Every problem with the contracts: unfrozen changes, bad history, BACKWARD breaks."""
    problems: list[str] = []
    seen_ids: dict[int, str] = {}
    for name in CONTRACTS:
        try:
            store.current_id(name)
        except ContractError as exc:
            problems.append(str(exc))
        versions = store.versions.get(name, [])
        for v in versions:
            other = seen_ids.setdefault(v.schema_id, f"{name} v{v.version}")
            if other != f"{name} v{v.version}":
                problems.append(f"id {v.schema_id} is used by both {other} and {name} v{v.version}")
            if fingerprint(store.historical(name, v.version)) != v.fingerprint:
                problems.append(f"history/{name}.v{v.version}.avsc does not match its fingerprint")
        if versions:
            previous = store.historical(name, versions[-1].version)
            for problem in compatibility_problems(store.current(name), previous):
                problems.append(f"{name} cannot read version {versions[-1].version}: {problem}")
    return problems


def freeze(store: SchemaStore, name: str) -> Version | None:
    """Give a changed current schema the next version and id; None when nothing changed."""
    current = store.current(name)
    versions = store.versions.setdefault(name, [])
    if versions and fingerprint(current) == versions[-1].fingerprint:
        return None
    if versions:
        problems = compatibility_problems(current, store.historical(name, versions[-1].version))
        if problems:
            raise ContractError(f"{name} is not BACKWARD compatible: " + "; ".join(problems))
    next_id = 1 + max((v.schema_id for vs in store.versions.values() for v in vs), default=0)
    version = Version(name, len(versions) + 1, next_id, fingerprint(current))
    history = store.directory / "history"
    history.mkdir(exist_ok=True)
    (history / f"{name}.v{version.version}.avsc").write_text(json.dumps(current, indent=2) + "\n")
    versions.append(version)
    store.save_ids()
    return version
