"""The Faust app itself: the job's settings, a bound on stopping, the checks before it starts.

``EscalationsApp`` is Faust's app with two additions: before Faust creates its directories it
runs the runtime's ``prepare`` (state root, data directory, brokers that accept our TLS/SASL
settings) and refuses a web port that is taken; and a stop that outlives
``ESCALATIONS_DRAIN_TIMEOUT`` is cut short (exit 75), broker or no broker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import NoReturn

import faust

from streams.errors import EscalationsError
from streams.settings import MAX_REQUEST_BYTES, Settings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DRAIN_CUT",
    "EXIT_FATAL",
    "EscalationsApp",
    "Fatal",
    "exit_now",
    "faust_app",
    "web_port_problem",
]

#: The producer's batch size (a ``BatchBuilder``'s); records bigger than it get one of their own.
PRODUCER_BATCH_BYTES = 256 * 1024

log = logging.getLogger(__name__)


#: The worker's exit status when it stops on purpose without committing (EX_SOFTWARE).
EXIT_FATAL = 70
#: The exit status when a stop outlived the drain bound and was cut short (EX_TEMPFAIL):
#: the batch in hand was abandoned uncommitted, so it is consumed again on restart.
EXIT_DRAIN_CUT = 75
#: The exit status of a configuration the worker cannot start with (EX_CONFIG).
EXIT_CONFIG = 78


class EscalationsApp(faust.App):
    """Faust's app, with a bound on how long a stop may take (a broker that is gone can
    keep Faust's consumer and producer waiting forever)."""

    drain_timeout_s: float = 10.0
    _drain_timer: threading.Timer | None = None
    #: Checks run before Faust creates its directories (the Runtime's ``prepare``).
    prepare: Callable[[], Awaitable[None]] | None = None

    async def on_first_start(self) -> None:
        if self.prepare is not None:
            await self.prepare()
        if self.conf.web_enabled:
            problem = web_port_problem(self.conf.web_bind, int(self.conf.web_port))
            if problem is not None:
                _exit_config(problem)
        await super().on_first_start()

    async def on_stop(self) -> None:
        if self._drain_timer is None:
            # A thread, not a task: the event loop itself may be what is stuck.
            self._drain_timer = threading.Timer(self.drain_timeout_s, _drain_cut, [self])
            self._drain_timer.daemon = True
            self._drain_timer.start()
        await super().on_stop()


def web_port_problem(host: str, port: int) -> str | None:
    """Why the web server cannot listen on ``host:port`` (taken, say), or None."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (
                f"the web server cannot listen on {host}:{port}: {exc.strerror}. Each worker on "
                "a host needs its own port: set ESCALATIONS_WEB_PORT (e.g. "
                "ESCALATIONS_WEB_PORT=6067), or ESCALATIONS_WEB_ENABLED=false to run without it"
            )
    return None


def _exit_config(message: str) -> NoReturn:
    log.critical("escalations: %s", message)
    print(f"escalations: error: {message}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_CONFIG)


def _drain_cut(app: EscalationsApp) -> None:
    log.error(
        "escalations: still stopping after %.0fs (ESCALATIONS_DRAIN_TIMEOUT): exiting without "
        "committing the batch in hand; it is consumed again on restart",
        app.drain_timeout_s,
    )
    print(
        f"escalations: stop cut short after {app.drain_timeout_s:.0f}s (ESCALATIONS_DRAIN_TIMEOUT)",
        file=sys.stderr,
        flush=True,
    )
    logging.shutdown()
    os._exit(EXIT_DRAIN_CUT)


Fatal = Callable[[BaseException], NoReturn]


def exit_now(exc: BaseException) -> NoReturn:
    """Stop at once without committing: what was not written is consumed again on restart."""
    log.critical("escalations: stopping: %s", exc, exc_info=not isinstance(exc, EscalationsError))
    print(f"escalations: fatal: {exc}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_FATAL)


def faust_app(settings: Settings) -> EscalationsApp:
    """The Faust app with the job's settings (raw bytes everywhere: we decode ourselves)."""
    data_dir = settings.faust_data_dir
    app = EscalationsApp(
        settings.app_id,
        broker=settings.broker_url,
        autodiscover=False,
        datadir=str(data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=settings.create_topics,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        producer_linger=0.005,
        # Builders of 256 KiB (not 16): the batch sender sends a partition's builders one
        # after the other (each once the one before is acknowledged), so fewer round trips.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # No tables (nothing to recover); were one added, the embedded broker reports end
        # offsets short, which makes Faust's recovery check crash a worker taking one over.
        recovery_consistency_check=False,
        producer_max_request_size=MAX_REQUEST_BYTES,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        # TLS/SASL for Faust's own consumer, producer and admin client.
        broker_credentials=settings.kafka.faust_credentials(),
    )
    app.drain_timeout_s = settings.drain_timeout_s
    return app
