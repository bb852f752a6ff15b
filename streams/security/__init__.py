"""Kafka and schema-registry security settings: parsed from an env mapping, built for the clients.

Variables use the librdkafka/Confluent names (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SSL_*``,
``KAFKA_SASL_*``, ``SCHEMA_REGISTRY_*``); every secret may also come from ``<NAME>_FILE``. Secrets
are held as :class:`Secret` and never appear in a ``repr``, a log line or an error message.

How aiokafka 0.14 fails (measured against Tansu behind stunnel and the SASL test front)
-------------------------------------------------------------------------------------
``AIOKafkaProducer.start()``, ``AIOKafkaConsumer.start()`` and ``AIOKafkaAdminClient.start()``
try each bootstrap server once and do **not** retry or hang: within milliseconds they raise
``KafkaConnectionError("Unable to bootstrap from [...]")`` with no ``__cause__``, for every failure
alike (wrong CA, missing client certificate, wrong password, mechanism not offered, and also a
plain "connection refused"). A Faust worker then exits with status 1 within ~2 s. The real error
is only logged (logger ``aiokafka``, ERROR, ``Unable connect to "host:port": <exc>``). So
``unrecoverable()`` of what ``start()`` raises is ``None``; to learn *why*, call
:func:`check_connection` first: it opens one connection the way aiokafka does
(``aiokafka.conn.create_conn``), which raises the real exception:

==============================  ===========================================================
failure                         what ``create_conn`` raises
==============================  ===========================================================
broker cert not from our CA     ``ssl.SSLCertVerificationError`` (verify_code 19/20/21)
broker cert for another host    ``ssl.SSLCertVerificationError`` (verify_code 62/64)
mTLS, no or unfit client        usually ``KafkaConnectionError("Connection at ... closed")``
cert (TLS 1.3)                  from ``ConnectionResetError`` (the server's alert is lost to
                                the reset; now and then the ``ssl.SSLError`` alert itself),
                                so ``check_connection`` repeats the handshake, writes
                                nothing and reads the alert (``ssl.SSLError``
                                ``TLSV13_ALERT_CERTIFICATE_REQUIRED`` /
                                ``SSLV3_ALERT_UNSUPPORTED_CERTIFICATE``)
mTLS, no client cert, TLS 1.2   ``ssl.SSLError`` ``SSLV3_ALERT_HANDSHAKE_FAILURE``
wrong SASL user or password     ``aiokafka.errors.SaslAuthenticationFailed`` (code 58)
SASL mechanism not offered      ``aiokafka.errors.UnsupportedSaslMechanismError`` (code 33;
                                its message is the connection's repr, not the mechanisms)
connection refused              ``ConnectionRefusedError`` (transient)
TLS client, plaintext port      nothing until ``request_timeout_ms`` (40 s by default), then
                                ``TimeoutError`` (transient: indistinguishable)
==============================  ===========================================================
"""

from streams.security.diagnose import check_connection, unrecoverable
from streams.security.kafka import MECHANISMS, PROTOCOLS, KafkaSecurity, load_kafka_security
from streams.security.masking import mask_url, redact, redact_logs, url_secrets
from streams.security.registry import RegistrySecurity, load_registry_security
from streams.security.secrets import Secret

__all__ = [
    "MECHANISMS",
    "PROTOCOLS",
    "KafkaSecurity",
    "RegistrySecurity",
    "Secret",
    "check_connection",
    "load_kafka_security",
    "load_registry_security",
    "mask_url",
    "redact",
    "redact_logs",
    "unrecoverable",
    "url_secrets",
]
