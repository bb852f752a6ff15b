"""docker-compose.secure.yml: the production shape (SASL_SSL, a registry behind TLS and basic
auth), checked against the settings the worker reads. No Docker engine runs here: the file is
checked, and the secrets it mounts are made by its own script and loaded by the real settings."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, in the dev extra

from streams.settings import load
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
SECURE = ROOT / "docker-compose.secure.yml"
SCRIPT = ROOT / "deploy" / "compose" / "make-secrets.sh"
SECRETS_IN_CONTAINER = "/run/secrets/"


def _merged_service(name: str) -> dict[str, Any]:
    """What `docker compose -f base -f secure` gives a service (environment merged by key)."""
    base = yaml.safe_load(BASE.read_text())["services"].get(name, {})
    over = yaml.safe_load(SECURE.read_text())["services"].get(name, {})
    merged = {**base, **over}
    merged["environment"] = {**(base.get("environment") or {}), **(over.get("environment") or {})}
    return merged


def _known_variables() -> set[str]:
    modules = [ROOT / "streams" / "settings.py", *(ROOT / "streams" / "security").glob("*.py")]
    source = "\n".join(m.read_text() for m in modules)
    names = set(re.findall(r'"((?:ESCALATIONS|KAFKA|SCHEMA)_[A-Z_]+)"', source))
    return names | {f"{n}_FILE" for n in names}


@pytest.mark.parametrize("name", ["worker", "produce-sample"])
def test_every_variable_is_one_the_job_reads(name: str) -> None:
    env = _merged_service(name)["environment"]
    ours = {k for k in env if k.startswith(("ESCALATIONS_", "KAFKA_", "SCHEMA_"))}
    assert ours - _known_variables() == set()


@pytest.mark.parametrize("name", ["worker", "produce-sample"])
def test_secrets_are_files_the_service_mounts(name: str) -> None:
    svc = _merged_service(name)
    env, mounted = svc["environment"], set(svc.get("secrets") or [])
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for secret in ("KAFKA_SASL_PASSWORD", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"):
        assert secret not in env, f"{secret} as a plain value: use {secret}_FILE"
    files = [v for k, v in env.items() if k.endswith(("_FILE", "_LOCATION"))]
    assert files
    for path in files:
        assert path.startswith(SECRETS_IN_CONTAINER)
        assert path.removeprefix(SECRETS_IN_CONTAINER) in mounted
    assert env["SCHEMA_REGISTRY_URL"].startswith("https://")


def test_the_script_makes_every_secret_the_file_mounts(tmp_path: Path) -> None:
    require_tool("openssl", "openssl")
    subprocess.run(["sh", str(SCRIPT), str(tmp_path)], check=True, capture_output=True)
    declared = yaml.safe_load(SECURE.read_text())["secrets"]
    for name, spec in declared.items():
        made = tmp_path / Path(spec["file"]).name
        assert made.is_file() and made.stat().st_size > 0, name


def test_the_workers_settings_load_with_those_secrets(tmp_path: Path) -> None:
    require_tool("openssl", "openssl")
    subprocess.run(["sh", str(SCRIPT), str(tmp_path)], check=True, capture_output=True)
    env = {
        k: v.replace(SECRETS_IN_CONTAINER, f"{tmp_path}{os.sep}")
        for k, v in _merged_service("worker")["environment"].items()
    }
    settings = load(env)  # raises ConfigError naming a bad variable
    assert settings.kafka.protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka.sasl_username == (tmp_path / "kafka-username").read_text()
    assert settings.registry.username == "escalation-stream"
    assert settings.warnings == ()
    assert "password" not in repr(settings).lower() or "***" in repr(settings)
    assert (tmp_path / "kafka-password").read_text() not in repr(settings)


def test_the_registry_proxy_answers_errors_as_json() -> None:
    conf = (ROOT / "deploy" / "compose" / "registry-proxy.conf").read_text()
    assert "error_page 401 = @unauthorized" in conf
    assert '\'{"error_code":401,"message":"Unauthorized"}\'' in conf
