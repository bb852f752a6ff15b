"""The commands a user types: ``escalations map | produce | worker | demo | schemas | dlq``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from streams.errors import ConfigError, ContractError, EscalationsError, InputLineError
from streams.security import redact, redact_logs
from streams.settings import Settings, load

__all__ = ["main"]

T = TypeVar("T")

_SECRETS: list[str] = []  # the loaded settings' secret values: fail() never shows them


@click.group(context_settings={"help_option_names": ["--help"]})
@click.version_option(package_name="escalation-stream", prog_name="escalations")
def main() -> None:
    """Agent bus events (Avro on Kafka) -> escalation entries -> pending_escalations.jsonl.

    Configuration comes from the environment (KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL,
    ESCALATIONS_STATE_ROOT, ESCALATIONS_INPUT_TOPIC, ESCALATIONS_OUTPUT_TOPIC,
    ESCALATIONS_DLQ_TOPIC, ...): see the README.
    """


def fail(exc: BaseException) -> NoReturn:
    click.echo(f"escalations: error: {redact(str(exc), _SECRETS)}", err=True)
    sys.exit(1)


def _settings(*, warn: bool = True) -> Settings:
    try:
        settings = load()
    except EscalationsError as exc:
        fail(exc)
    _SECRETS[:] = settings.secrets()
    redact_logs(_SECRETS)  # what libraries log (a URL, an exception) goes through it too
    if warn:  # the worker logs its own
        for warning in settings.warnings:
            click.echo(f"escalations: warning: {warning}", err=True)
    return settings


def _kafka(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Runs a command's Kafka work once the brokers accepted our TLS and SASL settings.

    A refusal that cannot heal (certificate, authentication, mechanism) or brokers that do not
    answer end the command at once, with a message that names the setting to check.
    """
    from aiokafka.errors import KafkaError

    from streams.security import check_connection

    async def run() -> T:
        await check_connection(settings.bootstrap, settings.kafka)
        return await work()

    try:
        return asyncio.run(run())
    except EscalationsError as exc:
        fail(exc)
    except (KafkaError, OSError, TimeoutError) as exc:
        fail(
            ConfigError(
                f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap!r} "
                f"({settings.kafka.describe()}): {type(exc).__name__}: {exc}"
            )
        )


def _bootstrap(settings: Settings) -> str:
    """The configured brokers; commands other than ``worker`` and ``demo`` need them."""
    if not settings.bootstrap_servers:
        fail(
            ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (e.g. KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092)"
            )
        )
    return settings.bootstrap_servers


@contextmanager
def _broker(settings: Settings) -> Iterator[str]:
    """The configured brokers, or an embedded one for the duration of the block."""
    if settings.bootstrap_servers:
        yield settings.bootstrap_servers
        return
    from streams.ops.broker import EmbeddedBroker

    try:
        broker = EmbeddedBroker().start()
    except EscalationsError as exc:
        fail(exc)
    click.echo(
        f"escalations: KAFKA_BOOTSTRAP_SERVERS is not set: started the embedded broker "
        f"(Tansu, memory storage) on {broker.bootstrap}",
        err=True,
    )
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@main.command("map")
def map_command() -> None:
    """Bus events in the JSON form on stdin -> the exact JSONL lines on stdout.

    Pure: no Kafka. Input order is kept; events that are not escalation-class print nothing.
    A malformed line stops the run with its line number on stderr and exit status 1, after
    every line before it was written. Input is UTF-8 whatever the locale (RFC 8259); a line
    ends at LF only (CRLF works too; U+2028 inside a JSON string does not end a line).
    """
    from streams.contracts.schemas import BUS_EVENT, SchemaStore
    from streams.core.maplines import map_json_lines

    try:
        bus_schema = SchemaStore().current(BUS_EVENT)
        # Bytes, not the text layer: its decoding (and error handling) follows the locale.
        map_json_lines(sys.stdin.buffer, sys.stdout.buffer, bus_schema)
    except (InputLineError, ContractError) as exc:
        sys.stdout.flush()
        fail(exc)


@main.command("produce")
@click.option("--topic", help="Topic to send to (default: ESCALATIONS_INPUT_TOPIC, bus-events).")
def produce_command(topic: str | None) -> None:
    """Bus events in the JSON form on stdin -> Avro (wire format) -> the input topic.

    Keyed by session id, so each session's events keep their order. Needs
    KAFKA_BOOTSTRAP_SERVERS. Creates the job's topics when they do not exist.
    """
    settings = _settings()
    _produce(settings, _bootstrap(settings), sys.stdin, topic or settings.input_topic)


def _produce(settings: Settings, bootstrap: str, lines: Any, topic: str) -> None:
    from streams.contracts.registry import open_ids
    from streams.contracts.schemas import BUS_EVENT, SchemaStore
    from streams.ops.produce import produce_lines
    from streams.runtime.topics import ensure_topics

    tty = sys.stderr.isatty()
    cr = "\r" if tty else ""

    def progress(count: int) -> None:
        click.echo(f"{cr}produced {count} events...", err=True, nl=not tty)

    options = settings.kafka.aiokafka_kwargs()

    async def run() -> Any:
        store = SchemaStore()
        ids = open_ids(
            settings.schema_registry_url,
            store,
            security=settings.registry,
            startup_timeout_s=settings.registry_startup_timeout_s,
            unknown_id_grace_s=settings.registry_unknown_id_grace_s,
        )
        # The contract first: a refused schema (or subject) leaves no topic behind.
        schema_id = await ids.id_for(BUS_EVENT, f"{topic}-value")
        await ensure_topics(settings, bootstrap, options)
        return await produce_lines(
            lines, bootstrap, topic, ids, store, progress, options, schema_id=schema_id
        )

    report = _kafka(settings, run)
    click.echo(
        f"{cr}produced {report.events} events for {report.sessions} sessions "
        f"to {topic} in {report.seconds:.2f}s",
        err=True,
    )


@main.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("faust_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(faust_args: tuple[str, ...]) -> None:
    """Run the Faust worker: bus events -> escalations -> JSONL files (and dead letters).

    A thin front over `faust -A streams.app worker -l info`: extra arguments go to Faust's
    worker. With no KAFKA_BOOTSTRAP_SERVERS it starts the embedded broker and says where.
    """
    settings = _settings(warn=False)
    with _broker(settings) as bootstrap:
        from streams.runtime.factory import create_app

        app = create_app(settings.with_bootstrap(bootstrap))
        args = list(faust_args)
        if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in args):
            args = ["-l", "info", *args]  # -l warn turns on a spinner that costs ~10%
        if not settings.web_enabled and "--with-web" not in args:
            args.append("--without-web")
        sys.argv = ["escalations", "worker", *args]
        try:
            app.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise


@main.command("demo")
@click.option("--events", "count", type=int, default=None, help="Generate N events instead.")
@click.option("--timeout", type=float, default=90.0, show_default=True)
def demo_command(count: int | None, timeout: float) -> None:
    """Zero-setup tour: embedded broker, worker, a bundled sample, then the JSONL files.

    Exits 0 when every file holds exactly the lines `escalations map` gives for the sample.
    """
    from streams.ops.demo import run_demo

    settings = _settings()
    root = settings.state_root if settings.state_root_given else None
    try:
        ok = run_demo(count=count, timeout=timeout, echo=click.echo, state_root=root)
    except EscalationsError as exc:
        fail(exc)
    sys.exit(0 if ok else 1)


@main.group("schemas")
def schemas_group() -> None:
    """The Avro contracts in schemas/: check, freeze a new version, register."""


@schemas_group.command("check")
def schemas_check() -> None:
    """Committed ids match the schemas; each is BACKWARD compatible with its last version.

    With SCHEMA_REGISTRY_URL set, each schema is also checked against its subject there
    (<topic>-value; nothing is registered) and the registry's ids are printed.
    """
    from streams.contracts.schemas import CONTRACTS, SchemaStore, check

    settings = _settings()
    try:
        store = SchemaStore()
        problems = check(store)
    except EscalationsError as exc:
        fail(exc)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if settings.schema_registry_url:
        from streams.ops.schemacheck import check_registry

        try:
            lines, found = asyncio.run(check_registry(settings, store))
        except EscalationsError as exc:
            fail(exc)
        click.echo("\n".join(lines))
        click.echo("".join(f"problem: {problem}\n" for problem in found), err=True, nl=False)
        sys.exit(1 if found or problems else 0)
    if problems:
        sys.exit(1)
    for name in CONTRACTS:
        latest = store.latest(name)
        click.echo(f"{name}: version {latest.version}, id {latest.schema_id}, ok")


@schemas_group.command("freeze")
def schemas_freeze() -> None:
    """Give every changed schema a new version and id (refused when not BACKWARD compatible)."""
    from streams.contracts.schemas import CONTRACTS, SchemaStore, freeze

    try:
        store = SchemaStore()
        for name in CONTRACTS:
            version = freeze(store, name)
            state = "unchanged" if version is None else f"frozen as version {version.version}"
            click.echo(
                f"{name}: {state}" + ("" if version is None else f", id {version.schema_id}")
            )
    except EscalationsError as exc:
        fail(exc)


@schemas_group.command("register")
def schemas_register() -> None:
    """Register the current schemas with SCHEMA_REGISTRY_URL (subjects <topic>-value)."""
    from streams.contracts.registry import HttpRegistry
    from streams.contracts.schemas import BUS_EVENT, ENTRY, SchemaStore

    settings = _settings()
    if not settings.schema_registry_url:
        fail(
            ConfigError(
                "SCHEMA_REGISTRY_URL is not set (e.g. SCHEMA_REGISTRY_URL=http://localhost:8081)"
            )
        )
    registry = HttpRegistry(
        settings.schema_registry_url,
        SchemaStore(),
        security=settings.registry,
        startup_timeout_s=settings.registry_startup_timeout_s,
        unknown_id_grace_s=settings.registry_unknown_id_grace_s,
    )

    async def run() -> None:
        for name, topic in ((BUS_EVENT, settings.input_topic), (ENTRY, settings.output_topic)):
            schema_id = await registry.id_for(name, f"{topic}-value")
            click.echo(f"{name}: subject {topic}-value, id {schema_id}")

    try:
        asyncio.run(run())
    except EscalationsError as exc:
        fail(exc)


@main.group("sink")
def sink_group() -> None:
    """The JSONL files under ESCALATIONS_STATE_ROOT: verify them, rebuild them."""


@sink_group.command("verify")
def sink_verify() -> None:
    """Check every state directory's file against its recorded position (exit 1 on problems)."""
    from streams.sink.files import FileSink
    from streams.sink.verify import inspect_session

    settings = _settings()
    sink = FileSink(settings.state_root)
    sessions = sink.sessions()
    reports = [inspect_session(sink, session) for session in sessions]
    problems = [p for report in reports for p in report.problems]
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    pending = [r for r in reports if r.pending_lines]
    click.echo(
        f"checked {len(sessions)} state directories under {sink.root}: {len(problems)} problems"
        + (
            f"; {sum(r.pending_lines for r in pending)} lines in {len(pending)} of them "
            "pending (written, not yet checkpointed)"
            if pending
            else ""
        )
    )
    sys.exit(1 if problems else 0)


@sink_group.command("rebuild")
@click.option("--session", "sessions", multiple=True, help="Session to rebuild (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Rebuild every session in the output topic.")
@click.option(
    "--idle", type=float, default=2.0, show_default=True, help="Stop reading after idle s."
)
def sink_rebuild(sessions: tuple[str, ...], all_: bool, idle: float) -> None:
    """Rematerialise session files from the output topic (byte-identical; safe while running)."""
    from streams.contracts.codec import Codec
    from streams.contracts.registry import open_ids
    from streams.core.records import session_id_problem
    from streams.ops.rebuild import gave_up_messages, rebuild
    from streams.sink.files import FileSink

    settings = _settings()
    if bool(sessions) == all_:
        fail(EscalationsError("name sessions with --session S (repeatable) or pass --all"))
    for session in sessions:
        if (problem := session_id_problem(session)) is not None:
            fail(EscalationsError(f"--session {session!r}: {problem}"))
    bootstrap = _bootstrap(settings)
    ids = open_ids(
        settings.schema_registry_url,
        security=settings.registry,
        startup_timeout_s=settings.registry_startup_timeout_s,
        unknown_id_grace_s=settings.registry_unknown_id_grace_s,
    )
    report = _kafka(
        settings,
        lambda: rebuild(
            FileSink(settings.state_root),
            Codec(ids.known()),
            ids,
            bootstrap,
            settings.output_topic,
            settings.partitions,
            set(sessions) if sessions else None,
            idle_s=idle,
            client_options=settings.kafka.aiokafka_kwargs(),
        ),
    )
    for session, position in sorted(report.positions.items()):
        click.echo(f"rebuilt {session}: {position.entries} entries, {position.size} bytes")
    for message in gave_up_messages(report, settings):
        click.echo(message, err=True)
    unknown = ", ".join(f"{i} ({n} records)" for i, n in sorted(report.unknown_ids.items()))
    click.echo(
        f"read {report.records} records from {settings.output_topic} "
        f"({report.undecodable} skipped as undecodable"
        + (f"; unknown schema ids: {unknown})" if unknown else ")")
    )
    sys.exit(1 if report.gave_up else 0)


@main.group("dlq")
def dlq_group() -> None:
    """The dead-letter topic."""


@dlq_group.command("replay")
@click.option("--limit", type=int, default=None, help="Replay at most N records.")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; send nothing.")
@click.option("--idle", type=float, default=3.0, show_default=True, help="Stop after idle s.")
def dlq_replay(limit: int | None, dry_run: bool, idle: float) -> None:
    """Send dead-lettered records back to the topic they came from once their cause is fixed."""
    from streams.ops.replay import replay

    settings = _settings()
    bootstrap = _bootstrap(settings)
    report = _kafka(
        settings,
        lambda: replay(
            bootstrap,
            settings.dlq_topic,
            settings.input_topic,
            f"{settings.app_id}-dlq-replay",
            settings.output_topic,
            idle_s=idle,
            limit=limit,
            dry_run=dry_run,
            client_options=settings.kafka.aiokafka_kwargs(),
        ),
    )
    verb = "would replay" if dry_run else "replayed"
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_error.items())) or "nothing"
    click.echo(
        f"{verb} {report.replayed} records from {settings.dlq_topic} ({detail}) "
        f"of {report.sessions} sessions"
    )
    for topic, count in sorted(report.by_topic.items()):
        click.echo(f"  {count} back to {topic}")
    if report.replayed:  # a session's file is append-only: no line goes back in its place
        mood = "would be" if dry_run else "are"
        click.echo(
            f"  their lines {mood} appended after what each of these {report.sessions} "
            "sessions' files already holds (after lines of later events), not in their place"
        )


if __name__ == "__main__":
    main()
