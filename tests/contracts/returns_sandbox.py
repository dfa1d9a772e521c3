"""Helpers for the return-to-refund contract tests: orders posted, shipped and billed in the sandbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request, Response

from orderflow.adapters.errors import TransientError
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.canonical import (
    Address,
    Channel,
    Customer,
    Discount,
    Money,
    Order,
    OrderLine,
    Shipment,
    ShipmentLine,
    Tracking,
)
from orderflow.sandbox.seed import CATALOG_BY_SKU

T = TypeVar("T")


def erp_order(number: str, lines: dict[str, int], *, discounts: dict[str, str] | None = None) -> Order:
    """A terms customer's order for catalogue SKUs, with optional line discounts (SKU -> amount)."""
    discounts = discounts or {}
    order_lines = [
        OrderLine(
            line_id=str(i),
            sku=sku,
            quantity=qty,
            unit_price=Money.of(CATALOG_BY_SKU[sku].price, "USD"),
            discounts=[Discount(amount=Money.of(discounts[sku], "USD"))] if sku in discounts else [],
        )
        for i, (sku, qty) in enumerate(lines.items(), start=1)
    ]
    subtotal = sum((line.net.amount for line in order_lines), Decimal(0))
    return Order(
        channel=Channel.SHOPIFY, channel_order_id=number, order_number=f"#{number}",
        placed_at=datetime(2025, 8, 1, tzinfo=UTC), currency="USD",
        customer=Customer(name="Acme Industrial Supply", erp_customer_id="3001"),
        ship_to=Address(name="Acme", line1="100 Factory Rd", city="Dayton", region="OH", postal_code="45402",
                        country="US"),
        lines=order_lines, total=Money.of(subtotal, "USD"),
    )  # fmt: skip


def shipment(lines: dict[str, int], number: str = "1Z999") -> Shipment:
    """A shipment of catalogue SKUs under one tracking number."""
    return Shipment(
        shipment_id=f"shp-{number}", tracking=Tracking(carrier="UPS", number=number),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
        shipped_at=datetime(2025, 8, 2, tzinfo=UTC),
    )  # fmt: skip


async def posted_order(
    client: NetSuiteClient,
    number: str,
    lines: dict[str, int],
    *,
    shipped: dict[str, int] | None = None,
    invoiced: bool = False,
    discounts: dict[str, str] | None = None,
) -> str:
    """A sales order in the ERP, optionally fulfilled (all, or `shipped`) and invoiced; its internal id."""
    items = await client.find_items_by_sku(list(lines))
    ref = await client.upsert_sales_order(
        erp_order(number, lines, discounts=discounts), external_id=f"SO-{number}", erp_customer_id="3001",
        item_ids={sku: item.erp_item_id for sku, item in items.items()}, location_id="6",
    )  # fmt: skip
    if shipped is not None or invoiced:
        await client.fulfill_sales_order(ref.erp_order_id, shipment(shipped or lines, f"1Z{number}"),
                                         external_id=f"IF-{number}")  # fmt: skip
    if invoiced:
        await client.invoice_sales_order(ref.erp_order_id, external_id=f"INV-{number}")
    return ref.erp_order_id


async def until_done(step: Callable[[], Awaitable[T]], attempts: int = 30) -> T:
    """Retry a step on transient failures, as Temporal would."""
    for _ in range(attempts - 1):
        try:
            return await step()
        except TransientError:
            continue
    return await step()


async def system_state(sandbox: httpx.AsyncClient, system: str) -> dict[str, Any]:
    """One simulator's snapshot (`/sandbox/state/{system}`)."""
    response = await sandbox.get(f"/sandbox/state/{system}")
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def records_with_external_id(state: dict[str, Any], record_type: str, external_id: str) -> list[dict[str, Any]]:
    """NetSuite records of one type filed under an external id."""
    return [r for r in state["records"][record_type] if r.get("externalId") == external_id]


async def add_fault(sandbox: httpx.AsyncClient, system: str, **rule: Any) -> None:
    """Switch on a fault rule that answers at once (no hold), so a lost answer is a quick 504."""
    response = await sandbox.post("/sandbox/faults", json={"system": system, "hold_seconds": 0, **rule})
    response.raise_for_status()


class WebhookReceiver:
    """A webhook endpoint (a FastAPI app, served by the test) that records every delivery."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/hooks/{system}")
        async def hook(request: Request, system: str) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=200)

    def bodies(self, topic_header: str, topic: str) -> list[tuple[dict[str, str], bytes]]:
        """Deliveries of one topic, by the header that names it."""
        return [(h, b) for h, b in self.received if h.get(topic_header) == topic]


async def tick_until(sandbox: httpx.AsyncClient, done: Callable[[], bool], *, seconds: float = 5.0) -> None:
    """Run the sandbox's engines until `done()` holds (webhooks delivered), or fail."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the sandbox never got there")
        await sandbox.post("/sandbox/tick")
        await asyncio.sleep(0.02)
