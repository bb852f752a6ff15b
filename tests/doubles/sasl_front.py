"""A test double for a SASL-secured Kafka listener: it authenticates, then forwards to a broker.

The embedded broker (Tansu) cannot check SASL credentials, so this fixture sits in front of its
plain listener and plays the broker's part of the SASL exchange itself, the way a Kafka broker
with ``SASL_PLAINTEXT`` listeners does. It exists to check *our client configuration* (mechanism,
user name, password, TLS around it); it is not a broker and enforces no ACLs.

Per client connection, before authentication:

- ``ApiVersions`` (api key 18) is forwarded to the broker and its answer passed back unchanged
  (aiokafka reads it to choose request versions; Tansu offers SaslHandshake v0-1 and
  SaslAuthenticate v0-2, so aiokafka 0.14 sends SaslHandshake v1 and SaslAuthenticate v1);
- ``SaslHandshake`` v1 (api key 17) is answered here: error 33 UNSUPPORTED_SASL_MECHANISM with the
  enabled list when the mechanism is not offered;
- ``SaslAuthenticate`` v0/v1 (api key 36) is answered here: PLAIN by comparing user and password,
  SCRAM-SHA-256/512 by the ``scramp`` server; a failure is error 58 SASL_AUTHENTICATION_FAILED
  with a message, and the connection is closed after the answer;
- anything else is refused by closing the connection (a Kafka broker does the same).

After a successful authentication the front forwards the next request and then pipes bytes both
ways. Handshake v0 (raw SASL tokens without Kafka framing) and the flexible SaslAuthenticate v2
are not needed by aiokafka and are not supported: the connection is closed.

The front runs its own asyncio loop in a background thread; ``stop()`` closes the listener and
every connection and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType

from scramp import ScramException, ScramMechanism  # type: ignore[import-untyped]

__all__ = ["MECHANISMS", "SaslFront"]

log = logging.getLogger(__name__)

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36

ERR_NONE = 0
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_SASL_AUTHENTICATION_FAILED = 58

MAX_FRAME = 100 * 1024 * 1024
SCRAM_ITERATIONS = 4096


class _Refused(Exception):
    """The client broke the protocol; the connection is closed."""


def _i16(value: int) -> bytes:
    return struct.pack(">h", value)


def _i32(value: int) -> bytes:
    return struct.pack(">i", value)


def _string(value: str | None) -> bytes:
    if value is None:
        return _i16(-1)
    data = value.encode()
    return _i16(len(data)) + data


def _bytes(value: bytes) -> bytes:
    return _i32(len(value)) + value


class _Request:
    """A non-flexible Kafka request: header v1 (api key, version, correlation id, client id)."""

    def __init__(self, frame: bytes) -> None:
        if len(frame) < 10:
            raise _Refused(f"request of {len(frame)} bytes is shorter than a request header")
        self.api_key, self.api_version, self.correlation_id, client_id_len = struct.unpack_from(
            ">hhih", frame
        )
        self.body_offset = 10 + max(client_id_len, 0)
        self.frame = frame

    def read_string(self, offset: int) -> tuple[str, int]:
        (length,) = struct.unpack_from(">h", self.frame, offset)
        if length < 0:
            raise _Refused("null string where one is required")
        end = offset + 2 + length
        if end > len(self.frame):
            raise _Refused("string runs past the end of the request")
        return self.frame[offset + 2 : end].decode(), end

    def read_bytes(self, offset: int) -> tuple[bytes, int]:
        (length,) = struct.unpack_from(">i", self.frame, offset)
        end = offset + 4 + max(length, 0)
        if length < 0 or end > len(self.frame):
            raise _Refused("bytes field runs past the end of the request")
        return self.frame[offset + 4 : end], end

    def response(self, body: bytes) -> bytes:
        message = _i32(self.correlation_id) + body  # response header v0: non-flexible
        return _i32(len(message)) + message


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        if not 0 <= size <= MAX_FRAME:
            raise _Refused(f"frame size {size} is out of range")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


class _Authenticator:
    """One connection's SASL state: the chosen mechanism and, for SCRAM, the scramp server."""

    def __init__(self, users: Mapping[str, str], mechanism: str) -> None:
        self.users = users
        self.mechanism = mechanism
        self.username: str | None = None
        self._scram = (
            None
            if mechanism == "PLAIN"
            else ScramMechanism(mechanism).make_server(self._scram_auth_info)
        )
        self._scram_step = 0

    def _scram_auth_info(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        self.username = username
        password = self.users.get(username)
        mechanism = ScramMechanism(self.mechanism)
        if password is None:
            # Unknown users fail at the proof, like a wrong password (no user enumeration).
            password = "\x00unknown user\x00"
        salt, stored_key, server_key, iterations = mechanism.make_auth_info(
            password, iteration_count=SCRAM_ITERATIONS
        )
        return salt, stored_key, server_key, iterations

    def step(self, token: bytes) -> tuple[bytes, bool]:
        """The server's answer and whether authentication is complete; raises on failure."""
        if self._scram is None:
            parts = token.split(b"\x00")
            if len(parts) != 3:
                raise PermissionError("malformed PLAIN token")
            _authzid, user, password = (p.decode(errors="replace") for p in parts)
            self.username = user
            if self.users.get(user) != password:
                raise PermissionError(f"Authentication failed: invalid credentials for {user!r}")
            return b"", True
        self._scram_step += 1
        try:
            if self._scram_step == 1:
                self._scram.set_client_first(token.decode())
                return self._scram.get_server_first().encode(), False
            if self._scram_step == 2:
                self._scram.set_client_final(token.decode())
                return self._scram.get_server_final().encode(), True
        except ScramException as exc:
            raise PermissionError(
                f"Authentication failed during {self.mechanism} for {self.username!r}: {exc}"
            ) from exc
        raise PermissionError("unexpected extra SCRAM message")


class SaslFront:
    """Answers SASL itself and forwards everything else to ``upstream`` (a plain Kafka listener).

    ``users`` maps user names to passwords; ``mechanisms`` are the ones offered (by default PLAIN,
    SCRAM-SHA-256 and SCRAM-SHA-512). Listens on ``127.0.0.1:port`` (0: any free port, see
    ``.port`` after ``start()``).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        users: Mapping[str, str],
        mechanisms: Iterable[str] = MECHANISMS,
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.users = dict(users)
        self.mechanisms = tuple(mechanisms)
        unknown = set(self.mechanisms) - set(MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported mechanisms {sorted(unknown)}; known: {MECHANISMS}")
        self.port = port
        #: (user, mechanism, ok) per SaslAuthenticate outcome, in order: what tests can assert on.
        self.attempts: list[tuple[str | None, str, bool]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> SaslFront:
        self._thread = threading.Thread(target=self._run, name="sasl-front", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the SASL front did not start within {timeout}s")
        if self._failure is not None:
            raise RuntimeError(f"the SASL front failed to start: {self._failure}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the SASL front did not stop within {timeout}s")

    def __enter__(self) -> SaslFront:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread ends either way
            self._failure = exc
            self._ready.set()
        finally:
            loop.run_until_complete(asyncio.sleep(0.01))  # let closed transports finish closing
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._track, "127.0.0.1", self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (_Refused, ConnectionError, OSError) as exc:
            log.info("SASL front: connection closed: %s", exc)
        except asyncio.CancelledError:
            # Only stop() cancels; ending normally spares asyncio's start_server callback
            # (Python 3.11) from calling task.exception() on a cancelled task.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        auth: _Authenticator | None = None
        try:
            while True:
                frame = await _read_frame(reader)
                if frame is None:
                    return
                request = _Request(frame)
                if request.api_key == API_API_VERSIONS:
                    upstream = upstream or await asyncio.open_connection(*self.upstream)
                    await self._forward_one(frame, upstream)
                    writer.write(await self._read_upstream(upstream))
                elif request.api_key == API_SASL_HANDSHAKE:
                    auth = self._handshake(request, writer)
                elif request.api_key == API_SASL_AUTHENTICATE:
                    if auth is None:
                        raise _Refused("SaslAuthenticate before SaslHandshake")
                    if self._authenticate(request, auth, writer):
                        break
                else:
                    raise _Refused(f"api key {request.api_key} before SASL authentication")
                await writer.drain()
            await writer.drain()
            upstream = upstream or await asyncio.open_connection(*self.upstream)
            await self._pipe(reader, writer, upstream)
        finally:
            if upstream is not None:
                upstream[1].close()
                with contextlib.suppress(Exception):
                    await upstream[1].wait_closed()

    def _handshake(self, request: _Request, writer: asyncio.StreamWriter) -> _Authenticator | None:
        if request.api_version != 1:
            raise _Refused(f"SaslHandshake v{request.api_version} is not supported (only v1)")
        mechanism, _ = request.read_string(request.body_offset)
        offered = b"".join(_string(m) for m in self.mechanisms)
        enabled = _i32(len(self.mechanisms)) + offered
        if mechanism not in self.mechanisms:
            self.attempts.append((None, mechanism, False))
            writer.write(request.response(_i16(ERR_UNSUPPORTED_SASL_MECHANISM) + enabled))
            return None
        writer.write(request.response(_i16(ERR_NONE) + enabled))
        return _Authenticator(self.users, mechanism)

    def _authenticate(
        self, request: _Request, auth: _Authenticator, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one SaslAuthenticate; True once authenticated; raises after a refusal."""
        if request.api_version not in (0, 1):
            raise _Refused(f"SaslAuthenticate v{request.api_version} is not supported (only v0-1)")
        token, _ = request.read_bytes(request.body_offset)
        trailer = _i32(0) + _i32(0) if request.api_version == 1 else b""  # session lifetime 0
        try:
            answer, done = auth.step(token)
        except PermissionError as exc:
            self.attempts.append((auth.username, auth.mechanism, False))
            body = _i16(ERR_SASL_AUTHENTICATION_FAILED) + _string(str(exc)) + _bytes(b"")
            writer.write(request.response(body + trailer))
            raise _Refused(str(exc)) from None
        if done:
            self.attempts.append((auth.username, auth.mechanism, True))
        writer.write(request.response(_i16(ERR_NONE) + _string(None) + _bytes(answer) + trailer))
        return done

    @staticmethod
    async def _forward_one(
        frame: bytes, upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ) -> None:
        upstream[1].write(_i32(len(frame)) + frame)
        await upstream[1].drain()

    @staticmethod
    async def _read_upstream(upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bytes:
        frame = await _read_frame(upstream[0])
        if frame is None:
            raise _Refused("the broker closed the connection")
        return _i32(len(frame)) + frame

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                with contextlib.suppress(Exception):
                    sink.write_eof()

        tasks = [
            asyncio.ensure_future(copy(reader, upstream[1])),
            asyncio.ensure_future(copy(upstream[0], writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
