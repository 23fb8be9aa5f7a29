"""API keys (pure): scopes, token format, hashing and what each scope may do.

A token is ``mf_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public -- it is how a key is
listed and revoked and how the stored row is found -- and ``secret`` is 32 random bytes. Only
the SHA-256 of the whole token is stored (docs/decisions/0020-http-api.md says why a fast hash
is right for random tokens and wrong for passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

TOKEN_PREFIX = "mf_"
_TOKEN = re.compile(r"^mf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")


class Scope(StrEnum):
    ADMIN = "admin"  # everything, every customer
    INGEST = "ingest"  # POST /v1/events only, in any customer's name (a product's backend)
    CUSTOMER = "customer"  # read one customer's usage, cost, entitlements and invoices


class Action(StrEnum):
    INGEST = "ingest"
    READ = "read"


class Denied(Exception):
    """The key may not do this: HTTP 403."""


@dataclass(frozen=True)
class NewKey:
    key_id: str
    token: str  # shown once, never stored
    key_hash: str


@dataclass(frozen=True)
class ApiKey:
    """A stored key: what the table holds (no secret)."""

    key_id: str
    key_hash: str
    scope: Scope
    customer_id: str  # "" unless scope is CUSTOMER
    name: str
    created_at: datetime
    revoked: bool = False

    def __post_init__(self) -> None:
        if (self.scope is Scope.CUSTOMER) != bool(self.customer_id):
            raise ValueError("a customer key names its customer, and only a customer key does")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, token, hash_token(token))


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed token, else None (malformed: nothing is looked up)."""
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def valid_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.match(key_id))


def verify(token: str, stored: ApiKey | None) -> ApiKey | None:
    """The stored key when `token` is its live token; None for unknown, wrong or revoked."""
    if stored is None or stored.revoked:
        return None
    # constant time: a timing difference would tell how much of a guessed hash matched
    return stored if hmac.compare_digest(hash_token(token), stored.key_hash) else None


def authorize(key: ApiKey, action: Action, customer_id: str | None = None) -> None:
    """Raise Denied unless `key` may do `action` (on `customer_id`'s data, for reads)."""
    if key.scope is Scope.ADMIN:
        return
    if action is Action.INGEST:
        if key.scope is not Scope.INGEST:
            raise Denied(f"a {key.scope} key cannot send events")
        return
    if key.scope is not Scope.CUSTOMER:
        raise Denied(f"an {key.scope} key cannot read usage")
    if customer_id != key.customer_id:
        raise Denied("this key reads its own customer's data only")
