"""A consumed record as the stages see it (``streams.stages.RawRecord``), for stage tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("trace", b"t-1")])
