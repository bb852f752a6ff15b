"""The speed benchmark: the job against a plain aiokafka loop, on the embedded broker.

``python -m benchmarks`` (``--events N``, default 200000; ``--quick`` for a ~20k smoke run;
``--sessions 64,1000,10000`` for one row per session count; ``--sync syncfs|fsync`` for the way
the workers' checkpoints sync, see ``streams/sink/durability.py``):

1. starts the embedded broker (Tansu, 127.0.0.1, memory storage);
2. for each session count: creates fresh topics (4 partitions), preloads N bus events of the
   sample mix (~40% filtered) over that many sessions, encoded once, keyed by session id;
   runs the **reference** (a plain aiokafka decode -> map -> encode -> produce loop in its
   own process, ``benchmarks.reference``), then the **job** (``python -m streams.cli
   worker``, its own topics, app id and state root, web off) draining the same topic on
   *new* sessions (each one's directory and files created by its first line), then as many
   events again over the same, now *live*, sessions, drained by a restarted worker: each
   timed from its assignment to every session's file complete (sizes polled at most every
   10 ms and with at most a fifth of a CPU, bytes checked at the end against
   ``streams.core.maplines.expected_files``); its SIGTERM line gives the sink's checkpoints,
   sync calls, durability lag and open files. The throughput targets are judged on live
   sessions (the cost per event must not grow with them); new sessions add the cost of
   creating each one's files once;
3. on the first count, unless ``--skip-variants``: the same backlog with
   ``ESCALATIONS_FSYNC=false`` (the cost of fsync) and sent to one, then two running workers,
   each to a fresh job;
4. unless ``--skip-latency``: a fresh worker on the caught-up job of ``--latency-sessions``
   (default 10000 when swept, else the last count), a steady offered load (5000 events/s for
   10 s, in 10 ms bursts) of events whose ``occurred_at`` is unique, so each JSONL line maps
   back to its send time; the files with lines in flight are tailed every 5 ms;
5. prints the sweep table and the figures with their targets (``--check``: exit 1 when one
   is missed).

Everything started here is stopped by PID in ``finally`` blocks; the temporary directory is
removed unless ``--keep`` is given or something failed (then its path is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks import data
from benchmarks.latency import run_latency
from benchmarks.phases import (
    create_topics,
    job_env,
    preload,
    run_backlog,
    run_reference,
    run_variants,
)
from benchmarks.processes import BenchError, say
from benchmarks.report import CountRun, Results, report
from streams import settings as settings_module
from streams.ops.broker import EmbeddedBroker
from streams.sink.durability import SYNC_MODES

__all__ = ["main", "parse_args"]


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: session counts, e.g. 64,1000,10000") from exc
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: session counts, e.g. 64,1000,10000")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times bus-events -> JSONL end to end against a plain aiokafka loop.",
    )
    parser.add_argument("--events", type=int, default=None, help="backlog size (default 200000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 events, 3 s load")
    parser.add_argument(
        "--sessions",
        type=_counts,
        default=[64],
        help="session counts, one row each (e.g. 64,1000,10000); default 64",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered load, events/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="default 10 (3 quick)")
    parser.add_argument(
        "--latency-sessions",
        type=int,
        default=None,
        help="session count of the latency run (default 10000 when swept, else the last)",
    )
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
        help="py-spy the worker of the last count for up to SECONDS (perturbs the figures)",
    )
    parser.add_argument(
        "--sync",
        choices=SYNC_MODES,
        default=None,
        help="ESCALATIONS_SYNC for the workers (default: the environment's, else auto)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 20_000 if args.quick else 200_000
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 10.0
    if args.latency_sessions is None:
        args.latency_sessions = 10_000 if 10_000 in args.sessions else args.sessions[-1]
    elif args.latency_sessions not in args.sessions:
        parser.error("--latency-sessions must be one of the --sessions counts")
    return args


def _sweep_one(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    tmp: Path,
    tag: str,
    sessions: int,
    profile: float,
) -> tuple[CountRun, data.Events, data.Events, dict[str, str], list[str]]:
    """One session count: fresh topics, preload, the reference, the job on new sessions, then
    on live ones; returns the run, the first backlog, the events so far (both backlogs) and
    the job's environment."""
    say(f"{sessions:,} sessions: generating {args.events:,} events (seed {args.seed})")
    backlog = data.backlog(args.events, sessions, args.seed)
    run_tag = f"{tag}-{sessions}"
    root = tmp / f"state-{sessions}"
    env = job_env(broker.bootstrap, root, run_tag)
    settings = settings_module.load(env)
    reference_out = f"bench-reference-out-{run_tag}"
    create_topics(settings, reference_out, broker.bootstrap)
    preload_s = asyncio.run(preload(broker.bootstrap, settings.input_topic, backlog.records))
    say(f"preloaded {args.events:,} events in {preload_s:.1f}s ({backlog.lines:,} lines expected)")
    reference = run_reference(
        broker, tmp, settings.input_topic, reference_out, run_tag, args.events
    )
    say(
        f"reference: {reference['events']:,} events in {reference['seconds']:.2f}s = "
        f"{reference['events'] / reference['seconds']:,.0f}/s"
    )
    job, _ = run_backlog(
        env, tmp, root, backlog, broker.pid, settings.input_topic, name=f"s{sessions}"
    )
    say(
        f"job, new sessions ({sessions:,}): {args.events:,} events in {job['seconds']:.2f}s = "
        f"{args.events / job['seconds']:,.0f}/s, "
        f"{1e6 * job['cpu_seconds'] / args.events:.1f} µs CPU/event; files byte-exact"
    )
    # Live sessions: as many events again over the same sessions, whose directories and files
    # now exist, drained by a restarted worker (its recovery of them is in the window).
    follow = data.backlog(args.events, sessions, args.seed + 1, after=backlog)
    asyncio.run(preload(broker.bootstrap, settings.input_topic, follow.records))
    live, profile_lines = run_backlog(
        env,
        tmp,
        root,
        follow,
        broker.pid,
        settings.input_topic,
        profile,
        name=f"s{sessions}-live",
        before=backlog.sizes(),
    )
    say(
        f"job, live sessions ({sessions:,}): {args.events:,} events in {live['seconds']:.2f}s = "
        f"{args.events / live['seconds']:,.0f}/s, "
        f"{1e6 * live['cpu_seconds'] / args.events:.1f} µs CPU/event; files byte-exact"
    )
    run = CountRun(sessions, backlog.lines, preload_s, reference, job, live)
    return run, backlog, follow, env, profile_lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sync is not None:
        os.environ["ESCALATIONS_SYNC"] = args.sync  # job_env passes the environment on
    raw_args = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "benchmarks", *raw_args])
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="escalations-bench-"))
    broker: EmbeddedBroker | None = None
    defaults = settings_module.Settings(None, None, tmp)
    results = Results(
        events=args.events,
        latency_sessions=args.latency_sessions,
        checkpoint_interval_ms=defaults.checkpoint_interval_ms,
        max_open_files=defaults.max_open_files,
    )
    ok = False
    try:
        broker = EmbeddedBroker(log_file=tmp / "broker.log").start()
        say(f"embedded broker pid {broker.pid} on {broker.bootstrap}; temporary dir {tmp}")
        kept: dict[int, tuple[data.Events, dict[str, str]]] = {}
        for index, sessions in enumerate(args.sessions):
            last = index == len(args.sessions) - 1
            run, first, so_far, env, profile = _sweep_one(
                args, broker, tmp, tag, sessions, args.profile if last else 0.0
            )
            results.runs.append(run)
            results.profile += profile
            if index == 0:
                kept[0] = (first, env)
            if sessions == args.latency_sessions:
                kept[sessions] = (so_far, env)
        if not args.skip_variants:
            backlog, env = kept[0]
            results.variants = run_variants(env, tmp, backlog, broker)
        if not args.skip_latency:
            backlog, env = kept[args.latency_sessions]
            base_us = 1_900_000_000 * 1_000_000  # 2030-03-17: clear of the backlog's timestamps
            sessions = args.latency_sessions
            warmup = data.timed(256, sessions, args.seed + 1, base_us)
            load = data.timed(
                round(args.rate * args.latency_seconds), sessions, args.seed + 2, base_us + 10**9
            )
            results.latency = run_latency(
                env,
                tmp,
                Path(env["ESCALATIONS_STATE_ROOT"]),
                broker.bootstrap,
                env["ESCALATIONS_INPUT_TOPIC"],
                backlog,
                warmup,
                load,
                args.rate,
                args.burst_ms,
            )
            lat = results.latency
            say(
                f"latency over {sessions:,} sessions: {lat['measured']:,} of "
                f"{lat['expected_lines']:,} lines, p50 {lat['p50_ms']:.1f} ms, "
                f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
            )
        met = report(results, args.rate, command)
        ok = True
        return 1 if args.check and not met else 0
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if broker is not None:
            broker.stop()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: logs and state kept in {tmp}", flush=True)
