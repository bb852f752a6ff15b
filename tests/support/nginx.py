"""Debian's nginx as a TLS + basic-auth proxy in front of the registry double.

A production schema registry sits behind TLS and basic auth; this puts nginx there so our client
configuration (``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO``, ``SCHEMA_REGISTRY_SSL_CA_LOCATION``) is
checked against a real TLS server and a real ``auth_basic``. nginx runs with its own config in
a temporary directory (pid, logs and temp paths there, ``daemon off``, one process), listens on
127.0.0.1, and is stopped by its PID.

nginx's own 400/401/403 pages are HTML, which python-schema-registry-client would fail to parse
as JSON; the registry answers these with Confluent's JSON error bodies, so ``error_page`` sends
them through a location that returns ``{"error_code":401,"message":"Unauthorized"}`` and the like.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.support.server import ServerProcess
from tests.support.tools import require_tool

__all__ = ["Nginx"]

_ERRORS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _htpasswd(users: Mapping[str, str]) -> str:
    """``user:$apr1$...`` lines, hashed by ``openssl passwd -apr1``."""
    openssl = require_tool("openssl", "openssl")
    lines = []
    for user, password in users.items():
        hashed = subprocess.run(
            [openssl, "passwd", "-apr1", "-stdin"],
            input=password,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        lines.append(f"{user}:{hashed}\n")
    return "".join(lines)


class Nginx(ServerProcess):
    """nginx terminating TLS, checking basic auth and proxying to ``127.0.0.1:upstream_port``."""

    name = "nginx"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    @property
    def log_path(self) -> Path:
        return self.error_log

    def config(self, port: int, upstream_port: int, cert: Path, key: Path, htpasswd: Path) -> str:
        d = self.directory
        error_pages = "\n".join(
            [f"        error_page {status} /_errors/{status};" for status in _ERRORS]
            + ["        error_page 497 =400 /_errors/400;  # plain HTTP to the TLS port"]
        )
        error_locations = "\n".join(
            f"        location = /_errors/{status} {{\n"
            "            internal;\n"
            "            auth_basic off;\n"
            f"            default_type {_CONTENT_TYPE};\n"
            f'            return {status} \'{{"error_code":{status},"message":"{text}"}}\';\n'
            "        }"
            for status, text in _ERRORS.items()
        )
        return f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{
    worker_connections 256;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        auth_basic "schema registry";
        auth_basic_user_file {htpasswd};
{error_pages}
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header Host $host;
        }}
{error_locations}
    }}
}}
"""

    def start(
        self,
        port: int,
        upstream_port: int,
        cert: Path,
        key: Path,
        users: Mapping[str, str],
        timeout: float = 10.0,
    ) -> Nginx:
        binary = require_tool("nginx", "nginx-light")
        self.directory.mkdir(parents=True, exist_ok=True)
        htpasswd = self.directory / "htpasswd"
        htpasswd.write_text(_htpasswd(users))
        config = self.directory / "nginx.conf"
        config.write_text(self.config(port, upstream_port, cert, key, htpasswd))
        self.port = port
        self.launch(
            [binary, "-c", str(config), "-p", str(self.directory), "-e", str(self.error_log)],
            port,
            timeout,
        )
        return self
