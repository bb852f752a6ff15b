"""Every class of bad input lands in the dead-letter topic; nothing else is lost with it."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.contracts.codec import Codec
from streams.contracts.schemas import BUS_EVENT
from streams.core.busjson import BusJson
from streams.core.deadletter import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    SCHEMA_ID,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    header,
)
from streams.ops.sample import bus_events

from .support import Job

pytestmark = pytest.mark.integration


def _bad_records(job: Job) -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected error class, key, value) for each bad-input class."""
    codec = Codec(job.store.by_id())
    parser = BusJson(job.store.current(BUS_EVENT))
    good = parser.parse(next(bus_events(1, seed=5)))
    valid = codec.encode(1, good)

    def with_session(session: str) -> bytes:
        return codec.encode(1, {**good, "session_id": session})

    return [
        ("NotFramedError", b"k", b'{"not": "avro"}'),
        ("NotFramedError", b"k", b""),
        ("NotFramedError", b"k", None),
        ("UnknownSchemaIdError", b"k", b"\x00\x00\x00\x03\xe7" + valid[5:]),
        ("AvroBodyError", b"k", valid[: len(valid) // 2]),
        ("TrailingBytesError", b"k", valid + b"\x00\x01"),
        ("InvalidRecordError", b"..", with_session("..")),
        ("InvalidRecordError", b".", with_session(".")),
        ("InvalidRecordError", b"", with_session("")),
        ("InvalidRecordError", b"a/b", with_session("../../etc")),
        ("InvalidRecordError", b"abs", with_session("/etc/passwd")),
        ("InvalidRecordError", b"win", with_session("..\\..\\windows")),
        ("InvalidRecordError", b"nul", with_session("a\x00b")),
        ("InvalidRecordError", b"ctl", with_session("a\x1bb")),
        ("InvalidRecordError", b"long", with_session("x" * 201)),
    ]


async def _send_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        metas = []
        for key, value in records:
            fut = await producer.send(topic, value, key=key, headers=[("trace", b"t-1")])
            metas.append(await fut)
        return metas
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


def test_every_bad_input_class_is_dead_lettered_and_good_input_still_lands(job: Job) -> None:
    bad = _bad_records(job)
    lines = list(bus_events(400, sessions=3, seed=21))
    expected = job.expected(lines)
    job.worker()
    job.produce(lines[:200])
    metas = asyncio.run(
        _send_raw(job.bootstrap, job.settings.input_topic, [(k, v) for _, k, v in bad])
    )
    job.produce(lines[200:])

    assert job.wait_for_files(expected) == expected, job.logs()
    dead = asyncio.run(_read(job.bootstrap, job.settings.dlq_topic, len(bad)))
    assert len(dead) == len(bad), job.logs()
    by_source = {
        (header(d.headers, SOURCE_PARTITION), header(d.headers, SOURCE_OFFSET)): d for d in dead
    }
    for (error_class, key, value), meta in zip(bad, metas, strict=True):
        d = by_source[(str(meta.partition), str(meta.offset))]
        assert header(d.headers, ERROR_CLASS) == error_class, header(d.headers, ERROR_MESSAGE)
        assert header(d.headers, SOURCE_TOPIC) == job.settings.input_topic
        assert d.key == key and d.value == value  # the original bytes
        assert header(d.headers, "trace") == "t-1"  # the original headers
        message = header(d.headers, ERROR_MESSAGE) or ""
        assert f"{job.settings.input_topic}[{meta.partition}]@{meta.offset}" in message
        if error_class in ("UnknownSchemaIdError", "AvroBodyError", "TrailingBytesError"):
            assert header(d.headers, SCHEMA_ID) is not None
    # Nothing was written outside the state root, and only the good sessions exist in it.
    assert job.state_entries() == sorted(expected)
    assert not (job.tmp / "etc").exists() and not (job.tmp / "passwd").exists()
