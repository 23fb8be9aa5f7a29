"""The local broker's authentication and ACLs, from the clients' side: SCRAM-SHA-512 over TLS,
each principal confined to what connectors.kafka_admin.grants gives it."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from meterflow.settings import Settings
from tests.integration.conftest import Scratch


def errors_of(config: dict, action, wait_s: float = 15.0) -> list[KafkaError]:
    """Run `action(client_config)` and collect the errors librdkafka reports meanwhile."""
    seen: list[KafkaError] = []
    action({**config, "error_cb": seen.append}, seen, wait_s)
    return seen


def list_topics(conf: dict, seen: list[KafkaError], wait_s: float) -> None:
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=wait_s)
    except KafkaException as exc:
        seen.append(exc.args[0])
    admin.poll(1)  # serves the error callbacks, where the cause (authentication, TLS) is told


def test_a_wrong_password_is_refused(scratch: Scratch) -> None:
    conf = scratch.settings.kafka_config("operator") | {"sasl.password": "not-the-password"}
    codes = {e.code() for e in errors_of(conf, list_topics)}
    assert KafkaError._AUTHENTICATION in codes, codes


def test_an_unknown_user_and_a_plaintext_client_get_nothing(scratch: Scratch) -> None:
    conf = scratch.settings.kafka_config("operator") | {"sasl.username": "nobody"}
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors_of(conf, list_topics)}
    plain = {"bootstrap.servers": scratch.settings.kafka_bootstrap, "socket.timeout.ms": 5000}
    with pytest.raises(KafkaException):
        AdminClient(plain).list_topics(timeout=10)  # a TLS port: no metadata, no topics


def test_the_broker_certificate_is_checked(scratch: Scratch) -> None:
    # without the local CA the broker's certificate does not verify: no connection at all
    conf = scratch.settings.kafka_config("operator")
    del conf["ssl.ca.location"]
    codes = {e.code() for e in errors_of(conf, list_topics)}
    assert codes & {KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}, codes


def produce_one(settings: Settings, role: str, topic: str) -> KafkaError | None:
    out: list[KafkaError | None] = []
    p = Producer(settings.kafka_config(role) | {"message.timeout.ms": 15000})
    p.produce(topic, b"x", partition=0, on_delivery=lambda err, _msg: out.append(err))
    p.flush(30)
    assert len(out) == 1
    return out[0]


def read_one(settings: Settings, role: str, topic: str, group: str) -> KafkaError | bytes | None:
    """What fetching partition 0 of `topic` gives first: an error, a record's value, or
    nothing within 15 s."""
    c = Consumer(settings.kafka_config(role) | {"group.id": group, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = c.poll(1)
            if msg is not None:
                return msg.error() or msg.value()
        return None
    finally:
        c.close()


def test_a_producer_writes_the_events_topic_and_nothing_else(scratch: Scratch) -> None:
    s = scratch.settings
    assert produce_one(s, "producer", s.events_topic) is None
    for other in (s.windows_topic, s.dlq_topic, s.accepted_topic):
        err = produce_one(s, "producer", other)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # reading its own topic is refused: at the fetch (no READ on the topic) or, when the
    # consumer looks up its group's coordinator first, there (no group of its own either)
    err = read_one(s, "producer", s.events_topic, "meterflow-loader-sec")
    refused = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}
    assert isinstance(err, KafkaError) and err.code() in refused, err
    # and cannot see the other topics exist
    seen = AdminClient(s.kafka_config("producer")).list_topics(timeout=10).topics
    assert s.events_topic in seen and s.windows_topic not in seen


def test_the_loader_reads_its_topics_only_and_may_not_write_events(scratch: Scratch) -> None:
    s = scratch.settings
    assert produce_one(s, "operator", s.windows_topic) is None
    group = f"meterflow-loader-sec-{scratch.run_id}"
    assert read_one(s, "loader", s.windows_topic, group) == b"x"
    err = produce_one(s, "loader", s.events_topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert produce_one(s, "producer", s.events_topic) is None  # a record it must not get
    # no DESCRIBE either: to the loader the events topic does not exist, nothing is fetched
    assert read_one(s, "loader", s.events_topic, group) is None
    seen = AdminClient(s.kafka_config("loader")).list_topics(timeout=10).topics
    assert s.events_topic not in seen and s.windows_topic in seen


def test_groups_are_confined_to_the_role_prefix(scratch: Scratch) -> None:
    s = scratch.settings
    c = Consumer(s.kafka_config("loader") | {"group.id": "someone-elses-group"})
    try:
        c.subscribe([s.windows_topic])
        deadline, err = time.monotonic() + 20, None
        while err is None and time.monotonic() < deadline:
            msg = c.poll(1)
            err = msg.error() if msg is not None else None
    finally:
        c.close()
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


def test_no_service_principal_may_create_or_delete_topics(scratch: Scratch) -> None:
    s = scratch.settings
    for role in ("producer", "job", "loader", "alerts"):
        admin = AdminClient(s.kafka_config(role))
        fut = admin.create_topics([NewTopic(f"{s.events_topic}-{role}-made", 1, 1)])
        with pytest.raises(KafkaException) as made:
            next(iter(fut.values())).result()
        assert made.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        fut = admin.delete_topics([s.events_topic], operation_timeout=10)
        with pytest.raises(KafkaException) as gone:
            next(iter(fut.values())).result()
        assert gone.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
