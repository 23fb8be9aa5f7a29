"""Topics, principals and ACLs on the Kafka cluster; every call here acts as the operator."""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from meterflow.settings import GROUP_PREFIXES, KAFKA_ROLES, Settings

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


def ensure_topics(
    settings: Settings,
    topics: list[str],
    timeout: float = 30.0,
    admin: AdminClient | None = None,
) -> list[str]:
    """Create the topics that do not exist yet, with their settings (`topic_configs`), and set
    those settings on the ones that do; return the names created."""
    admin = operator_admin(settings) if admin is None else admin
    existing = set(admin.list_topics(timeout=timeout).topics)
    configs = topic_configs(settings)
    wanted = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
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


def delete_topics(
    settings: Settings,
    topics: list[str],
    timeout: float = 30.0,
    admin: AdminClient | None = None,
) -> None:
    admin = operator_admin(settings) if admin is None else admin
    present = set(admin.list_topics(timeout=timeout).topics)
    doomed = [t for t in topics if t in present]
    if not doomed:
        return
    for fut in admin.delete_topics(doomed, operation_timeout=timeout).values():
        fut.result()


def operator_admin(settings: Settings) -> AdminClient:
    """An admin client acting as the operator. Each one is a TLS + SCRAM handshake: calls that
    go together share one (`admin=`); hold it until their futures resolve, as a collected
    handle fails them."""
    return AdminClient(settings.kafka_config("operator"))


def loader_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """(the topics the loader reads, its dead-letter topics)."""
    from connectors.loader import routes

    rs = routes(settings)
    return [r.topic for r in rs], [r.dlq_topic for r in rs]


def deployment_topics(settings: Settings) -> list[str]:
    return [*settings.all_topics, *loader_topics(settings)[1]]


class Grant(NamedTuple):
    """One ACL: `role` may do `operations` on a resource (LITERAL name, or PREFIXED)."""

    role: str
    resource: str  # topic | group | transactional_id
    name: str
    prefixed: bool
    operations: tuple[str, ...]


def grants(settings: Settings) -> list[Grant]:
    """What each principal of a deployment may do, nothing more (the operator and the broker
    are super users: infra/kafka/server.properties.in). Consumer groups and transactional ids
    are confined to each role's prefix (meterflow.settings.GROUP_PREFIXES)."""
    read, write = ("READ", "DESCRIBE"), ("WRITE", "DESCRIBE")
    job_outputs = [t for t in settings.all_topics if t != settings.events_topic]
    loaded, load_dlqs = loader_topics(settings)
    out = [Grant("producer", "topic", settings.events_topic, False, write)]
    out.append(Grant("job", "topic", settings.events_topic, False, read))
    out += [Grant("job", "topic", t, False, write) for t in job_outputs]
    out.append(Grant("job", "transactional_id", GROUP_PREFIXES["job"], True, write))
    out += [Grant("loader", "topic", t, False, read) for t in loaded]
    out += [Grant("loader", "topic", t, False, write) for t in load_dlqs]
    out.append(Grant("alerts", "topic", settings.alerts_topic, False, read))
    out += [
        Grant(role, "group", prefix, True, ("READ",)) for role, prefix in GROUP_PREFIXES.items()
    ]
    return out


_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}


def acl_bindings(settings: Settings) -> list[AclBinding]:
    return [
        AclBinding(
            _RESOURCE[g.resource],
            g.name,
            ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
            f"User:{settings.kafka_credentials(g.role)[0]}",
            "*",
            AclOperation[op],
            AclPermissionType.ALLOW,
        )
        for g in grants(settings)
        for op in g.operations
    ]


def ensure_principals(
    settings: Settings, timeout: float = 30.0, admin: AdminClient | None = None
) -> list[str]:
    """Create or update the SCRAM credential of every role but the operator's (bootstrapped
    with the cluster) from settings: a rotated password takes effect here. Returns the users."""
    if settings.kafka_security == "PLAINTEXT":
        return []
    users = [settings.kafka_credentials(r) for r in KAFKA_ROLES if r != "operator"]
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts = [UserScramCredentialUpsertion(u, info, p.encode()) for u, p in users]
    admin = operator_admin(settings) if admin is None else admin
    for fut in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
        fut.result()
    return [u for u, _ in users]


def ensure_acls(settings: Settings, timeout: float = 30.0, admin: AdminClient | None = None) -> int:
    """Create the deployment's ACLs (an existing one is left as it is); returns their count."""
    if settings.kafka_security == "PLAINTEXT":
        return 0
    bindings = acl_bindings(settings)
    admin = operator_admin(settings) if admin is None else admin
    for fut in admin.create_acls(bindings, request_timeout=timeout).values():
        fut.result()
    return len(bindings)


def ensure_deployment(settings: Settings) -> list[str]:
    """Everything a deployment needs on the cluster: its topics (the loader's dead-letter
    topics too: the loader may not create topics), principals and ACLs. Returns topics created."""
    admin = operator_admin(settings)
    created = ensure_topics(settings, deployment_topics(settings), admin=admin)
    ensure_principals(settings, admin=admin)
    ensure_acls(settings, admin=admin)
    return created


def missing_topics(settings: Settings, role: str, topics: list[str]) -> list[str]:
    """Those of `topics` that `role` cannot see (absent, or no DESCRIBE for it)."""
    seen = AdminClient(settings.kafka_config(role)).list_topics(timeout=30).topics
    return [t for t in topics if t not in seen]


def delete_deployment(settings: Settings) -> None:
    """Remove what `ensure_deployment` made for these settings: topics and topic ACLs (the
    group and transactional-id grants are shared by every deployment of the cluster)."""
    admin = operator_admin(settings)
    delete_topics(settings, deployment_topics(settings), admin=admin)
    if settings.kafka_security == "PLAINTEXT":
        return
    filters = [
        AclBindingFilter(
            b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
            b.permission_type,
        )
        for b in acl_bindings(settings)
        if b.restype == ResourceType.TOPIC
    ]  # fmt: skip
    for fut in admin.delete_acls(filters, request_timeout=30).values():
        fut.result()
