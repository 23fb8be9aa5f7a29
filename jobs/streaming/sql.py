"""Small pieces of generated Flink SQL shared by the stage builders."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meterflow.settings import Settings


def literal(text: str) -> str:
    """`text` as a Flink SQL string literal. Data values (filter values, multiplier keys) are
    free-form, so anything beyond printable ASCII is written as a Unicode escape rather than
    trusted to the parser."""
    if all(" " <= c <= "~" for c in text):
        return "'" + text.replace("'", "''") + "'"
    out = []
    for c in text:
        if " " <= c <= "~" and c not in "'\\":
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\{ord(c):04X}")
        else:
            out.append(f"\\+{ord(c):06X}")
    return "U&'" + "".join(out) + "'"


def kafka_options(settings: Settings, role: str) -> str:
    """The Kafka connector's `properties.*` options for a client acting as `role`: brokers and,
    on a secured cluster, SCRAM over TLS (the password ends up in the job's plan, which only
    the job's own user can read on a local cluster)."""
    props = settings.kafka_java_properties(role)
    return ",\n        ".join(f"'properties.{k}' = {literal(v)}" for k, v in props.items())


def interval(seconds: int) -> str:
    """A SQL interval literal for any whole number of seconds (SECOND alone caps at 99)."""
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"INTERVAL '{days} {h:02d}:{m:02d}:{sec:02d}' DAY TO SECOND"
