"""Optional: a py-spy profile of the worker while it drains the backlog (``--profile``).

py-spy is not a dependency; ``pip install py-spy`` to use it. Sampling pauses the worker 100
times a second (``--nonblocking`` gave torn stacks): figures of a profiled run are not
comparable with an unprofiled one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "executable", "start", "stop", "summarize"]


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
                "100",
                "--format",
                "raw",
                "--nolineno",
                "--threads",
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


def _split(line: str) -> tuple[str, list[str], int] | None:
    """(thread label, frames, count) of one raw (collapsed) line."""
    stack, _, count_text = line.rpartition(" ")
    if not stack or not count_text.isdigit():
        return None
    frames = stack.split(";")
    thread = frames.pop(0) if frames[0].startswith("thread (") else "all threads"
    return thread, frames, int(count_text)


def summarize(path: Path, top: int = 15) -> list[str]:
    """Per thread, own time per function, and inclusive time of the project's functions."""
    if not path.exists():
        return [f"(no profile written to {path})"]
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        parsed = _split(line)
        if parsed is None:
            continue
        thread, frames, count = parsed
        total += count
        threads[thread.split(": ", 1)[-1]] += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            if "(streams/" in frame:
                project[frame] += count
    if not total:
        return ["(profile is empty)"]

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"py-spy: {total} samples of the worker (idle excluded); by thread:"]
    lines += [f"    {pct(n)}  {name}" for name, n in threads.most_common()]
    lines.append("  own time (top functions):")
    lines += [f"    {pct(n)}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive time (project functions):")
    lines += [f"    {pct(n)}  {frame}" for frame, n in project.most_common(top)]
    return lines


class Profiler:
    """At most one py-spy recording of one process; a no-op when ``seconds`` is 0."""

    def __init__(self, directory: Path, seconds: float) -> None:
        self.output = directory / "py-spy.txt"
        self.log = directory / "py-spy.log"
        self.seconds = seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = []

    def start(self, pid: int) -> None:
        if not self.seconds or self.process is not None or self.notes:
            return
        self.process = start(pid, self.output, self.seconds, self.log)
        if self.process is None:
            self.notes.append("py-spy not found (pip install py-spy)")

    def stop(self) -> None:
        stop(self.process)

    def finish(self) -> list[str]:
        """Stops the recording and summarizes it."""
        self.stop()
        if self.process is None:
            return self.notes
        return self.notes + summarize(self.output)
