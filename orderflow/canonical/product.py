"""Products and their identities in each system."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.money import Money


class Product(CanonicalModel):
    """A sellable item: its SKU, name, shipping weight and list price."""

    sku: Sku
    name: NonEmptyStr
    weight_oz: Decimal = Field(default=Decimal(16), gt=0, description="Shipping weight in ounces")
    unit_price: Money | None = None


class ErpItem(CanonicalModel):
    """An item record in the ERP, found by SKU."""

    erp_item_id: str
    sku: Sku
    name: str
    is_inactive: bool = False
    base_price: Money | None = None
    weight_oz: Decimal | None = Field(default=None, gt=0, description="Shipping weight in ounces, for parcels")
