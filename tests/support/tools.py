"""System tools some tests need (stunnel4, nginx, promtool), installed where the tests run as root.

CI runs as root: a missing tool is installed with apt-get. Elsewhere a test that needs a missing
tool is skipped with a reason naming the Debian package, except with ``CI=true``, where a missing
tool fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

__all__ = ["require_tool"]

_lock = threading.Lock()
_updated: list[bool] = []  # apt-get update ran (once per test session)


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        _updated.append(True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        env=env,
        capture_output=True,
        timeout=600,
    )


def require_tool(binary: str, package: str) -> str:
    """The path of ``binary``; installs ``package`` as root, else skips (fails with CI=true)."""
    with _lock:
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
        if found is None and hasattr(os, "geteuid") and os.geteuid() == 0:
            _apt_install(package)
            found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if found is not None:
        return found
    reason = f"needs {binary!r} from the Debian package {package!r} (apt-get install {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
