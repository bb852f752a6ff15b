"""streams.settings.load: defaults, parsing, and errors that name the variable with an example.

Every test passes an explicit environment dict; ``os.environ`` is never read or changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings, load


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load({})

    assert settings.input_topic == "bus-events"
    assert settings.output_topic == "escalations"
    assert settings.dlq_topic == "bus-events.dlq"
    assert settings.partitions == 4
    assert settings.replication_factor == 1
    assert settings.app_id == "escalation-stream"
    assert settings.web_enabled is True
    assert settings.web_host == "127.0.0.1"
    assert settings.web_port == 6066
    assert settings.session_timeout_s == 10.0
    assert settings.batch_max == 1000
    assert settings.bootstrap_servers is None
    assert settings.schema_registry_url is None
    assert settings.state_root.is_absolute()
    assert settings.state_root == (tmp_path / "state").resolve()
    assert settings.broker_url == "kafka://127.0.0.1:9092"
    assert settings.fsync is True


def test_empty_values_mean_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(
        {
            "ESCALATIONS_STATE_ROOT": "",
            "ESCALATIONS_PARTITIONS": "",
            "ESCALATIONS_WEB_ENABLED": "",
            "ESCALATIONS_SESSION_TIMEOUT": "",
            "ESCALATIONS_WEB_HOST": "",
            "KAFKA_BOOTSTRAP_SERVERS": "  ",
            "SCHEMA_REGISTRY_URL": "",
        }
    )
    assert settings == load({})


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.partitions = 8  # type: ignore[misc]


def test_explicit_values(tmp_path: Path) -> None:
    settings = load(
        {
            "ESCALATIONS_INPUT_TOPIC": "in.events",
            "ESCALATIONS_OUTPUT_TOPIC": "out_events",
            "ESCALATIONS_DLQ_TOPIC": "in-events-dlq",
            "ESCALATIONS_PARTITIONS": "8",
            "ESCALATIONS_WEB_ENABLED": "false",
            "ESCALATIONS_WEB_HOST": "0.0.0.0",
            "ESCALATIONS_SESSION_TIMEOUT": "2.5",
            "ESCALATIONS_STATE_ROOT": str(tmp_path / "x" / ".." / "root"),
            "SCHEMA_REGISTRY_URL": "http://registry:8081/",
        }
    )
    assert (settings.input_topic, settings.output_topic, settings.dlq_topic) == (
        "in.events",
        "out_events",
        "in-events-dlq",
    )
    assert settings.partitions == 8
    assert settings.web_enabled is False
    assert settings.web_host == "0.0.0.0"
    assert settings.session_timeout_s == 2.5
    assert settings.state_root == (tmp_path / "root").resolve()
    assert settings.schema_registry_url == "http://registry:8081"


@pytest.mark.parametrize(
    ("raw", "enabled"),
    [("1", True), ("true", True), (" YES ", True), ("on", True), ("0", False), ("False", False)],
)
def test_web_enabled_spellings(raw: str, enabled: bool) -> None:
    assert load({"ESCALATIONS_WEB_ENABLED": raw}).web_enabled is enabled


@pytest.mark.parametrize(("raw", "fsync"), [("false", False), ("0", False), ("true", True)])
def test_fsync_can_be_turned_off(raw: str, fsync: bool) -> None:
    assert load({"ESCALATIONS_FSYNC": raw}).fsync is fsync


# -- KAFKA_BOOTSTRAP_SERVERS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "servers"),
    [
        ("a:9092", "a:9092"),
        ("a:9092,b:9093", "a:9092,b:9093"),
        (" a:9092 , b:9093 ,", "a:9092,b:9093"),
        ("kafka://a:9092", "a:9092"),
        ("kafka://a:9092,kafka://b:9093", "a:9092,b:9093"),
        ("10.0.0.1:9092", "10.0.0.1:9092"),
        ("[::1]:9092", "[::1]:9092"),
        ("kafka://a:9092;kafka://b:9093", "a:9092,b:9093"),  # the broker_url form
    ],
)
def test_bootstrap_servers_parsing(raw: str, servers: str) -> None:
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": raw})
    assert settings.bootstrap_servers == servers
    assert settings.broker_url == ";".join(f"kafka://{s}" for s in servers.split(","))


def test_broker_url_is_the_faust_form() -> None:
    settings = load({"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9093"})
    assert settings.broker_url == "kafka://a:9092;kafka://b:9093"


def test_with_bootstrap_replaces_only_the_servers() -> None:
    settings = load({})
    changed = settings.with_bootstrap("h:1234")
    assert changed.bootstrap_servers == "h:1234"
    assert dataclasses.replace(changed, bootstrap_servers=None) == settings
    assert isinstance(changed, Settings)


# -- errors ----------------------------------------------------------------------------------

INVALID: list[tuple[dict[str, str], list[str]]] = [
    ({"ESCALATIONS_INPUT_TOPIC": "bad topic"}, ["ESCALATIONS_INPUT_TOPIC", "'bad topic'"]),
    ({"ESCALATIONS_INPUT_TOPIC": "a/b"}, ["ESCALATIONS_INPUT_TOPIC", "'a/b'"]),
    ({"ESCALATIONS_OUTPUT_TOPIC": "x" * 250}, ["ESCALATIONS_OUTPUT_TOPIC"]),
    ({"ESCALATIONS_OUTPUT_TOPIC": "café"}, ["ESCALATIONS_OUTPUT_TOPIC", "'café'"]),
    ({"ESCALATIONS_DLQ_TOPIC": "dlq!"}, ["ESCALATIONS_DLQ_TOPIC", "'dlq!'"]),
    ({"ESCALATIONS_DLQ_TOPIC": "."}, ["ESCALATIONS_DLQ_TOPIC", "'.'"]),  # Kafka refuses . and ..
    ({"ESCALATIONS_INPUT_TOPIC": ".."}, ["ESCALATIONS_INPUT_TOPIC", "'..'"]),
    ({"ESCALATIONS_APP_ID": "my app"}, ["ESCALATIONS_APP_ID", "'my app'"]),
    (
        {"ESCALATIONS_OUTPUT_TOPIC": "bus-events"},
        ["ESCALATIONS_INPUT_TOPIC", "ESCALATIONS_OUTPUT_TOPIC", "ESCALATIONS_DLQ_TOPIC"],
    ),
    (
        {"ESCALATIONS_INPUT_TOPIC": "same", "ESCALATIONS_DLQ_TOPIC": "same"},
        ["ESCALATIONS_INPUT_TOPIC", "ESCALATIONS_DLQ_TOPIC", "same"],
    ),
    ({"ESCALATIONS_PARTITIONS": "abc"}, ["ESCALATIONS_PARTITIONS", "'abc'", "=8"]),
    ({"ESCALATIONS_PARTITIONS": "0"}, ["ESCALATIONS_PARTITIONS", "'0'", "=8"]),
    ({"ESCALATIONS_PARTITIONS": "10001"}, ["ESCALATIONS_PARTITIONS", "'10001'"]),
    ({"ESCALATIONS_WEB_PORT": "65536"}, ["ESCALATIONS_WEB_PORT", "'65536'"]),
    ({"ESCALATIONS_WEB_ENABLED": "maybe"}, ["ESCALATIONS_WEB_ENABLED", "'maybe'", "=false"]),
    ({"ESCALATIONS_FSYNC": "never"}, ["ESCALATIONS_FSYNC", "'never'", "=false"]),
    ({"ESCALATIONS_SESSION_TIMEOUT": "-1"}, ["ESCALATIONS_SESSION_TIMEOUT", "'-1'", "=10"]),
    ({"ESCALATIONS_SESSION_TIMEOUT": "0"}, ["ESCALATIONS_SESSION_TIMEOUT", "'0'"]),
    ({"ESCALATIONS_SESSION_TIMEOUT": "soon"}, ["ESCALATIONS_SESSION_TIMEOUT", "'soon'"]),
    ({"ESCALATIONS_STATE_ROOT": "/var/\x00lib"}, ["ESCALATIONS_STATE_ROOT", "NUL"]),
    (
        {"KAFKA_BOOTSTRAP_SERVERS": "nohostport"},
        ["KAFKA_BOOTSTRAP_SERVERS", "'nohostport'", "host:port", "broker1:9092"],
    ),
    (
        {"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b"},
        ["KAFKA_BOOTSTRAP_SERVERS", "'b'", "host:port"],
    ),
    (
        {"KAFKA_BOOTSTRAP_SERVERS": "a:99999"},  # no such port
        ["KAFKA_BOOTSTRAP_SERVERS", "'a:99999'", "host:port"],
    ),
    (
        {"KAFKA_BOOTSTRAP_SERVERS": "http://a:9092"},
        ["KAFKA_BOOTSTRAP_SERVERS", "host:port"],
    ),
    (
        {"SCHEMA_REGISTRY_URL": "ftp://x"},
        ["SCHEMA_REGISTRY_URL", "'ftp://x'", "http", "SCHEMA_REGISTRY_URL=http://"],
    ),
    ({"SCHEMA_REGISTRY_URL": "registry:8081"}, ["SCHEMA_REGISTRY_URL", "'registry:8081'"]),
]


def _case_id(case: object) -> str:
    return ascii(case)[:60]


@pytest.mark.parametrize(("env", "needles"), INVALID, ids=_case_id)
def test_invalid_value_names_the_variable_and_shows_an_example(
    env: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    message = str(info.value)
    for needle in needles:
        assert needle in message
    assert "e.g." in message, f"no example in {message!r}"


# -- unknown variables, the web bind/advertised split, the data directory ----------------------


def test_a_misspelt_variable_is_reported_with_the_closest_known_name() -> None:
    settings = load({"ESCALATIONS_BATCHMAX": "10", "ESCALATIONS_STATEROOT": "/tmp/x"})
    assert settings.batch_max == 1000  # the misspelling changes nothing...
    assert settings.warnings == (  # ...but it is said, naming what was meant
        "ESCALATIONS_BATCHMAX is not a setting and is ignored (did you mean ESCALATIONS_BATCH_MAX?)",
        "ESCALATIONS_STATEROOT is not a setting and is ignored (did you mean ESCALATIONS_STATE_ROOT?)",
    )


def test_an_unknown_variable_with_no_close_name_is_reported_without_a_guess() -> None:
    assert load({"ESCALATIONS_ZZZ": "1"}).warnings == (
        "ESCALATIONS_ZZZ is not a setting and is ignored",
    )


def test_every_known_variable_is_read_so_none_is_reported() -> None:
    env = {
        "ESCALATIONS_STATE_ROOT": "/tmp/x",
        "ESCALATIONS_BATCH_MAX": "5",
        "ESCALATIONS_WEB_BIND": "0.0.0.0",
        "ESCALATIONS_WEB_HOST": "worker-1.internal",
        "ESCALATIONS_DATA_DIR": "/tmp/faust-data",
        "ESCALATIONS_CREATE_TOPICS": "false",
        "ESCALATIONS_DRAIN_TIMEOUT": "5",
        "OTHER_VARIABLE": "not ours: never reported",
    }
    settings = load(env)
    assert settings.warnings == ()
    assert settings.web_bind == "0.0.0.0"
    assert settings.web_host == "worker-1.internal"
    assert str(settings.faust_data_dir) == "/tmp/faust-data"
    assert settings.create_topics is False
    assert settings.drain_timeout_s == 5.0


def test_the_advertised_host_defaults_to_the_bind_address() -> None:
    assert load({"ESCALATIONS_WEB_BIND": "10.0.0.5"}).web_host == "10.0.0.5"
    assert load({}).web_bind == "127.0.0.1"


def test_the_data_directory_defaults_to_the_state_roots_dot_faust(tmp_path: Path) -> None:
    settings = load({"ESCALATIONS_STATE_ROOT": str(tmp_path)})
    assert settings.faust_data_dir == tmp_path / ".faust"
