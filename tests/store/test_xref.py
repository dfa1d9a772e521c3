"""Cross-references on SQLite and PostgreSQL: the repository, and `orderflow xref` over it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from orderflow.canonical import Channel, PaymentTerms
from orderflow.cli import app
from orderflow.store.db import Database
from orderflow.store.xref import (
    CrossReference,
    CrossReferences,
    CustomerXref,
    LocationXref,
    ShipMethodXref,
    SkuXref,
    SkuXrefRow,
    XrefKind,
    XrefSource,
)

SHOPIFY = Channel.SHOPIFY


def bolt(item: str = "1001", wms_sku: str | None = "BOLT-M8-S") -> SkuXref:
    """The M8 bolt as Shopify sells it."""
    return SkuXref(channel=SHOPIFY, channel_sku="BOLT-M8-S", erp_item_id=item, wms_sku=wms_sku)


async def sku_rows(database: Database) -> int:
    """How many SKU cross-references are stored."""
    async with database.session() as session:
        return int((await session.execute(select(func.count()).select_from(SkuXrefRow))).scalar_one())


async def test_set_is_an_upsert_unique_per_channel_and_key(database: Database) -> None:
    xref = CrossReferences(database)

    await xref.set(bolt("1001"))
    await xref.set(bolt("1002", wms_sku=None))
    await xref.set(SkuXref(channel=Channel.AMAZON, channel_sku="BOLT-M8-S", erp_item_id="1003"))

    found = await xref.get(XrefKind.SKU, SHOPIFY, "BOLT-M8-S")
    assert isinstance(found, SkuXref)
    assert (found.erp_item_id, found.wms_sku, found.source) == ("1002", None, XrefSource.OPERATOR)
    assert found.updated_at is not None and found.updated_at.tzinfo is not None
    assert (await xref.skus(Channel.AMAZON, ["BOLT-M8-S", "NUT-M8"]))["BOLT-M8-S"].erp_item_id == "1003"
    assert await sku_rows(database) == 2


async def test_remembering_an_erp_lookup_never_overwrites_an_operators_row(database: Database) -> None:
    xref = CrossReferences(database)
    await xref.set(bolt("1001"))

    added = await xref.remember([bolt("1999"), SkuXref(channel=SHOPIFY, channel_sku="NUT-M8", erp_item_id="1005")])

    assert added == 1
    stored = await xref.skus(SHOPIFY, ["BOLT-M8-S", "NUT-M8"])
    assert (stored["BOLT-M8-S"].erp_item_id, stored["BOLT-M8-S"].source) == ("1001", XrefSource.OPERATOR)
    assert (stored["NUT-M8"].erp_item_id, stored["NUT-M8"].source) == ("1005", XrefSource.ERP_LOOKUP)


async def test_every_kind_is_stored_listed_and_deleted(database: Database) -> None:
    xref = CrossReferences(database)
    entries = [
        bolt(),
        CustomerXref(
            channel=SHOPIFY, channel_customer_id="307119551", erp_customer_id="3001", terms=PaymentTerms.TERMS
        ),
        ShipMethodXref(
            channel=SHOPIFY, channel_ship_method="Standard", carrier="USPS", carrier_service="GroundAdvantage"
        ),
        LocationXref(channel=SHOPIFY, channel_location_id="gid-loc-1", warehouse_id="8"),
    ]
    assert await xref.import_all(entries) == 4

    listed = await xref.listing()
    assert [(e.kind, e.key) for e in listed] == [(e.kind, e.key) for e in entries]
    assert await xref.listing(XrefKind.LOCATION) == [listed[3]]
    assert await xref.listing(channel=Channel.AMAZON) == []
    customer = await xref.customer(SHOPIFY, "307119551")
    assert customer is not None and (customer.erp_customer_id, customer.terms) == ("3001", PaymentTerms.TERMS)

    assert await xref.delete(XrefKind.SHIP_METHOD, SHOPIFY, "Standard") is True
    assert await xref.delete(XrefKind.SHIP_METHOD, SHOPIFY, "Standard") is False
    assert [e.kind for e in await xref.listing()] == [XrefKind.SKU, XrefKind.CUSTOMER, XrefKind.LOCATION]


def invoke(database: Database, *args: str) -> tuple[int, str]:
    """Run `orderflow xref ...` against the test database; the exit code and everything printed."""
    # The CLI takes a URL; on PostgreSQL the test's schema goes in through libpq's PGOPTIONS.
    env = {"PGOPTIONS": f"-csearch_path={database.schema}"} if database.schema else {}
    result = CliRunner().invoke(app, ["xref", *args, "--url", database.url], env=env)
    return result.exit_code, result.output


def stored(database: Database) -> list[CrossReference]:
    """Every cross-reference in the database, read afresh (the CLI ran outside the test's event loop)."""

    async def read() -> list[CrossReference]:
        fresh = Database(database.url, schema=database.schema)
        try:
            return await CrossReferences(fresh).listing()
        finally:
            await fresh.dispose()

    return asyncio.run(read())


# The CLI runs its own event loop (asyncio.run), so its tests are plain functions.


def test_cli_set_and_list_every_kind(database: Database) -> None:
    assert (
        invoke(database, "set", "sku", "shopify", "BOLT-M8-S", "--erp-item", "1001", "--wms-sku", "BOLT-M8-S")[0] == 0
    )
    assert (
        invoke(database, "set", "customer", "shopify", "307119551", "--erp-customer", "3001", "--terms", "terms")[0]
        == 0
    )
    assert (
        invoke(database, "set", "ship-method", "shopify", "Standard", "--carrier", "USPS", "--service", "Ground")[0]
        == 0
    )
    assert invoke(database, "set", "location", "shopify", "gid-loc-1", "--warehouse", "8")[0] == 0

    code, output = invoke(database, "list")
    assert code == 0
    assert output.splitlines() == [
        "sku\tshopify\tBOLT-M8-S\terp_item_id=1001, wms_sku=BOLT-M8-S\toperator",
        "customer\tshopify\t307119551\terp_customer_id=3001, terms=terms\toperator",
        "ship-method\tshopify\tStandard\tcarrier=USPS, carrier_service=Ground\toperator",
        "location\tshopify\tgid-loc-1\twarehouse_id=8\toperator",
    ]
    code, output = invoke(database, "list", "location")
    assert (code, output.count("\n")) == (0, 1)


def test_cli_set_refuses_a_bad_item_id_and_stores_nothing(database: Database) -> None:
    code, output = invoke(database, "set", "sku", "shopify", "BOLT-M8-S", "--erp-item", "BOLT")

    assert code == 2 and "erp_item_id" in output
    assert stored(database) == []


def test_cli_imports_a_file_per_kind_with_the_kind_taken_from_its_columns(database: Database, tmp_path: Path) -> None:
    csv = tmp_path / "skus.csv"
    csv.write_text("channel,channel_sku,erp_item_id,wms_sku\nshopify,BOLT-M8-S,1001,\nshopify,NUT-M8,1002,NUT-8\n")

    code, output = invoke(database, "import", str(csv))

    assert code == 0, output
    skus = [e for e in stored(database) if isinstance(e, SkuXref)]
    assert [(e.channel_sku, e.erp_item_id, e.wms_sku) for e in skus] == [
        ("BOLT-M8-S", "1001", None),
        ("NUT-M8", "1002", "NUT-8"),
    ]


def test_cli_imports_a_mixed_file_with_a_kind_column(database: Database, tmp_path: Path) -> None:
    csv = tmp_path / "master.csv"
    csv.write_text(
        "kind,channel,channel_sku,erp_item_id,channel_customer_id,erp_customer_id,terms,channel_location_id,warehouse_id\n"
        "sku,shopify,BOLT-M8-S,1001,,,,,\n"
        "customer,shopify,,,307119551,3001,terms,,\n"
        "location,shopify,,,,,,gid-loc-1,11\n"
    )

    code, output = invoke(database, "import", str(csv))

    assert code == 0, output
    kinds = [(e.kind, e.key) for e in stored(database)]
    assert kinds == [(XrefKind.SKU, "BOLT-M8-S"), (XrefKind.CUSTOMER, "307119551"), (XrefKind.LOCATION, "gid-loc-1")]


def test_cli_import_with_a_bad_row_names_line_and_field_and_imports_nothing(database: Database, tmp_path: Path) -> None:
    csv = tmp_path / "skus.csv"
    csv.write_text(
        "channel,channel_sku,erp_item_id\n"
        "shopify,BOLT-M8-S,1001\n"
        "shopify,NUT-M8,not-a-number\n"
        "ebay,WASHER-8,1003\n"
        "shopify,BOLT-M8-S,1004\n"
    )

    code, output = invoke(database, "import", str(csv))

    assert code == 2
    assert "line 3, erp_item_id" in output
    assert "line 4, channel" in output
    assert "line 5, channel_sku: 'BOLT-M8-S' is already on line 2" in output
    assert "nothing imported" in output
    assert stored(database) == []


def test_cli_import_refuses_a_file_whose_kind_cannot_be_told(database: Database, tmp_path: Path) -> None:
    csv = tmp_path / "what.csv"
    csv.write_text("channel,code\nshopify,X\n")

    code, output = invoke(database, "import", str(csv))

    assert code == 2 and "line 1" in output and "no `kind` column" in output


def test_cli_refuses_an_unmigrated_database_saying_what_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    result = CliRunner().invoke(app, ["xref", "list", "--url", url])

    assert result.exit_code == 2 and "orderflow db upgrade" in result.output
