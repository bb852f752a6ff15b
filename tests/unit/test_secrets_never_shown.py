"""No secret is ever shown: a table of URL and setting forms through every error path.

Each form (user info with and without a password, upper-case schemes, query tokens, a ``_FILE``
secret) goes through settings validation, the registry client's errors and logs, the CLI's
error output and the worker's log (the redaction the worker installs, fed what a library might
log: the raw URL, an exception quoting it), and none of them may show the secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.contracts.registry import HttpRegistry
from streams.contracts.schemas import BUS_EVENT, SchemaStore
from streams.errors import EscalationsError
from streams.security import redact_logs
from streams.settings import load
from tests.support.tls import free_port

STORE = SchemaStore()

#: (name, SCHEMA_REGISTRY_URL with {port}, extra variables, the secrets never to show)
FORMS = [
    ("upper-case scheme", "HTTPS://svc:Sup3rS3cret@127.0.0.1:{port}", {}, ["Sup3rS3cret"]),
    ("upper-case http", "HTTP://svc:Upp3r-Http@127.0.0.1:{port}", {}, ["Upp3r-Http"]),
    ("token user info", "https://T0ken-abc123@127.0.0.1:{port}", {}, ["T0ken-abc123"]),
    ("quoted password", "http://svc:p%40ss-w0rd@127.0.0.1:{port}", {}, ["p@ss-w0rd", "p%40ss"]),
    ("query token", "https://127.0.0.1:{port}/?api_key=Qu3ry-T0ken", {}, ["Qu3ry-T0ken"]),
    ("wrong scheme", "ftp://svc:Ftp-S3cret@127.0.0.1:{port}", {}, ["Ftp-S3cret"]),
    ("bad port", "http://svc:P0rt-S3cret@127.0.0.1:99999999", {}, ["P0rt-S3cret"]),
    (
        "_FILE secret",
        "http://127.0.0.1:{port}",
        {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": "svc:F1le-S3cret"},
        ["F1le-S3cret"],
    ),
]


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def _env(tmp_path: Path, url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {"SCHEMA_REGISTRY_URL": url.format(port=free_port())}
    for name, value in extra.items():
        path = tmp_path / name.lower()
        if name.endswith("_FILE"):
            path.write_text(value + "\n")
        env[name] = str(path) if name.endswith("_FILE") else value
    return env


def _assert_hidden(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, text


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _client_errors(url: str, security: object | None) -> list[str]:
    """What the registry client raises and logs against ``url`` (nothing listens there)."""
    fake = FakeTime()
    try:
        registry = HttpRegistry(
            url,
            STORE,
            security=security,  # type: ignore[arg-type]
            startup_timeout_s=2.0,
            sleep=fake.sleep,
            clock=fake.clock,
        )
        asyncio.run(registry.id_for(BUS_EVENT, "bus-events-value"))
    except EscalationsError as exc:
        return [str(exc), repr(exc)]
    raise AssertionError("nothing listens there: the client must fail")


@pytest.mark.parametrize(
    ("url", "extra", "secrets"), [f[1:] for f in FORMS], ids=[f[0] for f in FORMS]
)
def test_no_error_path_shows_a_secret(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    url: str,
    extra: dict[str, str],
    secrets: list[str],
) -> None:
    env = _env(tmp_path, url, extra)
    raw = env["SCHEMA_REGISTRY_URL"]
    shown: list[str] = []
    caplog.set_level(logging.INFO)

    # settings validation: refused, or loaded (its repr, description and warnings)
    settings = None
    try:
        settings = load(env)
    except EscalationsError as exc:
        shown.append(str(exc))
        assert "SCHEMA_REGISTRY_URL=" in str(exc)
    if settings is not None:
        shown += [repr(settings), settings.registry.describe(), *settings.warnings]
        conflicting = {**env, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "other:pw"}
        conflicting.pop("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE", None)
        if "@" in raw:
            with pytest.raises(EscalationsError) as info:
                load(conflicting)
            shown.append(str(info.value))
        with pytest.raises(EscalationsError) as info:
            load({**env, "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(tmp_path / "no-such-ca.pem")})
        shown.append(str(info.value))

    # the registry client's errors and logs: given the raw URL, and the loaded settings
    shown += _client_errors(raw, None)
    if settings is not None and settings.schema_registry_url is not None:
        shown += _client_errors(settings.schema_registry_url, settings.registry)

    # the CLI's error output
    result = CliRunner().invoke(
        main,
        ["schemas", "register"],
        env={**env, "ESCALATIONS_REGISTRY_STARTUP_TIMEOUT": "0.3"},
    )
    assert result.exit_code == 1, result.output
    shown.append(result.output)

    # the worker's log: what the worker redacts, fed what a library might log
    if settings is not None:
        undo = redact_logs(settings.secrets())
        try:
            library = logging.getLogger("httpx")
            library.warning("HTTP Request: GET %s/schemas/ids/1", raw)
            try:
                raise ConnectionError(f"cannot connect to {raw} with {secrets[0]}")
            except ConnectionError:
                library.exception("request failed")
        finally:
            undo()
    shown += [record.getMessage() for record in caplog.records]
    shown += [caplog.text]

    _assert_hidden(secrets, *shown)
    assert any("***" in text for text in shown), shown
