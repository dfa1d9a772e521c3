"""Helpers for WMS tests: raw ShipBob calls to the sandbox, sample fulfillment orders, stock look-ups."""

from __future__ import annotations

from typing import Any

import httpx

from orderflow.canonical import Address, FulfillmentLine, FulfillmentOrderRequest
from orderflow.sandbox.seed import CATALOG, CATALOG_BY_SKU
from orderflow.settings import Settings

API = "2026-01"


def vendor_client(settings: Settings, *, channel: bool = True) -> httpx.AsyncClient:
    """An httpx client speaking ShipBob's REST directly (for routes the adapter does not wrap)."""
    headers = {"Authorization": f"Bearer {settings.wms.token.get_secret_value()}"}
    if channel:
        headers["shipbob_channel_id"] = str(settings.wms.channel_id)
    return httpx.AsyncClient(base_url=f"{settings.wms.base_url}/{API}", headers=headers, timeout=10)


def fulfillment_request(
    reference: str, lines: list[tuple[str, int]], *, warehouse_id: str | None = None, ship_method: str = "Standard"
) -> FulfillmentOrderRequest:
    """A fulfillment order for catalogue SKUs, shipped to a fixed D2C customer."""
    return FulfillmentOrderRequest(
        reference=reference,
        order_number=reference.rsplit(":", 1)[-1],
        ship_to=Address(
            name="Ada Lovelace",
            line1="1 Main St",
            city="Austin",
            region="TX",
            postal_code="78701",
            country="US",
            email="ada@example.com",
        ),
        ship_method=ship_method,
        lines=[
            FulfillmentLine(sku=sku, quantity=qty, name=CATALOG_BY_SKU[sku].name if sku in CATALOG_BY_SKU else sku)
            for sku, qty in lines
        ],
        warehouse_id=warehouse_id,
        channel="shopify",
    )


def stock_cell(state: dict[str, Any], sku: str, location_id: int) -> dict[str, Any]:
    """One SKU's stock in one fulfilment centre, from the simulator's snapshot."""
    for row in state["stock"]:
        if row["sku"] == sku and row["location_id"] == location_id:
            return dict(row)
    raise KeyError((sku, location_id))


def plentiful_skus(count: int, *, minimum: int = 30) -> list[str]:
    """SKUs with at least `minimum` units in both fulfilment centres."""
    return [item.sku for item in CATALOG if min(item.stock.values()) >= minimum][:count]


def split_only_sku() -> tuple[str, int]:
    """A SKU and a quantity that no single centre can fill but the two together can."""
    for item in CATALOG:
        cicero, moreno = item.stock[8], item.stock[11]
        if cicero and moreno and max(cicero, moreno) + 1 <= cicero + moreno:
            return item.sku, max(cicero, moreno) + 1
    raise LookupError("the seed has no SKU split across both centres")


def scarce_sku() -> str:
    """A SKU with only a couple of units in the whole network."""
    for item in CATALOG:
        if sum(item.stock.values()) <= 3:
            return item.sku
    raise LookupError("the seed has no scarce SKU")
