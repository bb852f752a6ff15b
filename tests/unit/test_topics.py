"""The check of the job's topics on a cluster where it may not create them."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.runtime.topics import check_described, job_topics
from streams.settings import load

SETTINGS = load({"ESCALATIONS_CREATE_TOPICS": "false", "ESCALATIONS_PARTITIONS": "6"})


def _topic(name: str, partitions: int, error_code: int = 0) -> dict[str, object]:
    return {
        "error_code": error_code,
        "topic": name,
        "is_internal": False,
        "partitions": [{"partition": p} for p in range(partitions)],
    }


def test_present_topics_of_the_configured_size_pass() -> None:
    check_described([_topic(n, 6) for n in job_topics(SETTINGS)], SETTINGS, "k:9092")


def test_missing_topics_are_listed_with_what_to_create() -> None:
    described = [
        _topic("bus-events", 6),
        _topic("escalations", 0, 3),
        _topic("bus-events.dlq", 0, 3),
    ]
    with pytest.raises(ConfigError) as raised:
        check_described(described, SETTINGS, "k:9092")
    message = str(raised.value)
    assert "missing topics on k:9092 (ESCALATIONS_CREATE_TOPICS=false)" in message
    assert "escalations (partitions 6, replication 1, max.message.bytes 8454144)" in message
    assert "bus-events.dlq (partitions 6" in message
    assert "bus-events (" not in message.replace("bus-events.dlq (", "")


def test_a_topic_of_another_size_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="has 4 partitions but ESCALATIONS_PARTITIONS=6"):
        check_described([_topic("bus-events", 4)], SETTINGS, "k:9092")


def test_no_describe_permission_names_the_acl() -> None:
    with pytest.raises(ConfigError, match=r"TopicAuthorizationFailedError .*Describe"):
        check_described([_topic("bus-events", 0, 29)], SETTINGS, "k:9092")
