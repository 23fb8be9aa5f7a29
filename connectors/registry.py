"""Schema registration through the Confluent schema-registry API (served here by Apicurio)."""

from __future__ import annotations

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from meterflow.settings import Settings

COMPATIBILITY = "BACKWARD"


def client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.registry_url})


def register_event_schema(settings: Settings, schema_str: str) -> int:
    """Register `schema_str` under the events subject with BACKWARD compatibility.

    Idempotent: registering an identical schema returns the existing id. The compatibility level
    is set before registering so an incompatible evolution is refused by the registry itself.
    """
    reg = client(settings)
    reg.set_compatibility(subject_name=settings.events_subject, level=COMPATIBILITY)
    return reg.register_schema(settings.events_subject, Schema(schema_str, schema_type="AVRO"))


def register_alert_schema(settings: Settings) -> int:
    """The usage-alert schema under `<alerts topic>-value` (idempotent); returns its id."""
    from meterflow.settings import REPO_ROOT

    text = (REPO_ROOT / "schemas" / "alert" / "v1.avsc").read_text()
    reg = client(settings)
    reg.set_compatibility(subject_name=settings.alerts_subject, level=COMPATIBILITY)
    return reg.register_schema(settings.alerts_subject, Schema(text, schema_type="AVRO"))


def schema_fetcher(settings: Settings):
    """fetch(schema_id) -> schema text; SchemaNotFound only when the registry says 404, so an
    unreachable registry fails the job (and it retries) instead of dead-lettering good data."""
    from meterflow.decoding import SchemaNotFound

    reg = client(settings)

    def fetch(schema_id: int) -> str:
        try:
            return reg.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotFound(schema_id) from exc
            raise

    return fetch
