"""The file sink alone, without Kafka: what a line costs at a given number of live sessions.

``python -m benchmarks.sink --sessions 64,1000,10000`` (``--lines N``, default 60000): for each
count, a fresh state root under a temporary directory; one line per session first (every
directory and file created, timed as "new"), then N lines spread at random over the sessions,
written in batches of ``--batch`` (default 300) with a checkpoint every ``--checkpoint-every``
batches (default 10), as the worker does (timed as "live"). Prints, per count and per way of
syncing (``--sync syncfs,fsync``: one ``syncfs`` per checkpoint, or an ``fdatasync`` of each
written file; see ``streams/sink/durability.py``), the wall and CPU time per line, the
checkpoints' share, the sync calls per second, the descriptors opened and the peak kept open.
``--profile`` prints the top of a cProfile of the live phase of the last count.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streams.core.records import SinkLine
from streams.sink.durability import SYNC_MODES
from streams.sink.files import DEFAULT_MAX_OPEN_FILES, FileSink

__all__ = ["Figures", "main", "run"]

SOURCE_PARTITIONS = 4
#: A line of the size the job writes (~150 bytes).
LINE = b'{"ts":"2026-11-18T00:00:00Z","kind":"needs_input","summary":"' + b"z" * 80 + b'"}\n'


@dataclass(frozen=True)
class Figures:
    sessions: int
    new_us_per_session: float
    wall_us_per_line: float
    cpu_us_per_line: float
    checkpoint_share: float  # of the live phase's wall time
    syncs_per_s: float  # sync system calls of the live phase, per second
    opened: int
    peak_open: int


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _lines(names: list[str], count: int, first_offset: int, seed: int) -> list[SinkLine]:
    rng = random.Random(seed)
    out = []
    for k in range(count):
        offset = first_offset + k
        source = f"bus-events:{offset % SOURCE_PARTITIONS}"
        out.append(SinkLine(names[rng.randrange(len(names))], LINE, source, offset, offset))
    return out


def _drain(sink: FileSink, lines: list[SinkLine], batch: int, every: int) -> tuple[float, float]:
    """Writes ``lines`` in batches with a checkpoint every ``every`` batches, then one more;
    returns (wall seconds, checkpoint seconds)."""
    started = time.perf_counter()
    in_checkpoints = 0.0
    for n, start in enumerate(range(0, len(lines), batch), 1):
        sink.write(lines[start : start + batch])
        if n % every == 0:
            mark = time.perf_counter()
            sink.checkpoint()
            in_checkpoints += time.perf_counter() - mark
    mark = time.perf_counter()
    sink.checkpoint()
    in_checkpoints += time.perf_counter() - mark
    return time.perf_counter() - started, in_checkpoints


def run(
    sessions: int,
    lines: int,
    *,
    batch: int = 300,
    every: int = 10,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    fsync: bool = True,
    sync: str = "auto",
    profile: cProfile.Profile | None = None,
) -> Figures:
    tmp = Path(tempfile.mkdtemp(prefix="escalations-sink-bench-"))
    try:
        sink = FileSink(tmp / "state", fsync=fsync, max_open_files=max_open_files, sync=sync)
        sink.check_root()
        names = [f"session-{i:03d}" for i in range(sessions)]
        first = [SinkLine(name, LINE, "bus-events:0", i, i) for i, name in enumerate(names)]
        new_s, _ = _drain(sink, first, batch, every)
        live = _lines(names, lines, sessions, seed=sessions)
        cpu = _cpu()
        syncs = sink.checkpoints.sync_calls
        if profile is not None:
            profile.enable()
        wall, in_checkpoints = _drain(sink, live, batch, every)
        if profile is not None:
            profile.disable()
        cpu = _cpu() - cpu
        figures = Figures(
            sessions,
            1e6 * new_s / sessions,
            1e6 * wall / lines,
            1e6 * cpu / lines,
            in_checkpoints / wall,
            (sink.checkpoints.sync_calls - syncs) / wall,
            sink.fds.opened,
            sink.fds.peak,
        )
        sink.close()
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [m for m in modes if m not in SYNC_MODES]
    if wrong or not modes:
        raise argparse.ArgumentTypeError(f"{text!r}: ways of syncing among {', '.join(SYNC_MODES)}")
    return modes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sink",
        description="The file sink alone: the cost of a line at a number of live sessions.",
    )
    parser.add_argument("--sessions", type=_counts, default=[64, 1000, 10000])
    parser.add_argument("--lines", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=10, help="batches")
    parser.add_argument("--max-open-files", type=int, default=DEFAULT_MAX_OPEN_FILES)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument(
        "--sync",
        type=_modes,
        default=["syncfs", "fsync"],
        help="ways of syncing, e.g. syncfs,fsync",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the last live phase")
    args = parser.parse_args(argv)
    header = (
        f"{'sync':>6}  {'sessions':>9}  {'new µs/session':>14}  {'live µs/line':>12}  {'CPU µs/line':>11}  "
        f"{'checkpoints':>11}  {'syncs/s':>8}  {'opened':>8}  {'peak open':>9}"
    )
    print(header)
    print("-" * len(header))
    profile = None
    runs = [(mode, sessions) for sessions in args.sessions for mode in args.sync]
    for index, (mode, sessions) in enumerate(runs):
        if args.profile and index == len(runs) - 1:
            profile = cProfile.Profile()
        f = run(
            sessions,
            args.lines,
            batch=args.batch,
            every=args.checkpoint_every,
            max_open_files=args.max_open_files,
            fsync=not args.no_fsync,
            sync=mode,
            profile=profile,
        )
        print(
            f"{mode:>6}  {f.sessions:>9,}  {f.new_us_per_session:>14.0f}  {f.wall_us_per_line:>12.1f}  "
            f"{f.cpu_us_per_line:>11.1f}  {100 * f.checkpoint_share:>10.0f}%  {f.syncs_per_s:>8,.0f}  "
            f"{f.opened:>8,}  "
            f"{f.peak_open:>9,}"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
