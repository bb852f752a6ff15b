"""What the sink shows of its sessions while it works: the last position it saw of each, and
the sessions it skips (corrupt) and why. Read from the event loop (views, metrics) while the
sink changes them in its threads: every change and every copy holds a lock of its own."""

from __future__ import annotations

import logging
import threading

from streams.errors import SinkCorruptionError
from streams.sink.position import SinkPosition

__all__ = ["Views"]

log = logging.getLogger(__name__)


class Views:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Per session, the most this worker saw in the file (a file that later holds fewer
        #: bytes, or a directory that vanishes, is corrupt).
        self.known: dict[str, SinkPosition] = {}
        self.corrupt: dict[str, str] = {}  # session -> why its lines are being skipped

    def known_positions(self) -> dict[str, SinkPosition]:
        with self._lock:
            return dict(self.known)

    def corrupt_sessions(self) -> dict[str, str]:
        with self._lock:
            return dict(self.corrupt)

    def seen(self, session_id: str, position: SinkPosition) -> None:
        with self._lock:
            self.known[session_id] = position

    def unseen(self, names: set[str]) -> None:
        with self._lock:
            for name in names:
                self.known.pop(name, None)

    def skip(self, session_id: str, exc: SinkCorruptionError) -> None:
        with self._lock:
            before = self.corrupt.get(session_id)
            self.corrupt[session_id] = str(exc)
        if before != str(exc):
            log.error("sink: skipping session %s until it is rebuilt: %s", session_id, exc)

    def healthy(self, session_id: str | None = None) -> None:
        """``session_id`` is no longer skipped (None: no session is)."""
        if session_id is None or session_id in self.corrupt:
            with self._lock:
                if session_id is None:
                    self.corrupt.clear()
                else:
                    self.corrupt.pop(session_id, None)
