"""Kafka client settings per principal and the grants of a deployment (no broker)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.kafka_admin import acl_bindings, grants
from jobs.streaming.sql import kafka_options
from meterflow.settings import FLINK_KAFKA_SHADED, Settings


def test_clients_authenticate_with_scram_over_tls_as_their_role() -> None:
    conf = Settings().kafka_config("loader")
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("loader", "pw-kafka-loader")
    assert conf["ssl.ca.location"].endswith("ca.crt")


def test_credentials_from_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERFLOW_KAFKA_JOB_USER", "billing-job")
    monkeypatch.setenv("METERFLOW_KAFKA_JOB_PASSWORD", "from-the-vault")
    assert Settings().kafka_credentials("job") == ("billing-job", "from-the-vault")


def test_a_missing_credential_names_where_it_is_looked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("METERFLOW_SECRETS", str(tmp_path))
    with pytest.raises(LookupError, match="METERFLOW_SECRET_KAFKA_ALERTS"):
        Settings().kafka_config("alerts")


def test_unknown_roles_and_security_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Kafka role"):
        Settings().kafka_config("admin")
    with pytest.raises(ValueError, match="METERFLOW_KAFKA_SECURITY"):
        Settings(kafka_security="SSL")


def test_plaintext_clusters_get_the_brokers_only() -> None:
    s = Settings(kafka_bootstrap="b:9092", kafka_security="PLAINTEXT")
    assert s.kafka_config("producer") == {"bootstrap.servers": "b:9092"}
    assert kafka_options(s, "job") == "'properties.bootstrap.servers' = 'b:9092'"


def test_flink_options_use_the_connectors_relocated_login_module() -> None:
    opts = kafka_options(Settings(), "job")
    module = f"{FLINK_KAFKA_SHADED}.common.security.scram.ScramLoginModule"
    assert f"'properties.sasl.jaas.config' = '{module} required username=\"job\" " in opts
    assert 'password="pw-kafka-job";\'' in opts
    assert "'properties.ssl.truststore.type' = 'PEM'" in opts


def test_a_quote_in_a_password_cannot_reach_the_jaas_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METERFLOW_KAFKA_JOB_PASSWORD", 'x" user="operator')
    with pytest.raises(ValueError, match="may not contain"):
        Settings().kafka_java_properties("job")


def test_the_producer_may_write_the_events_topic_and_nothing_else() -> None:
    s = replace(Settings(), events_topic="ev")
    mine = [g for g in grants(s) if g.role == "producer"]
    assert [(g.resource, g.name, g.prefixed, g.operations) for g in mine] == [
        ("topic", "ev", False, ("WRITE", "DESCRIBE"))
    ]


def test_no_service_role_may_administer_and_reads_follow_the_data_flow() -> None:
    s = replace(Settings(), events_topic="ev")
    gs = grants(s)
    assert {op for g in gs for op in g.operations} <= {"READ", "WRITE", "DESCRIBE"}
    assert all(g.prefixed is False for g in gs if g.resource == "topic")
    reads = {(g.role, g.name) for g in gs if g.resource == "topic" and "READ" in g.operations}
    assert reads == {
        ("job", "ev"),
        ("loader", "ev-accepted"),
        ("loader", "ev-late-events"),
        ("loader", "ev-windows"),
        ("loader", "ev-period-cost"),
        ("loader", "ev-alert-rows"),
        ("alerts", "ev-alerts"),
    }
    writes = {(g.role, g.name) for g in gs if g.resource == "topic" and "WRITE" in g.operations}
    assert ("loader", "ev-windows-load-dlq") in writes and ("job", "ev") not in writes
    groups = {(g.role, g.name) for g in gs if g.resource == "group"}
    assert groups == {
        ("job", "meterflow-metering"),
        ("loader", "meterflow-loader"),
        ("alerts", "meterflow-alerts"),
    }


def test_bindings_name_the_configured_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERFLOW_KAFKA_PRODUCER_USER", "app-7")
    principals = {b.principal for b in acl_bindings(replace(Settings(), events_topic="ev"))}
    assert principals == {"User:app-7", "User:job", "User:loader", "User:alerts"}
