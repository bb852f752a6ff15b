"""The latency phase: a steady offered load, each JSONL line timed from its send to the moment
it is readable in its file; and how far durability (the sink's checkpoint) trails that."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks import data
from benchmarks.phases import preload, size_of, wait_for_sizes
from benchmarks.processes import Worker, say
from benchmarks.procstat import cpu_seconds, peak_rss_mb
from streams.sink.files import FILE_NAME

__all__ = ["TAIL_S", "quantile", "run_latency"]

TAIL_S = 0.005  # tail polling of the latency run


class Tail:
    """Reads the lines appended to the session files and times each against its send."""

    def __init__(self, load: data.Events, paths: dict[str, Path], sizes: dict[str, int]) -> None:
        self.load = load
        self.paths = paths
        self.offsets = dict(sizes)
        self.partial = {session: b"" for session in paths}
        self.send_times = [0.0] * len(load.records)
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.unknown = 0
        #: Lines sent and not yet seen, per session: only those files are polled (10,000
        #: sessions polled every 5 ms would take the tailer longer than the poll interval).
        self.outstanding: dict[str, int] = {}

    def sent(self, index: int) -> None:
        """Event ``index`` was sent: its line (if it has one) is now awaited."""
        session = self.load.session_of.get(index)
        if session is not None:
            self.outstanding[session] = self.outstanding.get(session, 0) + 1

    def poll(self) -> None:
        for session in list(self.outstanding):
            path = self.paths[session]
            offset = self.offsets[session]
            size = size_of(path)
            if size <= offset:
                continue
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            now = time.time()
            self.offsets[session] = offset + len(chunk)
            *complete, self.partial[session] = (self.partial[session] + chunk).split(b"\n")
            for line in complete:
                index = self.load.ts_index.get(data.ts_of(line))
                if index is None or index in self.seen:
                    self.unknown += 1
                    continue
                self.seen.add(index)
                self.latencies.append(now - self.send_times[index])
                left = self.outstanding.get(session, 0) - 1
                if left > 0:
                    self.outstanding[session] = left
                else:
                    self.outstanding.pop(session, None)

    async def run(self, sending: asyncio.Event) -> None:
        """Polls until the sender is done and every expected line has been seen."""
        expected = self.load.lines
        while not sending.is_set() or len(self.seen) < expected:
            self.poll()
            await asyncio.sleep(TAIL_S)


async def _send_paced(
    producer: AIOKafkaProducer,
    topic: str,
    records: list[tuple[bytes, bytes]],
    tail: Tail,
    rate: float,
    burst_ms: float,
) -> float:
    """Sends ``records`` at ``rate`` in bursts every ``burst_ms``; returns the sending time."""
    loop = asyncio.get_running_loop()
    interval = burst_ms / 1000
    per_burst = rate * interval
    in_flight = []
    begin = loop.time()
    sent = burst = 0
    while sent < len(records):
        delay = begin + burst * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        upto = min(len(records), round((burst + 1) * per_burst))
        for index in range(sent, upto):
            key, value = records[index]
            tail.send_times[index] = time.time()
            tail.sent(index)
            in_flight.append(await producer.send(topic, value, key=key))
        sent = upto
        burst += 1
    seconds = loop.time() - begin
    await producer.flush()
    await asyncio.gather(*in_flight)
    return seconds


async def _offered_load(
    bootstrap: str,
    topic: str,
    load: data.Events,
    paths: dict[str, Path],
    start_sizes: dict[str, int],
    rate: float,
    burst_ms: float,
    worker_pid: int,
) -> dict[str, Any]:
    """Steady sends in bursts; tails the files and matches each new line to its send time."""
    tail = Tail(load, paths, start_sizes)
    sent = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    tailer = asyncio.get_running_loop().create_task(tail.run(sent))
    cpu0 = cpu_seconds(worker_pid)
    wall0 = time.perf_counter()
    try:
        send_seconds = await _send_paced(producer, topic, load.records, tail, rate, burst_ms)
        sent.set()
        try:
            await asyncio.wait_for(tailer, timeout=60)
        except TimeoutError:
            say(f"latency: {load.lines - len(tail.seen)} lines not seen within 60s")
    finally:
        sent.set()
        if not tailer.done():
            tailer.cancel()
        await producer.stop()
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(worker_pid) - cpu0
    latencies = sorted(tail.latencies)
    n = len(load.records)
    return {
        "events": n,
        "send_seconds": send_seconds,
        "rate": n / send_seconds if send_seconds else float("nan"),
        "expected_lines": load.lines,
        "measured": len(latencies),
        "unknown_lines": tail.unknown,
        "p50_ms": 1000 * quantile(latencies, 0.50),
        "p99_ms": 1000 * quantile(latencies, 0.99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
    }


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted list."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_latency(
    env: dict[str, str],
    tmp: Path,
    root: Path,
    bootstrap: str,
    topic: str,
    backlog: data.Events,
    warmup: data.Events,
    load: data.Events,
    rate: float,
    burst_ms: float,
) -> dict[str, Any]:
    """A fresh worker on the caught-up job; warm-up events, then the steady offered load."""
    sessions = set(backlog.expected) | set(warmup.expected) | set(load.expected)
    paths = {session: root / session / FILE_NAME for session in sessions}
    ready = {
        s: len(backlog.expected.get(s, b"")) + len(warmup.expected.get(s, b"")) for s in sessions
    }
    worker = Worker(env, tmp, "worker-latency")
    try:
        worker.start()
        say(f"latency: worker pid {worker.pid}, log {worker.log_path}")
        asyncio.run(preload(bootstrap, topic, warmup.records))
        # Sessions only the load will write have no file yet: nothing to wait for.
        wait_for_sizes(paths, {s: n for s, n in ready.items() if n}, [worker], timeout=120)
        say(
            f"latency: worker caught up and warm ({len(warmup.records)} warm-up events) after "
            f"{time.perf_counter() - worker.started:.1f}s; offering {rate:.0f} events/s "
            f"for {len(load.records) / rate:.0f}s"
        )
        result = asyncio.run(
            _offered_load(bootstrap, topic, load, paths, ready, rate, burst_ms, worker.pid)
        )
        result["peak_rss_mb"] = peak_rss_mb(worker.pid)
        worker.check_alive()
        worker.stop()
        result["stop"] = worker.stop_line()
    finally:
        worker.stop()
    return result
