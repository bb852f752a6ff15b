"""Every worker's view of every live session, read from the sink's position reports.

:class:`SessionsView` keeps the latest report per session, bounded by the live sessions: a
tombstone (a report with no value, sent when the sink forgets a session) removes the session,
and a session whose latest report is older than the retention (``ESCALATIONS_SESSION_RETENTION``)
is dropped, whether it arrives that old or ages while kept. A report is stored as it came (its
bytes and its time) and parsed at most once, the first time it is asked for: a start that reads
many superseded reports parses none of them, and a request for one session parses that one.

:class:`ReportsReader` feeds it. Not a consumer group (each worker reads every partition), no
commits: at start each partition is read from its first report newer than now - retention
(ListOffsets by time), compacted topic or not, so a start costs the reports of the retention
window, not the topic's history. Where the broker does not answer that (or answers wrongly:
the embedded broker gives the partition's first offset), older reports are skipped as they
arrive, which keeps the view right at the cost of reading them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

__all__ = ["ReportsReader", "SessionsView"]

log = logging.getLogger(__name__)

#: How often the view drops sessions that aged past the retention while kept, at most.
PRUNE_EVERY_S = 60.0


@dataclass(slots=True)
class _Report:
    at_ms: int  # the report's record timestamp (when the worker writing the session sent it)
    raw: bytes | None  # as sent; None once parsed
    parsed: Any = None


class SessionsView:
    """The latest report per live session; ``clock`` gives seconds since the epoch."""

    def __init__(
        self,
        retention_s: float,
        clock: Callable[[], float] = time.time,
        parse: Callable[[bytes], Any] = json.loads,
    ) -> None:
        self.retention_ms = int(retention_s * 1000)
        self.clock = clock
        self.parse = parse
        self._reports: dict[str, _Report] = {}

    def __len__(self) -> int:
        return len(self._reports)

    def cutoff_ms(self) -> int:
        """Reports sent before this time (ms since the epoch) are too old to keep."""
        return int(self.clock() * 1000) - self.retention_ms

    def apply(self, key: bytes, value: bytes | None, at_ms: int, cutoff_ms: int) -> None:
        """One record of the reports topic, in partition order; ``cutoff_ms`` as
        :meth:`cutoff_ms` (taken once per batch). A tombstone, or a latest report older than
        the cutoff, removes the session."""
        session = key.decode("utf-8", "replace")
        if at_ms < 0:  # a record without a time (an old message format): kept as if new
            at_ms = cutoff_ms + self.retention_ms
        if value is None or at_ms < cutoff_ms:
            self._reports.pop(session, None)
        else:
            self._reports[session] = _Report(at_ms, value)

    def prune(self) -> int:
        """Drops the sessions whose latest report aged past the retention; returns how many."""
        cutoff = self.cutoff_ms()
        old = [s for s, report in self._reports.items() if report.at_ms < cutoff]
        for session in old:
            del self._reports[session]
        return len(old)

    def get(self, session_id: str) -> Any | None:
        """One session's latest report (parsed now if it was not yet), or None."""
        report = self._reports.get(session_id)
        return None if report is None else self._parsed(report)

    def all(self) -> dict[str, Any]:
        """Every live session's latest report."""
        return {session: self._parsed(r) for session, r in list(self._reports.items())}

    def _parsed(self, report: _Report) -> Any:
        if report.raw is not None:
            report.parsed, report.raw = self.parse(report.raw), None
        return report.parsed


class ReportsReader(Service):
    """Reads every partition of the reports topic into ``view``, from the retention window on."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        partitions: int,
        view: SessionsView,
        client_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.view = view
        self.client_options = dict(client_options or {})
        self.consumer: AIOKafkaConsumer | None = None
        self.pruned_at = time.monotonic()

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.client_options,
        )
        await self.consumer.start()
        assigned = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(assigned)
        await self._seek_to_window(self.consumer, assigned)

    async def _seek_to_window(
        self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]
    ) -> None:
        cutoff = self.view.cutoff_ms()
        try:
            found = await consumer.offsets_for_times(dict.fromkeys(assigned, cutoff))
        except (KafkaError, ValueError) as exc:  # an old broker: no ListOffsets by time
            log.info(
                "sessions view: %s cannot be read from a time (%s): reading it whole, "
                "skipping reports older than the retention",
                self.topic,
                exc,
            )
            return
        for tp, where in found.items():
            if where is None:  # no report in the retention window
                await consumer.seek_to_end(tp)
            elif where.offset > 0:
                consumer.seek(tp, where.offset)
        log.info(
            "sessions view: reading %s from the reports of the last %.0fs (%s)",
            self.topic,
            self.view.retention_ms / 1000,
            ", ".join(
                f"{tp.partition}@{'end' if w is None else w.offset}"
                for tp, w in sorted(found.items())
            ),
        )

    async def on_stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    @Service.task
    async def _follow(self) -> None:
        view = self.view
        while not self.should_stop:
            consumer = self.consumer
            if consumer is None:
                return
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            cutoff = view.cutoff_ms()
            for records in batch.values():
                for record in records:
                    if record.key is not None:
                        view.apply(record.key, record.value, record.timestamp, cutoff)
            if time.monotonic() - self.pruned_at >= PRUNE_EVERY_S:
                self.pruned_at = time.monotonic()
                dropped = view.prune()
                if dropped:
                    log.info("sessions view: dropped %d sessions past the retention", dropped)
            await asyncio.sleep(0)  # a long replay leaves the web views their turn
