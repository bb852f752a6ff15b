"""Test certificates (made with the ``openssl`` CLI) and stunnel terminating TLS in front of a port.

The embedded broker (Tansu) has no usable TLS listener, so the secure-cluster fixtures put Debian's
``stunnel4`` in front of its plain listener: stunnel speaks TLS to the client (and, for mTLS,
demands a client certificate signed by the test CA), and plain TCP to the broker.

The certificates are made once per test session, in the session's base temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.tools import require_tool

__all__ = [
    "CLIENT_KEY_PASSWORD",
    "Certs",
    "Stunnel",
    "certs",
    "free_port",
    "make_certs",
]

#: The password of ``Certs.client_key_encrypted``.
CLIENT_KEY_PASSWORD = "client-key-pw"

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Certs:
    """PEM files: a test CA, a server and a client signed by it, and an unrelated second CA."""

    ca: Path  # the CA that signed server and client
    ca_key: Path
    server_cert: Path  # CN=localhost, SAN IP:127.0.0.1, DNS:localhost
    server_key: Path
    client_cert: Path  # CN=escalation-stream, extendedKeyUsage clientAuth
    client_key: Path
    client_key_encrypted: Path  # the same key, AES-256 encrypted with ``client_key_password``
    client_key_password: str
    other_ca: Path  # a CA that signed nothing here: the "wrong CA"
    other_host_cert: Path  # signed by ``ca``, but only for DNS:elsewhere.invalid
    other_host_key: Path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(openssl: str, *args: str, cwd: Path) -> None:
    result = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.decode()}")


def _ca(openssl: str, cwd: Path, name: str, subject: str) -> None:
    _openssl(
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "3650",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )


def _leaf(openssl: str, cwd: Path, name: str, subject: str, extensions: str) -> None:
    _openssl(
        openssl,
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=cwd,
    )
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        openssl,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "3650",
        "-extfile",
        f"{name}.ext",
        cwd=cwd,
    )


def _paths(directory: Path) -> Certs:
    return Certs(
        ca=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
        client_key_password=CLIENT_KEY_PASSWORD,
        other_ca=directory / "other-ca.pem",
        other_host_cert=directory / "other-host.pem",
        other_host_key=directory / "other-host.key",
    )


def make_certs(directory: Path) -> Certs:
    """Create the test certificates in ``directory``, or reuse the ones already made there."""
    with _lock:
        done = directory / ".complete"
        if done.exists():
            return _paths(directory)
        openssl = shutil.which("openssl") or "/usr/bin/openssl"
        directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="certs-", dir=directory.parent))
        _ca(openssl, work, "ca", "/CN=escalation-stream test CA")
        _ca(openssl, work, "other-ca", "/CN=unrelated test CA")
        _leaf(
            openssl,
            work,
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
        )
        _leaf(
            openssl,
            work,
            "client",
            "/CN=escalation-stream",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        )
        _leaf(
            openssl,
            work,
            "other-host",
            "/CN=elsewhere.invalid",
            "subjectAltName=DNS:elsewhere.invalid\n"
            "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
        )
        _openssl(
            openssl,
            "pkey",
            "-in",
            "client.key",
            "-aes256",
            "-passout",
            f"pass:{CLIENT_KEY_PASSWORD}",
            "-out",
            "client-encrypted.key",
            cwd=work,
        )
        for item in work.iterdir():
            item.replace(directory / item.name)
        work.rmdir()
        done.touch()
        return _paths(directory)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The session's test certificates (made on first use, then reused)."""
    require_tool("openssl", "openssl")
    return make_certs(tmp_path_factory.getbasetemp() / "test-certs")


class Stunnel(ServerProcess):
    """``stunnel4`` terminating TLS on ``accept_port`` and forwarding plain TCP to ``connect_port``.

    Started in the foreground (``foreground = yes``, no pid file) and stopped by its PID.
    """

    name = "stunnel"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.accept_port = 0

    def start(
        self,
        accept_port: int,
        connect_port: int,
        cert: Path,
        key: Path,
        ca: Path | None = None,
        require_client_cert: bool = False,
        timeout: float = 10.0,
    ) -> Stunnel:
        binary = require_tool("stunnel4", "stunnel4")
        if require_client_cert and ca is None:
            raise ValueError("require_client_cert needs the CA that signs client certificates")
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            "foreground = yes",
            "pid =",
            "debug = notice",
            f"output = {self.log_path}",
            "[kafka]",
            f"accept = 127.0.0.1:{accept_port}",
            f"connect = 127.0.0.1:{connect_port}",
            f"cert = {cert}",
            f"key = {key}",
        ]
        if ca is not None:
            lines.append(f"CAfile = {ca}")
        if require_client_cert:
            lines += ["requireCert = yes", "verifyChain = yes"]
        config = self.directory / "stunnel.conf"
        config.write_text("\n".join(lines) + "\n")
        self.accept_port = accept_port
        self.launch([binary, str(config)], accept_port, timeout)
        return self
