"""A test double of a file system that loses what was not synced, mounted with FUSE.

The way LazyFS (used by Jepsen for power-loss tests) works, in a few hundred lines of Python
over libfuse 3 (``mfusepy``): every write, truncate, create, rename and removal is kept in the
daemon's memory, visible to every process at once; a file's data (and size) becomes durable
only when ``fsync``/``fdatasync`` of that file completes, and a directory's entries only when
``fsync`` of that directory completes. ``syncfs(2)`` never reaches the daemon (the kernel
forwards it to virtiofs only), so it persists nothing, as on any FUSE mount. On command, a
*power loss*: everything not durable is dropped, and what processes see is the durable state.

Run as a process of its own (the test stops it by PID)::

    python -m tests.doubles.lazyfs MOUNTPOINT --control SOCKET

Commands on the control socket, one line each, one line back:

- ``status``: ``ok writes=N fsyncs=N held=0|1``;
- ``hold``: the next ``fsync`` of a file waits (a checkpoint in progress) until a ``drop``;
- ``drop``: the power loss; answers ``ok dropped=<bytes not durable>``.

Kernel caches are off (``direct_io``, zero attribute and entry timeouts), so after a drop every
process reads what the daemon holds. Locks (``flock``) stay in the kernel, as the daemon
implements none. This is a double for tests, never part of the product.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mfusepy

__all__ = ["LazyFS", "main"]

log = logging.getLogger("lazyfs")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Node:
    ino: int
    is_dir: bool
    data: bytearray = field(default_factory=bytearray)  # what processes read
    durable: bytes = b""  # what a power loss keeps
    children: dict[str, int] = field(default_factory=dict)
    durable_children: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)


def _locked(method: F) -> F:
    def run(self: LazyFS, *args: Any, **kwargs: Any) -> Any:
        with self.mutex:
            return method(self, *args, **kwargs)

    run.__name__ = method.__name__
    return run  # type: ignore[return-value]


class LazyFS(mfusepy.Operations):
    use_ns = True

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.nodes: dict[int, Node] = {1: Node(1, is_dir=True)}
        self.handles: dict[int, int] = {}  # open file handle -> inode
        self.next_ino = 2
        self.next_fh = 1
        self.writes = 0
        self.fsyncs = 0
        self.generation = 0  # power losses so far
        self.hold_next = False
        self.released = threading.Event()
        self.held = False

    # -- paths ----------------------------------------------------------------------------------

    def _walk(self, path: str) -> Iterator[str]:
        return (part for part in path.split("/") if part)

    def _resolve(self, path: str) -> Node:
        node = self.nodes[1]
        for part in self._walk(path):
            if not node.is_dir or part not in node.children:
                raise mfusepy.FuseOSError(errno.ENOENT)
            node = self.nodes[node.children[part]]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._resolve(head or "/")
        if not parent.is_dir:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return parent, name

    def _new(self, path: str, *, is_dir: bool) -> Node:
        parent, name = self._parent(path)
        if name in parent.children:
            raise mfusepy.FuseOSError(errno.EEXIST)
        node = Node(self.next_ino, is_dir)
        self.next_ino += 1
        self.nodes[node.ino] = node
        parent.children[name] = node.ino
        parent.mtime_ns = time.time_ns()
        return node

    def _handle(self, node: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node.ino
        return fh

    def _file(self, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh]]
        if path is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        return self._resolve(path)

    # -- the operations -------------------------------------------------------------------------

    @_locked
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        node = self._file(path, fh)
        mode = (stat.S_IFDIR | 0o755) if node.is_dir else (stat.S_IFREG | 0o644)
        return {
            "st_mode": mode,
            "st_ino": node.ino,
            "st_nlink": 2 if node.is_dir else 1,
            "st_size": 4096 if node.is_dir else len(node.data),
            "st_blocks": (len(node.data) + 511) // 512,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
        }

    @_locked
    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        node = self._resolve(path)
        entries = [(".", node.ino), ("..", node.ino), *node.children.items()]
        # Each with its inode number (an entry numbered 0 is skipped as deleted) and type.
        return [(name, self._kind(self.nodes[ino]), 0) for name, ino in entries]

    @staticmethod
    def _kind(node: Node) -> dict[str, int]:
        mode = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        return {"st_mode": mode, "st_ino": node.ino}

    @_locked
    def mkdir(self, path: str, mode: int) -> int:
        self._new(path, is_dir=True)
        return 0

    @_locked
    def rmdir(self, path: str) -> int:
        parent, name = self._parent(path)
        node = self._resolve(path)
        if not node.is_dir:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        if node.children:
            raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        del parent.children[name]
        return 0

    @_locked
    def unlink(self, path: str) -> int:
        parent, name = self._parent(path)
        if name not in parent.children:
            raise mfusepy.FuseOSError(errno.ENOENT)
        if self.nodes[parent.children[name]].is_dir:
            raise mfusepy.FuseOSError(errno.EISDIR)
        del parent.children[name]
        return 0

    @_locked
    def rename(self, old: str, new: str) -> int:
        source, old_name = self._parent(old)
        target, new_name = self._parent(new)
        if old_name not in source.children:
            raise mfusepy.FuseOSError(errno.ENOENT)
        ino = source.children.pop(old_name)
        target.children[new_name] = ino
        return 0

    @_locked
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._handle(self._new(path, is_dir=False))

    @_locked
    def open(self, path: str, flags: int) -> int:
        node = self._resolve(path)
        if flags & os.O_TRUNC:
            del node.data[:]
        return self._handle(node)

    @_locked
    def release(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @_locked
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._file(path, fh).data[offset : offset + size])

    @_locked
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        node = self._file(path, fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = time.time_ns()
        self.writes += 1
        return len(data)

    @_locked
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        node = self._file(path, fh)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            hold, self.hold_next = self.hold_next, False
            generation = self.generation
        if hold:
            self.held = True
            self.released.wait()  # a checkpoint in progress until the power loss
            self.held = False
        with self.mutex:
            if self.generation != generation:
                raise mfusepy.FuseOSError(errno.EIO)  # the power went out during the sync
            node = self._file(path, fh)
            node.durable = bytes(node.data)
            self.fsyncs += 1
        return 0

    @_locked
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        node = self._resolve(path)
        node.durable_children = dict(node.children)
        self.fsyncs += 1
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def chmod(self, path: str, mode: int) -> int:
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        return 0

    def access(self, path: str, amode: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": 1 << 20,
            "f_bfree": 1 << 19,
            "f_bavail": 1 << 19,
            "f_files": 1 << 20,
            "f_ffree": 1 << 19,
            "f_namemax": 255,
        }

    # -- the power loss -------------------------------------------------------------------------

    def drop(self) -> int:
        """Everything not durable is lost; returns how many bytes of file data that was."""
        with self.mutex:
            lost = 0
            for node in self.nodes.values():
                lost += max(0, len(node.data) - len(node.durable))
                node.data = bytearray(node.durable)
                node.children = dict(node.durable_children)
            self.handles.clear()
            self.generation += 1
            self.hold_next = False
            self.released.set()
            self.released = threading.Event()
        return lost

    def command(self, line: str) -> str:
        if line == "drop":
            return f"ok dropped={self.drop()}"
        if line == "hold":
            with self.mutex:
                self.hold_next = True
            return "ok"
        if line == "status":
            return f"ok writes={self.writes} fsyncs={self.fsyncs} held={int(self.held)}"
        return f"error unknown command {line!r}"


def _serve(fs: LazyFS, path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rw") as stream:
            for line in stream:
                stream.write(fs.command(line.strip()) + "\n")
                stream.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True, help="the control socket's path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    fs = LazyFS()
    threading.Thread(target=_serve, args=(fs, args.control), daemon=True).start()
    mfusepy.FUSE(
        fs,
        args.mountpoint,
        foreground=True,
        nothreads=True,
        use_ino=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="lazyfs-double",
    )


if __name__ == "__main__":
    main()
