"""The processes the benchmark starts (workers), and what it reads from them: logs, the
counters of their SIGTERM line, descriptors open, CPU and RSS."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from streams.ops.processes import WorkerProcess

__all__ = [
    "BenchError",
    "LogWatch",
    "Worker",
    "open_descriptors",
    "say",
]

#: The worker's line at SIGTERM (streams/runtime/source.py + the factory's summary).
STOP_LINE = re.compile(
    r"source: group \S+ stopped after (?P<batches>\d+) batches: (?P<summary>.*?)"
    r"durable appends (?P<appends>\d+) in (?P<seconds>[\d.]+)s(?P<rest>.*)$",
    re.MULTILINE,
)
#: What the file sink adds to it (streams/sink/checkpoint.py: Checkpoints.summary).
_SINK_FIGURES = {
    "checkpoints": re.compile(r"checkpoints (\d+) in ([\d.]+)s"),
    "sync_calls": re.compile(r"sync calls (\d+)"),
    "lag": re.compile(r"durability lag max (\d+) ms mean (\d+) ms"),
    "open_files": re.compile(r"open files peak (\d+) of (\d+)"),
}


class BenchError(Exception):
    """The benchmark could not measure what it set out to (the job failed or hung)."""


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def open_descriptors(pid: int) -> int:
    """How many descriptors process ``pid`` has open now (Linux), -1 when unknown."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Worker(WorkerProcess):
    """``python -m streams.cli worker`` as a child process, with its own log file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        super().__init__(env, cwd, cwd / f"{name}.log")
        self.name = name
        self.peak_fds = 0  # most descriptors seen open (sampled)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"{self.name} exited (status {code}):\n{self.log_tail()}")

    def sample_fds(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_fds = max(self.peak_fds, open_descriptors(self.pid))

    def stop(self) -> float:
        return self.terminate(timeout=30.0)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop_line(self) -> dict[str, Any] | None:
        """The counters of the SIGTERM line: batches, lines written, the sink's checkpoints,
        sync calls, durability lag and open files."""
        matches = list(STOP_LINE.finditer(self.log()))
        if not matches:
            return None
        found = matches[-1]
        lines = re.search(r"lines written (\d+)", found["summary"])
        events = re.search(r"events in (\d+)", found["summary"])
        result: dict[str, Any] = {
            "batches": int(found["batches"]),
            "events_in": int(events[1]) if events else None,
            "lines": int(lines[1]) if lines else None,
            "appends": int(found["appends"]),
            "text": found[0],
        }
        rest = found["rest"]
        if m := _SINK_FIGURES["checkpoints"].search(rest):
            result["checkpoints"], result["checkpoint_seconds"] = int(m[1]), float(m[2])
        if m := _SINK_FIGURES["sync_calls"].search(rest):
            result["sync_calls"] = int(m[1])
        if m := _SINK_FIGURES["lag"].search(rest):
            result["lag_max_ms"], result["lag_mean_ms"] = int(m[1]), int(m[2])
        if m := _SINK_FIGURES["open_files"].search(rest):
            result["sink_fds_peak"], result["sink_fds_limit"] = int(m[1]), int(m[2])
        return result


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


def merge_stops(stops: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The workers' SIGTERM counters, summed."""
    found = [s for s in stops if s]
    if len(found) != len(stops):
        return None
    if len(found) == 1:
        return found[0]
    merged: dict[str, Any] = {
        "batches": sum(s["batches"] for s in found),
        "events_in": sum(s["events_in"] or 0 for s in found),
        "events_each": [s["events_in"] or 0 for s in found],
        "lines": sum(s["lines"] or 0 for s in found),
        "appends": sum(s["appends"] for s in found),
        "text": "\n  ".join(s["text"] for s in found),
    }
    for key in ("checkpoints", "sync_calls"):
        if all(key in s for s in found):
            merged[key] = sum(s[key] for s in found)
    for key in ("lag_max_ms", "sink_fds_peak"):
        if all(key in s for s in found):
            merged[key] = max(s[key] for s in found)
    return merged
