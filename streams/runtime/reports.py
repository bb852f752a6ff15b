"""The sink's position reports, and the sessions view every worker builds from them.

The file sink is the source of truth (positions in its position logs). After a checkpoint it
tells the runtime each recorded state directory's position; at most once per ``interval_s`` the
latest position of up to ``batch_max`` such directories (those waiting longest first) is sent
as one small JSON record each (keyed by the session id) to the reports topic, in one batch per
partition. Every worker reads the whole topic (:class:`ReportsReader`), so any worker answers
for any session. With more sessions written per interval than ``batch_max``, a session's report
waits its turn: the view trails by a few seconds, and the reports cost the job a bounded share.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import islice
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from streams.core.jsonl import rfc3339
from streams.sink.position import SinkPosition

__all__ = ["REPORT_INTERVAL_S", "PositionReports", "ReportsReader", "position_view"]

#: At most one position report per state directory this often (the sessions view is a view).
REPORT_INTERVAL_S = 1.0
#: At most this many reports per interval (each costs its encoding and a record every worker
#: reads back: ~10 µs of a worker's CPU).
REPORT_BATCH_MAX = 2_000

#: Sends (key, value) records and returns once the broker acknowledged them all
#: (``streams.runtime.sender.BatchSender``).
SendAll = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[Any]]


def position_view(position: SinkPosition) -> dict[str, Any]:
    """What ``/escalations/sessions/`` shows of a state directory."""
    last = position.last_ts_us
    if last is None:
        last_ts = None
    else:
        seconds, micros = divmod(last, 1_000_000)
        last_ts = rfc3339(seconds, micros * 1000)
    return {
        "entries": position.entries,
        "bytes": position.size,
        "last_offsets": dict(position.offsets),
        "last_entry_ts": last_ts,
    }


class PositionReports:
    """Collects written positions; sends the latest per directory, throttled (a session
    written again keeps its place in the queue: ``pending`` keeps insertion order).

    A send runs in the background (the sink's batches do not wait for the broker's
    acknowledgement); one at a time, and the next call raises a send's failure (the caller
    stops the worker on it).
    """

    def __init__(
        self,
        send: SendAll,
        interval_s: float = REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        batch_max: int = REPORT_BATCH_MAX,
    ) -> None:
        self.send = send
        self.interval_s = interval_s
        self.batch_max = batch_max
        self.clock = clock
        self.pending: dict[str, SinkPosition] = {}
        self.sent_at = clock()
        self._sending: asyncio.Future[Any] | None = None

    def written(self, session_id: str, position: SinkPosition) -> None:
        self.pending[session_id] = position

    def due(self) -> bool:
        return bool(self.pending) and self.clock() - self.sent_at >= self.interval_s

    async def send_if_due(self) -> int:
        """Starts sending the pending reports when the interval has passed and no send is
        running; returns how many. Raises the error of a send that failed."""
        sending = self._sending
        if sending is not None:
            if not sending.done():
                return 0
            self._sending = None
            sending.result()
        if not self.due():
            return 0
        if len(self.pending) > self.batch_max:  # the longest waiting first; the rest next time
            reports = {k: self.pending.pop(k) for k in list(islice(self.pending, self.batch_max))}
        else:
            reports, self.pending = self.pending, {}
        self.sent_at = self.clock()
        records = [
            (session_id.encode(), json.dumps(position_view(p)).encode())
            for session_id, p in reports.items()
        ]
        self._sending = asyncio.ensure_future(self.send(records))
        return len(records)

    async def sent(self) -> None:
        """Waits for the send in flight, if any (raises its error)."""
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending


class ReportsReader(Service):
    """Every worker's view of every session: reads *all* partitions of the reports topic.

    Not a consumer group (each worker reads everything), no commits: at start it reads the
    topic from the beginning, then follows it, keeping the latest report per state directory.
    Whichever worker writes a session, any worker's ``/escalations/sessions/`` answers for it.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        client_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_options = dict(client_options or {})
        #: Per session, its latest report as sent (JSON; parsed when the view is asked for).
        self.views: dict[str, bytes] = {}
        self.consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        # No group: aiokafka then assigns every partition of the topic (and picks up the topic
        # once it exists); no committed offsets, so it reads from the beginning.
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
            **self.client_options,
        )
        await self.consumer.start()

    def parsed(self) -> dict[str, Any]:
        """Every session's latest report."""
        return {session: json.loads(raw) for session, raw in list(self.views.items())}

    async def on_stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            consumer = self.consumer
            if consumer is None:
                return
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    if record.key is not None and record.value is not None:
                        self.views[record.key.decode()] = record.value
