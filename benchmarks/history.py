"""A worker's history: sessions that come and go (issue 20), the sink and the sessions view.

``python -m benchmarks.history --waves 100 --live 10000`` writes waves of ``--live`` new
sessions, ``--lines`` lines each, in batches of 300 with a checkpoint every 10 batches and a
retention sweep after each checkpoint, as the worker does; after each wave the previous wave's
directories are removed, as a runtime archives ended sessions. The same waves' position reports
and the sink's tombstones go through a sessions view. Per wave it prints lines/s, the process's
RSS, the position logs' bytes and the sessions held (the sink's views, the logs' folds, the
view). At the end: the sink's recovery of every partition on this root (its part of a restart
to ready) against one on an empty root, and a rebalance (half the partitions). Real files under
a temporary directory; no broker (the group join, ~12 s here, does not depend on history).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

from streams.core.records import SinkLine
from streams.runtime.sessions import SessionsView
from streams.sink.files import FileSink
from streams.sink.positionlog import LOG_DIR
from streams.sink.retention import Retention

PARTITIONS = 8
BATCH = 300
CHECKPOINT_EVERY = 10
LINE = b'{"ts":"2026-11-18T00:00:00Z","kind":"needs_input","summary":"' + b"z" * 80 + b'"}\n'


def _partition(session: str) -> str:
    return f"escalations:{zlib.crc32(session.encode()) % PARTITIONS}"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _log_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / LOG_DIR).glob("*.log"))


def _recover(root: Path, partitions: list[str]) -> tuple[float, int]:
    sink = FileSink(root, log_of=_partition)
    started = time.perf_counter()
    checked = sink.recover(lambda s: _partition(s) in partitions, partitions)
    took = time.perf_counter() - started
    sink.close()
    return took, checked


def run(waves: int, live: int, lines: int, retention_s: float, keep: bool) -> None:
    base = Path(tempfile.mkdtemp(prefix="history-"))
    root = base / "state"
    sink = FileSink(root, log_of=_partition)
    every = [f"escalations:{p}" for p in range(PARTITIONS)]
    sink.recover(lambda s: True, every)
    retention = Retention(sink, retention_s)
    view = SessionsView(retention_s)
    offset = 0
    print(
        f"{'wave':>5} {'lines/s':>9} {'RSS MB':>7} {'log KB':>8} {'sink known':>10} "
        f"{'log fold':>9} {'view':>6} {'forgotten':>10}"
    )
    first_rate = last_rate = 0.0
    try:
        for wave in range(waves):
            names = [f"w{wave:03d}-{n:05d}" for n in range(live)]
            todo = [name for _ in range(lines) for name in names]
            started = time.perf_counter()
            for at in range(0, len(todo), BATCH):
                batch = []
                for name in todo[at : at + BATCH]:
                    batch.append(SinkLine(name, LINE, "bus-events:0", offset, 1))
                    offset += 1
                sink.write(batch)
                if (at // BATCH) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    now_ms = int(time.time() * 1000)
                    for name, position in sink.checkpoint().positions.items():
                        view.apply(name.encode(), position.to_json(), now_ms, view.cutoff_ms())
                    for name in retention.sweep():
                        view.apply(name.encode(), None, now_ms, view.cutoff_ms())
            sink.checkpoint()
            rate = len(todo) / (time.perf_counter() - started)
            first_rate = first_rate or rate
            last_rate = rate
            if wave:
                for name in (f"w{wave - 1:03d}-{n:05d}" for n in range(live)):
                    shutil.rmtree(root / name)  # the previous wave ended: archived
            print(
                f"{wave + 1:>5} {rate:>9,.0f} {_rss_mb():>7.0f} {_log_bytes(root) / 1024:>8,.0f} "
                f"{len(sink.views.known):>10,} {len(sink.logs._fold):>9,} {len(view):>6,} "
                f"{retention.forgotten:>10,}",
                flush=True,
            )
        sink.close()
        took, checked = _recover(root, every)
        half, rebalanced = _recover(root, every[: PARTITIONS // 2])
        empty, _ = _recover(base / "empty", every)
        print(
            f"\n{waves * live:,} sessions seen, {live:,} live: the sink's recovery of every "
            f"partition {took * 1000:.0f} ms ({checked:,} sessions), a rebalance to half "
            f"{half * 1000:.0f} ms ({rebalanced:,}), on an empty root {empty * 1000:.0f} ms"
        )
        print(
            f"last wave {last_rate:,.0f} lines/s = {last_rate / first_rate:.2f}x the first; "
            f"RSS {_rss_mb():.0f} MB; position logs {_log_bytes(root) / 1024:,.0f} KB"
        )
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__)
    parser.add_argument("--waves", type=int, default=20)
    parser.add_argument("--live", type=int, default=10_000, help="sessions per wave")
    parser.add_argument("--lines", type=int, default=3, help="lines per session")
    parser.add_argument("--retention", type=float, default=7 * 86400, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the state root")
    args = parser.parse_args()
    run(args.waves, args.live, args.lines, args.retention, args.keep)


if __name__ == "__main__":
    main()
