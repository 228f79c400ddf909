"""Money is Decimal yuan; rounded half-up to 0.01 only on statements."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

FEN = Decimal("0.01")


def yuan(value: float | int | str | Decimal) -> Decimal:
    """Exact Decimal from a number; floats go through their shortest repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def round_statement(value: Decimal) -> Decimal:
    """Round half-up to the fen, as printed on a statement."""
    return value.quantize(FEN, rounding=ROUND_HALF_UP)
