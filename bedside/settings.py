"""How every process of the product reaches Kafka: one frozen settings object.

Built once at the entry point (command-line values override ``BEDSIDE_KAFKA_*``
environment variables) and passed down; nothing below the entry point reads the
environment. The replay's producer, the engine and the consumers all take it.

>>> settings = KafkaSettings(bootstrap_servers="kafka:29092,kafka2:29092")
>>> settings.servers()
['kafka:29092', 'kafka2:29092']
>>> settings.kafka_python_config()["security_protocol"]
'PLAINTEXT'
>>> KafkaSettings(bootstrap_servers="k:9092", security_protocol="SASL_SSL")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for KafkaSettings
...
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bedside.errors import BedsideError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

ENV_PREFIX = "BEDSIDE_KAFKA_"


class SettingsError(BedsideError, ValueError):
    """The Kafka settings (command line or ``BEDSIDE_KAFKA_*``) are incomplete or invalid."""


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster: servers, client id, TLS and SASL.

    Environment variables: ``BEDSIDE_KAFKA_BOOTSTRAP_SERVERS``, ``..._CLIENT_ID``,
    ``..._SECURITY_PROTOCOL``, ``..._SASL_MECHANISM``, ``..._USERNAME``,
    ``..._PASSWORD``, ``..._SSL_CA_FILE``, ``..._SSL_CERT_FILE``, ``..._SSL_KEY_FILE``.
    The password is a ``SecretStr``: it never appears in a repr or a log line.
    """

    # A refused configuration's error must not echo its input: it holds the password.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", hide_input_in_errors=True
    )

    #: Comma-separated ``host:port`` list.
    bootstrap_servers: str = "localhost:9092"
    client_id: str = "bedside"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_file: FilePath | None = None
    ssl_cert_file: FilePath | None = None
    ssl_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _complete(self) -> KafkaSettings:
        if not self.servers():
            raise ValueError("bootstrap_servers is empty")
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(f"{self.security_protocol} needs a sasl_mechanism")
            if not self.username or self.password is None:
                raise ValueError(f"SASL {self.sasl_mechanism} needs a username and a password")
        elif self.sasl_mechanism is not None:
            raise ValueError(
                f"sasl_mechanism needs a SASL_* protocol, not {self.security_protocol}"
            )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("a client certificate needs both ssl_cert_file and ssl_key_file")
        return self

    def servers(self) -> list[str]:
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's ``KafkaProducer`` / ``KafkaConsumer``."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.servers(),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.username
            config["sasl_plain_password"] = (
                self.password.get_secret_value() if self.password else None
            )
        files = {
            "ssl_cafile": self.ssl_ca_file,
            "ssl_certfile": self.ssl_cert_file,
            "ssl_keyfile": self.ssl_key_file,
        }
        config.update({key: str(path) for key, path in files.items() if path is not None})
        return config

    def librdkafka_config(self) -> dict[str, str]:
        """Properties for confluent-kafka / librdkafka clients (Bytewax's Kafka connectors)."""
        config = {
            "bootstrap.servers": ",".join(self.servers()),
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = self.password.get_secret_value() if self.password else ""
        files = {
            "ssl.ca.location": self.ssl_ca_file,
            "ssl.certificate.location": self.ssl_cert_file,
            "ssl.key.location": self.ssl_key_file,
        }
        config.update({key: str(path) for key, path in files.items() if path is not None})
        return config


def load_kafka_settings(**overrides: Any) -> KafkaSettings:
    """Settings from ``BEDSIDE_KAFKA_*`` with command-line values on top (entry points only).

    ``None`` overrides are ignored, so an option left unset keeps the environment's value.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return KafkaSettings(**given)
    except ValidationError as error:
        details = "; ".join(
            f"{ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in error.errors()[:3]
        )
        raise SettingsError(f"invalid Kafka settings: {details}") from None
