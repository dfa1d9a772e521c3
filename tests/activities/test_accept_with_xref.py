"""Accept with cross-references, against the NetSuite simulator and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sample import failure_details, order, plentiful, state
from orderflow.activities import ErpActivities
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.canonical import Channel, Customer, PaymentTerms
from orderflow.canonical.saga import AcceptOrderInput, PostSalesOrderInput, order_reference
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.store.db import Database
from orderflow.store.xref import CrossReferences, CustomerXref, SkuXref, XrefKind, XrefSource

pytestmark = pytest.mark.integration

SHOPIFY = Channel.SHOPIFY
BUYER = "shopify-customer-207119551"


@pytest.fixture
def xref(database: Database) -> CrossReferences:
    """The cross-references in a freshly migrated database."""
    return CrossReferences(database)


@pytest.fixture
def erp(netsuite: NetSuiteClient, xref: CrossReferences) -> ErpActivities:
    """The ERP activities as the worker wires them: the NetSuite adapter and the cross-references."""
    return ErpActivities(netsuite, xref=xref)


async def netsuite_customers(sandbox: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The ERP's customer records."""
    return list((await state(sandbox, "netsuite"))["records"]["customer"])


async def test_an_unmapped_sku_the_erp_does_not_know_fails_naming_it_and_succeeds_once_mapped(
    env: ActivityEnvironment, erp: ErpActivities, xref: CrossReferences, sandbox: httpx.AsyncClient
) -> None:
    known, stand_in = plentiful(2)
    sale = order("7001", [(known, 1), ("FOO-1", 2)])
    request = AcceptOrderInput(order=sale, customer_external_id=BUYER)

    with pytest.raises(ApplicationError) as caught:
        await env.run(erp.accept_order, request)

    assert caught.value.non_retryable and caught.value.type == "ValidationRejectedError"
    assert caught.value.message.endswith(
        "no ERP item for shopify SKU 'FOO-1': add it with orderflow xref set sku shopify FOO-1 --erp-item ..."
    )
    assert failure_details(caught.value)["vendor_code"] == "UNKNOWN_SKU"
    assert await xref.listing() == []  # a refused order teaches the store nothing

    # What the operator does: FOO-1 is the channel's name for an item the ERP files under another.
    item_id = CATALOG_BY_SKU[stand_in].erp_item_id
    await xref.set(SkuXref(channel=SHOPIFY, channel_sku="FOO-1", erp_item_id=item_id, wms_sku=stand_in))

    accepted = await env.run(erp.accept_order, request)

    assert accepted.item_ids == {known: CATALOG_BY_SKU[known].erp_item_id, "FOO-1": item_id}
    assert accepted.item_weights_oz == {known: CATALOG_BY_SKU[known].weight_oz}
    skus = await xref.skus(SHOPIFY, [known, "FOO-1"])
    assert (skus[known].erp_item_id, skus[known].source) == (CATALOG_BY_SKU[known].erp_item_id, XrefSource.ERP_LOOKUP)
    assert (skus["FOO-1"].erp_item_id, skus["FOO-1"].source) == (item_id, XrefSource.OPERATOR)
    # The ERP takes the mapped item: the sales order's second line is the stand-in item.
    posted = await env.run(
        erp.post_sales_order,
        PostSalesOrderInput(
            order=sale, external_id=order_reference(sale.key), erp_customer_id=accepted.erp_customer_id,
            item_ids=accepted.item_ids,
        ),
    )  # fmt: skip
    records = (await state(sandbox, "netsuite"))["records"]["salesOrder"]
    (record,) = [r for r in records if r["id"] == posted.sales_order.erp_order_id]
    assert [line["item"]["id"] for line in record["item"]] == [CATALOG_BY_SKU[known].erp_item_id, item_id]


async def test_what_accept_learns_from_the_erp_is_cached_and_used_next_time(
    env: ActivityEnvironment, erp: ErpActivities, xref: CrossReferences, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    request = AcceptOrderInput(order=order("7002", [(sku, 1)]), customer_external_id=BUYER)

    first = await env.run(erp.accept_order, request)

    customer = await xref.customer(SHOPIFY, "207119551")
    assert customer is not None
    assert (customer.erp_customer_id, customer.terms, customer.source) == ("2001", PaymentTerms.PREPAID,
                                                                           XrefSource.ERP_LOOKUP)  # fmt: skip
    assert [e.kind for e in await xref.listing()] == [XrefKind.SKU, XrefKind.CUSTOMER]
    again = await env.run(erp.accept_order, request)
    assert again == first


async def test_a_mapped_customer_is_taken_from_the_cross_reference_not_matched_or_created(
    env: ActivityEnvironment, erp: ErpActivities, xref: CrossReferences, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    await xref.set(CustomerXref(channel=SHOPIFY, channel_customer_id="555", erp_customer_id="3001",
                                terms=PaymentTerms.TERMS))  # fmt: skip
    newcomer = Customer(channel_customer_id="555", name="Grace Hopper", email="grace@example.com")
    before = await netsuite_customers(sandbox)

    accepted = await env.run(
        erp.accept_order,
        AcceptOrderInput(
            order=order("7003", [(sku, 1)], customer=newcomer), customer_external_id="shopify-customer-555"
        ),
    )

    assert (accepted.erp_customer_id, accepted.terms) == ("3001", PaymentTerms.TERMS)
    assert await netsuite_customers(sandbox) == before
    stored = await xref.customer(SHOPIFY, "555")
    assert stored is not None and stored.source is XrefSource.OPERATOR
