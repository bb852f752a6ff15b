"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml) agree with the code.

No Docker engine is needed (or used): the files are parsed and checked against
``streams.settings``, the console script in pyproject.toml and each other.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML, in the dev extra

from streams import settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OUR_PREFIXES = ("ESCALATIONS_", "KAFKA_", "SCHEMA_")


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"no service {name!r} in docker-compose.yml"
    return compose["services"][name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose passes it (list or mapping form)."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw]
        raw = {p[0]: p[1] if len(p) > 1 else None for p in pairs}
    env: dict[str, str] = {}
    for key, value in raw.items():
        assert value is not None, f"{key} has no value (it would come from the host's environment)"
        assert not isinstance(value, bool), f"{key}: quote {value!r} (YAML reads it as a bool)"
        env[key] = str(value)
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends with a line continuation"
    result = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"use ENV KEY=value, not {args!r}"
                env[key] = value
    return env


def exec_form(instruction: str) -> list[str]:
    found = [args for name, args in dockerfile_instructions() if name == instruction]
    assert found, f"Dockerfile has no {instruction}"
    value = json.loads(found[-1])  # the last one wins; exec (JSON) form, so no shell in between
    assert isinstance(value, list)
    return value


def worker_env(compose: dict[str, Any]) -> dict[str, str]:
    """What the worker process sees: the image's ENV, overridden by compose's environment."""
    return {**dockerfile_env(), **environment(service(compose, "worker"))}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, sep, address = item.strip().partition("://")
        host, colon, port = address.rpartition(":")
        assert sep and colon and port.isdigit(), f"cannot read listener {item!r}"
        result[name] = (host, int(port))
    return result


def host_port(value: str) -> tuple[str, int]:
    host, colon, port = value.removeprefix("PLAINTEXT://").rpartition(":")
    assert colon and port.isdigit(), f"{value!r} is not host:port"
    return host, int(port)


def published(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each published port."""
    result = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            ip = str(entry.get("host_ip", ""))
            result.append((ip, int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) == 3, f"port {entry!r} does not name a host address (0.0.0.0 then)"
        result.append((parts[0], int(parts[1]), int(parts[2])))
    return result


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def _glob(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_has_the_three_services(compose: dict[str, Any]) -> None:
    for name in ("kafka", "schema-registry", "worker"):
        service(compose, name)
    assert service(compose, "kafka")["image"] == "apache/kafka:3.9.0"
    assert service(compose, "schema-registry")["image"].startswith(
        "confluentinc/cp-schema-registry:"
    )
    build = service(compose, "worker")["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE.parent / context / dockerfile).resolve() == DOCKERFILE


def test_kafka_is_a_single_kraft_node_that_creates_no_topics(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "kafka"))
    assert env.get("CLUSTER_ID"), "KRaft needs a CLUSTER_ID"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@")[0] for v in voters] == [env["KAFKA_NODE_ID"]]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert listeners(env["KAFKA_LISTENERS"])[controller][1] == host_port(voters[0])[1]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(name) == "1", f"{name} must be 1 on a single node"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners(env["KAFKA_LISTENERS"])) <= set(protocols)


def in_network_listeners(compose: dict[str, Any]) -> set[tuple[str, int]]:
    """Advertised (host, port) pairs that name the kafka service and that it listens on."""
    env = environment(service(compose, "kafka"))
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    return {
        (host, port)
        for name, (host, port) in advertised.items()
        if host == "kafka" and bound.get(name, ("", -1))[1] == port
    }


def test_worker_bootstrap_is_an_in_network_kafka_listener(compose: dict[str, Any]) -> None:
    servers = worker_env(compose)["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    ok = in_network_listeners(compose)
    assert ok, "Kafka advertises no listener as kafka:<port> for the compose network"
    for server in servers:
        assert host_port(server.strip()) in ok, f"{server!r} is not one of {sorted(ok)}"


def test_host_listener_is_advertised_as_localhost_on_its_published_port(
    compose: dict[str, Any],
) -> None:
    kafka = service(compose, "kafka")
    env = environment(kafka)
    bound = listeners(env["KAFKA_LISTENERS"])
    ports = {container: host for _, host, container in published(kafka)}
    host_side = {
        (host, port)
        for name, (host, port) in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items()
        if host in ("localhost", "127.0.0.1") and ports.get(bound[name][1]) == port
    }
    assert host_side, "no advertised listener is reachable from the host through a published port"


def test_registry_reaches_kafka_and_the_worker_reaches_the_registry(
    compose: dict[str, Any],
) -> None:
    env = environment(service(compose, "schema-registry"))
    for server in env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split(","):
        assert host_port(server.strip()) in in_network_listeners(compose)
    ports = {urlsplit(u.strip()).port or 8081 for u in env["SCHEMA_REGISTRY_LISTENERS"].split(",")}
    url = urlsplit(worker_env(compose)["SCHEMA_REGISTRY_URL"])
    assert url.scheme == "http"
    assert url.hostname == "schema-registry"
    assert url.port in ports, f"the registry listens on {ports}, the worker uses {url.port}"


def test_every_worker_variable_is_one_the_settings_read(compose: dict[str, Any]) -> None:
    """load() ignores names it does not know, so a misspelt variable would pass silently."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    known = set(re.findall(r'"((?:ESCALATIONS|KAFKA|SCHEMA)_[A-Z_]+)"', source))
    assert "KAFKA_BOOTSTRAP_SERVERS" in known
    ours = {k for k in worker_env(compose) if k.startswith(OUR_PREFIXES)}
    assert ours - known == set(), f"not read by streams.settings: {sorted(ours - known)}"


def test_worker_environment_loads(compose: dict[str, Any]) -> None:
    env = {k: v for k, v in worker_env(compose).items() if k.startswith(OUR_PREFIXES)}
    loaded = settings_module.load(env)  # raises ConfigError naming a bad variable
    assert loaded.bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert loaded.schema_registry_url is not None
    assert loaded.state_root == Path("/var/lib/escalations").resolve()
    assert loaded.web_bind == "0.0.0.0", "bound to loopback, the published web port is dead"


def test_state_root_is_on_a_named_volume(compose: dict[str, Any]) -> None:
    worker = service(compose, "worker")
    state_root = worker_env(compose)["ESCALATIONS_STATE_ROOT"]
    mounts = {}
    for entry in worker.get("volumes") or []:
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry.get("source")
        else:
            source, _, rest = str(entry).partition(":")
            mounts[rest.split(":")[0]] = source
    assert state_root in mounts, f"{state_root} is not a mount point of the worker"
    assert mounts[state_root] in (compose.get("volumes") or {}), "declare the named volume"
    volumes = [args for name, args in dockerfile_instructions() if name == "VOLUME"]
    assert any(state_root in args for args in volumes), "the image should declare it a VOLUME"


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for ip, host, container in published(svc):
            assert ip == "127.0.0.1", f"{name}: {host}->{container} is published on {ip!r}"


def test_worker_web_port_is_published(compose: dict[str, Any]) -> None:
    loaded = settings_module.load(
        {k: v for k, v in worker_env(compose).items() if k.startswith(OUR_PREFIXES)}
    )
    containers = {container for _, _, container in published(service(compose, "worker"))}
    assert loaded.web_port in containers
    exposed = [args for name, args in dockerfile_instructions() if name == "EXPOSE"]
    assert any(str(loaded.web_port) in args.split() for args in exposed)


def test_worker_starts_after_healthy_kafka_and_registry(compose: dict[str, Any]) -> None:
    worker = service(compose, "worker")
    assert worker.get("restart") == "unless-stopped"
    depends = worker.get("depends_on")
    assert isinstance(depends, dict), "use depends_on with conditions"
    for name in ("kafka", "schema-registry"):
        assert depends.get(name, {}).get("condition") == "service_healthy", name
        check = service(compose, name).get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    registry_depends = service(compose, "schema-registry").get("depends_on") or {}
    assert registry_depends.get("kafka", {}).get("condition") == "service_healthy"


def test_compose_interpolation_is_escaped() -> None:
    """Compose expands $VAR and ${VAR}; a shell's $(...) must be written $$(...)."""
    text = COMPOSE.read_text(encoding="utf-8")
    for match in re.finditer(r"\$+(.?)", text):
        dollars = len(match.group(0)) - len(match.group(1))
        if dollars % 2:
            assert match.group(1) == "{", (
                f"unescaped $ at offset {match.start()}: {match.group()!r}"
            )


def test_produce_sample_is_a_tool_that_feeds_the_bundled_sample(compose: dict[str, Any]) -> None:
    if "produce-sample" not in compose["services"]:
        pytest.skip("no produce-sample service")
    tool = service(compose, "produce-sample")
    assert "tools" in (tool.get("profiles") or []), "keep it out of a plain `docker compose up`"
    assert tool.get("image") == service(compose, "worker").get("image")
    command = tool.get("command") or []
    entrypoint = tool.get("entrypoint") or []
    script = " ".join(
        [
            *([entrypoint] if isinstance(entrypoint, str) else entrypoint),
            *([command] if isinstance(command, str) else command),
        ]
    )
    assert "escalations produce" in script
    assert "samples" in script and "bus_events.jsonl" in script
    sample = Path(settings_module.__file__).parent / "samples" / "bus_events.jsonl"
    assert sample.is_file()
    tool_env, env = environment(tool), worker_env(compose)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"):
        assert tool_env.get(name) == env[name], f"{name} differs from the worker's"


# --- Dockerfile and .dockerignore ------------------------------------------------------------


def test_dockerfile_runs_escalations_worker() -> None:
    froms = [args for name, args in dockerfile_instructions() if name == "FROM"]
    assert froms[-1].split()[0].startswith("python:3.11-slim")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    entrypoint, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert entrypoint == ["escalations"]
    assert entrypoint[0] in scripts
    assert cmd == ["worker"]


def test_dockerfile_installs_the_project_with_its_schemas() -> None:
    steps = dockerfile_instructions()
    copied_at: dict[str, int] = {}  # build input -> index of the COPY that brings it in
    for i, (name, args) in enumerate(steps):
        if name == "COPY" and "--from" not in args:
            for src in shlex.split(args)[:-1]:
                if not src.startswith("--"):
                    copied_at.setdefault(src.rstrip("/"), i)
    needed = ("pyproject.toml", "README.md", "streams", "schemas")
    missing = [src for src in needed if src not in copied_at]
    assert not missing, f"the Dockerfile does not COPY {missing}"
    installs = [
        i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args
    ]
    assert installs, "Dockerfile never runs pip install"
    late = [src for src in needed if copied_at[src] > installs[0]]
    assert not late, f"pip install runs before {late} is copied"
    install = steps[installs[0]][1]
    assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", install), "install non-editable"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for name, args in dockerfile_instructions() if name == "USER"]
    assert users, "Dockerfile has no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert dockerfile_env().get("ESCALATIONS_WEB_BIND") == "0.0.0.0"


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = dockerignore_patterns()
    needed = ["pyproject.toml", "README.md"]
    for top in ("streams", "schemas"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                needed.append(path.relative_to(ROOT).as_posix())
    assert "streams/samples/bus_events.jsonl" in needed
    assert "schemas/ids.json" in needed
    lost = [p for p in needed if dockerignored(p, patterns)]
    assert not lost, f".dockerignore drops build inputs: {lost}"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "state/s1/pending_escalations.jsonl",
        "tests/unit/test_deployment.py",
        "benchmarks/run.py",
        ".pytest_cache/x",
        ".mypy_cache/x",
        ".ruff_cache/x",
        "streams/__pycache__/app.cpython-311.pyc",
    ):
        assert dockerignored(path, patterns), f".dockerignore keeps {path}"


def test_dockerignore_matcher() -> None:
    """The simplified matcher above follows Docker's rules on the cases it is used for."""
    assert dockerignored("a/b/c", ["*"])
    assert not dockerignored("a/b/c", ["*", "!a"])
    assert dockerignored("a/__pycache__/x.pyc", ["*", "!a", "**/__pycache__"])
    assert not dockerignored("a/b.py", ["**/*.py[cod]"])
    assert dockerignored("a/b.pyc", ["**/*.py[cod]"])
    assert not dockerignored("README.md", [])
