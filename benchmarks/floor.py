"""The floor under the sink: what the system calls of one write cost, by the number of files.

``python -m benchmarks.floor --files 64,10000`` (``--lines N``, default 60000): for each count, a
fresh directory per file under a temporary directory, each file open; then N lines of ~150 bytes
appended to files picked at random, timed per call kind: the ``pwrite`` alone, and the sink's
write (``flock``, ``stat`` of the path, ``pwrite``, unlock). No Python of the sink, no Kafka: what
no implementation in this layout can go below, on this machine.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import tempfile
import time
from collections.abc import Callable

__all__ = ["main", "measure"]

LINE = b"x" * 149 + b"\n"


def measure(files: int, lines: int, seed: int = 7) -> dict[str, float]:
    """Microseconds per call of each kind, appending ``lines`` lines over ``files`` files."""
    rng = random.Random(seed)
    order = [rng.randrange(files) for _ in range(lines)]
    with tempfile.TemporaryDirectory(prefix="escalations-floor-") as tmp:
        paths = []
        for n in range(files):
            directory = f"{tmp}/s{n:06d}"
            os.mkdir(directory)
            paths.append(f"{directory}/pending_escalations.jsonl")
        fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in paths]
        sizes = [0] * files
        try:

            def pwrite(n: int) -> None:
                os.pwrite(fds[n], LINE, sizes[n])
                sizes[n] += len(LINE)

            def locked_write(n: int) -> None:
                fcntl.flock(fds[n], fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.stat(paths[n])
                pwrite(n)
                fcntl.flock(fds[n], fcntl.LOCK_UN)

            calls: dict[str, Callable[[int], None]] = {
                "pwrite": pwrite,
                "flock + stat + pwrite + unlock": locked_write,
            }
            result = {}
            for name, call in calls.items():
                started = time.perf_counter()
                for n in order:
                    call(n)
                result[name] = (time.perf_counter() - started) / lines * 1e6
            return result
        finally:
            for fd in fds:
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor",
        description="The system calls of one sink write, by the number of files.",
    )
    parser.add_argument("--files", default="64,10000", help="file counts, e.g. 64,10000")
    parser.add_argument("--lines", type=int, default=60_000)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.files.split(",")]
    print(f"{'files':>8}  {'pwrite µs':>10}  {'flock+stat+pwrite+unlock µs':>28}")
    for count in counts:
        figures = measure(count, args.lines)
        print(
            f"{count:>8,}  {figures['pwrite']:>10.2f}  "
            f"{figures['flock + stat + pwrite + unlock']:>28.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
