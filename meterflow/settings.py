"""Runtime settings, read from the environment with defaults matching infra/ports.env."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from meterflow.credentials import secret, secrets_dir
from meterflow.identifiers import NAME, TOPIC

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


KAFKA_SECURITY = ("SASL_SSL", "PLAINTEXT")
# The principals of a deployment (ACLs: connectors.kafka_admin.acl_bindings): operators (topics,
# ACLs, tests' checks), producers (write the events topic only), the metering job, the loader,
# the alert webhook sender.
KAFKA_ROLES = ("operator", "producer", "job", "loader", "alerts")
# Consumer groups and transactional ids each role may use start with these.
GROUP_PREFIXES = {
    "job": "meterflow-metering",
    "loader": "meterflow-loader",
    "alerts": "meterflow-alerts",
}
FLINK_KAFKA_SHADED = "org.apache.flink.kafka.shaded.org.apache.kafka"

# ClickHouse role -> (user, principal whose secret is its password); infra/clickhouse/users.xml.in
# defines the users (docs/decisions/0018-clickhouse-least-privilege.md). Each process connects
# as the least of these that does its work.
CLICKHOUSE_USERS = {
    "admin": ("default", "clickhouse-admin"),  # operators: everything
    "migrate": ("meterflow_migrate", "clickhouse-migrate"),  # DDL: meterflow init, fixtures
    "loader": ("meterflow_loader", "clickhouse-loader"),  # INSERT/SELECT in its database
    "close": ("meterflow_close", "clickhouse-close"),  # the same, for the ledger's writer
    "reader": ("meterflow_reader", "clickhouse-reader"),  # readonly: CLI, exporter
    "dashboards": ("meterflow_dashboards", "clickhouse-dashboards"),  # readonly: Grafana
    "keys": ("meterflow_keys", "clickhouse-keys"),  # writes api_keys: `meterflow keys`
}


def _local_brokers() -> str:
    first, count = int(_env("KAFKA_PORT", "9092")), int(_env("KAFKA_BROKERS", "1"))
    return ",".join(f"127.0.0.1:{first + 2 * n}" for n in range(count))


def _jaas(value: str) -> str:
    # a JAAS option value is a double-quoted string: a quote or backslash in it would end it
    if '"' in value or "\\" in value:
        raise ValueError("Kafka user names and passwords may not contain '\"' or '\\'")
    return value


@dataclass(frozen=True)
class Settings:
    # KAFKA_BROKERS: the local stack's cluster size (1, or 3: infra/stack.sh); the default
    # bootstrap list names every broker, so a client starting while one is down still connects.
    kafka_brokers: int = field(default_factory=lambda: int(_env("KAFKA_BROKERS", "1")))
    kafka_bootstrap: str = field(default_factory=lambda: _env("METERFLOW_KAFKA", _local_brokers()))
    registry_url: str = field(
        default_factory=lambda: _env(
            "METERFLOW_REGISTRY",
            f"http://127.0.0.1:{_env('REGISTRY_PORT', '8085')}/apis/ccompat/v7",
        )
    )
    clickhouse_host: str = field(default_factory=lambda: _env("CLICKHOUSE_HOST", "127.0.0.1"))
    clickhouse_port: int = field(default_factory=lambda: int(_env("CLICKHOUSE_PORT", "9000")))
    clickhouse_database: str = field(default_factory=lambda: _env("METERFLOW_DB", "meterflow"))
    events_topic: str = field(
        default_factory=lambda: _env("METERFLOW_EVENTS_TOPIC", "usage-events")
    )
    topic_partitions: int = field(default_factory=lambda: int(_env("METERFLOW_PARTITIONS", "2")))
    # SASL_SSL (SCRAM-SHA-512 over TLS, the local stack's default) or PLAINTEXT for a broker
    # without authentication; the CA that signed the brokers' certificates.
    kafka_security: str = field(
        default_factory=lambda: _env("METERFLOW_KAFKA_SECURITY", "SASL_SSL")
    )
    kafka_ca: str = field(
        default_factory=lambda: _env("METERFLOW_KAFKA_CA", str(secrets_dir() / "ca.crt"))
    )

    def __post_init__(self) -> None:
        # Both are spliced into generated SQL and Flink table options (see meterflow.identifiers);
        # the error names the variable because that is where a bad value usually comes from.
        for var, value, kind in (
            ("METERFLOW_DB", self.clickhouse_database, NAME),
            ("METERFLOW_EVENTS_TOPIC", self.events_topic, TOPIC),
        ):
            problem = kind.problem(value) if isinstance(value, str) else f"got {value!r}"
            if problem is not None:
                raise ValueError(f"{var}: {problem}")
        if self.kafka_security not in KAFKA_SECURITY:
            raise ValueError(
                f"METERFLOW_KAFKA_SECURITY: one of {', '.join(KAFKA_SECURITY)}, "
                f"got {self.kafka_security!r}"
            )

    @property
    def replication_factor(self) -> int:
        """Copies of every topic: one per broker, three at most."""
        return min(self.kafka_brokers, 3)

    def kafka_credentials(self, role: str) -> tuple[str, str]:
        """(user, password) of the Kafka principal `role` acts as (`KAFKA_ROLES`)."""
        if role not in KAFKA_ROLES:
            raise ValueError(f"unknown Kafka role {role!r}; one of {', '.join(KAFKA_ROLES)}")
        var = f"METERFLOW_KAFKA_{role.upper()}"
        user = _env(f"{var}_USER", role)
        password = os.environ.get(f"{var}_PASSWORD") or secret(f"kafka-{role}")
        return user, password

    def kafka_config(self, role: str) -> dict[str, str]:
        """librdkafka (confluent-kafka) connection settings for a client acting as `role`."""
        conf = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_security == "PLAINTEXT":
            return conf
        user, password = self.kafka_credentials(role)
        return conf | {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": self.kafka_ca,
        }

    def kafka_java_properties(self, role: str) -> dict[str, str]:
        """The same for a Java Kafka client (Flink's Kafka connector): its `properties.*`."""
        conf = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_security == "PLAINTEXT":
            return conf
        user, password = self.kafka_credentials(role)
        # flink-sql-connector-kafka relocates the Kafka client, its login module with it
        module = f"{FLINK_KAFKA_SHADED}.common.security.scram.ScramLoginModule"
        jaas = f'{module} required username="{_jaas(user)}" password="{_jaas(password)}";'
        return conf | {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": jaas,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.kafka_ca,
        }

    def clickhouse_credentials(self, role: str) -> tuple[str, str]:
        """(user, password) of the ClickHouse user `role` acts as (`CLICKHOUSE_USERS`);
        $METERFLOW_CLICKHOUSE_<ROLE>_USER and _PRINCIPAL name another user and secret."""
        if role not in CLICKHOUSE_USERS:
            raise ValueError(
                f"unknown ClickHouse role {role!r}; one of {', '.join(CLICKHOUSE_USERS)}"
            )
        user, principal = CLICKHOUSE_USERS[role]
        var = f"METERFLOW_CLICKHOUSE_{role.upper()}"
        return _env(f"{var}_USER", user), secret(_env(f"{var}_PRINCIPAL", principal))

    @property
    def dlq_topic(self) -> str:
        return f"{self.events_topic}-dlq"

    @property
    def late_topic(self) -> str:
        return f"{self.events_topic}-late"

    @property
    def alerts_topic(self) -> str:
        return f"{self.events_topic}-alerts"

    # The metering job's outputs to ClickHouse, loaded by `meterflow load` (connectors/loader).
    @property
    def accepted_topic(self) -> str:
        return f"{self.events_topic}-accepted"

    @property
    def late_events_topic(self) -> str:
        return f"{self.events_topic}-late-events"

    @property
    def windows_topic(self) -> str:
        return f"{self.events_topic}-windows"

    @property
    def period_cost_topic(self) -> str:
        return f"{self.events_topic}-period-cost"

    @property
    def alert_rows_topic(self) -> str:
        return f"{self.events_topic}-alert-rows"

    @property
    def alerts_subject(self) -> str:
        return f"{self.alerts_topic}-value"

    @property
    def all_topics(self) -> list[str]:
        return [
            self.events_topic,
            self.dlq_topic,
            self.late_topic,
            self.alerts_topic,
            self.accepted_topic,
            self.late_events_topic,
            self.windows_topic,
            self.period_cost_topic,
            self.alert_rows_topic,
        ]

    @property
    def events_subject(self) -> str:
        # TopicNameStrategy: the subject confluent-kafka's serializer and Flink's format both use.
        return f"{self.events_topic}-value"
