"""Kafka and schema-registry security settings: parsing, checks, secrets kept out of sight."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka import errors as kafka_errors

from streams.errors import ConfigError
from streams.security import (
    KafkaSecurity,
    RegistrySecurity,
    Secret,
    load_kafka_security,
    load_registry_security,
    mask_url,
    unrecoverable,
)
from tests.support import tls
from tests.support.tls import Certs

certs = tls.certs  # the session's test certificates (a fixture)

PASSWORD = "pa55-w0rd-never-shown"


def _config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_kafka_security(env)
    message = str(info.value)
    assert "e.g." in message, message
    return message


def _sasl(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": protocol,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }


def _mtls(certs: Certs) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_LOCATION": str(certs.ca),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(certs.client_cert),
        "KAFKA_SSL_KEY_LOCATION": str(certs.client_key_encrypted),
        "KAFKA_SSL_KEY_PASSWORD": certs.client_key_password,
    }


# --- protocol and mechanism -------------------------------------------------------------------


def test_default_is_plaintext_with_nothing_to_add() -> None:
    security = load_kafka_security({})
    assert security == KafkaSecurity()
    assert security.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.ssl_context() is None
    assert security.faust_credentials() is None
    assert security.describe() == "PLAINTEXT"
    assert security.warnings() == []


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    env = {**_sasl("sasl_plaintext", "scram-sha-256")}
    security = load_kafka_security(env)
    assert (security.protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


def test_unknown_protocol_is_refused() -> None:
    message = _config_error({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    assert "KAFKA_SECURITY_PROTOCOL='TLS'" in message
    assert "SASL_SSL" in message


def test_unknown_mechanism_is_refused() -> None:
    message = _config_error({**_sasl(), "KAFKA_SASL_MECHANISM": "GSSAPI"})
    assert "KAFKA_SASL_MECHANISM='GSSAPI'" in message
    assert "SCRAM-SHA-512" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
@pytest.mark.parametrize(
    "name", ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"]
)
def test_sasl_settings_without_a_sasl_protocol_are_refused(protocol: str, name: str) -> None:
    message = _config_error({"KAFKA_SECURITY_PROTOCOL": protocol, name: "PLAIN"})
    assert name in message
    assert f"KAFKA_SECURITY_PROTOCOL={protocol}" in message


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "missing", ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"]
)
def test_a_sasl_protocol_needs_mechanism_username_and_password(protocol: str, missing: str) -> None:
    env = _sasl(protocol)
    del env[missing]
    message = _config_error(env)
    assert f"needs {missing}" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(
    "name",
    [
        "KAFKA_SSL_CA_LOCATION",
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "KAFKA_SSL_KEY_LOCATION",
        "KAFKA_SSL_KEY_PASSWORD",
        "KAFKA_SSL_KEY_PASSWORD_FILE",
    ],
)
def test_tls_settings_without_a_tls_protocol_are_refused(protocol: str, name: str) -> None:
    env = _sasl(protocol) if protocol.startswith("SASL") else {}
    message = _config_error({**env, "KAFKA_SECURITY_PROTOCOL": protocol, name: "/etc/x.pem"})
    assert name.removesuffix("_FILE") in message


def test_endpoint_identification_algorithm() -> None:
    assert load_kafka_security({"KAFKA_SECURITY_PROTOCOL": "SSL"}).check_hostname
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "NONE"}
    security = load_kafka_security(env)
    assert not security.check_hostname
    context = security.ssl_context()
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    assert "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none" in security.warnings()[0]
    message = _config_error({**env, "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "off"})
    assert "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM='off'" in message


# --- TLS files --------------------------------------------------------------------------------


def test_mtls_with_an_encrypted_key_builds_a_verifying_context(certs: Certs) -> None:
    security = load_kafka_security(_mtls(certs))
    context = security.ssl_context()
    assert context is not None
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    kwargs = security.aiokafka_kwargs()
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert security.describe() == (f"SSL, CA {certs.ca}, client certificate {certs.client_cert}")


def test_no_ca_means_the_system_store() -> None:
    security = load_kafka_security({"KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert security.ca_location is None
    assert "system CAs" in security.describe()


@pytest.mark.parametrize(
    "name", ["KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"]
)
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_unreadable_tls_files_are_refused(
    certs: Certs, tmp_path: Path, name: str, problem: str
) -> None:
    path = tmp_path / "missing.pem" if problem == "missing" else tmp_path
    message = _config_error({**_mtls(certs), name: str(path)})
    assert f"{name}={str(path)!r} cannot be read" in message


def test_a_ca_file_that_is_not_pem_is_refused(certs: Certs, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    message = _config_error({**_mtls(certs), "KAFKA_SSL_CA_LOCATION": str(garbage)})
    assert "KAFKA_SSL_CA_LOCATION" in message
    assert "not a PEM bundle" in message


@pytest.mark.parametrize(
    ("present", "absent"),
    [
        ("KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"),
        ("KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION"),
    ],
)
def test_certificate_and_key_come_together(certs: Certs, present: str, absent: str) -> None:
    env = _mtls(certs)
    del env[absent]
    env.pop("KAFKA_SSL_KEY_PASSWORD")
    message = _config_error(env)
    assert f"{present} is set but {absent} is not" in message


def test_a_key_password_without_a_key_is_refused(certs: Certs) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": PASSWORD}
    message = _config_error(env)
    assert "KAFKA_SSL_KEY_PASSWORD is set but KAFKA_SSL_KEY_LOCATION is not" in message
    assert PASSWORD not in message


def test_an_encrypted_key_without_its_password_is_refused_not_prompted(certs: Certs) -> None:
    env = _mtls(certs)
    del env["KAFKA_SSL_KEY_PASSWORD"]
    message = _config_error(env)
    assert "KAFKA_SSL_KEY_LOCATION" in message
    assert "set KAFKA_SSL_KEY_PASSWORD" in message


def test_a_wrong_key_password_is_refused_without_showing_it(certs: Certs) -> None:
    message = _config_error({**_mtls(certs), "KAFKA_SSL_KEY_PASSWORD": PASSWORD})
    assert "KAFKA_SSL_KEY_PASSWORD does not decrypt KAFKA_SSL_KEY_LOCATION" in message
    assert PASSWORD not in message


def test_a_key_of_another_certificate_is_refused(certs: Certs) -> None:
    env = {**_mtls(certs), "KAFKA_SSL_KEY_LOCATION": str(certs.other_host_key)}
    del env["KAFKA_SSL_KEY_PASSWORD"]
    message = _config_error(env)
    assert "KAFKA_SSL_KEY_LOCATION" in message
    assert "is not the key of KAFKA_SSL_CERTIFICATE_LOCATION" in message


# --- secrets ----------------------------------------------------------------------------------


def test_secret_hides_its_value() -> None:
    secret = Secret(PASSWORD)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert secret.reveal() == PASSWORD


def test_secrets_never_appear_in_repr_str_or_describe(certs: Certs) -> None:
    env = {
        **_sasl("SASL_SSL", "PLAIN"),
        **_mtls(certs),
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_KEY_PASSWORD": certs.client_key_password,
    }
    security = load_kafka_security(env)
    for text in (repr(security), str(security), security.describe(), *security.warnings()):
        assert PASSWORD not in text
        assert certs.client_key_password not in text
    assert security.describe().startswith("SASL_SSL, PLAIN as user 'svc'")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("s3cret\n\n", "s3cret\n"),  # one trailing newline only
        (" spaced out \n", " spaced out "),
    ],
)
def test_secrets_from_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "password"
    path.write_text(content, newline="")
    env = {**_sasl(), "KAFKA_SASL_PASSWORD_FILE": str(path)}
    del env["KAFKA_SASL_PASSWORD"]
    security = load_kafka_security(env)
    assert security.sasl_password is not None
    assert security.sasl_password.reveal() == expected


def test_username_and_key_password_from_files(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "user").write_text("svc-from-file\n")
    (tmp_path / "keypw").write_text(certs.client_key_password + "\n")
    env = {**_mtls(certs), "KAFKA_SSL_KEY_PASSWORD_FILE": str(tmp_path / "keypw")}
    del env["KAFKA_SSL_KEY_PASSWORD"]
    assert load_kafka_security(env).ssl_context() is not None
    env = {**_sasl(), "KAFKA_SASL_USERNAME_FILE": str(tmp_path / "user")}
    del env["KAFKA_SASL_USERNAME"]
    assert load_kafka_security(env).sasl_username == "svc-from-file"


@pytest.mark.parametrize(
    "name", ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD"]
)
def test_a_secret_and_its_file_together_are_refused(
    certs: Certs, tmp_path: Path, name: str
) -> None:
    (tmp_path / "secret").write_text(PASSWORD)
    env = {**_sasl(), **_mtls(certs), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    env[name] = PASSWORD if name != "KAFKA_SSL_KEY_PASSWORD" else certs.client_key_password
    env[f"{name}_FILE"] = str(tmp_path / "secret")
    message = _config_error(env)
    assert f"{name} and {name}_FILE are both set" in message
    assert PASSWORD not in message


def test_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    env = {**_sasl(), "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")}
    del env["KAFKA_SASL_PASSWORD"]
    message = _config_error(env)
    assert f"KAFKA_SASL_PASSWORD_FILE={str(tmp_path / 'nope')!r} cannot be read" in message


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    env = {**_sasl(), "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "empty")}
    del env["KAFKA_SASL_PASSWORD"]
    with pytest.raises(ConfigError, match=r"KAFKA_SASL_PASSWORD_FILE=.* is empty"):
        load_kafka_security(env)


def test_a_secret_file_that_is_not_text_is_refused_without_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + PASSWORD.encode())
    env = {**_sasl(), "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "binary")}
    del env["KAFKA_SASL_PASSWORD"]
    message = _config_error(env)
    assert "not UTF-8" in message
    assert PASSWORD not in message


# --- what the clients get ---------------------------------------------------------------------


def test_aiokafka_kwargs_for_sasl() -> None:
    plain = load_kafka_security(_sasl("SASL_PLAINTEXT", "PLAIN")).aiokafka_kwargs()
    assert plain == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
    }
    tls = load_kafka_security(_sasl("SASL_SSL")).aiokafka_kwargs()
    assert tls["security_protocol"] == "SASL_SSL"
    assert isinstance(tls["ssl_context"], ssl.SSLContext)


def test_plain_over_sasl_plaintext_is_allowed_with_a_warning() -> None:
    [warning] = load_kafka_security(_sasl("SASL_PLAINTEXT", "PLAIN")).warnings()
    assert "KAFKA_SASL_MECHANISM=PLAIN" in warning
    assert "clear" in warning
    assert load_kafka_security(_sasl("SASL_PLAINTEXT", "SCRAM-SHA-256")).warnings() == []
    assert load_kafka_security(_sasl("SASL_SSL", "PLAIN")).warnings() == []


@pytest.mark.parametrize(
    ("env", "expected_protocol"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "SSL"),
        (_sasl("SASL_PLAINTEXT"), "SASL_PLAINTEXT"),
        (_sasl("SASL_SSL"), "SASL_SSL"),
    ],
)
def test_faust_credentials_give_faust_the_same_aiokafka_settings(
    env: dict[str, str], expected_protocol: str
) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    security = load_kafka_security(env)
    credentials = security.faust_credentials()
    assert PASSWORD not in repr(credentials)
    via_faust = dict(credentials_to_aiokafka_auth(credentials))
    ours = security.aiokafka_kwargs()
    assert via_faust["security_protocol"] == expected_protocol
    assert isinstance(via_faust.pop("ssl_context"), ssl.SSLContext) == security.uses_tls
    ours.pop("ssl_context", None)
    assert via_faust == ours


# --- schema registry --------------------------------------------------------------------------


def test_registry_without_settings() -> None:
    url, security = load_registry_security({}, "https://registry:8081")
    assert url == "https://registry:8081"
    assert security == RegistrySecurity()
    assert security.client_kwargs() == {"auth": None}
    assert load_registry_security({}, None) == (None, RegistrySecurity())


def test_registry_user_info_from_env_and_file(tmp_path: Path) -> None:
    import httpx

    env = {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"svc:{PASSWORD}:with-colon"}
    url, security = load_registry_security(env, "https://registry:8081")
    assert url == "https://registry:8081"
    assert security.username == "svc"
    auth = security.client_kwargs()["auth"]
    assert isinstance(auth, httpx.BasicAuth)
    assert PASSWORD not in repr(security)
    (tmp_path / "info").write_text(f"svc:{PASSWORD}\n")
    env = {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(tmp_path / "info")}
    _, from_file = load_registry_security(env, "https://registry:8081")
    assert from_file.password == Secret(PASSWORD)


def test_registry_user_info_inside_the_url_is_taken_out() -> None:
    url, security = load_registry_security({}, "https://svc:p%40ss@registry.example:8081/sr")
    assert url == "https://registry.example:8081/sr"
    assert security.username == "svc"
    assert security.password == Secret("p@ss")
    assert "p@ss" not in repr(security)


def test_registry_user_info_twice_is_refused() -> None:
    env = {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"svc:{PASSWORD}"}
    with pytest.raises(ConfigError) as info:
        load_registry_security(env, f"https://svc:{PASSWORD}@registry:8081")
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in str(info.value)
    assert "svc:***@registry" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_registry_user_info_must_be_user_colon_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_registry_security({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": PASSWORD}, None)
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_registry_tls_files(certs: Certs, tmp_path: Path) -> None:
    env = {"SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs.ca)}
    _, security = load_registry_security(env, "https://registry:8081")
    assert isinstance(security.client_kwargs()["verify"], ssl.SSLContext)
    env = {
        **env,
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(certs.client_cert),
        "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(certs.client_key),
    }
    _, security = load_registry_security(env, "https://registry:8081")
    assert "client certificate" in security.describe()
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_SSL_CA_LOCATION=.* cannot be read"):
        load_registry_security(
            {"SCHEMA_REGISTRY_SSL_CA_LOCATION": str(tmp_path / "x")}, "https://r:8081"
        )
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION is set"):
        load_registry_security(
            {"SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(certs.client_cert)}, "https://r:8081"
        )
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_URL is http://"):
        load_registry_security(env, "http://registry:8081")
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_SSL_KEY_LOCATION=.* encrypted"):
        load_registry_security(
            {**env, "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(certs.client_key_encrypted)},
            "https://registry:8081",
        )


def test_registry_password_over_http_warns() -> None:
    _, security = load_registry_security({}, "http://svc:pw@registry:8081")
    assert "http://" in security.warnings()[0]
    _, security = load_registry_security({}, "https://svc:pw@registry:8081")
    assert security.warnings() == []


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://svc:s3cret@registry:8081/x", "https://svc:***@registry:8081/x"),
        ("https://svc:p@ss@registry", "https://svc:***@registry"),
        ("https://svc@registry", "https://***@registry"),
        ("HTTPS://svc:s3cret@registry", "https://svc:***@registry"),
        ("https://registry:8081/?api_key=k3y&v=1", "https://registry:8081/?api_key=***&v=***"),
        ("https://registry:8081", "https://registry:8081"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# --- unrecoverable ----------------------------------------------------------------------------


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    return error


def _alert(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] alert")
    error.reason = reason
    return error


def _chained(cause: BaseException) -> BaseException:
    error: BaseException = kafka_errors.KafkaConnectionError("Connection at 127.0.0.1:9093 closed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (_verify_error(19, "self-signed certificate in chain"), ["KAFKA_SSL_CA_LOCATION"]),
        (_verify_error(20, "unable to get local issuer"), ["KAFKA_SSL_CA_LOCATION"]),
        (
            _verify_error(64, "IP address mismatch"),
            ["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "KAFKA_BOOTSTRAP_SERVERS"],
        ),
        (_verify_error(62, "Hostname mismatch"), ["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"]),
        (
            _alert("TLSV13_ALERT_CERTIFICATE_REQUIRED"),
            ["KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"],
        ),
        (_alert("SSLV3_ALERT_HANDSHAKE_FAILURE"), ["KAFKA_SSL_CERTIFICATE_LOCATION"]),
        (_alert("TLSV1_ALERT_UNKNOWN_CA"), ["KAFKA_SSL_CERTIFICATE_LOCATION"]),
        (_alert("WRONG_VERSION_NUMBER"), ["KAFKA_SECURITY_PROTOCOL"]),
        (
            kafka_errors.SaslAuthenticationFailed("Authentication failed"),
            ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"],
        ),
        (kafka_errors.UnsupportedSaslMechanismError("no"), ["KAFKA_SASL_MECHANISM"]),
        (_chained(kafka_errors.SaslAuthenticationFailed("x")), ["KAFKA_SASL_PASSWORD"]),
        (_chained(_alert("TLSV13_ALERT_CERTIFICATE_REQUIRED")), ["KAFKA_SSL_KEY_LOCATION"]),
        (kafka_errors.TopicAuthorizationFailedError(), ["KAFKA_SASL_USERNAME"]),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_unrecoverable_names_the_setting(error: BaseException, names: list[str]) -> None:
    reason = unrecoverable(error)
    assert reason is not None
    for name in names:
        assert name in reason


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        kafka_errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"),
        _chained(ConnectionResetError(104, "Connection reset by peer")),
        kafka_errors.RequestTimedOutError(),
        ValueError("not ours"),
    ],
)
def test_transient_errors_are_not_unrecoverable(error: BaseException) -> None:
    assert unrecoverable(error) is None


def test_unrecoverable_survives_a_cycle_of_causes() -> None:
    first, second = ConnectionResetError(), kafka_errors.KafkaConnectionError("closed")
    first.__context__, second.__cause__ = second, first
    assert unrecoverable(second) is None
