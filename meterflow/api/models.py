"""The API's request and response bodies, as pydantic models: they are the OpenAPI description
(docs/openapi.json). Quantities and amounts are decimal strings, times RFC 3339 in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# plain decimal digits: no exponent, no float
Dec = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["12.5"])]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Model):
    detail: str


class EventIn(_Model):
    """One usage event (schemas/usage_event/v1.avsc as JSON)."""

    event_id: str | None = Field(
        None,
        description="idempotency key; generated when absent. Send your own to retry safely: a "
        "retried event with the same id counts once",
    )
    event_name: str
    customer_id: str
    timestamp: datetime | None = Field(None, description="RFC 3339 with a zone; absent: now")
    value: str | None = Field(
        None, description="the quantity as a decimal string (a JSON integer is accepted too)"
    )
    properties: dict[str, str] = Field(default_factory=dict)
    source: str | None = None


class EventBatch(_Model):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventResult(_Model):
    index: int = Field(description="position in the request")
    event_id: str | None
    status: Literal["accepted", "rejected", "not_acknowledged"]
    reason: str | None = Field(
        None,
        description="rejected: a dead-letter reason of the job (TIMESTAMP_TOO_OLD, "
        "NEGATIVE_QUANTITY, ...) or INVALID_EVENT, UNKNOWN_FIELD, DUPLICATE_IN_BATCH",
    )
    detail: str | None = None


class IngestResponse(_Model):
    accepted: int
    rejected: int
    not_acknowledged: int = Field(
        description="accepted but not acknowledged by Kafka in time (only in a 503): retry "
        "the request with the same event ids"
    )
    results: list[EventResult]


class UsageWindowOut(_Model):
    meter: str
    meter_version: int
    dimensions: dict[str, str]
    window_start: datetime
    window_end: datetime
    event_count: int
    quantity: Dec


class UsageResponse(_Model):
    customer_id: str
    windows: list[UsageWindowOut]
    truncated: bool = Field(description="more windows matched than `limit`")


class QuotaOut(_Model):
    limit: Dec
    hard_cap: bool
    remaining: Dec
    threshold_pct: int = Field(description="highest alert threshold reached: 0, 75, 90 or 100")
    allowed: bool


class MeterCost(_Model):
    meter: str
    meter_version: int
    quantity: Dec
    amount: str | None = Field(
        None, description="price of the period's quantity so far, unrounded; null when only "
        "the close can rate it"
    )  # fmt: skip
    amount_rounded: str | None = Field(None, description="rounded to the currency's minor units")
    quota: QuotaOut | None


class CostResponse(_Model):
    customer_id: str
    subscription_id: str | None
    plan: str | None
    price_version: int | None
    currency: str | None
    period_start: datetime | None
    period_end: datetime | None
    as_of: datetime
    meters: list[MeterCost]
    total_rounded: str | None = Field(None, description="sum of the rounded meter amounts")


class EntitlementOut(_Model):
    meter: str
    used: Dec
    limit: str | None = Field(None, description="null: no quota, never refused")
    remaining: str | None
    hard_cap: bool
    threshold_pct: int
    allowed: bool = Field(description="false once a hard-capped quota is used up")


class EntitlementsResponse(_Model):
    customer_id: str
    period_start: datetime | None
    period_end: datetime | None
    as_of: datetime
    entitlements: list[EntitlementOut]


class InvoiceSummary(_Model):
    invoice_id: str
    subscription_id: str
    plan: str
    price_version: int
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal: Dec
    credits: Dec
    total: Dec
    closed_at: datetime


class InvoicesResponse(_Model):
    customer_id: str
    invoices: list[InvoiceSummary]


class InvoiceLineOut(_Model):
    line_no: int
    kind: str
    meter: str
    meter_version: int
    dimensions: str
    plan: str
    price_version: int
    pricing: str = Field(description="the pricing rule that computed the amount")
    quantity: Dec
    amount: Dec
    event_count: int
    events_digest: str
    refers_to: str
    detail: str
    period_start: datetime | None
    period_end: datetime | None


class InvoiceResponse(_Model):
    customer_id: str
    invoice: InvoiceSummary
    lines: list[InvoiceLineOut]
    explanation: str = Field(description="what `meterflow invoices explain` prints")


class Health(_Model):
    status: Literal["ok"]
