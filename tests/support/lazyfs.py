"""The power-loss file-system double (tests/doubles/lazyfs.py), mounted for a test.

``mounted(path)`` starts the double as a process of its own on ``path`` (an empty directory),
waits until it answers, and on exit unmounts it and stops the process by PID. It needs root,
``/dev/fuse``, libfuse 3 and ``fusermount3`` (Debian's ``fuse3`` and ``libfuse3-3``, installed
by ``.ci/system-packages``); without them the test is skipped (failed with ``CI=true``).
"""

from __future__ import annotations

import ctypes.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import missing, require_tool

__all__ = ["LazyMount", "mounted"]


class LazyMount:
    """The control side of a mounted double: ``drop`` is the power loss."""

    def __init__(self, path: Path, control: Path, process: subprocess.Popen[bytes]) -> None:
        self.path, self.control, self.process = path, control, process

    def command(self, line: str, timeout: float = 30.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.control))
            conn.sendall(line.encode() + b"\n")
            answer = conn.makefile("r").readline().strip()
        if not answer.startswith("ok"):
            raise AssertionError(f"lazyfs double: {line!r} -> {answer!r}")
        return answer

    def status(self) -> dict[str, int]:
        return {k: int(v) for k, v in (p.split("=") for p in self.command("status").split()[1:])}

    def drop(self) -> int:
        """The power loss: everything not synced is gone; returns the bytes lost."""
        return int(self.command("drop").split("=")[1])

    def hold(self) -> None:
        """The next fsync of a file waits until the next ``drop`` (a checkpoint in progress)."""
        self.command("hold")


def _requirements() -> str:
    if os.geteuid() != 0:
        missing("the power-loss file system double mounts with FUSE as root")
    if not os.path.exists("/dev/fuse"):
        missing("needs /dev/fuse (the fuse kernel module)")
    fusermount = require_tool("fusermount3", "fuse3")
    if ctypes.util.find_library("fuse3") is None:
        missing("needs libfuse 3 from the Debian package 'libfuse3-3' (apt-get install libfuse3-3)")
    return fusermount


@contextmanager
def mounted(path: Path, log: Path) -> Iterator[LazyMount]:
    fusermount = _requirements()
    path.mkdir(parents=True, exist_ok=True)
    control = path.parent / f".{path.name}.lazyfs.sock"
    control.unlink(missing_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.doubles.lazyfs", str(path), "--control", str(control)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    mount = LazyMount(path, control, process)
    try:
        deadline = time.monotonic() + 30
        while not (os.path.ismount(path) and control.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the lazyfs double did not mount: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        mount.status()
        yield mount
    finally:
        subprocess.run([fusermount, "-u", "-z", str(path)], capture_output=True, timeout=30)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        control.unlink(missing_ok=True)
