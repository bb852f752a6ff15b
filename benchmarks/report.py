"""The benchmark's report: one row per session count (the sweep), the figures of the first
count (variants) and the latency run, and the targets ``--check`` enforces."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Final

from benchmarks.phases import PARTITIONS

__all__ = ["CountRun", "Results", "Table", "report"]

TARGET_RATIO: Final = 0.5  # job / reference
TARGET_SELF_RATIO: Final = 0.8  # job at 10,000 sessions / job at 64
TARGET_FSYNC_COST: Final = 0.10
TARGET_SCALING: Final = 1.7
TARGET_P99_MS: Final = 250.0
TARGET_RSS_MB: Final = 250.0
#: Descriptors the rest of the worker may hold beside the sink's (sockets, Faust, logs).
OTHER_FDS: Final = 256


@dataclass
class CountRun:
    """One session count of the sweep: its reference run and its job runs, on new sessions
    (each one's directory and files created on its first line) and on live ones (they exist:
    as many events again, drained by a restarted worker)."""

    sessions: int
    lines: int
    preload_s: float
    reference: dict[str, Any]
    job: dict[str, Any]
    live: dict[str, Any]

    def phase(self, name: str) -> dict[str, Any]:
        return self.live if name == LIVE else self.job


NEW: Final = "new"
LIVE: Final = "live"


@dataclass
class Results:
    events: int
    runs: list[CountRun] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # unsynced, live1, live2
    latency: dict[str, Any] = field(default_factory=dict)
    latency_sessions: int = 0
    profile: list[str] = field(default_factory=list)
    checkpoint_interval_ms: int = 1000
    max_open_files: int = 1024


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

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        vwidth = max(len(r[1]) for r in self.rows)
        twidth = max(len(r[2]) for r in self.rows)
        print(f"{'figure':<{width}}  {'value':>{vwidth}}  {'target':<{twidth}}  met")
        print(f"{'-' * width}  {'-' * vwidth}  {'-' * twidth}  ---")
        for name, value, target, ok in self.rows:
            print(f"{name:<{width}}  {value:>{vwidth}}  {target:<{twidth}}  {ok}".rstrip())


def _rate(results: Results, run: CountRun, phase: str = LIVE) -> float:
    return float(results.events / run.phase(phase)["seconds"])


def _syncs_per_s(job: dict[str, Any]) -> float | None:
    calls = (job.get("stop") or {}).get("sync_calls")
    return None if calls is None else calls / job["seconds"]


#: A checkpoint's syncs: one syncfs, and one fdatasync per output partition's position log.
SYNCS_PER_CHECKPOINT: Final = 1 + PARTITIONS


def _sync_allowed(results: Results, job: dict[str, Any]) -> float:
    """A syncfs and each position log's fdatasync per checkpoint interval elapsed, plus the
    first and the stop checkpoints, and each new log's directory entry."""
    checkpoints = float(job["seconds"]) * 1000 / results.checkpoint_interval_ms + 2
    return SYNCS_PER_CHECKPOINT * checkpoints + PARTITIONS + 2


def sweep_rows(results: Results) -> list[list[str]]:
    """Two rows per session count: new sessions, then live ones."""
    rows = []
    for run in results.runs:
        for phase in (NEW, LIVE):
            job = run.phase(phase)
            n, stop = results.events, job.get("stop") or {}
            ref_rate = n / run.reference["seconds"]
            rate = _rate(results, run, phase)
            calls = stop.get("sync_calls")
            rows.append(
                [
                    f"{run.sessions:,}",
                    phase,
                    _fmt(rate, ",.0f"),
                    _fmt(ref_rate, ",.0f"),
                    _fmt(rate / ref_rate, ".2f"),
                    _fmt(rate / _rate(results, results.runs[0], phase), ".2f"),
                    _fmt(_per_event_us(job["cpu_seconds"], n), ".0f"),
                    _fmt(_syncs_per_s(job), ".2f"),
                    _fmt(_ratio(stop.get("lines"), calls), ",.0f"),
                    str(stop.get("checkpoints", "n/a")),
                    str(stop.get("lag_max_ms", "n/a")),
                    f"{stop.get('sink_fds_peak', 'n/a')} / {job.get('peak_fds', 'n/a')}",
                    _fmt(job["peak_rss_mb"], ".0f"),
                ]
            )
    return rows


SWEEP_HEADER: Final = [
    "sessions",
    "sessions are",
    "job ev/s",
    "ref ev/s",
    "job/ref",
    "job/first",
    "CPU µs/ev",
    "fsync/s",
    "lines/fsync",
    "checkpoints",
    "lag max ms",
    "fds sink/proc",
    "RSS MB",
]


def _print_sweep(results: Results) -> None:
    rows = [SWEEP_HEADER, *sweep_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(SWEEP_HEADER))]
    for k, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _sweep_targets(t: Table, results: Results) -> None:
    """Throughput targets on live sessions (the steady state: the cost per event must not
    grow with them); new sessions' figures beside them, without a target (each new session
    costs its directory and files once, see the README)."""
    by_count = {run.sessions: run for run in results.runs}
    first = results.runs[0]
    ref_first = results.events / first.reference["seconds"]
    ratio = _rate(results, first) / ref_first
    t.row(
        f"{first.sessions:,} live sessions: job / reference",
        _fmt(ratio, ".2f"),
        f">= {TARGET_RATIO}",
        ratio >= TARGET_RATIO,
    )
    if 10_000 in by_count:
        run = by_count[10_000]
        ref = results.events / run.reference["seconds"]
        ratio = _rate(results, run) / ref
        t.row(
            "10,000 live sessions: job / reference",
            _fmt(ratio, ".2f"),
            f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
        )
        if 64 in by_count:
            own = _rate(results, run) / _rate(results, by_count[64])
            t.row(
                "10,000 live sessions: job / job at 64 sessions",
                _fmt(own, ".2f"),
                f">= {TARGET_SELF_RATIO}",
                own >= TARGET_SELF_RATIO,
            )
            t.row(
                "10,000 new sessions: job / reference, / job at 64 new sessions",
                f"{_fmt(_rate(results, run, NEW) / ref, '.2f')}, "
                f"{_fmt(_rate(results, run, NEW) / _rate(results, by_count[64], NEW), '.2f')}",
            )
    limit = results.max_open_files
    # Where each file is synced (ESCALATIONS_SYNC=fsync), a checkpoint syncs every written
    # file (no bound by the interval) through duplicated descriptors (twice the cache).
    per_file = os.environ.get("ESCALATIONS_SYNC", "").lower() == "fsync"
    for run in results.runs:
        for phase in (NEW, LIVE):
            job = run.phase(phase)
            stop = job.get("stop") or {}
            calls, allowed = stop.get("sync_calls"), _sync_allowed(results, job)
            where = f"{run.sessions:,} {phase} sessions"
            t.row(
                f"{where}: fsync calls (per second)",
                f"{calls} ({_fmt(_syncs_per_s(job), '.2f')}/s)",
                "each written file"
                if per_file
                else f"<= {allowed:.0f}: {SYNCS_PER_CHECKPOINT} per checkpoint",
                None if calls is None or per_file else calls <= allowed,
            )
            sink_fds = stop.get("sink_fds_peak")
            proc_fds = job.get("peak_fds")
            proc_limit = (2 if per_file else 1) * limit + OTHER_FDS
            t.row(
                f"{where}: peak open files, sink / process",
                f"{sink_fds} / {proc_fds}",
                f"<= {limit} / {proc_limit}",
                None
                if sink_fds is None or proc_fds is None
                else sink_fds <= limit and proc_fds <= proc_limit,
            )
            t.row(
                f"{where}: worker peak RSS MB",
                _fmt(job["peak_rss_mb"], ".0f"),
                f"< {TARGET_RSS_MB:.0f}",
                job["peak_rss_mb"] < TARGET_RSS_MB,
            )


def _variant_rows(t: Table, results: Results) -> None:
    n, variants = results.events, results.variants
    job_rate = _rate(results, results.runs[0], NEW)
    fsync_cost = None
    if "unsynced" in variants:
        unsynced_rate = n / variants["unsynced"]["seconds"]
        fsync_cost = 1 - job_rate / unsynced_rate
        t.row("job without fsync (ESCALATIONS_FSYNC=false): events/s", _fmt(unsynced_rate, ",.0f"))
    t.row(
        f"fsync cost at {results.runs[0].sessions:,} sessions: 1 - (with / without)",
        "skipped" if fsync_cost is None else _fmt(100 * fsync_cost, ".1f") + " %",
        f"< {100 * TARGET_FSYNC_COST:.0f} %",
        None if fsync_cost is None else fsync_cost < TARGET_FSYNC_COST,
    )
    scaling = None
    if "live1" in variants and "live2" in variants:
        one, two = n / variants["live1"]["seconds"], n / variants["live2"]["seconds"]
        scaling = two / one
        t.row("one worker, events sent while running: events/s", _fmt(one, ",.0f"))
        t.row("two workers, events sent while running: events/s", _fmt(two, ",.0f"))
    t.row(
        "scaling: two workers / one",
        "skipped" if scaling is None else _fmt(scaling, ".2f") + "x",
        f">= {TARGET_SCALING}x",
        None if scaling is None else scaling >= TARGET_SCALING,
    )


def _latency_rows(t: Table, results: Results, rate: float) -> None:
    lat = results.latency
    where = f"@ {rate:.0f}/s over {results.latency_sessions:,} sessions"
    if not lat:
        t.row(f"latency {where}: p99 (ms)", "skipped", f"< {TARGET_P99_MS:.0f}", None)
        return
    p99 = lat.get("p99_ms") if lat.get("measured") else None
    stop = lat.get("stop") or {}
    t.row(f"latency {where}: p50 (ms)", _fmt(lat["p50_ms"], ".1f"))
    t.row(
        f"latency {where}: p99 (ms)",
        _fmt(lat["p99_ms"], ".1f"),
        f"< {TARGET_P99_MS:.0f}",
        None if p99 is None else p99 < TARGET_P99_MS,
    )
    t.row(f"latency {where}: max (ms)", _fmt(lat["max_ms"], ".1f"))
    t.row("latency: lines measured / expected", f"{lat['measured']} / {lat['expected_lines']}")
    t.row("latency: offered rate achieved (events/s)", _fmt(lat["rate"], ",.0f"))
    t.row(
        "latency: worker CPU, % of a core / µs per event",
        f"{_fmt(100 * lat['cpu_seconds'] / lat['wall_seconds'], '.0f')} % / "
        f"{_fmt(_per_event_us(lat['cpu_seconds'], lat['events']), '.1f')}",
    )
    t.row(
        "durability trails visibility: max / mean per checkpoint (ms)",
        f"{stop.get('lag_max_ms', 'n/a')} / {stop.get('lag_mean_ms', 'n/a')}",
    )
    t.row(
        "latency run: fsync calls per second",
        _fmt(_ratio(stop.get("sync_calls"), lat["wall_seconds"]), ".2f"),
    )


def report(results: Results, rate: float, command: str) -> bool:
    """Prints the report; returns whether every target is met."""
    first = results.runs[0]
    print()
    print(
        f"escalation-stream benchmark: {results.events:,} bus events per session count, "
        f"4 partitions, embedded broker (Tansu), {os.cpu_count()} CPUs, checkpoint every "
        f"{results.checkpoint_interval_ms} ms, at most {results.max_open_files} sink files open"
    )
    print()
    _print_sweep(results)
    print()
    t = Table()
    _sweep_targets(t, results)
    _variant_rows(t, results)
    _latency_rows(t, results, rate)
    t.print()
    print()
    for run in results.runs:
        for phase in (NEW, LIVE):
            stop = run.phase(phase).get("stop") or {}
            if stop:
                print(f"worker at SIGTERM ({run.sessions:,} {phase} sessions): {stop['text']}")
    lat_stop = results.latency.get("stop") or {}
    if lat_stop:
        print(f"worker at SIGTERM (latency): {lat_stop['text']}")
    print(
        "notes: new = every session's first lines (its directory and files created); live = "
        "as many events again over the same sessions, to a restarted worker (its recovery "
        "included); job events/s = from the pipeline's partition assignment to every file "
        "complete (bytes checked against `escalations map`); job/first = against the first "
        f"session count's job ({first.sessions:,}) in the same phase; CPU = the worker's, same window; fsync/s = the "
        "sink's sync calls (syncfs, or fdatasync/fsync without it) over that window; lag = "
        "how long the oldest line of a checkpoint waited to be durable; fds = peak open "
        "descriptors of the sink's cache (its own count) and of the whole worker (sampled "
        "every 0.25 s). Latency = time a line is readable in its file - send time (files of "
        "sessions with lines in flight polled every 5 ms). The broker, the load generator and "
        "the workers share the machine; other work on it adds noise."
    )
    if results.profile:
        print()
        print("\n".join(results.profile))
    print()
    print(f"reproduce: cd {os.getcwd()} && {command}")
    return all(t.checks)
