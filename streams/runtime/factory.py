"""The composition root: ``create_app(settings)`` builds the Faust app and wires the job.

Nothing happens at import. ``create_app`` builds one :class:`Runtime` (the stats, codec,
decoder, file sink, handoff, batched sources and handlers that were module globals once)
and registers on the app the startup task, the timers and the web views. ``streams/app.py`` is ``app = create_app(load())``, the target of
``faust -A streams.app``; the CLI builds the app with the settings it has.

The hot path is two batched sources (Faust services with their own consumer groups): the
map source reads bus events, maps, produces entries and dead letters; the sink source reads
entries and writes the files, and commits only after that. The file sink reports positions
on a small topic that every worker reads (the sessions view, bounded by the live sessions: a
session the sink forgets is tombstoned through ``Runtime.forget_sessions``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.contracts.codec import Codec
from streams.contracts.decoder import Decoder
from streams.contracts.registry import SchemaIds, open_ids
from streams.contracts.schemas import ENTRY, SchemaStore
from streams.core.deadletter import Headers
from streams.errors import ConfigError, EscalationsError, SinkError
from streams.runtime import web
from streams.runtime.faustapp import EXIT_FATAL, Fatal, exit_now, faust_app
from streams.runtime.handoff import Handoff
from streams.runtime.logs import collapse_repeats
from streams.runtime.metrics import Metrics
from streams.runtime.partitioner import partition_for
from streams.runtime.reports import (
    REPORT_INTERVAL_S,
    FlushAtStop,
    PositionReports,
    position_view,
)
from streams.runtime.sender import BatchSender
from streams.runtime.sessions import ReportsReader, SessionsView
from streams.runtime.source import Batch, BatchSource
from streams.runtime.stages import MapStage, SinkStage
from streams.runtime.stats import Stats
from streams.runtime.topics import ensure_topics, reports_topic
from streams.security import check_connection
from streams.settings import Settings
from streams.sink.files import FileSink
from streams.sink.retention import Retention

__all__ = ["EXIT_FATAL", "Runtime", "build", "create_app"]

log = logging.getLogger(__name__)


class Runtime:
    """Everything one worker holds: built by ``create_app``, driven by Faust."""

    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        *,
        store: SchemaStore | None = None,
        ids: SchemaIds | None = None,
        sink: FileSink | None = None,
        fatal: Fatal = exit_now,
    ) -> None:
        self.settings = settings
        self.app = app
        self.store = store or SchemaStore()
        self.ids = ids or open_ids(
            settings.schema_registry_url,
            self.store,
            security=settings.registry,
            startup_timeout_s=settings.registry_startup_timeout_s,
            unknown_id_grace_s=settings.registry_unknown_id_grace_s,
        )
        self.codec = Codec(self.ids.known())
        self.decoder = Decoder(self.codec, self.ids)
        self.sink = sink or FileSink(
            settings.state_root,
            fsync=settings.fsync,
            sync=settings.sync,
            max_open_files=settings.max_open_files,
            log_of=lambda session: (
                f"{settings.output_topic}:{partition_for(session.encode(), settings.partitions)}"
            ),
        )
        self.stats = Stats.empty()
        self.metrics = Metrics()
        self.handoff = Handoff()
        self.fatal = fatal
        self.sources: list[BatchSource] = []
        self.sink.on_sync = self.metrics.sync_seconds.observe
        self.sink.on_forgotten = self.forget_sessions  # tombstones on the reports topic
        self.reports_topic_name = reports_topic(settings)
        self.reports = PositionReports(BatchSender(self._producer, self.reports_topic_name))
        #: Every live session's latest report, any worker's (fed once the app has started).
        self.sessions = SessionsView(settings.session_retention_s)
        self.reports_reader: ReportsReader | None = None
        self._loop_thread: int | None = None

    # -- what Faust calls ------------------------------------------------------------------

    async def prepare(self) -> None:
        """Before the app starts: a writable state root, the parent of Faust's data
        directory (Faust creates the directory itself, but not its parents), and brokers that
        accept our TLS and SASL settings (a refusal cannot heal: stop, naming the setting)."""
        try:
            self.sink.check_root()
        except EscalationsError as exc:
            self.fatal(exc)
        if self.sink.fsync:
            log.info(
                "sink: checkpoints make files under %s durable by %s",
                self.sink.root,
                self.sink.syncer.durability().describe(),
            )
        else:
            log.warning(
                "sink: ESCALATIONS_FSYNC=false: files are never synced (no power-loss safety)"
            )
        data_dir = self.settings.faust_data_dir
        try:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            variable = (
                "ESCALATIONS_DATA_DIR" if self.settings.data_dir else "ESCALATIONS_STATE_ROOT"
            )
            self.fatal(
                ConfigError(
                    f"{variable}: cannot create {data_dir.parent} for Faust's data directory: "
                    f"{exc} (e.g. {variable}=/var/lib/escalations)"
                )
            )
        kafka = self.settings.kafka
        log.info("escalations: Kafka at %s over %s", self.settings.bootstrap, kafka.describe())
        try:
            await check_connection(self.settings.bootstrap, kafka)
        except ConfigError as exc:
            self.fatal(exc)
        except (OSError, KafkaError, TimeoutError) as exc:  # transient: Faust retries
            log.warning(
                "escalations: Kafka at %s not reachable yet: %s", self.settings.bootstrap, exc
            )

    async def start(self) -> None:
        """Check the schema ids, then the topics, then start the batched sources."""
        settings = self.settings
        self._loop_thread = threading.get_ident()
        for warning in settings.warnings:
            log.warning("settings: %s", warning)
        try:
            # The contract first: a start refused for it leaves no topic behind.
            entry_id = await self.ids.id_for(ENTRY, f"{settings.output_topic}-value")
            if not self.codec.knows(entry_id):
                self.codec.add(entry_id, self.store.current(ENTRY))
            await ensure_topics(settings, settings.bootstrap, settings.kafka.aiokafka_kwargs())
        except EscalationsError as exc:
            self.fatal(exc)
        common: dict[str, Any] = {
            "bootstrap": settings.bootstrap,
            "batch_max": settings.batch_max,
            "fetch_wait_ms": settings.fetch_wait_ms,
            "session_timeout_s": settings.session_timeout_s,
            "stop_timeout_s": settings.drain_timeout_s * 0.6,
            "client_options": settings.kafka.aiokafka_kwargs(),
            "loop": self.app.loop,
            "beacon": self.app.beacon,
        }
        # Two consumer groups, so mapping and file writing overlap instead of taking turns.
        map_stage = MapStage(
            self.decoder,
            entry_id,
            BatchSender(self._producer, settings.output_topic),
            self._sender(settings.dlq_topic),
            self.stats,
            self.handoff,
        )
        sink_stage = SinkStage(
            self.decoder,
            self.sink,
            self._sender(settings.dlq_topic),
            self.stats,
            self.reports.written,
            handoff=self.handoff,
            retention=Retention(self.sink, settings.session_retention_s),
        )
        self.sources = [
            BatchSource(
                group_id=f"{settings.app_id}-map",
                topics=[settings.input_topic],
                handle=self._handler("map", map_stage.process),
                on_assigned=_nothing,
                summary=self.stats.summary,
                **common,
            ),
            BatchSource(
                group_id=f"{settings.app_id}-sink",
                topics=[settings.output_topic],
                handle=self._handler("sink", sink_stage.process, self.reports.send_if_due),
                on_assigned=self.on_sink_assigned,
                summary=lambda: (
                    f"{self.stats.summary()}; {self.sync_summary()}; "
                    f"{self.sink.checkpoints.summary(self.sink.fds)}"
                ),
                # Commits only after a checkpoint made what was handled durable.
                checkpoint=self._sink_checkpoint(sink_stage),
                checkpoint_interval_s=settings.checkpoint_interval_ms / 1000,
                checkpoint_due=self.sink.checkpoint_due,
                on_caught_up=lambda: self.guarded(sink_stage.caught_up()),
                on_idle=lambda: self.guarded(sink_stage.idle()),
                **common,
            ),
        ]
        self.reports_reader = ReportsReader(
            bootstrap=settings.bootstrap,
            topic=self.reports_topic_name,
            partitions=settings.partitions,
            view=self.sessions,
            client_options=settings.kafka.aiokafka_kwargs(),
            loop=self.app.loop,
            beacon=self.app.beacon,
        )
        # The app stops its children in reverse: the sources (their last checkpoint records
        # positions), then the flush of the pending reports, then (Faust's) the producer.
        flush = FlushAtStop(
            self.reports,
            settings.drain_timeout_s * 0.3,
            loop=self.app.loop,
            beacon=self.app.beacon,
        )
        for service in [flush, *self.sources, self.reports_reader]:
            await self.app.add_runtime_dependency(service)
        log.info(
            "escalations: %s -> %s -> %s (dead letters: %s), %d partitions",
            settings.input_topic,
            settings.output_topic,
            settings.state_root,
            settings.dlq_topic,
            settings.partitions,
        )

    def _sink_checkpoint(self, stage: SinkStage) -> Callable[[], Awaitable[None]]:
        """The sink source's checkpoint: a failure stops the worker, and never returns (so the
        source commits nothing it did not make durable)."""

        async def checkpoint() -> None:
            try:
                await stage.checkpoint()
            except Exception as exc:
                self.fatal(exc)
                raise

        return checkpoint

    async def on_sink_assigned(self, assigned: set[Any]) -> None:
        """Reload positions (another worker may have written) and repair torn tails at once."""
        owned = {tp.partition for tp in assigned if tp.topic == self.settings.output_topic}
        self.handoff.own(owned)
        partitions = self.settings.partitions

        def owns(session_id: str) -> bool:
            return partition_for(session_id.encode(), partitions) in owned

        try:
            topic = self.settings.output_topic
            mine = [f"{topic}:{p}" for p in owned]
            checked = await asyncio.to_thread(self.sink.recover, owns, mine)
        except EscalationsError as exc:
            self.fatal(exc)
        except OSError as exc:  # EACCES, EIO: never a worker consuming without its sink
            self.fatal(SinkError(f"cannot recover the state under {self.sink.root}: {exc}"))
        log.info("sink: recovered %d state directories of partitions %s", checked, sorted(owned))

    async def report_positions(self) -> None:
        """The timer: reports positions written by the last batches before a quiet spell."""
        await self.guarded(self.reports.send_if_due())

    async def log_stats(self) -> None:
        log.info("stats: %s; %s", self.stats.summary(), self.sync_summary())
        reason = self.unhealthy()
        if reason is not None:
            log.error("watchdog: %s", reason)

    # -- health ----------------------------------------------------------------------------

    def unhealthy(self) -> str | None:
        """The watchdog: why the worker is stuck, or None."""
        for source in self.sources:
            reason = source.stalled(self.settings.stall_timeout_s)
            if reason is not None:
                waiting = self.ids.waiting()  # a registry failing, or behind: say so
                return f"{source.group_id}: {reason}" + (f"; {waiting}" if waiting else "")
        return None

    def session_views(self) -> dict[str, Any]:
        """Every live session's latest reported position (any worker's), for the web view."""
        return self.sessions.all()

    def session_view(self, session_id: str) -> Any | None:
        """One session's latest reported position (any worker's), or None."""
        return self.sessions.get(session_id)

    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """**The sink's hook**: these sessions are forgotten (their directory is gone, or they
        were idle longer than ``ESCALATIONS_SESSION_RETENTION``). Each gets a tombstone on the
        reports topic (sent with the next reports, on the session's partition), so every
        worker's sessions view drops it. May be called from any thread; returns at once."""
        ids = list(session_ids)
        if not ids:
            return
        if self._loop_thread in (None, threading.get_ident()):
            self.reports.forget(ids)
        else:
            self.app.loop.call_soon_threadsafe(self.reports.forget, ids)

    def current_sources(self) -> list[BatchSource]:
        return list(self.sources)

    def sync_summary(self) -> str:
        return (
            f"durable appends {self.sink.checkpoints.recorded} in {self.sink.checkpoints.seconds:.3f}s; "
            f"lines handed over {self.handoff.hits}"
        )

    # -- wiring helpers --------------------------------------------------------------------

    async def guarded(self, work: Awaitable[Any]) -> None:
        """Runs ``work``; anything it raises is a sink fault or our own bug: stop at once."""
        try:
            await work
        except Exception as exc:  # bad input never gets here
            self.fatal(exc)

    def _handler(
        self,
        stage: str,
        process: Callable[[list[Any]], Awaitable[None]],
        after: Callable[[], Awaitable[Any]] | None = None,
    ) -> Callable[[Batch], Awaitable[None]]:
        histogram = self.metrics.batch_size.labels(stage)

        async def handle(batch: Batch) -> None:
            records = [r for records in batch.values() for r in records]
            histogram.observe(len(records))
            await self.guarded(process(records))
            if after is not None:
                await self.guarded(after())

        return handle

    def _sender(self, topic: str) -> Callable[..., Awaitable[Any]]:
        """Sends through Faust's producer directly: Topic.send's per-record machinery costs."""

        async def send(key: bytes | None, value: bytes | None, headers: Headers) -> Any:
            return await self.app.producer.send(topic, key, value, None, None, headers)

        return send

    def _producer(self) -> AIOKafkaProducer:
        """The aiokafka producer inside Faust's (started with the app, stopped after our
        sources): the one place that reaches into Faust's driver, whose accessor is private."""
        driver: Any = self.app.producer
        producer: AIOKafkaProducer = driver._ensure_producer()
        return producer


async def _nothing(assigned: set[Any]) -> None:
    return None


def create_app(settings: Settings) -> faust.App:
    """The Faust app of the job, wired."""
    return build(settings).app


def build(settings: Settings, **parts: Any) -> Runtime:
    """The app and its runtime, wired; ``parts`` replace the runtime's own (tests)."""
    app = faust_app(settings)
    rt = Runtime(settings, app, **parts)
    app.prepare = rt.prepare
    collapse_repeats()
    app.task(rt.start)
    app.timer(REPORT_INTERVAL_S, name="escalations.report_positions")(rt.report_positions)
    app.timer(30.0, name="escalations.log_stats")(rt.log_stats)
    rt.metrics.watch(rt.stats, rt.sink, rt.current_sources, rt.unhealthy)
    web.install(
        app,
        sink=rt.sink,
        reports=rt.session_views,
        report=rt.session_view,
        metrics=rt.metrics,
        sources=rt.current_sources,
        unhealthy=rt.unhealthy,
        view=position_view,
    )
    return rt
