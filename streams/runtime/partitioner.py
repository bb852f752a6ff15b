"""The partition of a key, as Kafka's default (Java-compatible murmur2) partitioner gives it."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default (Java-compatible murmur2) partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
