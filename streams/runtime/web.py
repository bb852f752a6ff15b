"""Faust web views: health, readiness, Prometheus metrics and the sessions view."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.core.records import session_id_problem
from streams.runtime.metrics import CONTENT_TYPE, Metrics
from streams.runtime.source import BatchSource
from streams.sink.files import FileSink
from streams.sink.position import SinkPosition

__all__ = ["PositionView", "install"]

PositionView = Callable[[SinkPosition], dict[str, Any]]


def install(
    app: faust.App,
    *,
    sink: FileSink,
    reports: Callable[[], Mapping[str, Any]],
    report: Callable[[str], Any | None],
    metrics: Metrics,
    sources: Callable[[], list[BatchSource]],
    unhealthy: Callable[[], str | None],
    view: PositionView,
) -> None:
    """Register the operator's views on the app's web server (127.0.0.1 by default).

    ``reports`` gives every live session's latest report (any worker's), ``report`` one
    session's: a request for one session looks up that one, parsing nothing else.
    """

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        """200 while the pipeline makes progress; 503 with the reason when it is stuck."""
        reason = unhealthy()
        body = {
            "status": "ok" if reason is None else "stalled",
            "reason": reason,
            "corrupt_sessions": sink.corrupt_sessions(),
        }
        return self.json(body, status=200 if reason is None else 503)

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        """200 once partitions are assigned and the sink has recovered their directories."""
        current = sources()
        ready = bool(current) and all(s.ready for s in current)
        return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(self: View, request: Request) -> Response:
        return self.bytes(metrics.exposition(), content_type=CONTENT_TYPE)

    def _sessions() -> dict[str, Any]:
        # Every worker's position reports, plus what this worker's sink knows first-hand.
        merged: dict[str, Any] = dict(reports())
        for session, position in sink.known_positions().items():
            merged[session] = view(position)
        for session, reason in sink.corrupt_sessions().items():
            merged[session] = {**merged.get(session, {}), "corrupt": reason}  # views' own: copied
        return dict(sorted(merged.items()))

    def _session(session_id: str) -> Any | None:
        position = sink.known_positions().get(session_id)
        found = report(session_id) if position is None else view(position)
        corrupt = sink.corrupt_sessions().get(session_id)
        if corrupt is not None:
            found = {**(found or {}), "corrupt": corrupt}
        return found

    @app.page("/escalations/sessions/")
    async def sessions(self: View, request: Request) -> Response:
        """Per state directory: entries, bytes, last source offsets, last entry time."""
        return self.json(_sessions())

    @app.page("/escalations/sessions/{session_id}/")
    async def one_session(self: View, request: Request, session_id: str) -> Response:
        if session_id_problem(session_id) is not None:
            return self.json({"error": "not a session id"}, status=400)
        found = _session(session_id)
        if found is None:
            return self.json({"error": f"no state directory {session_id!r}"}, status=404)
        return self.json(found)
