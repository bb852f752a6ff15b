"""A TCP relay between the job and the broker that a test can cut and restore.

Stopping a memory-storage broker loses its topics and offsets, so "the broker goes away" is
played by cutting this relay instead: every connection is dropped and the port refuses new
ones until ``restore()``; the broker (and its data) stays up behind it. The broker advertises
the relay's port, so every client connection goes through it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future

__all__ = ["Relay"]


class Relay:
    """127.0.0.1:``port`` -> 127.0.0.1:``target``, in a thread with its own event loop."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def start(self) -> Relay:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        """Listen again (after ``cut``)."""
        self._call(self._listen())

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._call(self._close())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, work: object) -> None:
        done: Future[None] = asyncio.run_coroutine_threadsafe(work, self._loop)  # type: ignore[arg-type]
        done.result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self._server = await asyncio.start_server(self._relay, sock=sock)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()
