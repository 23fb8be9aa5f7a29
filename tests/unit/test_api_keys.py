"""API keys (pure): token format, hashing, verification and what each scope may do."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from meterflow.api_keys import (
    Action,
    ApiKey,
    Denied,
    Scope,
    authorize,
    key_id_of,
    new_key,
    valid_key_id,
    verify,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def stored(scope: Scope, customer: str = "", revoked: bool = False) -> tuple[str, ApiKey]:
    k = new_key()
    return k.token, ApiKey(k.key_id, k.key_hash, scope, customer, "", NOW, revoked)


def test_a_new_key_is_random_and_only_its_sha256_is_kept() -> None:
    a, b = new_key(), new_key()
    assert a.token != b.token and a.key_id != b.key_id
    assert a.key_hash == hashlib.sha256(a.token.encode()).hexdigest()
    assert a.token not in a.key_hash and key_id_of(a.token) == a.key_id
    assert valid_key_id(a.key_id)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mf_",
        "Bearer",
        "mf_0123456789ab_short",
        "mf_0123456789AB_" + "a" * 43,  # upper-case hex
        "mf_0123456789ab_" + "a" * 44,
        "xx_0123456789ab_" + "a" * 43,
        "mf_' OR 1=1 --_" + "a" * 43,
        "mf_0123456789ab_" + "a" * 42 + "'",
    ],
)
def test_malformed_tokens_have_no_key_id(token: str) -> None:
    assert key_id_of(token) is None


def test_verify_needs_the_exact_token_of_a_live_key() -> None:
    token, key = stored(Scope.ADMIN)
    assert verify(token, key) is key
    assert verify(token[:-1] + ("A" if token[-1] != "A" else "B"), key) is None
    assert verify(token, None) is None
    _, revoked = stored(Scope.ADMIN, revoked=True)
    assert verify(token, revoked) is None


def test_scopes() -> None:
    admin = stored(Scope.ADMIN)[1]
    ingest = stored(Scope.INGEST)[1]
    cust = stored(Scope.CUSTOMER, "cust-001")[1]
    for action, customer in ((Action.INGEST, None), (Action.READ, "anyone")):
        authorize(admin, action, customer)
    authorize(ingest, Action.INGEST)
    authorize(cust, Action.READ, "cust-001")
    with pytest.raises(Denied):
        authorize(ingest, Action.READ, "cust-001")
    with pytest.raises(Denied):
        authorize(cust, Action.INGEST)
    for other in ("cust-002", "cust-0011", "CUST-001", "", None):
        with pytest.raises(Denied):
            authorize(cust, Action.READ, other)


def test_only_customer_keys_name_a_customer() -> None:
    with pytest.raises(ValueError):
        ApiKey("0" * 12, "h", Scope.CUSTOMER, "", "", NOW)
    with pytest.raises(ValueError):
        ApiKey("0" * 12, "h", Scope.ADMIN, "cust-001", "", NOW)
