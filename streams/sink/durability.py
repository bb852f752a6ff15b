"""How a checkpoint makes the written files durable on the state root's file system.

Two ways, chosen once per state root when the sink starts (``ESCALATIONS_SYNC``):

- ``syncfs``: one ``syncfs(2)`` on the root's file system covers every file written and every
  directory entry made. Correct only where the file system implements it (its ``sync_fs``
  super-block operation writes back and waits) *and* the kernel reports writeback errors from
  it (Linux 5.8 and later, commit 735e4ae5ba28 "vfs: track per-sb writeback errors and report
  them to syncfs"). On a FUSE mount the kernel forwards ``syncfs`` to the daemon only for
  virtiofs; for every other FUSE file system it returns 0 at once, persisting nothing the
  daemon holds (``fs/fuse/inode.c``, ``fuse_sync_fs``). Network file systems (NFS, CIFS,
  CephFS) make no such promise either.
- ``fsync``: ``fdatasync`` of each file written since the last checkpoint (from a bounded pool
  of threads) and ``fsync`` of the parent of each new directory entry: what POSIX promises on
  every file system, at one system call per written file.

``auto`` (the default) takes ``syncfs`` only on the local file systems listed in
:data:`HONOURS_SYNCFS` on a kernel that reports its errors, and ``fsync`` everywhere else
(FUSE mounts such as JuiceFS, GlusterFS, ceph-fuse, gcsfuse and s3fs; NFS; CIFS; overlayfs;
ZFS; anything unknown).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

__all__ = [
    "HONOURS_SYNCFS",
    "SYNC_MODES",
    "SyncChoice",
    "SyncMode",
    "choose_sync",
    "file_system_of",
]


class SyncMode(enum.Enum):
    AUTO = "auto"
    SYNCFS = "syncfs"
    FSYNC = "fsync"


SYNC_MODES: Final = tuple(m.value for m in SyncMode)

#: ``statfs`` magic numbers of the file systems whose ``syncfs`` writes back every file and
#: waits for it (they implement ``sync_fs``): the only ones ``auto`` trusts with ``syncfs``.
HONOURS_SYNCFS: Final = {
    0xEF53: "ext4",  # ext2, ext3 and ext4 share the magic
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
    0x01021994: "tmpfs",  # nothing survives a power loss there anyway
}
#: Others worth naming in the log line (``auto`` takes ``fsync`` for them).
_OTHER_NAMES: Final = {
    0x65735546: "fuse",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x00C36400: "ceph",
    0x794C7630: "overlayfs",
    0x2FC12FC1: "zfs",
    0x01021997: "9p",
    0x858458F6: "ramfs",
}
#: The first kernel whose ``syncfs`` reports writeback errors.
SYNCFS_ERRORS_SINCE: Final = (5, 8)


@dataclass(frozen=True, slots=True)
class SyncChoice:
    mode: SyncMode  # SYNCFS or FSYNC, never AUTO
    file_system: str  # "ext4", "fuse", "0x1234abcd", "unknown"
    reason: str

    def describe(self) -> str:
        return f"{self.mode.value} ({self.file_system}: {self.reason})"


def _statfs_type() -> Callable[[bytes, Any], int] | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "statfs", None)
    if function is not None:
        function.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        function.restype = ctypes.c_int
    return cast("Callable[[bytes, Any], int] | None", function)


_STATFS: Final = _statfs_type()


def file_system_of(path: Path) -> tuple[int | None, str]:
    """The ``statfs`` magic number of the file system holding ``path`` and its name (None and
    "unknown" where ``statfs`` is not available or fails)."""
    if _STATFS is None:
        return None, "unknown"
    # struct statfs starts with f_type (a long) on every Linux architecture glibc supports.
    buffer = ctypes.create_string_buffer(512)
    if _STATFS(os.fsencode(path), buffer) != 0:
        return None, "unknown"
    magic = ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF
    name = HONOURS_SYNCFS.get(magic) or _OTHER_NAMES.get(magic) or f"0x{magic:x}"
    return magic, name


def _kernel() -> tuple[int, int]:
    try:
        major, minor = os.uname().release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except (ValueError, AttributeError):
        return (0, 0)


def choose_sync(root: Path, requested: SyncMode | str = SyncMode.AUTO) -> SyncChoice:
    """How checkpoints make files under ``root`` durable (``requested``: the setting)."""
    mode = SyncMode(requested)
    magic, name = file_system_of(root)
    if mode is not SyncMode.AUTO:
        return SyncChoice(mode, name, "set by ESCALATIONS_SYNC")
    if magic is None:
        return SyncChoice(SyncMode.FSYNC, name, "file system unknown: fdatasync of each file")
    if magic not in HONOURS_SYNCFS:
        return SyncChoice(
            SyncMode.FSYNC, name, "syncfs is not known to persist here: fdatasync of each file"
        )
    kernel = _kernel()
    if kernel < SYNCFS_ERRORS_SINCE:
        return SyncChoice(
            SyncMode.FSYNC,
            name,
            f"kernel {kernel[0]}.{kernel[1]} does not report syncfs errors: fdatasync of each file",
        )
    return SyncChoice(SyncMode.SYNCFS, name, "syncfs persists every file here")
