"""The benchmark's phases: preloading, the reference loop, the job draining a backlog (one
worker or two), and the variants (no fsync; events sent to running workers)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks import data, pyspy
from benchmarks.processes import BenchError, LogWatch, Worker, merge_stops, say
from benchmarks.procstat import cpu_seconds, peak_rss_mb
from streams import settings as settings_module
from streams.ops.broker import EmbeddedBroker
from streams.ops.processes import stop_process
from streams.runtime.sender import BatchSender
from streams.runtime.topics import ensure_topics
from streams.sink.files import FILE_NAME

__all__ = [
    "PARTITIONS",
    "create_topics",
    "job_env",
    "preload",
    "run_backlog",
    "run_reference",
    "run_variants",
    "size_of",
    "wait_for_sizes",
]

PROJECT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
POLL_S = 0.010  # completion polling of the backlog run (at least this long between sweeps)
#: At most this share of one CPU goes to the polling: a sweep over 10,000 files takes ~20 ms
#: here, so polling every 10 ms would take most of a core from the worker and the broker.
POLL_DUTY = 0.2
FD_SAMPLE_S = 0.25  # how often the workers' open descriptors are counted


async def preload(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
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


def size_of(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def wait_for_sizes(
    paths: dict[str, Path],
    sizes: dict[str, int],
    workers: list[Worker],
    timeout: float,
    on_first: Callable[[], None] | None = None,
    each_poll: Callable[[], None] | None = None,
    before: dict[str, int] | None = None,
) -> None:
    """Polls until every file has its expected size; ``on_first`` when any file has more bytes
    than it had ``before`` (default: none).

    A sweep over the files still short is followed by a pause of at least ``POLL_S`` and long
    enough to keep the polling under ``POLL_DUTY`` of a CPU: the end is seen at most one
    sweep and one pause late (milliseconds at 64 sessions, ~0.1 s at 10,000).
    """
    deadline = time.monotonic() + timeout
    remaining = set(sizes)
    first_seen = on_first is None
    while remaining:
        swept = time.perf_counter()
        if each_poll is not None:
            each_poll()
        for session in list(remaining):
            size = size_of(paths[session])
            if not first_seen and size > (before or {}).get(session, 0):
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
        took = time.perf_counter() - swept
        time.sleep(max(POLL_S, took * (1 - POLL_DUTY) / POLL_DUTY))


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
        stop_process(process)
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
    before: dict[str, int] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``workers`` workers (one group) drain the topic: until every file is complete (grown
    from its ``before`` size, when the files hold an earlier backlog).

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

    last_sample = [0.0]

    def each_poll() -> None:
        if "assigned" not in marks and any(watch.seen() for watch in watches):
            mark("assigned")
        if time.monotonic() - last_sample[0] >= FD_SAMPLE_S:
            last_sample[0] = time.monotonic()
            for worker in running:
                worker.sample_fds()

    try:
        for worker in running:
            worker.start()
        say(f"job ({name}): worker pid {', '.join(str(w.pid) for w in running)}, logs in {tmp}")
        if load is not None:
            wait_until_settled(running, [input_topic, env["ESCALATIONS_OUTPUT_TOPIC"]])
            mark("assigned")
            load()
        timeout = max(120.0, len(events.records) / 500)
        wait_for_sizes(
            paths, events.sizes(), running, timeout, lambda: mark("first"), each_poll, before
        )
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
        "stop": merge_stops(stops),
        "peak_fds": max(w.peak_fds for w in running),
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


def wait_until_settled(workers: list[Worker], topics: list[str], timeout: float = 90.0) -> None:
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


def create_topics(settings: settings_module.Settings, reference_out: str, bootstrap: str) -> None:
    """The job's topics, and the reference loop's output topics beside them."""
    asyncio.run(ensure_topics(settings, bootstrap))
    reference = replace(settings, output_topic=reference_out, dlq_topic=f"{reference_out}.dlq")
    asyncio.run(ensure_topics(reference, bootstrap))


def job_env(bootstrap: str, root: Path, tag: str) -> dict[str, str]:
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
    env: dict[str, str],
    tmp: Path,
    backlog: data.Events,
    broker: EmbeddedBroker,
) -> dict[str, dict[str, Any]]:
    """The same events again, to a fresh job each: preloaded, without fsync (its cost); sent to
    one, then two running workers."""
    results: dict[str, dict[str, Any]] = {}
    for variant, extra, workers, live in (
        ("unsynced", {"ESCALATIONS_FSYNC": "false"}, 1, False),
        ("live1", {}, 1, True),
        ("live2", {}, 2, True),
    ):
        variant_env = _variant(env, variant, tmp, extra)
        input_topic = variant_env["ESCALATIONS_INPUT_TOPIC"]
        asyncio.run(ensure_topics(settings_module.load(variant_env), broker.bootstrap))

        def send(topic: str = input_topic) -> float:
            return asyncio.run(preload(broker.bootstrap, topic, backlog.records))

        if not live:
            send()

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
        results[variant] = measured
        events = len(backlog.records)
        say(
            f"job ({variant}): {events:,} events in {measured['seconds']:.2f}s = "
            f"{events / measured['seconds']:,.0f}/s; files byte-exact"
        )
    return results


def _variant(env: dict[str, str], name: str, tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """A fresh job: its own app id (groups), topics and state root."""
    input_topic = env["ESCALATIONS_INPUT_TOPIC"]
    return {
        **env,
        "ESCALATIONS_INPUT_TOPIC": f"{input_topic}-{name}",
        "ESCALATIONS_APP_ID": f"{env['ESCALATIONS_APP_ID']}-{name}",
        "ESCALATIONS_OUTPUT_TOPIC": f"{env['ESCALATIONS_OUTPUT_TOPIC']}-{name}",
        "ESCALATIONS_DLQ_TOPIC": f"{env['ESCALATIONS_DLQ_TOPIC']}-{name}",
        "ESCALATIONS_STATE_ROOT": str(tmp / f"state-{name}"),
        **extra,
    }
