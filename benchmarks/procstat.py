"""Per-process CPU time and peak RSS from ``/proc`` (Linux), for processes we started."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "peak_rss_mb"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of the whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # Fields after the command name (which may hold spaces and parentheses).
    rest = raw[raw.rindex(b")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _TICKS


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set size) in MiB."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
