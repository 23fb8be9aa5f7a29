"""Command-line arguments shared by the operator commands and the jobs' own entry points."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from meterflow.credits import DEFAULT_CREDITS_FILE
from meterflow.meters import DEFAULT_METERS_FILE
from meterflow.price_book import DEFAULT_PRICES_FILE
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE
from meterflow.utc import parse_utc


def add_catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subscriptions", type=Path, default=DEFAULT_SUBSCRIPTIONS_FILE)
    p.add_argument("--prices", type=Path, default=DEFAULT_PRICES_FILE)
    p.add_argument("--meters", type=Path, default=DEFAULT_METERS_FILE)
    p.add_argument("--credits", type=Path, default=DEFAULT_CREDITS_FILE)


def utc_time(text: str) -> datetime:
    """argparse type for a time given on the command line (ISO-8601; naive means UTC)."""
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
