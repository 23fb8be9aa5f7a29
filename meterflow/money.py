"""Currencies and the one rounding rule for money.

Amounts stay unrounded Decimals through pricing; `round_amount` is applied once per invoice
line and nowhere else. Rounding intermediate values (per event, per tier, per window) would make
an invoice depend on how usage happened to be split, and the rounding differences would add up.
The rule is commercial rounding: half away from zero (ROUND_HALF_UP), also for negative amounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

# ISO 4217 minor units (digits after the decimal point) of the currencies we bill in.
_MINOR_UNITS: dict[str, int] = {
    "AUD": 2,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "INR": 2,
    "MXN": 2,
    "NOK": 2,
    "NZD": 2,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "USD": 2,
    "ZAR": 2,
    "CLP": 0,
    "ISK": 0,
    "JPY": 0,
    "KRW": 0,
    "VND": 0,
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
}


@dataclass(frozen=True)
class Currency:
    code: str
    minor_units: int

    def __post_init__(self) -> None:
        if len(self.code) != 3 or not self.code.isascii() or not self.code.isupper():
            raise ValueError(f"currency code must be three upper-case letters, got {self.code!r}")
        if isinstance(self.minor_units, bool) or self.minor_units not in range(5):
            raise ValueError(f"{self.code}: minor units must be 0..4, got {self.minor_units!r}")

    @property
    def quantum(self) -> Decimal:
        """The smallest amount an invoice line can show, e.g. 0.01 for USD, 1 for JPY."""
        return Decimal(1).scaleb(-self.minor_units)


def currency(code: str) -> Currency:
    # Exact match only: one spelling per currency keeps price books and invoices comparable.
    if code not in _MINOR_UNITS:
        raise ValueError(f"unknown currency {code!r} (an ISO 4217 code such as USD, EUR, JPY)")
    return Currency(code, _MINOR_UNITS[code])


def round_amount(amount: Decimal, currency: Currency) -> Decimal:
    """`amount` rounded half away from zero to the currency's minor units (-0.005 USD -> -0.01)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal, got {amount!r}")
    # Enough precision that quantize never fails for large amounts (default precision is 28).
    ctx = Context(prec=max(28, amount.adjusted() + currency.minor_units + 2))
    rounded = amount.quantize(currency.quantum, rounding=ROUND_HALF_UP, context=ctx)
    # -0.004 rounds to -0.00; an invoice line must not show a negative zero.
    return rounded.copy_abs() if rounded.is_zero() else rounded


def format_amount(amount: Decimal, currency: Currency) -> str:
    """`amount` as an invoice shows it: exactly the currency's minor units (1.8 USD -> "1.80",
    1800 JPY -> "1800"). Display never rounds: an amount with more digits than the currency has
    (an unrounded per-window amount) is printed in full rather than made to look billed."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal, got {amount!r}")
    ctx = Context(prec=max(28, amount.adjusted() + currency.minor_units + 2))
    shown = amount.quantize(currency.quantum, context=ctx)
    if shown != amount:
        return f"{amount.normalize(ctx):f}"
    return f"{(shown.copy_abs() if shown.is_zero() else shown):f}"
