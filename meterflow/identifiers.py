"""The names that reach generated SQL or broker configuration, and the patterns they must match.

Generated statements splice these names in as text: meter ids become string literals in the
metering job's Flink SQL (`SELECT '<meter id>' AS meter ...`), the database name is an unquoted
ClickHouse identifier (`INSERT INTO <db>.events`), property names become literals in the
ClickHouse queries that list a line's events, and the topic is a literal in the Flink table
options. Escaping at each of those places is easy to forget once; refusing at load every name
that would need escaping makes all of them safe, so each pattern below admits no quote,
backtick, backslash, semicolon, whitespace, control or non-ASCII character.

- NAME, for meter ids, plan ids and the ClickHouse database: `^[a-z][a-z0-9_]{0,62}$`. Lower
  case, because ClickHouse identifiers are case-sensitive and a meter id is also a column value
  compared as text; a letter first, so that it is a valid unquoted identifier in both ClickHouse
  and Flink SQL; at most 63 characters, room for the prefixes and suffixes derived from it.
- PROPERTY, for event property names that meters read (quantity, multiply_by, unique_property,
  filters, group_by): `^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`. Property names come from the
  producers' events, where mixed case, dotted (`http.status`) and dashed (`x-region`) keys are
  usual; they only ever appear as quoted literals, so those characters are safe.
- TOPIC, for the events topic: Kafka's legal characters `[A-Za-z0-9._-]`, at most 228, so that
  the longest derived name, the loader's `<topic>-late-events-load-dlq`, stays within Kafka's
  limit of 249; `.` and `..` are refused as Kafka refuses them.

Free-form values are not identifiers and are not checked here: customer, subscription and
grant ids (`cust-042`), event names, filter values and multiplier keys are data, bound as
parameters, escaped where spliced, or compared in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Long values are cut in messages so that an error stays one readable line.
_SHOWN_CHARS = 60


@dataclass(frozen=True)
class IdentifierKind:
    pattern: str
    means: str  # the pattern in words, for people who do not read regular expressions
    reserved: frozenset[str] = frozenset()  # matching names that are refused all the same

    def problem(self, value: str) -> str | None:
        """Why `value` is not a valid name of this kind, or None when it is."""
        if value in self.reserved:
            return f"must not be {value!r}"
        # fullmatch, not match: `$` alone would let a trailing newline through.
        if re.fullmatch(self.pattern, value):
            return None
        return f"must match {self.pattern} ({self.means}), got {shown(value)}"


NAME = IdentifierKind(
    r"^[a-z][a-z0-9_]{0,62}$", "lower-case letters, digits and _, a letter first, at most 63"
)
PROPERTY = IdentifierKind(
    r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$",
    "letters, digits, _ . and -, a letter or _ first, at most 128",
)
# 249 is Kafka's limit; 21 is len("-late-events-load-dlq"), the longest suffix derived from it.
TOPIC = IdentifierKind(
    r"^[A-Za-z0-9._-]{1,228}$", "letters, digits, . _ and -, at most 228", frozenset({".", ".."})
)


def shown(value: object) -> str:
    """`repr(value)`, shortened when long."""
    text = repr(value)
    if isinstance(value, str) and len(text) > _SHOWN_CHARS:
        return f"{text[: _SHOWN_CHARS - 3]}...' ({len(value)} characters)"
    return text
