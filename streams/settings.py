"""The only reader of ``os.environ``: one typed, frozen settings object."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streams.core.records import DATA_DIR_NAME
from streams.errors import ConfigError
from streams.security import (
    KafkaSecurity,
    RegistrySecurity,
    load_kafka_security,
    load_registry_security,
    mask_url,
    redact,
)

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_INPUT_TOPIC",
    "DEFAULT_OUTPUT_TOPIC",
    "DEFAULT_SESSION_RETENTION_S",
    "DEFAULT_STATE_ROOT",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "Settings",
    "load",
    "unknown_variables",
]

DEFAULT_INPUT_TOPIC = "bus-events"
DEFAULT_OUTPUT_TOPIC = "escalations"
DEFAULT_DLQ_TOPIC = "bus-events.dlq"
DEFAULT_STATE_ROOT = "./state"
DEFAULT_APP_ID = "escalation-stream"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: The largest record the job reads or writes: fetch size, producer request size, topic limit.
#: A dead-letter copy is the input plus ~2 KB of headers, so it stays below this too.
MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_REQUEST_BYTES = MAX_RECORD_BYTES + 64 * 1024  # a record plus its headers and framing
DEFAULT_SESSION_RETENTION_S = 7 * 24 * 3600.0  # ESCALATIONS_SESSION_RETENTION: a week

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str | None  # None: start the embedded broker (CLI) or use 127.0.0.1:9092
    schema_registry_url: str | None  # None: the committed id file in schemas/
    state_root: Path
    input_topic: str = DEFAULT_INPUT_TOPIC
    output_topic: str = DEFAULT_OUTPUT_TOPIC
    dlq_topic: str = DEFAULT_DLQ_TOPIC
    partitions: int = 4
    replication_factor: int = 1
    app_id: str = DEFAULT_APP_ID
    web_enabled: bool = True
    web_port: int = 6066
    web_bind: str = "127.0.0.1"  # the address the web server listens on
    web_host: str = "127.0.0.1"  # the host Faust advertises for this worker's web server
    #: Faust's data directory (the worker's lock, its own state); None: <state root>/.faust
    data_dir: Path | None = None
    #: False: never create topics (locked-down clusters); they are checked to exist instead.
    create_topics: bool = True
    #: Whether ESCALATIONS_STATE_ROOT was set (the demo uses a temporary root otherwise).
    state_root_given: bool = False
    #: TLS and SASL for every Kafka client the project makes (PLAINTEXT by default).
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: Basic auth and TLS for the schema registry.
    registry: RegistrySecurity = field(default_factory=RegistrySecurity)
    #: Problems that do not stop the job (unknown ESCALATIONS_* variables); logged at start.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    session_timeout_s: float = 10.0
    batch_max: int = 1000
    stall_timeout_s: float = 60.0
    #: How long the worker, `produce` and `schemas register` retry an unreachable registry at start.
    registry_startup_timeout_s: float = 60.0
    #: How long a schema id the registry answers 404 for is asked again before its records are
    #: dead-lettered (a restarting registry, a lagging follower); 0: at once.
    registry_unknown_id_grace_s: float = 60.0
    fetch_wait_ms: int = 50
    #: False skips the sink's fsyncs: safe against process crashes, not against power loss.
    fsync: bool = True
    #: How checkpoints make files durable: "auto" (syncfs only where the state root's file
    #: system honours it), "syncfs" or "fsync" (each written file).
    sync: str = "auto"
    #: How often the sink makes written lines durable, records positions and commits.
    checkpoint_interval_ms: int = 1000
    #: Descriptors of state-directory files the sink keeps open at most (an LRU).
    max_open_files: int = 1024
    #: SIGTERM: the batch in hand is finished (or abandoned, uncommitted) and the worker
    #: exits within this many seconds, broker or no broker.
    drain_timeout_s: float = 10.0
    #: A session idle longer than this is forgotten: the sink forgets it (a tombstone on the
    #: reports topic), and the sessions view drops a session whose latest report is older.
    session_retention_s: float = DEFAULT_SESSION_RETENTION_S

    @property
    def broker_url(self) -> str:
        servers = self.bootstrap
        return ";".join(f"kafka://{s.strip()}" for s in servers.split(",") if s.strip())

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers the clients connect to (127.0.0.1:9092 when unset)."""
        return self.bootstrap_servers or DEFAULT_BOOTSTRAP

    @property
    def faust_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.state_root / DATA_DIR_NAME

    def secrets(self) -> list[str]:
        """Every secret value the settings hold (passwords, tokens), never to be shown."""
        kafka = [s.reveal() for s in (self.kafka.sasl_password, self.kafka.key_password) if s]
        return [*kafka, *self.registry.secrets()]

    def with_bootstrap(self, servers: str) -> Settings:
        """The same settings on other brokers (the embedded one the CLI started)."""
        return replace(self, bootstrap_servers=servers)


def _topic(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ConfigError(
            f"{name}={value!r} is not a valid Kafka topic name "
            f"(letters, digits, '.', '_', '-'; e.g. {default})"
        )
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int, example: str) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={raw!r} must be an integer from {lo} to {hi} (e.g. {example})")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, example: str, *, zero: bool = False
) -> float:
    """A positive number of seconds (``zero``: 0, meaning off, too)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    ok = 0 <= value < float("inf") if zero else value > 0
    if not ok:
        kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        raise ConfigError(f"{name}={raw!r} must be {kind} (e.g. {example})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, example: str) -> float:
    """A number of seconds that may be 0 (off)."""
    return _float(env, name, default, example, zero=True)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false (e.g. {name}=false)")


#: ESCALATIONS_SYNC's values, the first the default (see streams/sink/durability.py).
SYNC_CHOICES = ("auto", "syncfs", "fsync")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], example: str) -> str:
    raw = env.get(name, "")
    value = raw.strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)} (e.g. {example})")
    return value


def _bootstrap(env: Mapping[str, str]) -> str | None:
    raw = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not raw:
        return None
    # host:port lists, comma-separated; Faust's broker URL form (kafka://a:9092;kafka://b) too.
    servers = [s.strip().removeprefix("kafka://") for s in re.split("[,;]", raw) if s.strip()]
    for server in servers:
        if not _HOST_PORT.match(server) or not 0 < int(server.rsplit(":", 1)[1]) <= 65535:
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS={raw!r}: {server!r} is not host:port "
                "(e.g. KAFKA_BOOTSTRAP_SERVERS=broker1:9092,broker2:9092)"
            )
    return ",".join(servers)


def _registry(env: Mapping[str, str]) -> str | None:
    """The registry URL, its scheme lower-cased; every message shows it masked."""
    raw = env.get("SCHEMA_REGISTRY_URL", "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError as exc:
        raise ConfigError(
            f"SCHEMA_REGISTRY_URL={mask_url(raw)!r} is not a URL ({redact(str(exc), [raw])}; "
            "e.g. SCHEMA_REGISTRY_URL=http://schema-registry:8081)"
        ) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"SCHEMA_REGISTRY_URL={mask_url(raw)!r} must be an http(s) URL "
            "(e.g. SCHEMA_REGISTRY_URL=http://schema-registry:8081)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            f"SCHEMA_REGISTRY_URL={mask_url(raw)!r} carries a query or fragment, which the "
            "registry client drops: give credentials in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO "
            "(e.g. SCHEMA_REGISTRY_URL=https://schema-registry:8081)"
        )
    return urlunsplit(parts._replace(scheme=parts.scheme.lower())).rstrip("/")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "")
    if not raw:
        return None
    if "\x00" in raw:
        raise ConfigError(f"{name} contains a NUL byte (e.g. {name}=/var/lib/escalations/data)")
    return Path(raw).resolve()


class _Tracked(Mapping[str, str]):
    """The environment, remembering which variables were looked up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def unknown_variables(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """A warning for every ``ESCALATIONS_*`` variable no setting reads, with the closest name."""
    prefix = "ESCALATIONS_"
    known = sorted(known)
    suffixes = [n.removeprefix(prefix) for n in known if n.startswith(prefix)]
    warnings = []
    for name in sorted(n for n in env if n.startswith(prefix) and n not in known):
        close = difflib.get_close_matches(name.removeprefix(prefix), suffixes, n=1, cutoff=0.6)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; a wrong value raises ConfigError naming the variable.

    Unknown ``ESCALATIONS_*`` variables (a misspelt name) are reported in ``warnings``.
    """
    tracked = _Tracked(os.environ if env is None else env)
    settings = _load(tracked)
    kafka = load_kafka_security(tracked)
    url, registry = load_registry_security(tracked, settings.schema_registry_url)
    warnings = [
        *kafka.warnings(),
        *registry.warnings(),
        *unknown_variables(tracked.env, tracked.read),
    ]
    return replace(
        settings, schema_registry_url=url, kafka=kafka, registry=registry, warnings=tuple(warnings)
    )


def _load(env: Mapping[str, str]) -> Settings:
    state_root = Path(env.get("ESCALATIONS_STATE_ROOT", "") or DEFAULT_STATE_ROOT)
    if "\x00" in str(state_root):
        raise ConfigError("ESCALATIONS_STATE_ROOT contains a NUL byte (e.g. /var/lib/escalations)")
    topics = {
        "input_topic": _topic(env, "ESCALATIONS_INPUT_TOPIC", DEFAULT_INPUT_TOPIC),
        "output_topic": _topic(env, "ESCALATIONS_OUTPUT_TOPIC", DEFAULT_OUTPUT_TOPIC),
        "dlq_topic": _topic(env, "ESCALATIONS_DLQ_TOPIC", DEFAULT_DLQ_TOPIC),
    }
    if len(set(topics.values())) != 3:
        raise ConfigError(
            "ESCALATIONS_INPUT_TOPIC, ESCALATIONS_OUTPUT_TOPIC and ESCALATIONS_DLQ_TOPIC must be "
            f"three different topics (got {sorted(topics.values())}; e.g. "
            f"{DEFAULT_INPUT_TOPIC}, {DEFAULT_OUTPUT_TOPIC}, {DEFAULT_DLQ_TOPIC})"
        )
    web_bind = env.get("ESCALATIONS_WEB_BIND", "") or "127.0.0.1"
    return Settings(
        bootstrap_servers=_bootstrap(env),
        schema_registry_url=_registry(env),
        state_root=state_root.resolve(),
        state_root_given=bool(env.get("ESCALATIONS_STATE_ROOT")),
        partitions=_int(env, "ESCALATIONS_PARTITIONS", 4, 1, 10_000, "ESCALATIONS_PARTITIONS=8"),
        replication_factor=_int(
            env, "ESCALATIONS_REPLICATION_FACTOR", 1, 1, 100, "ESCALATIONS_REPLICATION_FACTOR=3"
        ),
        app_id=_topic(env, "ESCALATIONS_APP_ID", DEFAULT_APP_ID),
        web_enabled=_bool(env, "ESCALATIONS_WEB_ENABLED", True),
        web_port=_int(env, "ESCALATIONS_WEB_PORT", 6066, 0, 65535, "ESCALATIONS_WEB_PORT=6066"),
        web_bind=web_bind,
        web_host=env.get("ESCALATIONS_WEB_HOST", "") or web_bind,
        data_dir=_path(env, "ESCALATIONS_DATA_DIR"),
        create_topics=_bool(env, "ESCALATIONS_CREATE_TOPICS", True),
        session_timeout_s=_float(
            env, "ESCALATIONS_SESSION_TIMEOUT", 10.0, "ESCALATIONS_SESSION_TIMEOUT=10"
        ),
        batch_max=_int(
            env, "ESCALATIONS_BATCH_MAX", 1000, 1, 1_000_000, "ESCALATIONS_BATCH_MAX=1000"
        ),
        registry_startup_timeout_s=_float(
            env,
            "ESCALATIONS_REGISTRY_STARTUP_TIMEOUT",
            60.0,
            "ESCALATIONS_REGISTRY_STARTUP_TIMEOUT=60",
        ),
        registry_unknown_id_grace_s=_seconds(
            env,
            "ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE",
            60.0,
            "ESCALATIONS_REGISTRY_UNKNOWN_ID_GRACE=60",
        ),
        stall_timeout_s=_float(
            env, "ESCALATIONS_STALL_TIMEOUT", 60.0, "ESCALATIONS_STALL_TIMEOUT=60"
        ),
        fetch_wait_ms=_int(
            env, "ESCALATIONS_FETCH_WAIT_MS", 50, 1, 10_000, "ESCALATIONS_FETCH_WAIT_MS=50"
        ),
        fsync=_bool(env, "ESCALATIONS_FSYNC", True),
        sync=_choice(env, "ESCALATIONS_SYNC", SYNC_CHOICES, "ESCALATIONS_SYNC=fsync"),
        checkpoint_interval_ms=_int(
            env,
            "ESCALATIONS_CHECKPOINT_INTERVAL_MS",
            1000,
            1,
            3_600_000,
            "ESCALATIONS_CHECKPOINT_INTERVAL_MS=1000",
        ),
        max_open_files=_int(
            env,
            "ESCALATIONS_MAX_OPEN_FILES",
            1024,
            16,
            1_000_000,
            "ESCALATIONS_MAX_OPEN_FILES=1024",
        ),
        drain_timeout_s=_float(
            env, "ESCALATIONS_DRAIN_TIMEOUT", 10.0, "ESCALATIONS_DRAIN_TIMEOUT=10"
        ),
        session_retention_s=_float(
            env,
            "ESCALATIONS_SESSION_RETENTION",
            DEFAULT_SESSION_RETENTION_S,
            "ESCALATIONS_SESSION_RETENTION=604800",
        ),
        input_topic=topics["input_topic"],
        output_topic=topics["output_topic"],
        dlq_topic=topics["dlq_topic"],
    )
