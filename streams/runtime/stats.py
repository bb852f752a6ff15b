"""Counters of what the job did; read by the demo, logs and the metrics view."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Counters of what the job did; read by the demo, logs and the metrics view."""

    events_in: Counter[str]
    dropped: Counter[str]
    dead_lettered: Counter[str]
    entries_out: int = 0
    lines_written: int = 0
    repeats_skipped: int = 0

    @classmethod
    def empty(cls) -> Stats:
        return cls(Counter(), Counter(), Counter())

    def summary(self) -> str:
        return (
            f"events in {sum(self.events_in.values())}, entries out {self.entries_out}, "
            f"dropped {dict(self.dropped)}, dead-lettered {dict(self.dead_lettered)}, "
            f"lines written {self.lines_written}, repeats skipped {self.repeats_skipped}"
        )
