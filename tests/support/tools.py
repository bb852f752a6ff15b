"""System tools some tests need (stunnel4, nginx, promtool, FUSE): found, or the test is skipped.

Tests never install anything: CI installs every system package the suite needs once, up front
(``.ci/system-packages``, run by ``.ci/run`` as root). Elsewhere a test that needs a missing tool
is skipped with a reason naming the Debian package; with ``CI=true`` a missing tool fails the
run instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["missing", "require_tool"]

_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def missing(reason: str) -> None:
    """Skips the test for a missing system piece (fails it with CI=true)."""
    reason = f"{reason} (CI installs it with .ci/system-packages)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(binary: str, package: str) -> str:
    """The path of ``binary``; skips the test naming ``package`` (fails with CI=true)."""
    found = shutil.which(binary) or shutil.which(binary, path=_SYSTEM_PATH)
    if found is None:
        missing(f"needs {binary!r} from the Debian package {package!r} (apt-get install {package})")
    assert found is not None
    return found
