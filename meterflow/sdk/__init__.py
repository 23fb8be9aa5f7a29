"""Producer SDK for client apps: `UsageClient.track()` writes ahead to a local spool, a background
sender produces from the spool to Kafka, and delivery acknowledgements are recorded so a restart
replays exactly the events Kafka has not confirmed, in order, with their original event ids.

Modules: `client` (UsageClient), `spool` (the write-ahead log), `records` (events as built by
track() and stored in the spool), `transport` (Kafka), `metrics`, `errors`.
Why this shape and what each durability setting guarantees: docs/decisions/0007-sdk-spool.md.
"""

from meterflow.sdk.client import UsageClient, default_spool_dir
from meterflow.sdk.errors import (
    InvalidEvent,
    SpoolClosed,
    SpoolCorrupt,
    SpoolError,
    SpoolFull,
    SpoolLocked,
)
from meterflow.sdk.records import build_event, decode_event, encode_event
from meterflow.sdk.spool import Spool
from meterflow.sdk.transport import DeliveryCallback, KafkaTransport, SendError, Transport

__all__ = [
    "DeliveryCallback",
    "InvalidEvent",
    "KafkaTransport",
    "SendError",
    "Spool",
    "SpoolClosed",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "Transport",
    "UsageClient",
    "build_event",
    "decode_event",
    "default_spool_dir",
    "encode_event",
]
