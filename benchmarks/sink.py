"""The file sink alone, without Kafka: what a line costs at a given number of live sessions.

``python -m benchmarks.sink --sessions 64,1000,10000`` (``--lines N``, default 60000): for each
count, a fresh state root under a temporary directory; one line per session first (every
directory and file created, timed as "new"), then N lines spread at random over the sessions,
written in batches of ``--batch`` (default 300) with a checkpoint every ``--checkpoint-every``
batches (default 10), as the worker does (timed as "live"). Prints, per count, the wall and CPU
time per line, the checkpoints' share, the descriptors opened and the peak kept open.
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
    profile: cProfile.Profile | None = None,
) -> Figures:
    tmp = Path(tempfile.mkdtemp(prefix="escalations-sink-bench-"))
    try:
        sink = FileSink(tmp / "state", fsync=fsync, max_open_files=max_open_files)
        sink.check_root()
        names = [f"session-{i:03d}" for i in range(sessions)]
        first = [SinkLine(name, LINE, "bus-events:0", i, i) for i, name in enumerate(names)]
        new_s, _ = _drain(sink, first, batch, every)
        live = _lines(names, lines, sessions, seed=sessions)
        cpu = _cpu()
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
            sink.fds.opened,
            sink.fds.peak,
        )
        sink.close()
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


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
    parser.add_argument("--profile", action="store_true", help="cProfile the last live phase")
    args = parser.parse_args(argv)
    header = (
        f"{'sessions':>9}  {'new µs/session':>14}  {'live µs/line':>12}  {'CPU µs/line':>11}  "
        f"{'checkpoints':>11}  {'opened':>8}  {'peak open':>9}"
    )
    print(header)
    print("-" * len(header))
    profile = None
    for index, sessions in enumerate(args.sessions):
        if args.profile and index == len(args.sessions) - 1:
            profile = cProfile.Profile()
        f = run(
            sessions,
            args.lines,
            batch=args.batch,
            every=args.checkpoint_every,
            max_open_files=args.max_open_files,
            fsync=not args.no_fsync,
            profile=profile,
        )
        print(
            f"{f.sessions:>9,}  {f.new_us_per_session:>14.0f}  {f.wall_us_per_line:>12.1f}  "
            f"{f.cpu_us_per_line:>11.1f}  {100 * f.checkpoint_share:>10.0f}%  {f.opened:>8,}  "
            f"{f.peak_open:>9,}"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
