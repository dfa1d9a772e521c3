"""Orders, labels and shipments for activity tests, built from the sandbox's seed catalogue."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from orderflow.canonical import (
    Address,
    Channel,
    Customer,
    Label,
    Money,
    Order,
    OrderLine,
    PaymentTerms,
    Rate,
    Shipment,
    ShipmentLine,
    Tracking,
)
from orderflow.sandbox.seed import CATALOG, CATALOG_BY_SKU

SHIP_TO = Address(
    name="Ada Lovelace", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US",
    email="ada@example.com",
)  # fmt: skip


def order(
    channel_order_id: str,
    lines: list[tuple[str, int]],
    *,
    customer: Customer | None = None,
    total: str | None = None,
) -> Order:
    """A Shopify order for seed SKUs at their list prices, by a prepaid buyer unless told otherwise."""
    order_lines = [
        OrderLine(
            line_id=str(index),
            sku=sku,
            name=CATALOG_BY_SKU[sku].name if sku in CATALOG_BY_SKU else sku,
            quantity=qty,
            unit_price=Money.of(CATALOG_BY_SKU[sku].price if sku in CATALOG_BY_SKU else Decimal("1.00"), "USD"),
        )
        for index, (sku, qty) in enumerate(lines, start=1)
    ]
    amount = Decimal(total) if total is not None else sum((line.net.amount for line in order_lines), Decimal(0))
    return Order(
        channel=Channel.SHOPIFY,
        channel_order_id=channel_order_id,
        order_number=f"#{channel_order_id}",
        placed_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        currency="USD",
        customer=customer or Customer(channel_customer_id="207119551", name="Ada Lovelace", email="ada@example.com"),
        ship_to=SHIP_TO,
        lines=order_lines,
        total=Money.of(amount, "USD"),
        ship_method="Standard",
    )


def terms_customer(shopify_id: str, name: str) -> Customer:
    """A B2B buyer as the channel describes them."""
    return Customer(
        channel_customer_id=shopify_id, name=name, terms=PaymentTerms.TERMS, credit_limit=Money.of("1000", "USD")
    )


def label(number: str = "9400111899223344556677") -> Label:
    """A label as the carrier would have sold it."""
    return Label(
        carrier_shipment_id="shp_test0001",
        reference="OF-shopify-test",
        rate=Rate(rate_id="rate_1", carrier="USPS", service="GroundAdvantage", amount=Money.of("7.45", "USD")),
        tracking_number=number,
        label_url="https://labels.example/shp_test0001.png",
        tracking_url=f"https://track.example/{number}",
    )


def shipment(shipment_id: str, number: str, lines: list[tuple[str, int]]) -> Shipment:
    """A parcel that left the warehouse with these lines."""
    return Shipment(
        shipment_id=shipment_id,
        tracking=Tracking(carrier="USPS", number=number, url=f"https://track.example/{number}"),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines],
        shipped_at=datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
    )


def plentiful(count: int, *, minimum: int = 30) -> list[str]:
    """SKUs with at least `minimum` units in both fulfilment centres."""
    return [item.sku for item in CATALOG if min(item.stock.values()) >= minimum][:count]


def only_in_moreno_valley() -> str:
    """A SKU Cicero (8) has none of and Moreno Valley (11) has plenty of."""
    return next(item.sku for item in CATALOG if item.stock[8] == 0 and item.stock[11] >= 10)


def more_in_cicero(than: int = 10) -> tuple[str, int]:
    """A SKU, and a quantity Cicero (8) can fill but Moreno Valley (11) cannot."""
    item = next(i for i in CATALOG if i.stock[8] - i.stock[11] >= than and i.stock[11] >= 1)
    return item.sku, item.stock[11] + 1


async def state(sandbox: httpx.AsyncClient, system: str) -> dict[str, Any]:
    """One simulator's snapshot."""
    response = await sandbox.get(f"/sandbox/state/{system}")
    response.raise_for_status()
    return dict(response.json())


def stock(snapshot: dict[str, Any], sku: str, location_id: int) -> dict[str, Any]:
    """One SKU's stock in one fulfilment centre, from the WMS snapshot."""
    return dict(next(r for r in snapshot["stock"] if r["sku"] == sku and r["location_id"] == location_id))


def failure_details(error: ApplicationError) -> dict[str, Any]:
    """The system, vendor code and status an activity attached to its failure."""
    (details,) = error.details
    assert isinstance(details, dict)
    return details
