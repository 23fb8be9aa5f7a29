"""The Confluent wire frame around every Avro record on our topics (pure).

A frame is magic byte 0, the writer schema's registry id as 4 bytes big-endian, then the Avro
body. Consumers with a registry client (ours and any other) find the writer schema from it.
"""

from __future__ import annotations

import struct

MAGIC = 0
_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, schema_id) + body


def split_confluent_frame(payload: bytes) -> tuple[int, bytes] | None:
    """(schema id, Avro body), or None when `payload` is not a Confluent frame."""
    if len(payload) < HEADER_SIZE or payload[0] != MAGIC:
        return None
    _, schema_id = _HEADER.unpack_from(payload)
    return schema_id, payload[HEADER_SIZE:]
