"""Money arithmetic: exact, single-currency, rounded the way ledgers round."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from orderflow.canonical import CurrencyMismatchError, Money, total


def test_adds_and_subtracts_exactly_where_floats_would_drift() -> None:
    cents = [Money.of("0.10", "USD")] * 3
    assert total(cents, "USD") == Money.of("0.30", "USD")
    assert Money.of("1.00", "USD") - Money.of("0.70", "USD") == Money.of("0.30", "USD")


def test_refuses_to_mix_currencies() -> None:
    with pytest.raises(CurrencyMismatchError, match="USD with EUR"):
        Money.of(1, "USD") + Money.of(1, "EUR")
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of(1, "USD") < Money.of(2, "EUR")


def test_refuses_float_amounts_and_names_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        Money(amount=19.99, currency="USD")  # type: ignore[arg-type]
    assert error.value.errors()[0]["loc"] == ("amount",)
    assert "float" in str(error.value)


def test_refuses_a_malformed_currency_code() -> None:
    with pytest.raises(ValidationError) as error:
        Money.of("1", "US")
    assert error.value.errors()[0]["loc"] == ("currency",)


def test_normalises_currency_case() -> None:
    assert Money.of("5", "usd").currency == "USD"


def test_multiplies_by_quantities_but_not_by_floats() -> None:
    assert Money.of("19.99", "USD") * 3 == Money.of("59.97", "USD")
    assert 2 * Money.of("0.50", "USD") == Money.of("1.00", "USD")
    with pytest.raises(TypeError):
        _ = Money.of("1", "USD") * 1.5  # type: ignore[operator]


def test_rounds_half_even_to_the_currency_minor_unit() -> None:
    assert Money.of("10.005", "USD").rounded().amount == Decimal("10.00")
    assert Money.of("10.015", "USD").rounded().amount == Decimal("10.02")
    assert Money.of("1234.5", "JPY").rounded().amount == Decimal("1234")
    assert Money.of("1.2345", "KWD").rounded().amount == Decimal("1.234")


def test_compares_within_a_currency() -> None:
    assert Money.of("5", "USD") < Money.of("6", "USD")
    assert max([Money.of("5", "USD"), Money.of("7", "USD")]) == Money.of("7", "USD")
    assert -Money.of("5", "USD") == Money.of("-5", "USD")


def test_is_immutable() -> None:
    money = Money.of("5", "USD")
    with pytest.raises(ValidationError):
        money.amount = Decimal(6)  # type: ignore[misc]
