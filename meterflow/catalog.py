"""The definitions a billing run needs, loaded together: subscriptions, the price book, meters
and credit grants (each file validated by its own loader)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meterflow.credits import DEFAULT_CREDITS_FILE, Grant, load_grants
from meterflow.meters import DEFAULT_METERS_FILE, Meter, load_meters
from meterflow.price_book import DEFAULT_PRICES_FILE, PriceBook, load_price_book
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE, Subscription, load_subscriptions


@dataclass(frozen=True)
class Catalog:
    subscriptions: Sequence[Subscription]
    book: PriceBook
    meters: Sequence[Meter]
    grants: Sequence[Grant]


def load_catalog(
    subscriptions: Path = DEFAULT_SUBSCRIPTIONS_FILE,
    prices: Path = DEFAULT_PRICES_FILE,
    meters: Path = DEFAULT_METERS_FILE,
    credits: Path | None = DEFAULT_CREDITS_FILE,
) -> Catalog:
    """A missing credits file means no grants; every other file must exist."""
    return Catalog(
        load_subscriptions(subscriptions),
        load_price_book(prices),
        load_meters(meters),
        load_grants(credits) if credits is not None and credits.exists() else [],
    )
