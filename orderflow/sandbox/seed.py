"""Seed data shared by every simulator, so Shopify, NetSuite and the WMS agree on SKUs and customers.

The catalogue is generated deterministically: the same SKUs, prices, stock and customers on
every machine and after every reset. Some SKUs are deliberately scarce or absent in one
warehouse, one terms customer is near its limit and one is on credit hold, so that backorders
and credit holds happen in the demo without anyone arranging them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Warehouse:
    """A fulfilment centre: its id in the WMS, its location in the ERP and Shopify, its address."""

    wms_location_id: int
    name: str
    erp_location_id: str
    shopify_location_id: int
    street1: str
    city: str
    state: str
    zip: str
    country: str = "US"


@dataclass(frozen=True)
class CatalogItem:
    """One SKU as every system knows it, with its starting stock per warehouse."""

    sku: str
    name: str
    price: Decimal
    weight_oz: Decimal
    erp_item_id: str
    wms_inventory_id: int
    shopify_product_id: int
    shopify_variant_id: int
    shopify_inventory_item_id: int
    stock: dict[int, int] = field(default_factory=dict)  # wms_location_id -> on hand


@dataclass(frozen=True)
class SeedCustomer:
    """A customer in the ERP (and, for D2C buyers, on Shopify), with their credit position."""

    erp_customer_id: str
    entity_id: str
    name: str
    email: str
    terms: str  # "prepaid" or "terms"
    credit_limit: Decimal
    balance: Decimal
    overdue_balance: Decimal
    unbilled_orders: Decimal
    on_credit_hold: bool = False
    shopify_customer_id: int | None = None
    external_id: str | None = None
    street1: str = "1 Main St"
    city: str = "Austin"
    state: str = "TX"
    zip: str = "78701"


WAREHOUSES: tuple[Warehouse, ...] = (
    Warehouse(8, "Cicero (IL)", "6", 72000000008, "5900 W Ogden Ave", "Cicero", "IL", "60804"),
    Warehouse(11, "Moreno Valley (CA)", "7", 72000000011, "17800 Perris Blvd", "Moreno Valley", "CA", "92551"),
)

# ERP-only records the return flow uses. Damaged returns are received into a write-off location
# (no warehouse ships from it), and a restocking fee is a header discount on the credit memo.
RETURNS_WRITE_OFF_LOCATION: tuple[str, str] = ("9", "Returns write-off (damaged)")
RESTOCKING_FEE_ITEM: tuple[str, str] = ("951", "Restocking fee")

_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    # prefix, name, base price, weight in ounces
    ("BOLT-M8", "Hex bolt M8, box of 100", "18.50", "48"),
    ("NUT-M8", "Hex nut M8, box of 100", "9.75", "20"),
    ("WASH-M8", "Flat washer M8, box of 200", "7.20", "16"),
    ("GLOVE-NIT", "Nitrile gloves, case", "24.00", "40"),
    ("TAPE-PKG", "Packing tape, 6 rolls", "14.90", "30"),
    ("LABEL-4X6", "Thermal labels 4x6, roll", "11.40", "22"),
    ("BOX-12", "Shipping carton 12in, bundle of 25", "32.00", "96"),
    ("WRAP-STR", "Stretch wrap 18in", "27.80", "64"),
    ("CABLE-TIE", "Cable ties 8in, bag of 1000", "12.30", "18"),
    ("SAFETY-GL", "Safety glasses, clear", "6.95", "4"),
)
_VARIANTS: tuple[tuple[str, str], ...] = (
    ("S", "small"),
    ("M", "medium"),
    ("L", "large"),
    ("XL", "extra large"),
    ("BULK", "bulk pack"),
    ("PRO", "professional grade"),
)


def _catalog() -> tuple[CatalogItem, ...]:
    items: list[CatalogItem] = []
    n = 0
    for f_index, (prefix, name, price, weight) in enumerate(_FAMILIES):
        for v_index, (code, label) in enumerate(_VARIANTS):
            n += 1
            # Deterministic stock with some texture: every 7th SKU is out in Cicero, every 11th is
            # scarce everywhere, every 13th exists only in Moreno Valley.
            cicero = 40 + (n * 37) % 160
            moreno = 25 + (n * 53) % 140
            if n % 7 == 0:
                cicero = 0
            if n % 11 == 0:
                cicero, moreno = 2, 1
            if n % 13 == 0:
                cicero = 0
            multiplier = Decimal(1) + Decimal(v_index) * Decimal("0.15")
            items.append(
                CatalogItem(
                    sku=f"{prefix}-{code}",
                    name=f"{name} ({label})",
                    price=(Decimal(price) * multiplier).quantize(Decimal("0.01")),
                    weight_oz=Decimal(weight) + Decimal(v_index * 2),
                    erp_item_id=str(1000 + n),
                    wms_inventory_id=9000 + n,
                    shopify_product_id=8000000000 + f_index,
                    shopify_variant_id=4000000000 + n,
                    shopify_inventory_item_id=5000000000 + n,
                    stock={8: cicero, 11: moreno},
                )
            )
    return tuple(items)


CATALOG: tuple[CatalogItem, ...] = _catalog()
CATALOG_BY_SKU: dict[str, CatalogItem] = {item.sku: item for item in CATALOG}

CUSTOMERS: tuple[SeedCustomer, ...] = (
    # Prepaid D2C buyers: they pay on Shopify, so credit never holds them.
    *(
        SeedCustomer(
            erp_customer_id=str(2000 + i),
            entity_id=f"D2C-{i:04d}",
            name=name,
            email=f"{name.split()[0].lower()}@example.com",
            terms="prepaid",
            credit_limit=Decimal(0),
            balance=Decimal(0),
            overdue_balance=Decimal(0),
            unbilled_orders=Decimal(0),
            shopify_customer_id=207119550 + i,
            external_id=f"shopify-customer-{207119550 + i}",
        )
        for i, name in enumerate(
            ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth"],
            start=1,
        )
    ),
    # B2B terms customers with credit limits.
    SeedCustomer("3001", "ACME", "Acme Industrial Supply", "ap@acme.example", "terms",
                 Decimal("50000"), Decimal("12000.50"), Decimal("0"), Decimal("3000"),
                 shopify_customer_id=307119551, external_id="shopify-customer-307119551",
                 street1="100 Factory Rd", city="Dayton", state="OH", zip="45402"),
    SeedCustomer("3002", "GLOBEX", "Globex Distribution", "billing@globex.example", "terms",
                 Decimal("10000"), Decimal("9400"), Decimal("1200"), Decimal("450"),
                 shopify_customer_id=307119552, external_id="shopify-customer-307119552",
                 street1="2 Harbor Way", city="Tacoma", state="WA", zip="98402"),
    SeedCustomer("3003", "INITECH", "Initech Facilities", "payables@initech.example", "terms",
                 Decimal("25000"), Decimal("4000"), Decimal("2500"), Decimal("0"), on_credit_hold=True,
                 shopify_customer_id=307119553, external_id="shopify-customer-307119553",
                 street1="4120 Freidrich Ln", city="Austin", state="TX", zip="78744"),
    SeedCustomer("3004", "UMBRELLA", "Umbrella Maintenance Co", "ap@umbrella.example", "terms",
                 Decimal("75000"), Decimal("0"), Decimal("0"), Decimal("0"),
                 shopify_customer_id=307119554, external_id="shopify-customer-307119554",
                 street1="77 Raccoon St", city="Denver", state="CO", zip="80202"),
)  # fmt: skip
CUSTOMERS_BY_ERP_ID: dict[str, SeedCustomer] = {c.erp_customer_id: c for c in CUSTOMERS}
