"""The batch sender keeps each session's order on the output topic when a send fails (issue 18).

The sink skips a session's lines at or below the last source offset it wrote. If a batch's
second builder for a partition lands while its first fails, the retry puts the first
builder's lines after lines the sink has already written: they look like repeats and are
lost. ``ProducerDouble`` stands in for aiokafka's producer only where no broker can be made
to fail one batch and accept the next: it builds real record batches (aiokafka's
``BatchBuilder``), decodes what it lands, and fails the sends it is told to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from streams.core.records import SinkLine
from streams.runtime.sender import BatchSender
from streams.sink.files import FILE_NAME, FileSink

TOPIC = "escalations"


class _Acked:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class ProducerDouble:
    """aiokafka's producer as the sender uses it: one partition, small batches, a log of what
    landed; the sends numbered in ``failing`` fail (a batch that expired in a broker stall)."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.sends = 0
        self.log: list[tuple[bytes, bytes]] = []
        self.unacked = 0  # builders handed over and not yet acknowledged
        self.most_unacked = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(200, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        number, self.sends = self.sends, self.sends + 1
        self.unacked += 1
        self.most_unacked = max(self.most_unacked, self.unacked)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def land() -> None:
            self.unacked -= 1
            if number in self.failing:
                done.set_exception(KafkaTimeoutError())
                return
            base = len(self.log)
            self.log.extend((r.key, r.value) for r in DefaultRecordBatch(builder._build()))
            done.set_result(_Acked(base))

        asyncio.get_running_loop().call_later(0.01 * (3 - min(number, 2)), land)
        return done


def sink_line(value: bytes) -> SinkLine:
    session, offset = value.decode().split(":")
    return SinkLine(session, value + b"\n", "bus-events:0", int(offset), 1000 + int(offset))


def test_a_failed_builder_never_lets_a_later_one_of_its_partition_land(tmp_path: Path) -> None:
    records = [(b"s1", f"s1:{offset:04d}".encode()) for offset in range(40)]
    producer = ProducerDouble(failing={0})
    send = BatchSender(lambda: producer, TOPIC)  # type: ignore[arg-type, return-value]

    async def send_and_retry() -> None:
        try:
            await send(records)
        except KafkaTimeoutError:
            pass  # the batch fails; the job sends it again (or the next owner does)
        await send(records)

    asyncio.run(send_and_retry())
    assert producer.sends > 2, "the records must span several builders of one partition"

    sink = FileSink(tmp_path, log_of=lambda s: f"{TOPIC}:0")
    sink.recover(lambda s: True)
    sink.write([sink_line(value) for _, value in producer.log])
    written = (tmp_path / "s1" / FILE_NAME).read_bytes().splitlines()
    assert written == [value for _, value in records]
    assert producer.most_unacked == 1, "a partition's builders go one at a time"


def test_each_record_is_placed_at_its_offset_across_builders() -> None:
    records = [(b"s1", f"s1:{offset:04d}".encode()) for offset in range(25)]
    producer = ProducerDouble(failing=set())
    placed = asyncio.run(BatchSender(lambda: producer, TOPIC)(records))  # type: ignore[arg-type, return-value]
    assert producer.sends > 2
    assert [producer.log[offset] for _, offset in placed] == records
    assert {partition for partition, _ in placed} == {0}
