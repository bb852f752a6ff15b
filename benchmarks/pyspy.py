"""Optional: a py-spy profile of the worker while it drains the backlog (``--profile``).

py-spy is not a dependency; ``pip install py-spy`` to use it. Sampling perturbs the worker
(a little, with ``--nonblocking``): figures of a profiled run are not comparable.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def executable() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, output: Path, seconds: float, log: Path) -> subprocess.Popen[bytes] | None:
    binary = executable()
    if binary is None:
        return None
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nolineno",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGINT makes py-spy write what it has; by PID, then wait (kill if it hangs)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def summarize(path: Path, top: int = 15) -> list[str]:
    """Top functions by own samples and by inclusive samples, from a raw (collapsed) file."""
    if not path.exists():
        return [f"(no profile written to {path})"]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["(profile is empty)"]
    lines = [f"py-spy: {total} samples (all threads, idle excluded)", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive time:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines
