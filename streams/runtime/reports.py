"""The sink's position reports: what every worker's sessions view is built from.

The file sink is the source of truth (positions in its position logs). After a checkpoint it
tells the runtime each recorded state directory's position; at most once per ``interval_s`` the
latest position of up to ``batch_max`` such directories (those waiting longest first) is sent
as one small JSON record each (keyed by the session id) to the reports topic, in one batch per
partition. Every worker reads the topic (``streams.runtime.sessions.ReportsReader``), so any
worker answers for any session. With more sessions written per interval than ``batch_max``, a
session's report waits its turn: the view trails by a few seconds, and the reports cost the job
a bounded share.

A session the sink forgets (:meth:`PositionReports.forget`) gets a **tombstone**: a record with
the session id as key and no value, in the same queue as the reports (so it lands on the
session's partition, after its last report). Every view drops the session when it reads one,
and a compacted reports topic drops the session's reports. At stop, :class:`FlushAtStop` sends
what is still pending, throttle or not, before Faust's producer stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from aiokafka.errors import KafkaError
from mode import Service

from streams.core.jsonl import rfc3339
from streams.sink.position import SinkPosition

__all__ = ["REPORT_INTERVAL_S", "FlushAtStop", "PositionReports", "position_view"]

log = logging.getLogger(__name__)

#: At most one position report per state directory this often (the sessions view is a view).
REPORT_INTERVAL_S = 1.0
#: At most this many reports per interval (each costs its encoding and a record every worker
#: reads back: ~10 µs of a worker's CPU).
REPORT_BATCH_MAX = 2_000

#: Sends (key, value) records (value None: a tombstone) and returns once the broker
#: acknowledged them all (``streams.runtime.sender.BatchSender``).
SendAll = Callable[[Sequence[tuple[bytes, bytes | None]]], Awaitable[Any]]


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
    written again keeps its place in the queue: ``pending`` keeps insertion order). A forgotten
    session's entry is None: its tombstone.

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
        self.pending: dict[str, SinkPosition | None] = {}
        self.sent_at = clock()
        self._sending: asyncio.Future[Any] | None = None

    def written(self, session_id: str, position: SinkPosition) -> None:
        self.pending[session_id] = position

    def forget(self, session_ids: Iterable[str]) -> None:
        """The sink forgot these sessions (their directory is gone, or they were idle longer
        than the retention): a tombstone for each replaces any report still pending, so every
        view drops them. On the event loop's thread (``Runtime.forget_sessions`` hops there)."""
        for session_id in session_ids:
            self.pending[session_id] = None

    def quiet(self) -> bool:
        """Nothing pending, nothing being sent."""
        return not self.pending and self._sending is None

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
        records = self._take(self.batch_max)
        self._sending = asyncio.ensure_future(self.send(records))
        return len(records)

    async def flush(self) -> int:
        """Sends everything pending now, throttle or not, and waits for the broker's
        acknowledgement (the worker is stopping); returns how many. Raises a send's error."""
        await self.sent()
        if not self.pending:
            return 0
        records = self._take(len(self.pending))
        await self.send(records)
        return len(records)

    def _take(self, most: int) -> list[tuple[bytes, bytes | None]]:
        """Up to ``most`` pending reports (the longest waiting first), as records."""
        if len(self.pending) > most:  # the rest next time
            reports = {k: self.pending.pop(k) for k in list(islice(self.pending, most))}
        else:
            reports, self.pending = self.pending, {}
        self.sent_at = self.clock()
        return [
            (session_id.encode(), None if p is None else json.dumps(position_view(p)).encode())
            for session_id, p in reports.items()
        ]

    async def sent(self) -> None:
        """Waits for the send in flight, if any (raises its error)."""
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending


class FlushAtStop(Service):
    """Sends the pending reports when the worker stops (SIGTERM), within ``timeout_s``.

    Added to the app before the batched sources, so Faust stops it after them (children stop
    in reverse order: the sink source's last checkpoint has recorded its positions by then)
    and before its producer. A failure or timeout is logged: the reports are a view.
    """

    def __init__(self, reports: PositionReports, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports = reports
        self.timeout_s = timeout_s

    async def on_stop(self) -> None:
        pending = len(self.reports.pending)
        if self.reports.quiet():
            return
        try:
            sent = await asyncio.wait_for(self.reports.flush(), self.timeout_s)
        except TimeoutError:
            log.warning(
                "stop: %d position reports not acknowledged within %.1fs", pending, self.timeout_s
            )
        except KafkaError as exc:  # the broker refused them: the views trail, nothing is lost
            log.warning("stop: %d position reports not sent: %s", pending, exc)
        else:
            log.info("stop: sent %d pending position reports", sent)
