"""Reading fields of definition files (YAML) with errors that name file, item and field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from meterflow.utc import parse_utc


class ItemContext:
    """Where a value comes from: `<file>: <item kind> '<id>': field '<f>': <why>`, or
    `<file>: <file word>: ...` for problems of the file as a whole."""

    def __init__(
        self, source: str, error: type[ValueError], kind: str, file_word: str, item: str | None
    ) -> None:
        self.source, self.error_type = source, error
        self.kind, self.file_word, self.item = kind, file_word, item

    def error(self, fld: str, msg: str) -> ValueError:
        who = f"{self.kind} {self.item!r}" if self.item else self.file_word
        return self.error_type(f"{self.source}: {who}: field {fld!r}: {msg}")


def required_name(ctx: ItemContext, fld: str, v: Any) -> str:
    if v is None:
        raise ctx.error(fld, "missing")
    if not isinstance(v, str) or not v.strip():
        raise ctx.error(fld, f"must be a non-empty string, got {v!r}")
    return v


def required_timestamp(ctx: ItemContext, fld: str, v: Any) -> datetime:
    if v is None:
        raise ctx.error(fld, "missing")
    try:
        return parse_utc(v)
    except ValueError as exc:
        raise ctx.error(fld, str(exc)) from None
