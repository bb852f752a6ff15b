"""Creates the job's topics with explicit, matching partition counts (never auto-created)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from streams.errors import ConfigError
from streams.settings import MAX_REQUEST_BYTES, Settings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create input, output and dead-letter topics; refuse existing ones of another size."""
    names = [settings.input_topic, settings.output_topic, settings.dlq_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
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
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise ConfigError(
                    f"cannot create topic {name!r} on {bootstrap}: error {code} {rest}"
                )
            if code == 0:
                log.info("created topic %s with %d partitions", name, settings.partitions)
        for described in await admin.describe_topics(names):
            count = len(described.get("partitions") or [])
            if count and count != settings.partitions:
                raise ConfigError(
                    f"topic {described['topic']!r} has {count} partitions but "
                    f"ESCALATIONS_PARTITIONS={settings.partitions}; set ESCALATIONS_PARTITIONS="
                    f"{count} or use new topics"
                )
    finally:
        await admin.close()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default (Java-compatible murmur2) partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
