"""Child processes the project starts (workers, the embedded broker, test servers): started
so that they die with their parent, stopped by PID (SIGTERM, then SIGKILL past a bound).

``WorkerProcess`` is ``escalations worker`` as a child process: what the demo, the tests and the
benchmark start, its output in a log file.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["WORKER_COMMAND", "WorkerProcess", "die_with_parent", "stop_process"]


def die_with_parent() -> None:
    """Linux (a ``preexec_fn``): the child gets SIGTERM when the process that started it dies,
    even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> float:
    """SIGTERM by PID and wait; SIGKILL when it outlives ``timeout``. Returns the seconds taken."""
    started = time.monotonic()
    if process is None or process.poll() is not None:
        return 0.0
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    return time.monotonic() - started


#: ``escalations worker``, with the interpreter that runs this code.
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "streams.cli", "worker")


class WorkerProcess:
    """One worker process at a time (``start`` again after it exited to restart it)."""

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.command = list(command)
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0  # perf_counter() at the last start

    def start(self, banner: str | None = None) -> WorkerProcess:
        """Starts the process, appending its output to the log (after ``banner``, if any)."""
        with open(self.log_path, "ab") as log:
            if banner:
                log.write(f"\n{banner}\n".encode())
                log.flush()
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started = time.perf_counter()
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the worker was never started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20.0, *, kill_after: bool = True) -> float:
        """SIGTERM and wait; returns the seconds it took. Past ``timeout``: SIGKILL (and
        ``subprocess.TimeoutExpired`` when ``kill_after`` is False, after killing it)."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if not kill_after:
                    raise
        return time.monotonic() - started
