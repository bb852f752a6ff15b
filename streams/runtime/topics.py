"""The job's topics: created with explicit, matching partition counts, or checked to exist.

On a cluster where the job may not create topics (``ESCALATIONS_CREATE_TOPICS=false``, or
creation not authorized) every topic is checked instead: present, with the configured
partition count. A missing one stops the job with the list of what to create.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from streams.errors import ConfigError
from streams.settings import MAX_REQUEST_BYTES, Settings

__all__ = ["check_described", "ensure_topics", "job_topics", "reports_topic"]

log = logging.getLogger(__name__)

_NOT_AUTHORIZED = (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno)


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
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str], bootstrap: str
) -> None:
    response = await admin.create_topics(
        [
            NewTopic(
                n,
                settings.partitions,
                settings.replication_factor,
                topic_configs={"max.message.bytes": str(MAX_REQUEST_BYTES)},
            )
            for n in names
        ]
    )
    for name, code, *rest in response.topic_errors:
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
        wanted = "; ".join(
            f"{n} (partitions {settings.partitions}, replication {settings.replication_factor}, "
            f"max.message.bytes {MAX_REQUEST_BYTES})"
            for n in missing
        )
        why = (
            "ESCALATIONS_CREATE_TOPICS=false"
            if not settings.create_topics
            else "the job may not create them"
        )
        raise ConfigError(f"missing topics on {bootstrap} ({why}); create: {wanted}")
