"""Fixtures of the integration tests: a real broker, and jobs built on it.

The broker is, in order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; an Apache Kafka container
(testcontainers) when a Docker engine answers; else the embedded Tansu broker. Shared helpers
live in ``support.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.ops.broker import EmbeddedBroker

from .support import Job, docker_answers

__all__ = ["JobFactory"]


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_file=log) as broker:
            yield broker.bootstrap


JobFactory = Callable[..., Job]


@pytest.fixture
def job_factory(bootstrap: str, tmp_path: Path) -> Iterator[JobFactory]:
    """Builds jobs (own topics, group, state root) on the shared broker; stops their workers."""
    jobs: list[Job] = []

    def make(partitions: int = 4, *, broker: str | None = None, **env: str) -> Job:
        where = tmp_path / f"job-{len(jobs)}" if jobs else tmp_path
        where.mkdir(exist_ok=True)
        job = Job(broker or bootstrap, where, partitions, **env)
        jobs.append(job)
        return job.create_topics()

    yield make
    for job in jobs:
        job.stop()


@pytest.fixture
def job(job_factory: JobFactory) -> Job:
    return job_factory()
