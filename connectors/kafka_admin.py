"""Topic management on the Kafka broker."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from meterflow.settings import Settings


def ensure_topics(settings: Settings, topics: list[str], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1)
        for t in topics
        if t not in existing
    ]
    if not wanted:
        return []
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
        fut.result()  # raises with the broker's reason
        existing.add(name)
    return [t.topic for t in wanted]


def delete_topics(settings: Settings, topics: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    present = set(admin.list_topics(timeout=timeout).topics)
    doomed = [t for t in topics if t in present]
    if not doomed:
        return
    for fut in admin.delete_topics(doomed, operation_timeout=timeout).values():
        fut.result()
