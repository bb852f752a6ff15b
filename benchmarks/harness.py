"""The speed benchmark: the job against a plain aiokafka loop, on the embedded broker.

``python -m benchmarks`` (``--events N``, default 200000; ``--quick`` for a ~20k smoke run):

1. starts the embedded broker (Tansu, 127.0.0.1, memory storage), creates the topics
   (4 partitions) and preloads N bus events of the sample mix (~40% filtered), encoded once,
   keyed by session id;
2. **reference**: a plain aiokafka loop (``benchmarks.reference``, its own process and group)
   consumes them, decodes, maps, encodes, produces, flushes and commits per batch; timed from
   the first record consumed to the last entry flushed;
3. **job**: ``python -m streams.cli worker`` (its own topics, app id and state root, web off)
   drains the same preloaded topic; timed from the first JSONL file appearing to every
   session's file being complete (sizes polled every 10 ms, bytes checked at the end against
   ``streams.core.maplines.expected_files``); its SIGTERM line gives the sink's durable appends;
4. **latency**: a fresh worker on the caught-up job, a steady offered load (default 5000
   events/s for 10 s, in 10 ms bursts) of events whose ``occurred_at`` is unique, so each
   JSONL line maps back to its send time; the session files are tailed every 5 ms;
5. prints one table with the targets.

Everything started here is stopped by PID in ``finally`` blocks; the temporary directory is
removed unless ``--keep`` is given or something failed (then its path is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks import data, pyspy
from benchmarks.procstat import cpu_seconds, peak_rss_mb
from streams import settings as settings_module
from streams.ops.broker import EmbeddedBroker
from streams.runtime.sender import BatchSender
from streams.runtime.topics import ensure_topics
from streams.sink.files import FILE_NAME

PROJECT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
POLL_S = 0.010  # completion polling of the backlog run
TAIL_S = 0.005  # tail polling of the latency run

TARGET_RATIO = 0.5
TARGET_FSYNC_COST = 0.10
TARGET_SCALING = 1.7
TARGET_P99_MS = 250.0
TARGET_RSS_MB = 250.0

#: The worker's line at SIGTERM (streams/source.py + app.py's summary).
STOP_LINE = re.compile(
    r"source: group \S+ stopped after (?P<batches>\d+) batches: (?P<summary>.*?)"
    r"durable appends (?P<appends>\d+) in (?P<seconds>[\d.]+)s"
)


class BenchError(Exception):
    """The benchmark could not measure what it set out to (the job failed or hung)."""


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


# -- processes we start -------------------------------------------------------------------


def _stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> float:
    """SIGTERM by PID and wait; SIGKILL when it does not exit. Returns the seconds it took."""
    started = time.monotonic()
    if process is None or process.poll() is not None:
        return 0.0
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    return time.monotonic() - started


class Worker:
    """``python -m streams.cli worker`` as a child process, with its own log file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.env, self.cwd, self.name = env, cwd, name
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Worker:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started = time.perf_counter()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"{self.name} exited (status {code}):\n{self.log_tail()}")

    def stop(self) -> float:
        return _stop_process(self.process)

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def stop_line(self) -> dict[str, Any] | None:
        """The counters of the SIGTERM line: batches, lines written, durable appends, seconds."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        matches = list(STOP_LINE.finditer(text))
        if not matches:
            return None
        found = matches[-1]
        lines = re.search(r"lines written (\d+)", found["summary"])
        events = re.search(r"events in (\d+)", found["summary"])
        return {
            "batches": int(found["batches"]),
            "events_in": int(events[1]) if events else None,
            "lines": int(lines[1]) if lines else None,
            "appends": int(found["appends"]),
            "text": found[0],
        }


# -- producing ----------------------------------------------------------------------------


async def _preload(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Sends every record (keyed, in batches per partition: the load generator shares the
    CPUs with the workers), awaits every delivery; returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_batch_size=256 * 1024
    )
    await producer.start()
    send = BatchSender(lambda: producer, topic)
    started = time.perf_counter()
    try:
        for start in range(0, len(records), 5_000):
            await send(records[start : start + 5_000])
    finally:
        await producer.stop()
    return time.perf_counter() - started


# -- files --------------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def _wait_for_sizes(
    paths: dict[str, Path],
    sizes: dict[str, int],
    workers: list[Worker],
    timeout: float,
    on_first: Callable[[], None] | None = None,
    each_poll: Callable[[], None] | None = None,
) -> None:
    """Polls until every file has its expected size; ``on_first`` when any file has bytes."""
    deadline = time.monotonic() + timeout
    remaining = set(sizes)
    first_seen = on_first is None
    while remaining:
        if each_poll is not None:
            each_poll()
        for session in list(remaining):
            size = _size(paths[session])
            if not first_seen and size > 0:
                first_seen = True
                assert on_first is not None
                on_first()
            if size == sizes[session]:
                remaining.discard(session)
            elif size > sizes[session]:
                raise BenchError(
                    f"{paths[session]} has {size} bytes, more than the {sizes[session]} expected"
                )
        if not remaining:
            return
        if time.monotonic() > deadline:
            short = sorted(remaining)[:5]
            raise BenchError(
                f"{len(remaining)} session files incomplete after {timeout:.0f}s "
                f"(e.g. {short}); worker log:\n{workers[0].log_tail()}"
            )
        for worker in workers:
            worker.check_alive()
        time.sleep(POLL_S)


class LogWatch:
    """Notices the first time ``needle`` appears in a growing log file."""

    def __init__(self, path: Path, needle: str) -> None:
        self.path = path
        self.needle = needle.encode()
        self.offset = 0
        self.tail = b""

    def seen(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return False
        self.offset += len(chunk)
        text = self.tail + chunk
        self.tail = text[-len(self.needle) :]
        return self.needle in text


# -- the phases ---------------------------------------------------------------------------


@dataclass
class Results:
    events: int = 0
    lines: int = 0
    preload_s: float = 0.0
    reference: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    unsynced: dict[str, Any] = field(default_factory=dict)  # the job with ESCALATIONS_FSYNC=false
    live1: dict[str, Any] = field(default_factory=dict)  # events sent to one running worker
    live2: dict[str, Any] = field(default_factory=dict)  # ... to two running workers
    latency: dict[str, Any] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)


def run_reference(
    broker: EmbeddedBroker, tmp: Path, input_topic: str, output_topic: str, tag: str, n: int
) -> dict[str, Any]:
    """The plain loop in its own process; the broker's CPU sampled at its first/done lines."""
    assert broker.process is not None
    broker_pid = broker.process.pid
    command = [
        sys.executable,
        "-m",
        "benchmarks.reference",
        "--bootstrap",
        broker.bootstrap,
        "--input",
        input_topic,
        "--output",
        output_topic,
        "--group",
        f"bench-reference-{tag}",
        "--events",
        str(n),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }
    log_path = tmp / "reference.log"
    process: subprocess.Popen[bytes] | None = None
    broker_cpu: list[float] = []
    result: dict[str, Any] | None = None
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        say(f"reference: pid {process.pid}")
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode().strip()
            if line in ("first", "done"):
                broker_cpu.append(cpu_seconds(broker_pid))
            elif line.startswith("result "):
                result = json.loads(line.removeprefix("result "))
        if process.wait(timeout=30) != 0 or result is None:
            raise BenchError(
                f"reference exited with status {process.returncode}:\n"
                f"{log_path.read_text(errors='replace')[-3000:]}"
            )
    finally:
        _stop_process(process)
    if len(broker_cpu) == 2:
        result["broker_cpu_seconds"] = broker_cpu[1] - broker_cpu[0]
    return result


def run_backlog(
    env: dict[str, str],
    tmp: Path,
    root: Path,
    events: data.Events,
    broker_pid: int,
    input_topic: str,
    profile: float = 0.0,
    *,
    workers: int = 1,
    name: str = "backlog",
    load: Callable[[], object] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``workers`` workers (one group) drain the topic: until every file is complete.

    Without ``load`` the topic is preloaded: the window starts when a pipeline consumer first
    logs its assignment (before its first fetch). With ``load`` the workers start on an empty
    topic, and once their groups are settled (every partition assigned, none moving) ``load``
    sends the events while they run: the window starts when it starts. Samples the workers'
    (summed) and the broker's CPU at the marks.
    """
    paths = {session: root / session / FILE_NAME for session in events.expected}
    marks: dict[str, float] = {}
    running = [
        Worker(env, tmp, f"worker-{name}-{i}" if workers > 1 else f"worker-{name}")
        for i in range(workers)
    ]
    profiler = pyspy.Profiler(tmp, profile)
    watches = [LogWatch(w.log_path, f"rebalance: assigned {input_topic}[") for w in running]

    def cpu() -> float:
        return sum(cpu_seconds(w.pid) for w in running)

    def mark(label: str) -> None:
        marks[label] = time.perf_counter()
        marks[f"{label}_cpu"] = cpu()
        marks[f"{label}_broker"] = cpu_seconds(broker_pid)
        profiler.start(running[0].pid)

    def each_poll() -> None:
        if "assigned" not in marks and any(watch.seen() for watch in watches):
            mark("assigned")

    try:
        for worker in running:
            worker.start()
        say(f"job ({name}): worker pid {', '.join(str(w.pid) for w in running)}, logs in {tmp}")
        if load is not None:
            _wait_until_settled(running, [input_topic, env["ESCALATIONS_OUTPUT_TOPIC"]])
            mark("assigned")
            load()
        timeout = max(120.0, len(events.records) / 500)
        _wait_for_sizes(paths, events.sizes(), running, timeout, lambda: mark("first"), each_poll)
        mark("done")
        rss = max(peak_rss_mb(w.pid) for w in running)
        profile_lines = profiler.finish()
        exit_s = max(w.stop() for w in running)
        stops = [w.stop_line() for w in running]
    finally:
        profiler.stop()
        for worker in running:
            worker.stop()
    wrong = [s for s, path in paths.items() if path.read_bytes() != events.expected[s]]
    if wrong:
        raise BenchError(f"{len(wrong)} files differ from expected_files, e.g. {wrong[:3]}")
    # The pipeline's consumer drains the input partitions' fetched records before it returns
    # the output topic's, so most mapping happens before the first file: the end-to-end
    # window starts at the assignment; the first-file window is mostly the sink's part.
    start = "assigned"
    if "assigned" not in marks or marks["assigned"] > marks["first"]:
        say("job: no assignment line seen in the worker log; timing from the first file")
        start = "first"
    assignments = sum(
        w.log_path.read_text(errors="replace").count(f"rebalance: assigned {input_topic}[")
        for w in running
    )
    return {
        "workers": workers,
        "startup_s": marks[start] - min(w.started for w in running),
        "window": "assignment" if start == "assigned" else "first file",
        "seconds": marks["done"] - marks[start],
        "first_file_seconds": marks["done"] - marks["first"],
        "first_file_after_s": marks["first"] - marks[start],
        "cpu_seconds": marks["done_cpu"] - marks[f"{start}_cpu"],
        "cpu_total_seconds": marks["done_cpu"],
        "broker_cpu_seconds": marks["done_broker"] - marks[f"{start}_broker"],
        "peak_rss_mb": rss,
        "exit_s": exit_s,
        "stop": _merge_stops(stops),
        "input_assignments": assignments,
        "files_ok": True,
    }, profile_lines


def _latest_share(worker: Worker, topic: str) -> int:
    """How many partitions of ``topic`` the worker's latest assignment line names."""
    text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    shares = [
        sum(1 for tp in m[1].split(", ") if tp.startswith(f"{topic}["))
        for m in re.finditer(r"rebalance: assigned (.*)$", text, re.MULTILINE)
        if f"{topic}[" in m[1]
    ]
    return shares[-1] if shares else 0


def _wait_until_settled(workers: list[Worker], topics: list[str], timeout: float = 90.0) -> None:
    """Until every worker holds a share of each topic's partitions, unchanged for 1 s."""
    deadline = time.monotonic() + timeout
    stable_since, last = time.monotonic(), None
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        shares = [[_latest_share(w, topic) for topic in topics] for w in workers]
        settled = all(
            all(share[i] for share in shares) and sum(share[i] for share in shares) == PARTITIONS
            for i in range(len(topics))
        )
        if shares != last:
            stable_since, last = time.monotonic(), shares
        elif settled and time.monotonic() - stable_since >= 1.0:
            return
        time.sleep(0.1)
    raise BenchError(f"workers did not settle on {topics} within {timeout:.0f}s: {last}")


def _merge_stops(stops: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The workers' SIGTERM counters, summed."""
    found = [s for s in stops if s]
    if len(found) != len(stops):
        return None
    if len(found) == 1:
        return found[0]
    return {
        "batches": sum(s["batches"] for s in found),
        "events_in": sum(s["events_in"] or 0 for s in found),
        "events_each": [s["events_in"] or 0 for s in found],
        "lines": sum(s["lines"] or 0 for s in found),
        "appends": sum(s["appends"] for s in found),
        "text": "\n  ".join(s["text"] for s in found),
    }


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

    def poll(self) -> None:
        for session, path in self.paths.items():
            offset = self.offsets[session]
            size = _size(path)
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
    send_times: list[float],
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
            send_times[index] = time.time()
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
        send_seconds = await _send_paced(
            producer, topic, load.records, tail.send_times, rate, burst_ms
        )
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
        "p50_ms": 1000 * _quantile(latencies, 0.50),
        "p99_ms": 1000 * _quantile(latencies, 0.99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
    }


def _quantile(ordered: list[float], q: float) -> float:
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
        asyncio.run(_preload(bootstrap, topic, warmup.records))
        _wait_for_sizes(paths, ready, [worker], timeout=120)
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


# -- the report ---------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _per_event_us(seconds: float | None, n: int) -> float | None:
    return None if seconds is None or not n else 1e6 * seconds / n


Row = tuple[str, str, str, str]  # figure, value, target, met


class Table:
    """The report's rows and, per target, whether it is met (None: not measured)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.checks: list[bool] = []

    def row(self, name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        met = "" if not target else ("n/a" if ok is None else ("yes" if ok else "NO"))
        self.rows.append((name, value, target, met))
        if target:
            self.checks.append(bool(ok))


def table(results: Results, args: argparse.Namespace) -> tuple[list[Row], list[bool]]:
    """The rows of the report and, per target, whether it is met."""
    t = Table()
    job_rate = _throughput_rows(t, results)
    _variant_rows(t, results, job_rate)
    _latency_rows(t, results, args)
    return t.rows, t.checks


def _throughput_rows(t: Table, results: Results) -> float:
    n, ref, job, lat = results.events, results.reference, results.job, results.latency
    ref_rate = n / ref["seconds"]
    job_rate: float = n / job["seconds"]
    first_file_rate = n / job["first_file_seconds"]
    stop = job.get("stop") or {}
    rss = max(job["peak_rss_mb"], lat.get("peak_rss_mb", 0.0))
    t.row("reference: events/s", _fmt(ref_rate, ",.0f"))
    t.row("reference: CPU µs/event", _fmt(_per_event_us(ref["cpu_seconds"], n), ".1f"))
    t.row(
        "reference: broker CPU µs/event",
        _fmt(_per_event_us(ref.get("broker_cpu_seconds"), n), ".1f"),
    )
    t.row(f"job: events/s, end to end ({job['window']} -> files complete)", _fmt(job_rate, ",.0f"))
    t.row("job: events/s, first file -> files complete", _fmt(first_file_rate, ",.0f"))
    t.row(
        "job: worker CPU µs/event (end-to-end window)",
        _fmt(_per_event_us(job["cpu_seconds"], n), ".1f"),
    )
    t.row(
        "job: worker CPU µs/event (whole process, incl. start)",
        _fmt(_per_event_us(job["cpu_total_seconds"], n), ".1f"),
    )
    t.row("job: broker CPU µs/event", _fmt(_per_event_us(job["broker_cpu_seconds"], n), ".1f"))
    ratio = job_rate / ref_rate
    t.row(
        "job / reference, events/s end to end",
        _fmt(ratio, ".2f"),
        f">= {TARGET_RATIO}",
        ratio >= TARGET_RATIO,
    )
    t.row("job / reference, first-file window", _fmt(first_file_rate / ref_rate, ".2f"))
    t.row(
        f"peak RSS MB: worker / reference ({n:,}-event backlog)",
        f"{_fmt(rss, '.0f')} / {_fmt(ref['peak_rss_mb'], '.0f')}",
        f"< {TARGET_RSS_MB:.0f}",
        rss < TARGET_RSS_MB,
    )
    t.row(
        "job: lines per fsync round (one round per sink batch)",
        _fmt(_ratio(stop.get("lines"), stop.get("batches")), ".1f"),
    )
    t.row(
        "job: lines per file fsync (state directory and round)",
        _fmt(_ratio(stop.get("lines"), stop.get("appends")), ".1f"),
    )
    return job_rate


def _variant_rows(t: Table, results: Results, job_rate: float) -> None:
    n = results.events
    fsync_cost = None
    if results.unsynced:
        unsynced_rate = n / results.unsynced["seconds"]
        fsync_cost = 1 - job_rate / unsynced_rate
        t.row("job without fsync (ESCALATIONS_FSYNC=false): events/s", _fmt(unsynced_rate, ",.0f"))
        unsynced_stop = results.unsynced.get("stop") or {}
        t.row(
            "job without fsync: lines per round",
            _fmt(_ratio(unsynced_stop.get("lines"), unsynced_stop.get("batches")), ".1f"),
        )
    t.row(
        "fsync cost: 1 - (events/s with fsync / without)",
        "skipped" if fsync_cost is None else _fmt(100 * fsync_cost, ".1f") + " %",
        f"< {100 * TARGET_FSYNC_COST:.0f} %",
        None if fsync_cost is None else fsync_cost < TARGET_FSYNC_COST,
    )
    scaling = None
    if results.live1 and results.live2:
        one, two = n / results.live1["seconds"], n / results.live2["seconds"]
        scaling = two / one
        for label, rate, run in (
            ("one worker", one, results.live1),
            ("two workers", two, results.live2),
        ):
            t.row(f"{label}, events sent while running: events/s", _fmt(rate, ",.0f"))
            t.row(
                f"{label}: CPU µs/event (workers), cores busy",
                f"{_fmt(_per_event_us(run['cpu_seconds'], n), '.1f')}, "
                f"{_fmt(run['cpu_seconds'] / run['seconds'], '.2f')}",
            )
        each = (results.live2.get("stop") or {}).get("events_each")
        if each:
            t.row(
                "two workers: busiest worker's share of the events", f"{max(each) / sum(each):.0%}"
            )
    t.row(
        "scaling: two workers / one",
        "skipped" if scaling is None else _fmt(scaling, ".2f") + "x",
        f">= {TARGET_SCALING}x",
        None if scaling is None else scaling >= TARGET_SCALING,
    )


def _latency_rows(t: Table, results: Results, args: argparse.Namespace) -> None:
    lat = results.latency
    rate = f"{args.rate:.0f}/s"
    if not lat:
        t.row(f"latency @ {rate}: p99 (ms)", "skipped", f"< {TARGET_P99_MS:.0f}", None)
        return
    p99 = lat.get("p99_ms") if lat.get("measured") else None
    stop = lat.get("stop") or {}
    t.row(f"latency @ {rate}: p50 (ms)", _fmt(lat["p50_ms"], ".1f"))
    t.row(
        f"latency @ {rate}: p99 (ms)",
        _fmt(lat["p99_ms"], ".1f"),
        f"< {TARGET_P99_MS:.0f}",
        None if p99 is None else p99 < TARGET_P99_MS,
    )
    t.row(f"latency @ {rate}: max (ms)", _fmt(lat["max_ms"], ".1f"))
    t.row("latency: lines measured / expected", f"{lat['measured']} / {lat['expected_lines']}")
    t.row("latency: offered rate achieved (events/s)", _fmt(lat["rate"], ",.0f"))
    t.row(
        "latency: worker CPU, % of a core / µs per event",
        f"{_fmt(100 * lat['cpu_seconds'] / lat['wall_seconds'], '.0f')} % / "
        f"{_fmt(_per_event_us(lat['cpu_seconds'], lat['events']), '.1f')}",
    )
    t.row(
        "latency: lines per fsync round",
        _fmt(_ratio(stop.get("lines"), stop.get("batches")), ".1f"),
    )
    t.row(
        "latency: lines per file fsync", _fmt(_ratio(stop.get("lines"), stop.get("appends")), ".1f")
    )


def report(results: Results, args: argparse.Namespace, command: str) -> bool:
    """Prints the table; returns whether every target is met."""
    rows, checks = table(results, args)
    n, ref, job = results.events, results.reference, results.job
    stop = job.get("stop") or {}
    lat_stop = results.latency.get("stop") or {}
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    twidth = max(len(r[2]) for r in rows)
    print()
    print(
        f"escalation-stream benchmark: {n:,} bus events ({results.lines:,} JSONL lines), "
        f"{args.sessions} sessions, 4 partitions, embedded broker (Tansu), "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"preload {results.preload_s:.1f}s; reference {ref['seconds']:.2f}s "
        f"({ref['batches']} batches); job {job['seconds']:.2f}s from its {job['window']} "
        f"({job['startup_s']:.1f}s after start; first file {job['first_file_after_s']:.2f}s "
        f"later; {stop.get('batches', '?')} batches), files byte-exact, "
        f"SIGTERM exit {job['exit_s']:.1f}s"
    )
    print()
    header = ("figure", "value", "target", "met")
    print(f"{header[0]:<{width}}  {header[1]:>{vwidth}}  {header[2]:<{twidth}}  {header[3]}")
    print(f"{'-' * width}  {'-' * vwidth}  {'-' * twidth}  ---")
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target:<{twidth}}  {ok}".rstrip())
    print()
    if stop:
        print(f"worker at SIGTERM (backlog): {stop['text']}")
    if lat_stop:
        print(f"worker at SIGTERM (latency): {lat_stop['text']}")
    print(
        "notes: end to end = from the pipeline's partition assignment (logged before its first "
        "fetch; includes the sink's recovery) to every file complete; the first-file window "
        "misses the mapping done before the first file was written. fsync cost: the same "
        "backlog drained again by a fresh job (own groups, output topic and state root) with "
        "ESCALATIONS_FSYNC=false. Scaling: one, then two workers (one group) are started on a "
        "fresh input topic, and once every partition is assigned (2 + 2 for two) the same "
        "events are sent; timed from the first send to every file complete. The broker and "
        f"the workers share the machine's {os.cpu_count()} CPUs. "
        f"Latency = time seen on disk - send time (same clock); the files are polled every "
        f"{TAIL_S * 1000:.0f} ms (adds up to that). Other work on the machine adds noise."
    )
    if results.profile:
        print()
        print("\n".join(results.profile))
    print()
    print(f"reproduce: cd {os.getcwd()} && {command}")
    return all(checks)


# -- main ---------------------------------------------------------------------------------


def _create_topics(settings: settings_module.Settings, reference_out: str, bootstrap: str) -> None:
    """The job's topics, and the reference loop's output topics beside them."""
    asyncio.run(ensure_topics(settings, bootstrap))
    reference = replace(settings, output_topic=reference_out, dlq_topic=f"{reference_out}.dlq")
    asyncio.run(ensure_topics(reference, bootstrap))


def _job_env(bootstrap: str, root: Path, tag: str) -> dict[str, str]:
    """The worker's environment: the embedded broker, our own topics, web off."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ESCALATIONS_STATE_ROOT": str(root),
        "ESCALATIONS_INPUT_TOPIC": f"bench-bus-events-{tag}",
        "ESCALATIONS_OUTPUT_TOPIC": f"bench-escalations-{tag}",
        "ESCALATIONS_DLQ_TOPIC": f"bench-bus-events-{tag}.dlq",
        "ESCALATIONS_APP_ID": f"bench-escalation-stream-{tag}",
        "ESCALATIONS_PARTITIONS": str(PARTITIONS),
        "ESCALATIONS_WEB_ENABLED": "false",
        "ESCALATIONS_SESSION_TIMEOUT": "3",
        "PYTHONUNBUFFERED": "1",
    }


def run_variants(
    results: Results,
    env: dict[str, str],
    tmp: Path,
    backlog: data.Events,
    broker: EmbeddedBroker,
) -> None:
    """The same events again: without fsync (its cost); to one and two running workers."""
    for variant, extra, workers, live in (
        ("unsynced", {"ESCALATIONS_FSYNC": "false"}, 1, False),
        ("live1", {}, 1, True),
        ("live2", {}, 2, True),
    ):
        variant_env = _variant(env, variant, tmp, extra, fresh_input=live)
        input_topic = variant_env["ESCALATIONS_INPUT_TOPIC"]
        asyncio.run(ensure_topics(settings_module.load(variant_env), broker.bootstrap))

        def send(topic: str = input_topic) -> float:
            return asyncio.run(_preload(broker.bootstrap, topic, backlog.records))

        measured, _ = run_backlog(
            variant_env,
            tmp,
            Path(variant_env["ESCALATIONS_STATE_ROOT"]),
            backlog,
            broker.pid,
            input_topic,
            workers=workers,
            name=variant,
            load=send if live else None,
        )
        setattr(results, variant, measured)
        say(
            f"job ({variant}): {results.events:,} events in {measured['seconds']:.2f}s = "
            f"{results.events / measured['seconds']:,.0f}/s; files byte-exact"
        )


def _variant(
    env: dict[str, str], name: str, tmp: Path, extra: dict[str, str], *, fresh_input: bool
) -> dict[str, str]:
    """A fresh job: its own app id (groups), output topics and state root; the same input
    topic (preloaded), or a fresh one for events sent while it runs."""
    input_topic = env["ESCALATIONS_INPUT_TOPIC"]
    return {
        **env,
        "ESCALATIONS_INPUT_TOPIC": f"{input_topic}-{name}" if fresh_input else input_topic,
        "ESCALATIONS_APP_ID": f"{env['ESCALATIONS_APP_ID']}-{name}",
        "ESCALATIONS_OUTPUT_TOPIC": f"{env['ESCALATIONS_OUTPUT_TOPIC']}-{name}",
        "ESCALATIONS_DLQ_TOPIC": f"{env['ESCALATIONS_DLQ_TOPIC']}-{name}",
        "ESCALATIONS_STATE_ROOT": str(tmp / f"state-{name}"),
        **extra,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times bus-events -> JSONL end to end against a plain aiokafka loop.",
    )
    parser.add_argument("--events", type=int, default=None, help="backlog size (default 200000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 events, 3 s load")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered load, events/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="default 10 (3 quick)")
    parser.add_argument("--burst-ms", type=float, default=10.0, help="pacing interval")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--skip-variants",
        action="store_true",
        help="skip the no-fsync and two-worker drains (fsync cost and scaling)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy the worker for up to SECONDS of the drain, from its assignment (perturbs the figures)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 20_000 if args.quick else 200_000
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 10.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw_args = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "benchmarks", *raw_args])
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="escalations-bench-"))
    root = tmp / "state"
    keep = args.keep
    broker: EmbeddedBroker | None = None
    results = Results(events=args.events)
    ok = False
    try:
        say(f"generating {args.events:,} events over {args.sessions} sessions (seed {args.seed})")
        backlog = data.backlog(args.events, args.sessions, args.seed)
        results.lines = backlog.lines
        base_us = 1_900_000_000 * 1_000_000  # 2030-03-17: clear of the backlog's timestamps
        warmup = data.timed(256, args.sessions, args.seed + 1, base_us)
        load = data.timed(
            round(args.rate * args.latency_seconds), args.sessions, args.seed + 2, base_us + 10**9
        )
        broker = EmbeddedBroker(log_file=tmp / "broker.log").start()
        broker_pid = broker.pid
        say(f"embedded broker pid {broker_pid} on {broker.bootstrap}; temporary dir {tmp}")
        env = _job_env(broker.bootstrap, root, tag)
        settings = settings_module.load(env)
        reference_out = f"bench-reference-out-{tag}"
        _create_topics(settings, reference_out, broker.bootstrap)
        results.preload_s = asyncio.run(
            _preload(broker.bootstrap, settings.input_topic, backlog.records)
        )
        say(
            f"preloaded {args.events:,} events to {settings.input_topic} in "
            f"{results.preload_s:.1f}s ({backlog.lines:,} lines expected)"
        )

        results.reference = run_reference(
            broker, tmp, settings.input_topic, reference_out, tag, args.events
        )
        ref = results.reference
        say(
            f"reference: {ref['events']:,} events in {ref['seconds']:.2f}s = "
            f"{ref['events'] / ref['seconds']:,.0f}/s, "
            f"{1e6 * ref['cpu_seconds'] / ref['events']:.1f} µs CPU/event"
        )

        results.job, results.profile = run_backlog(
            env, tmp, root, backlog, broker_pid, settings.input_topic, args.profile
        )
        job = results.job
        say(
            f"job: {args.events:,} events in {job['seconds']:.2f}s = "
            f"{args.events / job['seconds']:,.0f}/s, "
            f"{1e6 * job['cpu_seconds'] / args.events:.1f} µs CPU/event; files byte-exact"
        )

        if not args.skip_variants:
            run_variants(results, env, tmp, backlog, broker)

        if not args.skip_latency:
            results.latency = run_latency(
                env,
                tmp,
                root,
                broker.bootstrap,
                settings.input_topic,
                backlog,
                warmup,
                load,
                args.rate,
                args.burst_ms,
            )
            lat = results.latency
            say(
                f"latency: {lat['measured']:,} of {lat['expected_lines']:,} lines, "
                f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
            )
        met = report(results, args, command)
        ok = True
        return 1 if args.check and not met else 0
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if broker is not None:
            broker.stop()
        if ok and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: logs and state kept in {tmp}", flush=True)
