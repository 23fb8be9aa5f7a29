"""Topic management on the Kafka broker."""

from __future__ import annotations

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from meterflow.settings import Settings

# The events topic takes records far over the job's own limit (64 KiB) so that an oversized
# record from any producer reaches the job and is dead-lettered with its reason and bytes,
# instead of being refused at the broker where only that producer would ever know
# (docs/decisions/0016-oversized-records.md). The dead-letter topic carries the bytes base64 in
# JSON: 4/3 of the largest record plus the envelope.
EVENTS_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DLQ_MAX_MESSAGE_BYTES = 24 * 1024 * 1024


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic broker settings that differ from the broker's defaults."""
    return {
        settings.events_topic: {"max.message.bytes": str(EVENTS_MAX_MESSAGE_BYTES)},
        settings.dlq_topic: {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
    }


def ensure_topics(settings: Settings, topics: list[str], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet, with their settings (`topic_configs`), and set
    those settings on the ones that do; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    configs = topic_configs(settings)
    wanted = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            config=configs.get(t, {}),
        )
        for t in topics
        if t not in existing
    ]
    if wanted:
        for fut in admin.create_topics(wanted, operation_timeout=timeout).values():
            fut.result()  # raises with the broker's reason
    present = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            t,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in configs[t].items()
            ],
        )
        for t in topics
        if t in existing and t in configs
    ]
    if present:
        for fut in admin.incremental_alter_configs(present).values():
            fut.result()
    return [t.topic for t in wanted]


def delete_topics(settings: Settings, topics: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    present = set(admin.list_topics(timeout=timeout).topics)
    doomed = [t for t in topics if t in present]
    if not doomed:
        return
    for fut in admin.delete_topics(doomed, operation_timeout=timeout).values():
        fut.result()
