"""The two stages of the job, in batches: bus events -> entries, entries -> files.

The shell around the pure core: decodes with the writer's schema, routes bad input to the
dead-letter topic, produces, and drives the file sink. Dependencies come in through the
constructor; ``app.py`` wires them to Faust.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from streams.contracts.codec import schema_id_of
from streams.contracts.decoder import Decoder
from streams.core.deadletter import Headers, dead_letter_headers
from streams.core.jsonl import ts_in_range
from streams.core.mapping import drop_reason
from streams.core.records import SinkLine, entry_datum, session_id_problem, sink_line
from streams.errors import Coordinates, InvalidRecordError, RecordError, SinkError
from streams.runtime.handoff import Handoff
from streams.runtime.stats import Stats
from streams.sink.checkpoint import CheckpointResult
from streams.sink.files import FileSink, LockBusy
from streams.sink.position import SinkPosition
from streams.sink.retention import Retention

__all__ = ["MapStage", "OnWritten", "RawRecord", "Send", "SendAll", "SinkStage"]

log = logging.getLogger(__name__)

#: Sessions whose positions a checkpoint takes before it lets the event loop run (~2 ms of
#: work; the last slice also encodes and appends the log frames).
RECORD_SLICE: Final = 2048

#: Sends one record; the awaitable it returns completes when the broker has it.
Send = Callable[[bytes | None, bytes | None, Headers], Awaitable[Awaitable[Any]]]
#: Sends a batch's (key, value) records in order; returns once the broker has them all,
#: with each record's (partition, offset) on the output topic (offset -1: not known).
SendAll = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[Sequence[tuple[int, int]]]]


class RawRecord(Protocol):
    """What the stages need of a consumed Kafka record (Faust's Message has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


def _headers(raw: Any) -> Headers:
    if not raw:
        return []
    items = raw.items() if hasattr(raw, "items") else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def _require(
    datum: dict[str, Any], where: Coordinates, schema_id: int | None, **types: type
) -> None:
    for name, kind in types.items():
        if not isinstance(datum.get(name), kind):
            raise InvalidRecordError(
                f"field {name!r} is missing or not a {kind.__name__}",
                where=where,
                schema_id=schema_id,
            )


def _check_session(session_id: str, ts_us: int, where: Coordinates, schema_id: int | None) -> None:
    problem = session_id_problem(session_id)
    if problem is not None:
        raise InvalidRecordError(problem, where=where, schema_id=schema_id)
    if not ts_in_range(ts_us):
        raise InvalidRecordError(
            f"timestamp {ts_us} µs is outside years 0001..9999", where=where, schema_id=schema_id
        )


async def _dead_letter(send: Send, stats: Stats, r: RawRecord, exc: RecordError) -> Awaitable[Any]:
    """Sends the original record, with what failed where, to the dead-letter topic."""
    log.warning("dead-lettering %s", exc)
    stats.dead_lettered[type(exc).__name__] += 1
    return await send(r.key, r.value, dead_letter_headers(exc, _headers(r.headers)))


class MapStage:
    """bus-events -> escalations (+ dead letters), one batch at a time."""

    def __init__(
        self,
        decoder: Decoder,
        entry_schema_id: int,
        emit: SendAll,
        dead_letter: Send,
        stats: Stats,
        handoff: Handoff | None = None,
    ) -> None:
        self.decoder = decoder
        self.entry_schema_id = entry_schema_id
        self.emit = emit
        self.dead_letter = dead_letter
        self.stats = stats
        self.handoff = handoff

    async def process(self, records: Sequence[RawRecord]) -> None:
        """Map a batch; returns once every produced record is acknowledged by the broker."""
        if self.handoff is not None:
            await self.handoff.room()  # not too far ahead of this worker's sink
        pending: list[Awaitable[Any]] = []
        entries: list[tuple[bytes, bytes]] = []
        datums: list[dict[str, Any]] = []
        encode = self.decoder.codec.encode
        for r in records:
            where = Coordinates(r.topic, r.partition, r.offset)
            self.stats.events_in[r.topic] += 1
            try:
                datum = await self.decoder.decode(r.value, where)
                schema_id = schema_id_of(r.value)
                _require(datum, where, schema_id, session_id=str, occurred_at=int, event=tuple)
                _check_session(datum["session_id"], datum["occurred_at"], where, schema_id)
                out = entry_datum(datum, r.topic, r.partition, r.offset)
                if out is None:
                    self.stats.dropped[drop_reason(datum["event"])] += 1
                    continue
                entries.append((datum["session_id"].encode(), encode(self.entry_schema_id, out)))
                datums.append(out)
            except RecordError as exc:
                pending.append(await _dead_letter(self.dead_letter, self.stats, r, exc))
        values = [value for _, value in entries]
        if self.handoff is not None:
            self.handoff.offer(values, datums)  # the sink may fetch them before the acks
        placed, *_ = await asyncio.gather(self.emit(entries), *pending)
        self.stats.entries_out += len(entries)
        if self.handoff is not None:
            self.handoff.placed(placed, values)


#: Called with each session's newly recorded (durable) position after a checkpoint.
OnWritten = Callable[[str, SinkPosition], None]

T = TypeVar("T")


class SinkStage:
    """escalations -> <state root>/<session>/pending_escalations.jsonl, exactly once.

    ``process`` writes a batch's lines (visible at once, not synced); ``checkpoint`` makes
    everything written durable and records the positions (the source commits after it);
    ``caught_up`` tells the sink the replay after an assignment has reached the end.
    """

    def __init__(
        self,
        decoder: Decoder,
        sink: FileSink,
        dead_letter: Send,
        stats: Stats,
        on_written: OnWritten | None = None,
        retries: int = 8,
        handoff: Handoff | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.decoder = decoder
        self.sink = sink
        self.dead_letter = dead_letter
        self.stats = stats
        self.on_written = on_written
        self.retries = retries
        self.handoff = handoff
        #: Forgets ended sessions, a slice after each checkpoint (``streams.sink.retention``).
        self.retention = retention

    async def process(self, records: Sequence[RawRecord]) -> None:
        """Write a batch: one ``pwrite`` per state directory, on cached descriptors."""
        lines: list[SinkLine] = []
        pending: list[Awaitable[Any]] = []
        handoff = self.handoff
        assignment = self.sink.assignment  # a rebalance meanwhile: nothing of it is written
        for r in records:
            if handoff is not None:
                line = handoff.take(r.value)
                if line is not None:
                    lines.append(line)
                    continue
            where = Coordinates(r.topic, r.partition, r.offset)
            try:
                d = await self.decoder.decode(r.value, where)
                schema_id = schema_id_of(r.value)
                _require(
                    d,
                    where,
                    schema_id,
                    session_id=str,
                    ts=int,
                    source_topic=str,
                    source_partition=int,
                    source_offset=int,
                    summary=str,
                    kind=str,
                )
                _check_session(d["session_id"], d["ts"], where, schema_id)
                lines.append(sink_line(d))
            except RecordError as exc:
                pending.append(await _dead_letter(self.dead_letter, self.stats, r, exc))
        if lines:
            appended = await self._retry("write", lambda: self._write(lines, assignment))
            self.stats.lines_written += appended
            self.stats.repeats_skipped += len(lines) - appended
        await asyncio.gather(*pending)

    async def _write(self, lines: list[SinkLine], assignment: int | None = None) -> int:
        """Writes inline (see ``_inline``); returns how many lines were appended."""
        appended = 0
        while True:
            try:
                written = self.sink.write(lines, wait=False, assignment=assignment)
                return appended + written.appended
            except LockBusy as busy:
                appended += busy.appended  # written again: skipped by their offsets
                await asyncio.to_thread(self.sink.wait_unlocked, busy)

    async def checkpoint(self) -> None:
        """Everything written durable, positions recorded; raises when that failed (then the
        caller must not commit)."""
        result = await self._retry("checkpoint", self._checkpoint)
        if self.on_written is not None:
            for session_id, position in result.positions.items():
                self.on_written(session_id, position)
        if self.retention is not None:
            await self._retry("sweep", lambda: self._inline(self._sweep))

    def _sweep(self, *, wait: bool = False) -> list[str]:
        assert self.retention is not None
        return self.retention.sweep()

    async def _checkpoint(self) -> CheckpointResult:
        """The syncs in a thread (long system calls); the positions taken inline, a slice at a
        time, then appended to the position logs."""
        checkpoints = self.sink.checkpoints
        rnd = checkpoints.begin()
        if rnd is None:
            return CheckpointResult({}, 0.0, None)
        try:
            if self.sink.fsync:
                await asyncio.to_thread(checkpoints.sync, rnd, data=True)
            # In slices, the batches in between: a slice of the loop's time, not a stall.
            while checkpoints.record(rnd, RECORD_SLICE):
                await asyncio.sleep(0)
            if self.sink.fsync and rnd.positions:
                await asyncio.to_thread(checkpoints.sync, rnd, data=False)
        except BaseException:
            checkpoints.abort(rnd)
            raise
        return checkpoints.finish(rnd)

    async def caught_up(self) -> None:
        """The replay after an assignment reached the end: cut the tails it did not explain."""
        await self._retry("recovery", lambda: self._inline(self.sink.caught_up))

    async def idle(self) -> None:
        """Nothing to consume: close the sink's cached files once it has been idle a while."""
        if len(self.sink.fds):
            self.sink.release_idle()

    async def _inline(self, work: Callable[..., T], *args: Any) -> T:
        """Short file operations run on the event loop: from a thread, each of their many
        system calls would wait for the GIL the loop holds (measured: the sink's opens and
        writes took several times longer). A directory lock held by another process (a
        rebuild, a stuck writer) must not block the loop (health checks run there), nor
        may a thread wait for it holding the sink's lock (the loop's checkpoint phases take
        it): a thread waits for the lock holding nothing, then the operation is done again
        on the loop (what was written is skipped by its offsets)."""
        while True:
            try:
                return work(*args, wait=False)
            except LockBusy as busy:
                await asyncio.to_thread(self.sink.wait_unlocked, busy)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs ``attempt``; transient I/O errors are retried with backoff."""
        delay = 0.1
        for n in range(1, self.retries + 1):
            try:
                return await attempt()
            except OSError as exc:
                if n == self.retries:
                    raise SinkError(
                        f"sink {what} under {self.sink.root} failed after {n} attempts: {exc}"
                    ) from exc
                log.warning(
                    "sink %s failed (attempt %d/%d), retrying in %.1fs: %s",
                    what,
                    n,
                    self.retries,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")
