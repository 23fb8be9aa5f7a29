"""The three-broker option of the local stack (KAFKA_BROKERS=3): one broker killed with
SIGKILL under load loses no acknowledged record, duplicates none, and needs no one to act —
the producer's writes go on against the other two, and the killed broker, started again,
catches up by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.kafka_admin import ensure_deployment, operator_admin
from meterflow.settings import REPO_ROOT, Settings

# Ports of its own: the stack's single broker runs beside it.
PORT, CONTROLLER_PORT = 19192, 19193
RATE, SECONDS, KILL_AT = 2000, 24, 8  # events/s asked, how long, when the broker dies


def stack(var: Path, *args: str) -> None:
    env = os.environ | {
        "METERFLOW_VAR": str(var), "KAFKA_BROKERS": "3",
        "KAFKA_PORT": str(PORT), "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
    }  # fmt: skip
    subprocess.run(["bash", str(REPO_ROOT / "infra/stack.sh"), *args], env=env, check=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    var = tmp_path_factory.mktemp("kafka3")
    stack(var, "start", "kafka")
    mp = pytest.MonkeyPatch()
    mp.setenv("METERFLOW_VAR", str(var))  # the cluster's own credentials and CA
    try:
        bootstrap = ",".join(f"127.0.0.1:{PORT + 2 * n}" for n in range(3))
        settings = replace(
            Settings(), kafka_bootstrap=bootstrap, kafka_brokers=3, events_topic="k3-events",
            kafka_ca=str(var / "secrets" / "ca.crt"),
        )  # fmt: skip
        ensure_deployment(settings)
        yield settings, var
    finally:
        mp.undo()
        stack(var, "stop", "kafka")


def partition_state(settings: Settings, topic: str) -> dict[int, tuple[int, list[int]]]:
    md = operator_admin(settings).list_topics(topic, timeout=10).topics[topic]
    return {p.id: (p.leader, sorted(p.isrs)) for p in md.partitions.values()}


def test_a_killed_broker_loses_nothing_and_needs_no_one(cluster: tuple[Settings, Path]) -> None:
    settings, var = cluster
    topic = settings.events_topic
    before = partition_state(settings, topic)
    assert all(isr == [1, 2, 3] for _, isr in before.values()), before
    # the SDK's producer settings: idempotent, acks=all
    p = Producer(
        settings.kafka_config("producer")
        | {"enable.idempotence": True, "acks": "all", "linger.ms": 20}
    )
    failed: list[KafkaError] = []
    acked: list[bytes] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked.append(msg.key())

    victim = before[0][0]  # the leader of partition 0
    killed_at = None
    sent, t0 = 0, time.monotonic()
    while (now := time.monotonic() - t0) < SECONDS:
        while sent < now * RATE:
            p.produce(topic, key=b"%09d" % sent, value=b"v", on_delivery=on_delivery)
            sent += 1
        if killed_at is None and now >= KILL_AT:
            pid = int((var / "run" / f"kafka-{victim}.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            killed_at = now
        p.poll(0.01)
    assert p.flush(120) == 0
    assert failed == [], failed[:3]
    assert len(acked) == sent

    during = partition_state(settings, topic)
    assert all(leader != victim and victim not in isr for leader, isr in during.values())

    # every acknowledged record is there exactly once
    c = Consumer(
        settings.kafka_config("operator")
        | {"group.id": "k3-check", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    parts = [TopicPartition(topic, n) for n in before]
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    c.assign([TopicPartition(topic, n, 0) for n in before])
    keys: Counter[bytes] = Counter()
    deadline = time.monotonic() + 120
    while sum(keys.values()) < sum(ends.values()) and time.monotonic() < deadline:
        for msg in c.consume(10_000, timeout=1):
            assert msg.error() is None, msg.error()
            keys[msg.key()] += 1
    c.close()
    assert len(keys) == sent and set(keys.values()) == {1}, (
        f"{sent} sent, {len(keys)} distinct stored, "
        f"{sum(n - 1 for n in keys.values() if n > 1)} duplicates"
    )

    # started again (as `make up` would), it rejoins every ISR by itself
    t_restart = time.monotonic()
    stack(var, "start", "kafka")
    while any(isr != [1, 2, 3] for _, isr in partition_state(settings, topic).values()):
        assert time.monotonic() - t_restart < 120, partition_state(settings, topic)
        time.sleep(0.5)
    print(
        f"\n3 brokers: {sent} records at {RATE}/s asked, broker {victim} killed at "
        f"{killed_at:.1f} s: 0 lost, 0 duplicated, 0 failed deliveries; back in every ISR "
        f"{time.monotonic() - t_restart:.1f} s after its restart"
    )
