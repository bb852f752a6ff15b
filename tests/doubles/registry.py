"""A test double of the Confluent schema-registry REST endpoints our registry client uses.

No schema registry server installs on these machines (DESIGN.md §5), so this double answers the
few endpoints python-schema-registry-client calls, with Confluent's status codes, error bodies
(``{"error_code": 40403, "message": "Schema not found"}``) and content type
(``application/vnd.schemaregistry.v1+json``). It exists to check how *our code* talks to a
registry; it is not a registry (no storage, no modes, no references, Avro only).

Endpoints:

- ``GET /schemas/ids/{id}``: the schema (404, 40403 when unknown);
- ``POST /subjects/{subject}/versions``: register; the same schema gets the same id (in any
  subject), new ids start at ``first_id`` (1001 by default, so they are *not* the committed ids
  of ``schemas/ids.json``); a schema the subject's compatibility level (BACKWARD by default,
  checked with the ``avro`` package's checker against the latest version, or every version
  under a ``*_TRANSITIVE`` level; FORWARD and FULL read the other way too) refuses is 409;
- ``POST /subjects/{subject}``: look a schema up (404: 40401 subject not found, 40403 schema
  not found);
- ``GET /subjects/{subject}/versions/latest`` (and ``/versions/{n}``), ``GET /subjects``,
  ``GET /subjects/{subject}/versions``;
- ``POST /compatibility/subjects/{subject}/versions/{latest|n}``: ``{"is_compatible": ...}``
  with ``messages`` when ``?verbose=true`` (404, 40401 when the subject has no version). As
  Karapace does, ``latest`` under a ``*_TRANSITIVE`` level covers every version (its messages
  name no version); a number tests that version alone;
- ``GET/PUT /config`` and ``/config/{subject}``: the compatibility level;
- ``GET /_health``: ``{"schema_registry_ready": ...}`` (Karapace's readiness).

Controls for tests: :meth:`down` closes the listening socket (connections are refused) and
:meth:`up` listens on the same port again; :meth:`fail_with` answers every request with an
error status (503 by default) until :meth:`heal`; :meth:`add_version` preloads a subject with a
version, bypassing compatibility; :attr:`requests` logs ``(method, path)`` of every request.

What a real registry does in production: :meth:`not_ready` is a registry that has just
(re)started and serves HTTP before it has read its schemas topic (Karapace 5: about 6 s):
``GET /schemas/ids/{id}`` answers 404 ``{"error_code": 40403, "message": "Schema not found"}``
for ids it has, and ``/_health`` says not ready, until :meth:`ready` (or for ``seconds``).
:meth:`follower` is a second registry on its own port sharing this one's storage, that lags:
it does not see what was registered after it was made until :meth:`catch_up`.

It runs ``http.server`` in a background thread on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["CONTENT_TYPE", "RegistryDouble", "running_registry"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _problems(level: str, new: Any, old: Any) -> list[str]:
    """Why ``new`` is not ``level``-compatible with ``old`` (one version); empty: it is."""
    if level.startswith("BACKWARD"):
        return _backward_problems(new, old)
    if level.startswith("FORWARD"):
        return _backward_problems(old, new)
    if level.startswith("FULL"):
        return _backward_problems(new, old) + _backward_problems(old, new)
    return []


def _backward_problems(reader: Any, writer: Any) -> list[str]:
    """Why ``reader`` (the new schema) cannot read ``writer`` (the latest); empty: compatible."""
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
    from avro.schema import parse

    result = ReaderWriterCompatibilityChecker().get_compatibility(
        parse(json.dumps(reader)), parse(json.dumps(writer))
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    # The checker keeps messages and locations as sets; Confluent's messages look like these.
    details = ", ".join(sorted(str(m) for m in result.messages))
    where = ", ".join(sorted(str(loc) for loc in result.locations))
    return [
        f"{{errorType:'{kind.value.upper()}', additionalInfo:'{details}', location:'{where}'}}"
        for kind in result.incompatibilities
    ] or ["incompatible"]


@dataclass
class _State:
    first_id: int
    ids: dict[str, int] = field(default_factory=dict)  # canonical schema -> id
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version
    level: str = "BACKWARD"
    subject_levels: dict[str, str] = field(default_factory=dict)

    def id_of(self, schema: Any) -> int:
        key = _canonical(schema)
        if key not in self.ids:
            new = self.first_id + len(self.ids)
            self.ids[key] = new
            self.schemas[new] = json.dumps(schema)
        return self.ids[key]


class RegistryDouble:
    """The registry double; ``start()`` it (or use :func:`running_registry`), ``stop()`` it."""

    def __init__(self, first_id: int = 1001) -> None:
        self.state = _State(first_id)
        self.requests: list[tuple[str, str]] = []
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._failing: tuple[int, dict[str, Any]] | None = None
        self._not_ready_until: float | None = None  # monotonic; inf: until ready()
        self._visible: set[int] | None = None  # a lagging follower: the ids it has read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- controls ---------------------------------------------------------------------------

    def start(self) -> RegistryDouble:
        return self.up()

    def up(self) -> RegistryDouble:
        """Listen (again, on the same port once it had one)."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def down(self) -> None:
        """Close the listening socket: new connections are refused until :meth:`up`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    stop = down

    def fail_with(self, status: int = 503, error_code: int | None = None) -> None:
        """Answer every request with ``status`` and a Confluent error body until :meth:`heal`."""
        code = error_code if error_code is not None else status * 100 + 3
        body = {"error_code": code, "message": f"the registry double answers {status}"}
        with self._lock:
            self._failing = (status, body)

    def heal(self) -> None:
        with self._lock:
            self._failing = None

    def not_ready(self, seconds: float | None = None) -> None:
        """Answer as a registry that has not read its schemas topic yet: every schema id is
        404 (40403) and ``/_health`` is not ready, until :meth:`ready` (or ``seconds``)."""
        with self._lock:
            self._not_ready_until = float("inf") if seconds is None else time.monotonic() + seconds

    def ready(self) -> None:
        with self._lock:
            self._not_ready_until = None

    def follower(self) -> RegistryDouble:
        """A second registry (its own port; start it) on this one's storage, lagging: what is
        registered from now on it does not see until :meth:`catch_up`."""
        other = RegistryDouble(self.state.first_id)
        other.state, other._lock = self.state, self._lock
        other._visible = set(self.state.schemas)
        return other

    def catch_up(self) -> None:
        with self._lock:
            self._visible = None

    def add_version(self, subject: str, schema: Any) -> int:
        """Preload ``subject`` with a new version of ``schema`` (no compatibility check)."""
        with self._lock:
            schema_id = self.state.id_of(schema)
            versions = self.state.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def set_level(self, level: str, subject: str | None = None) -> None:
        with self._lock:
            if subject is None:
                self.state.level = level
            else:
                self.state.subject_levels[subject] = level

    def schema(self, schema_id: int) -> Any:
        return json.loads(self.state.schemas[schema_id])

    def versions(self, subject: str) -> list[int]:
        """The ids of ``subject``'s versions, oldest first."""
        return list(self.state.subjects.get(subject, []))

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    # -- the API ----------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """(status, JSON body) for one request; the HTTP handler only frames it."""
        with self._lock:
            self.requests.append((method, path))
            if self._failing is not None:
                return self._failing
            parts = [unquote(p) for p in path.strip("/").split("/")]
            until = self._not_ready_until
            if until is not None and time.monotonic() >= until:
                until = self._not_ready_until = None
            if parts == ["_health"]:
                return 200, {"status": "healthy", "schema_registry_ready": until is None}
            if parts[:2] == ["schemas", "ids"] and (
                until is not None
                or (
                    self._visible is not None
                    and parts[2:3] != []
                    and _id(parts[2]) not in self._visible
                )
            ):
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return self._route(method, parts, query, body)

    def _route(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        state = self.state
        match method, parts:
            case "GET", ["schemas", "ids", raw_id]:
                text = state.schemas.get(int(raw_id)) if raw_id.isdigit() else None
                if text is None:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                return 200, {"schema": text}
            case "GET", ["subjects"]:
                return 200, sorted(state.subjects)
            case "GET", ["subjects", subject, "versions"]:
                if subject not in state.subjects:
                    return _no_subject(subject)
                return 200, list(range(1, len(state.subjects[subject]) + 1))
            case "GET", ["subjects", subject, "versions", version]:
                return self._version(subject, version)
            case "POST", ["subjects", subject]:
                return self._lookup(subject, body)
            case "POST", ["subjects", subject, "versions"]:
                return self._register(subject, body)
            case "POST", ["compatibility", "subjects", subject, "versions", version]:
                verbose = query.get("verbose", ["false"])[0].lower() == "true"
                return self._compatibility(subject, version, body, verbose)
            case "GET", ["config"]:
                return 200, {"compatibilityLevel": state.level}
            case "GET", ["config", subject]:
                level = state.subject_levels.get(subject)
                if level is None:
                    return 404, {
                        "error_code": 40408,
                        "message": f"Subject '{subject}' does not have subject-level compatibility configured",
                    }
                return 200, {"compatibilityLevel": level}
            case "PUT", ["config"]:
                state.level = str(body["compatibility"]).upper()
                return 200, {"compatibility": state.level}
            case "PUT", ["config", subject]:
                state.subject_levels[subject] = str(body["compatibility"]).upper()
                return 200, {"compatibility": state.subject_levels[subject]}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}

    def _schema_of(self, body: Any) -> Any:
        if (body.get("schemaType") or "AVRO") != "AVRO":
            raise _Unprocessable("the registry double knows Avro only")
        try:
            return json.loads(body["schema"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _Unprocessable(f"Invalid schema: {exc}") from exc

    def _version(self, subject: str, version: str) -> tuple[int, Any]:
        versions = self.state.subjects.get(subject)
        if not versions:
            return _no_subject(subject)
        number = len(versions) if version == "latest" else int(version)
        if not 1 <= number <= len(versions):
            return 404, {"error_code": 40402, "message": f"Version {version} not found."}
        schema_id = versions[number - 1]
        return 200, {
            "subject": subject,
            "version": number,
            "id": schema_id,
            "schema": self.state.schemas[schema_id],
        }

    def _lookup(self, subject: str, body: Any) -> tuple[int, Any]:
        versions = self.state.subjects.get(subject)
        if not versions:
            return _no_subject(subject)
        try:
            key = _canonical(self._schema_of(body))
        except _Unprocessable as exc:
            return 422, {"error_code": 42201, "message": str(exc)}
        schema_id = self.state.ids.get(key)
        if schema_id not in versions:
            return 404, {"error_code": 40403, "message": "Schema not found"}
        return 200, {
            "subject": subject,
            "version": versions.index(schema_id) + 1,
            "id": schema_id,
            "schema": self.state.schemas[schema_id],
        }

    def _register(self, subject: str, body: Any) -> tuple[int, Any]:
        try:
            schema = self._schema_of(body)
        except _Unprocessable as exc:
            return 422, {"error_code": 42201, "message": str(exc)}
        versions = self.state.subjects.setdefault(subject, [])
        existing = self.state.ids.get(_canonical(schema))
        if existing is not None and existing in versions:
            return 200, {"id": existing}
        level = self._level(subject)
        if versions and level != "NONE":
            covered = versions if level.endswith("_TRANSITIVE") else versions[-1:]
            problems = [p for v in covered for p in _problems(level, schema, self.schema(v))]
            if problems:
                return 409, {
                    "error_code": 409,
                    "message": "Schema being registered is incompatible with an earlier schema "
                    f'for subject "{subject}", details: {problems}',
                }
        schema_id = self.state.id_of(schema)
        versions.append(schema_id)
        return 200, {"id": schema_id}

    def _compatibility(
        self, subject: str, version: str, body: Any, verbose: bool
    ) -> tuple[int, Any]:
        versions = self.state.subjects.get(subject)
        if not versions:
            return _no_subject(subject)
        status, found = self._version(subject, version)
        if status != 200:
            return status, found
        try:
            schema = self._schema_of(body)
        except _Unprocessable as exc:
            return 422, {"error_code": 42201, "message": str(exc)}
        level = self._level(subject)
        covered = [found["id"]]
        if version == "latest" and level.endswith("_TRANSITIVE"):
            covered = versions  # as Karapace: every version, the messages naming none
        problems = [p for v in covered for p in _problems(level, schema, self.schema(v))]
        answer: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            answer["messages"] = problems
        return 200, answer

    def _level(self, subject: str) -> str:
        return self.state.subject_levels.get(subject, self.state.level)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, answer = 400, {"error_code": 400, "message": "Unexpected body"}
                else:
                    status, answer = double.answer(
                        self.command, parts.path, parse_qs(parts.query), body
                    )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request log is double.requests

        return Handler


class _Unprocessable(Exception):
    pass


def _id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


def _no_subject(subject: str) -> tuple[int, Any]:
    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}


@contextmanager
def running_registry(first_id: int = 1001) -> Iterator[RegistryDouble]:
    double = RegistryDouble(first_id).start()
    try:
        yield double
    finally:
        double.stop()
