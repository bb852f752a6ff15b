"""The reference: a plain aiokafka loop doing the job's map step, nothing else.

``python -m benchmarks.reference --bootstrap HOST:PORT --input T --output T2 --group G
--events N`` consumes N bus events from ``T`` in batches (``getmany``, ~50 ms fetch wait),
decodes each with the project's ``Codec`` (writer schema, strict body checks), maps it with
``streams.pipeline.entry_datum``, encodes the entry and sends it to ``T2`` without awaiting
the delivery, then flushes the producer and commits the batch's offsets: per batch, like the
job's map stage, but with no Faust, no dead-letter checks, no stats and no file sink.

Run as its own process by the harness so its CPU time and peak RSS are its own. It prints
``first`` when it has the first record and ``done`` after the last flush (then
``result {json}``), so the parent can sample the broker's CPU at the same instants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.procstat import peak_rss_mb
from streams.contracts.codec import Codec
from streams.contracts.registry import IdFile
from streams.contracts.schemas import ENTRY, SchemaStore
from streams.core.records import entry_datum
from streams.errors import Coordinates

__all__ = ["main", "run"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    store = SchemaStore()
    codec = Codec(IdFile(store).known())
    entry_id = store.current_id(ENTRY)
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    # What the job's producer is: Faust's defaults (acks=all, 16 KiB batches), 5 ms linger.
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, acks="all")
    await producer.start()
    await consumer.start()
    consumed = entries = batches = 0
    started = cpu_started = 0.0
    idle_since = time.monotonic()
    try:
        while consumed < args.events:
            batch = await consumer.getmany(
                timeout_ms=args.fetch_wait_ms, max_records=args.batch_max
            )
            if not batch:
                if time.monotonic() - idle_since > args.timeout:
                    raise SystemExit(
                        f"reference: no records for {args.timeout}s after {consumed} of "
                        f"{args.events}"
                    )
                continue
            if not consumed:
                started, cpu_started = time.perf_counter(), _cpu()
                _say("first")
            send = producer.send
            offsets = {}
            for tp, records in batch.items():
                for r in records:
                    datum = codec.decode(r.value, Coordinates(r.topic, r.partition, r.offset))[1]
                    out = entry_datum(datum, r.topic, r.partition, r.offset)
                    if out is not None:
                        await send(args.output, codec.encode(entry_id, out), key=r.key)
                        entries += 1
                consumed += len(records)
                offsets[tp] = records[-1].offset + 1
            await producer.flush()
            await consumer.commit(offsets)
            batches += 1
            idle_since = time.monotonic()
        seconds = time.perf_counter() - started
        cpu = _cpu() - cpu_started
        _say("done")
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "events": consumed,
        "entries": entries,
        "batches": batches,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_total_seconds": _cpu(),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch-max", type=int, default=1000)
    parser.add_argument("--fetch-wait-ms", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    _say("result " + json.dumps(result))


if __name__ == "__main__":
    main()
