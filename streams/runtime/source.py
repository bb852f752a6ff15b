"""A batched Kafka source inside the Faust app: our own consumer group, commit after work.

Faust dispatches records one by one (tens of µs each) and its offset bookkeeping was seen to
commit past records it had not processed when run against the embedded broker (see the
README). This service owns an ``AIOKafkaConsumer``: it fetches batches, hands each batch to
the pipeline, and commits offsets only after the pipeline returned. Without a ``checkpoint``
it commits after every batch (the map stage: entries acknowledged by the broker). With one
(the sink stage) it accumulates the batches' offsets and, every ``checkpoint_interval_s``
(or sooner when ``checkpoint_due`` says so), on revoke and on stop, awaits ``checkpoint``
(lines durable, positions recorded) and commits what it had accumulated before it. A
rebalance waits for the batch in hand; a stop finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from streams.settings import MAX_REQUEST_BYTES

log = logging.getLogger(__name__)

__all__ = ["Batch", "BatchSource", "Checkpoint", "Handler", "OnAssigned"]

Batch = Mapping[TopicPartition, Sequence[Any]]
Handler = Callable[[Batch], Awaitable[None]]
OnAssigned = Callable[[set[TopicPartition]], Awaitable[None]]
#: Makes everything handled so far durable; raises when it could not (nothing is committed).
Checkpoint = Callable[[], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: BatchSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in hand finishes, and what was handled is checkpointed and committed,
        # before the partitions move on.
        try:
            await asyncio.wait_for(self.source.flush(), self.source.revoke_timeout_s)
        except TimeoutError:
            log.warning(
                "rebalance: batch or checkpoint still running after %ss: not committed",
                self.source.revoke_timeout_s,
            )
        self.source.forget(revoked)
        self.source.rebalances += 1  # a batch still running commits nothing it handled
        log.info("rebalance: revoked %s", _tps(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("rebalance: assigned %s", _tps(assigned))
        await self.source.on_assigned(set(assigned))
        self.source.processed = {}
        self.source.catching_up = True
        self.source.last_progress = time.monotonic()
        self.source.ready = True


def _tps(tps: set[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)) or "nothing"


class BatchSource(Service):
    """Consumes ``topics`` in batches and commits each batch after ``handle`` returned."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handle: Handler,
        on_assigned: OnAssigned,
        batch_max: int = 1000,
        fetch_wait_ms: int = 50,
        session_timeout_s: float = 10.0,
        revoke_timeout_s: float = 30.0,
        stop_timeout_s: float = 8.0,
        summary: Callable[[], str] = lambda: "",
        client_options: Mapping[str, Any] | None = None,
        checkpoint: Checkpoint | None = None,
        checkpoint_interval_s: float = 1.0,
        checkpoint_due: Callable[[], bool] | None = None,
        on_caught_up: Callable[[], Awaitable[None]] | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        #: Extra AIOKafkaConsumer options: security (TLS, SASL) from the settings.
        self.client_options = dict(client_options or {})
        self.group_id = group_id
        self.topics = list(topics)
        self.handle = handle
        self.on_assigned = on_assigned
        self.batch_max = batch_max
        self.fetch_wait_ms = fetch_wait_ms
        self.session_timeout_s = session_timeout_s
        self.revoke_timeout_s = revoke_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.summary = summary
        #: None: commit after every batch; else checkpoint, then commit, every interval.
        self.checkpoint = checkpoint
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_due = checkpoint_due
        #: Called once per assignment, when a fetch finds every assigned partition at its end.
        self.on_caught_up = on_caught_up
        #: Called when a fetch finds nothing and nothing is left to commit.
        self.on_idle = on_idle
        self.catching_up = False
        self.uncommitted: dict[TopicPartition, int] = {}  # handled, not yet checkpointed
        self.rebalances = 0  # revokes so far
        self.checkpointed_at = time.monotonic()
        self._inflight: asyncio.Task[None] | None = None  # the checkpoint running, if any
        self._busy = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.batches = 0
        self.ready = False  # set once the first assignment was handled (sink recovered)
        self.processed: dict[TopicPartition, int] = {}  # next offset to process, per partition
        self.last_progress = time.monotonic()
        self.batch_started: float | None = None

    def lags(self) -> dict[TopicPartition, int]:
        """Records waiting per assigned partition, where the broker reports a high watermark."""
        consumer = self.consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp in self.processed:
                lags[tp] = max(0, highwater - self.processed[tp])
        return lags

    def stalled(self, timeout_s: float) -> str | None:
        """Why the source looks stuck (pending input, no progress for ``timeout_s``), or None."""
        now = time.monotonic()
        if self.batch_started is not None and now - self.batch_started > timeout_s:
            return f"a batch has been running for {now - self.batch_started:.0f}s"
        waiting = {tp: lag for tp, lag in self.lags().items() if lag > 0}
        if waiting and now - self.last_progress > timeout_s:
            where = ", ".join(f"{tp.topic}[{tp.partition}]: {lag}" for tp, lag in waiting.items())
            return f"no progress for {now - self.last_progress:.0f}s with input waiting ({where})"
        return None

    async def idle(self) -> None:
        """Returns once no batch is being processed."""
        async with self._busy:
            pass

    async def flush(self) -> None:
        """Once the batch in hand and the checkpoint in flight are done: checkpoint and commit
        what was handled."""
        async with self._busy:
            consumer = self.consumer
            await self._settle()
            if consumer is not None and self.uncommitted:
                await self._checkpoint(consumer)

    def forget(self, revoked: set[TopicPartition]) -> None:
        """Revoked partitions: what was handled and not committed is the next owner's."""
        for tp in revoked:
            self.uncommitted.pop(tp, None)

    async def on_start(self) -> None:
        session_ms = int(self.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            max_poll_interval_ms=300_000,
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_partition_fetch_bytes=MAX_REQUEST_BYTES,
            **self.client_options,
        )
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        log.info("source: group %s consuming %s", self.group_id, ", ".join(self.topics))

    async def on_stop(self) -> None:
        """Finish the batch in hand (bounded), then leave the group."""
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        deadline = time.monotonic() + self.stop_timeout_s
        try:
            await asyncio.wait_for(self._busy.acquire(), self.stop_timeout_s)
        except TimeoutError:
            log.warning("stop: the batch in hand did not finish within %ss", self.stop_timeout_s)
        else:
            try:
                remaining = max(0.1, deadline - time.monotonic())
                await asyncio.wait_for(self._settle(), remaining)
                if self.uncommitted:
                    remaining = max(0.1, deadline - time.monotonic())
                    await asyncio.wait_for(self._checkpoint(consumer), remaining)
            except TimeoutError:
                log.warning("stop: checkpoint not done within %ss: not committed", remaining)
            finally:
                self._busy.release()
        await consumer.stop()
        log.info(
            "source: group %s stopped after %d batches: %s",
            self.group_id,
            self.batches,
            self.summary(),
        )

    @Service.task
    async def _run(self) -> None:
        while not self.should_stop:
            consumer = self.consumer
            if consumer is None:
                return
            batch = await consumer.getmany(
                timeout_ms=self.fetch_wait_ms, max_records=self.batch_max
            )
            if not batch:
                await self._idle(consumer)
                continue
            async with self._busy:
                if self.consumer is None:
                    return  # stopping: the fetched batch is consumed again by the next owner
                self._check_inflight()
                self.batch_started = time.monotonic()
                rebalances = self.rebalances
                await self.handle(batch)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
                if self.rebalances != rebalances:
                    # Its partitions were revoked while it ran (the revoke's wait timed out):
                    # its offsets are the next owner's to commit, even for partitions that came
                    # back to this worker (their state was recovered since).
                    log.warning("rebalance during a batch: its offsets are not committed")
                    offsets = {}
                if self.checkpoint is None:
                    await self._commit(consumer, offsets)
                else:
                    self.uncommitted.update(offsets)
                    await self._maybe_checkpoint(consumer)
                self.batches += 1
                self.processed.update(offsets)
                self.last_progress = time.monotonic()
                self.batch_started = None

    def _due(self) -> bool:
        if time.monotonic() - self.checkpointed_at >= self.checkpoint_interval_s:
            return True
        return self._bytes_due()

    def _bytes_due(self) -> bool:
        return self.checkpoint_due is not None and self.checkpoint_due()

    async def _maybe_checkpoint(self, consumer: AIOKafkaConsumer) -> None:
        """Starts a checkpoint when one is due and none is running; waits for the running one
        first when enough bytes wait for the next (so they stay bounded)."""
        if not self.uncommitted or not self._due():
            return
        if self._inflight is not None:
            if not self._bytes_due():
                return
            await self._settle()
        offsets, self.uncommitted = self.uncommitted, {}
        self._inflight = asyncio.ensure_future(self._checkpoint_commit(consumer, offsets))

    def _check_inflight(self) -> None:
        """Raises the error of a checkpoint that failed (the worker must not go on)."""
        task = self._inflight
        if task is not None and task.done():
            self._inflight = None
            task.result()

    async def _settle(self) -> None:
        """Waits for the checkpoint in flight (raises its error)."""
        task = self._inflight
        if task is not None:
            try:
                await asyncio.shield(task)
            finally:
                if task.done():
                    self._inflight = None
            task.result()

    async def _idle(self, consumer: AIOKafkaConsumer) -> None:
        """Nothing fetched: a checkpoint when one is due; the end of the replay, once."""
        self._check_inflight()
        if self.uncommitted and self._due():
            async with self._busy:
                if self.consumer is not None:
                    await self._maybe_checkpoint(consumer)
        if self.catching_up and self.on_caught_up is not None and self._at_end(consumer):
            self.catching_up = False
            async with self._busy:
                await self._settle()
                await self.on_caught_up()
        if self.on_idle is not None and not self.uncommitted and self._inflight is None:
            async with self._busy:
                await self.on_idle()

    def _at_end(self, consumer: AIOKafkaConsumer) -> bool:
        """Every assigned partition has answered a fetch, and none returned records."""
        assigned = consumer.assignment()
        return bool(assigned) and all(consumer.highwater(tp) is not None for tp in assigned)

    async def _checkpoint(self, consumer: AIOKafkaConsumer) -> None:
        """Checkpoint (everything handled durable), then commit what was handled before it
        (with no checkpoint in flight)."""
        offsets, self.uncommitted = self.uncommitted, {}
        await self._checkpoint_commit(consumer, offsets)

    async def _checkpoint_commit(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        """Checkpoint, then commit ``offsets`` (handled before it began); on failure they are
        handed back, under any handled since."""
        assert self.checkpoint is not None
        try:
            await self.checkpoint()
        except BaseException:
            self.uncommitted = {**offsets, **self.uncommitted}
            raise
        self.checkpointed_at = time.monotonic()
        owned = consumer.assignment()
        await self._commit(consumer, {tp: o for tp, o in offsets.items() if tp in owned})

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailedError included
            # At-least-once: the next owner re-reads these records; the sink skips repeats.
            log.warning("commit of %s failed (%s); records will be re-read", offsets, exc)
