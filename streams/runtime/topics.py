"""The job's topics: created with explicit, matching partition counts, or checked to exist.

On a cluster where the job may not create topics (``ESCALATIONS_CREATE_TOPICS=false``, or
creation not authorized) every topic is checked instead: present, with the configured
partition count. A missing one stops the job with the list of what to create.

The reports topic is created with ``cleanup.policy=compact`` (only each session's latest report
and, for a while, its tombstone are kept). A broker that refuses the setting gets the topic
without it; either way its policy is read back (DescribeConfigs) and logged once: an existing
reports topic that is not compacted is a warning naming the command that fixes it. The
sessions view is bounded by time whatever the policy (``streams.runtime.sessions``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidConfigurationError,
    InvalidRequestError,
    KafkaError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    for_code,
)

from streams.errors import ConfigError
from streams.settings import MAX_REQUEST_BYTES, Settings

__all__ = [
    "REPORTS_CONFIGS",
    "check_described",
    "cleanup_policy",
    "ensure_topics",
    "job_topics",
    "reports_topic",
]

log = logging.getLogger(__name__)

_NOT_AUTHORIZED = (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno)
#: What a broker answers when it refuses a topic's configs (then created without them).
_CONFIG_REFUSED = (
    InvalidConfigurationError.errno,
    PolicyViolationError.errno,
    InvalidRequestError.errno,
    UnsupportedVersionError.errno,
)
#: Every topic's configs.
TOPIC_CONFIGS = {"max.message.bytes": str(MAX_REQUEST_BYTES)}
#: The reports topic's: only each session's latest report is worth keeping.
REPORTS_CONFIGS = {**TOPIC_CONFIGS, "cleanup.policy": "compact"}


def reports_topic(settings: Settings) -> str:
    """The sink's position reports (every worker reads it whole: the sessions view)."""
    return f"{settings.app_id}-sink-reports"


def job_topics(settings: Settings) -> list[str]:
    """The topics the job reads and writes (Faust's internal ones aside)."""
    return [
        settings.input_topic,
        settings.output_topic,
        settings.dlq_topic,
        reports_topic(settings),
    ]


async def ensure_topics(
    settings: Settings, bootstrap: str, client_options: Mapping[str, Any] | None = None
) -> None:
    """Create the job's topics (when allowed) and check their partition counts."""
    names = job_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=15000, **dict(client_options or {})
    )
    await admin.start()
    try:
        if settings.create_topics:
            await _create(admin, settings, names, bootstrap)
        await _check(admin, settings, names, bootstrap)
        await _check_compaction(admin, reports_topic(settings), bootstrap)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str], bootstrap: str
) -> None:
    reports = reports_topic(settings)

    def new(name: str, configs: dict[str, str]) -> NewTopic:
        return NewTopic(
            name, settings.partitions, settings.replication_factor, topic_configs=configs
        )

    response = await admin.create_topics(
        [new(n, REPORTS_CONFIGS if n == reports else TOPIC_CONFIGS) for n in names]
    )
    errors = list(response.topic_errors)
    for index, (name, code, *rest) in enumerate(errors):
        if name == reports and code in _CONFIG_REFUSED:
            log.warning(
                "topic %s: %s refused cleanup.policy=compact (%s %s): created without it",
                name,
                bootstrap,
                for_code(code).__name__,
                rest,
            )
            retried = await admin.create_topics([new(name, TOPIC_CONFIGS)])
            errors[index] = retried.topic_errors[0]
    for name, code, *rest in errors:
        if code == 0:
            log.info("created topic %s with %d partitions", name, settings.partitions)
        elif code in _NOT_AUTHORIZED:
            log.warning(
                "not authorized to create topic %s on %s: checking it exists", name, bootstrap
            )
        elif code != TopicAlreadyExistsError.errno:
            raise ConfigError(f"cannot create topic {name!r} on {bootstrap}: error {code} {rest}")


async def _check(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str], bootstrap: str
) -> None:
    check_described(await admin.describe_topics(names), settings, bootstrap)


async def _check_compaction(admin: AIOKafkaAdminClient, topic: str, bootstrap: str) -> None:
    """Logs the reports topic's cleanup policy (once per start): a warning when it is not
    compacted (its history then grows with every session ever reported)."""
    try:
        # No config names: the embedded broker drops the connection on a filtered request.
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except (KafkaError, OSError) as exc:
        log.info("topic %s: its cleanup.policy cannot be read on %s (%s)", topic, bootstrap, exc)
        return
    policy = cleanup_policy([a.to_object() for a in answers], topic)
    if policy is not None and "compact" in policy.split(","):
        log.info(
            "topic %s: cleanup.policy=%s (each session's latest report is kept; the embedded "
            "broker accepts the setting but never compacts)",
            topic,
            policy,
        )
    else:
        log.warning(
            "topic %s is not compacted (cleanup.policy=%s): it keeps every report ever sent, "
            "and each worker's start reads those of the last ESCALATIONS_SESSION_RETENTION. "
            "Compact it: kafka-configs.sh --bootstrap-server %s --alter --entity-type topics "
            "--entity-name %s --add-config cleanup.policy=compact",
            topic,
            policy or "unknown",
            bootstrap,
            topic,
        )


def cleanup_policy(answers: list[dict[str, Any]], topic: str) -> str | None:
    """The topic's ``cleanup.policy`` in DescribeConfigs answers (``to_object()`` form);
    None when the answer has none (an error, a broker that does not say)."""
    for answer in answers:
        for resource in answer.get("resources", []):
            if resource.get("resource_name") != topic or resource.get("error_code", 0):
                continue
            for entry in resource.get("config_entries", []):
                name = entry.get("config_names", entry.get("config_name"))
                if name == "cleanup.policy":
                    value = entry.get("config_value")
                    return None if value is None else str(value)
    return None


def check_described(described: list[dict[str, Any]], settings: Settings, bootstrap: str) -> None:
    """Refuses topics that are missing or have another partition count (``described``: the
    admin client's DescribeTopics answer), with the list of what to create."""
    missing: list[str] = []
    for topic in described:
        name = topic["topic"]
        code = topic.get("error_code", 0)
        count = len(topic.get("partitions") or [])
        if code == UnknownTopicOrPartitionError.errno or (code == 0 and not count):
            missing.append(name)
        elif code != 0:
            raise ConfigError(
                f"cannot describe topic {name!r} on {bootstrap}: {for_code(code).__name__} "
                f"(error {code}); the job needs Describe on its topics (see README, ACLs)"
            )
        elif count != settings.partitions:
            raise ConfigError(
                f"topic {name!r} has {count} partitions but ESCALATIONS_PARTITIONS="
                f"{settings.partitions}; set ESCALATIONS_PARTITIONS={count} or use new topics"
            )
    if missing:
        compact = {reports_topic(settings): ", cleanup.policy compact"}
        wanted = "; ".join(
            f"{n} (partitions {settings.partitions}, replication {settings.replication_factor}, "
            f"max.message.bytes {MAX_REQUEST_BYTES}{compact.get(n, '')})"
            for n in missing
        )
        why = (
            "ESCALATIONS_CREATE_TOPICS=false"
            if not settings.create_topics
            else "the job may not create them"
        )
        raise ConfigError(f"missing topics on {bootstrap} ({why}); create: {wanted}")
