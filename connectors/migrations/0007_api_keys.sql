-- Keys of the HTTP API (meterflow serve; meterflow keys create / revoke / list). One row per key;
-- a revocation writes the key's row again with revoked = 1 and a higher row_version, which
-- ReplacingMergeTree keeps (readers use FINAL). The token is never stored: key_hash is the
-- SHA-256 (hex) of the whole token, key_id its public part (docs/decisions/0020-http-api.md).
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_id      String,
    key_hash    String,
    scope       String,
    customer_id String,
    name        String,
    created_at  DateTime,
    revoked     UInt8,
    revoked_at  DateTime,
    row_version UInt64
)
ENGINE = ReplacingMergeTree(row_version)
ORDER BY key_id;
