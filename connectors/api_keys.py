"""ClickHouse side of the API keys (table api_keys, migration 0007). Writes are made by
`meterflow keys` as the `keys` ClickHouse role; the API reads keys as `reader`."""

from __future__ import annotations

from datetime import UTC, datetime

from clickhouse_driver import Client

from meterflow.api_keys import ApiKey, Scope

_COLUMNS = "key_id, key_hash, scope, customer_id, name, created_at, revoked"
_EPOCH = datetime(1970, 1, 1)


def _row(r: tuple) -> ApiKey:
    return ApiKey(r[0], r[1], Scope(r[2]), r[3], r[4], r[5].replace(tzinfo=UTC), bool(r[6]))


def _write(ch: Client, db: str, key: ApiKey, revoked_at: datetime | None) -> None:
    """One version of the key's row: the created one (row_version 1) or the revoked one (2),
    which ReplacingMergeTree keeps over the first."""
    ch.execute(
        f"INSERT INTO {db}.api_keys ({_COLUMNS}, revoked_at, row_version) VALUES",
        [
            (
                key.key_id,
                key.key_hash,
                key.scope.value,
                key.customer_id,
                key.name,
                _naive(key.created_at),
                int(revoked_at is not None),
                _EPOCH if revoked_at is None else _naive(revoked_at),
                1 if revoked_at is None else 2,
            )
        ],
    )


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None, microsecond=0)


def insert_key(ch: Client, db: str, key: ApiKey) -> None:
    _write(ch, db, key, None)


def key_by_id(ch: Client, db: str, key_id: str) -> ApiKey | None:
    rows = ch.execute(
        f"SELECT {_COLUMNS} FROM {db}.api_keys FINAL WHERE key_id = %(k)s", {"k": key_id}
    )
    return _row(rows[0]) if rows else None


def list_keys(ch: Client, db: str, customer_id: str | None = None) -> list[ApiKey]:
    where = "WHERE customer_id = %(c)s" if customer_id is not None else ""
    rows = ch.execute(
        f"SELECT {_COLUMNS} FROM {db}.api_keys FINAL {where} ORDER BY created_at, key_id",
        {"c": customer_id},
    )
    return [_row(r) for r in rows]


def revoke_key(ch: Client, db: str, key_id: str, at: datetime) -> bool:
    """Mark the key revoked; False when there is no such key. Re-revoking changes nothing."""
    key = key_by_id(ch, db, key_id)
    if key is None:
        return False
    if key.revoked:
        return True
    _write(ch, db, key, at)
    return True
