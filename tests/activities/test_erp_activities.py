"""ERP activities against the NetSuite simulator: accept, credit, post, close, fulfil, invoice."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sample import failure_details, order, plentiful, shipment, state, terms_customer
from orderflow.activities import ErpActivities
from orderflow.canonical import Money, Order, PaymentTerms
from orderflow.canonical.saga import (
    AcceptOrderInput,
    CloseSalesOrderInput,
    ConfirmShipmentInput,
    CreditCheckInput,
    CreditDecision,
    InvoiceOrderInput,
    PostSalesOrderInput,
    PostSalesOrderResult,
    idempotency_key,
    order_reference,
)
from orderflow.sandbox.seed import CATALOG_BY_SKU

pytestmark = pytest.mark.integration


def records(snapshot: dict[str, Any], record_type: str, external_id: str) -> list[dict[str, Any]]:
    """The ERP records of one type filed under an external id."""
    return [r for r in snapshot["records"][record_type] if r.get("externalId") == external_id]


async def post(env: ActivityEnvironment, erp: ErpActivities, sale: Order) -> PostSalesOrderResult:
    """Accept the order for a prepaid buyer and post it, as the saga does."""
    accepted = await env.run(
        erp.accept_order, AcceptOrderInput(order=sale, customer_external_id="shopify-customer-207119551")
    )
    request = PostSalesOrderInput(
        order=sale,
        external_id=order_reference(sale.key),
        erp_customer_id=accepted.erp_customer_id,
        item_ids=accepted.item_ids,
    )
    return await env.run(erp.post_sales_order, request)


async def test_accept_matches_a_known_b2b_customer_on_terms_with_item_ids_and_weights(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful(2)
    # The channel's copy says prepaid; the ERP's record is the master and must not be overwritten.
    sale = order("6001", [(first, 1), (second, 2)])
    before = await state(sandbox, "netsuite")

    result = await env.run(
        erp.accept_order, AcceptOrderInput(order=sale, customer_external_id="shopify-customer-307119551")
    )

    assert result.erp_customer_id == "3001"
    assert result.terms is PaymentTerms.TERMS
    assert result.item_ids == {sku: CATALOG_BY_SKU[sku].erp_item_id for sku in (first, second)}
    assert result.item_weights_oz == {sku: CATALOG_BY_SKU[sku].weight_oz for sku in (first, second)}
    after = await state(sandbox, "netsuite")
    assert after["records"]["customer"] == before["records"]["customer"]


async def test_accept_matches_a_prepaid_buyer_as_prepaid(env: ActivityEnvironment, erp: ErpActivities) -> None:
    (sku,) = plentiful(1)

    result = await env.run(
        erp.accept_order,
        AcceptOrderInput(order=order("6002", [(sku, 1)]), customer_external_id="shopify-customer-207119551"),
    )

    assert (result.erp_customer_id, result.terms) == ("2001", PaymentTerms.PREPAID)


async def test_accept_creates_a_new_customer_once_under_its_external_id(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("6003", [(sku, 1)], customer=terms_customer("990001", "Hooli Logistics"))
    request = AcceptOrderInput(order=sale, customer_external_id="shopify-customer-990001")

    first = await env.run(erp.accept_order, request)
    again = await env.run(erp.accept_order, request)

    assert again.erp_customer_id == first.erp_customer_id
    assert first.terms is PaymentTerms.TERMS
    (customer,) = records(await state(sandbox, "netsuite"), "customer", "shopify-customer-990001")
    assert customer["companyName"] == "Hooli Logistics" and customer["id"] == first.erp_customer_id


async def test_a_buyer_known_only_by_email_gets_one_customer_under_an_id_netsuite_takes(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    # Amazon names its buyer by an anonymised address, and a Shopify guest by email: NetSuite refuses
    # '@' and '.' in an external id, so the order would park at accept.
    (sku,) = plentiful(1)
    sale = order("6004", [(sku, 1)])
    request = AcceptOrderInput(
        order=sale, customer_external_id="amazon-customer-0dwbm0rp92l2x1y@marketplace.amazon.com"
    )
    other = AcceptOrderInput(order=sale, customer_external_id="amazon-customer-0dwbm0rp92l2x1y@marketplace-amazon.com")

    first = await env.run(erp.accept_order, request)
    again = await env.run(erp.accept_order, request)
    different = await env.run(erp.accept_order, other)

    assert again.erp_customer_id == first.erp_customer_id != different.erp_customer_id
    created = [
        c for c in (await state(sandbox, "netsuite"))["records"]["customer"]
        if str(c.get("externalId", "")).startswith("amazon-customer-0dwbm0rp92l2x1y")
    ]  # fmt: skip
    assert len(created) == 2
    assert all(set(c["externalId"]) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for c in created)


async def test_unknown_skus_are_a_permanent_failure_naming_them(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("6004", [(sku, 1), ("NO-SUCH-1", 1), ("NO-SUCH-2", 2)])
    before = await state(sandbox, "netsuite")

    with pytest.raises(ApplicationError) as caught:
        await env.run(erp.accept_order, AcceptOrderInput(order=sale, customer_external_id="shopify-customer-1"))

    assert caught.value.non_retryable
    assert caught.value.type == "ValidationRejectedError"
    assert "NO-SUCH-1, NO-SUCH-2" in caught.value.message
    assert failure_details(caught.value) == {"system": "netsuite", "vendor_code": "UNKNOWN_SKU", "status_code": None}
    assert (await state(sandbox, "netsuite"))["records"]["customer"] == before["records"]["customer"]


@pytest.mark.parametrize(
    ("customer_id", "total", "decision", "words"),
    [
        ("2001", "99999", CreditDecision.APPROVED, "prepaid"),
        ("3001", "1000", CreditDecision.APPROVED, "34,999.50 USD covers"),
        ("3001", "40000", CreditDecision.HOLD, "available credit 34,999.50 USD is less than the order total 40,000.00"),
        ("3002", "200", CreditDecision.HOLD, "limit 10,000.00 USD, balance 9,400.00 USD, unbilled orders 450.00 USD"),
        ("3003", "10", CreditDecision.HOLD, "on credit hold"),
    ],
)
async def test_credit_check_approves_or_holds_with_the_figures(
    env: ActivityEnvironment, erp: ErpActivities, customer_id: str, total: str, decision: CreditDecision, words: str
) -> None:
    result = await env.run(
        erp.check_credit, CreditCheckInput(erp_customer_id=customer_id, order_total=Money.of(total, "USD"))
    )

    assert result.decision is decision
    assert words in result.reason


async def test_posting_twice_upserts_one_sales_order(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("6005", [(sku, 3)])

    first = await post(env, erp, sale)
    again = await post(env, erp, sale)

    assert again.sales_order == first.sales_order
    (sales_order,) = records(await state(sandbox, "netsuite"), "salesOrder", "OF-shopify-6005")
    assert sales_order["id"] == first.sales_order.erp_order_id
    assert [(ln["item"]["id"], ln["quantity"]) for ln in sales_order["item"]] == [(CATALOG_BY_SKU[sku].erp_item_id, 3)]


async def test_close_closes_the_posted_sales_order_and_none_posted_is_success(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("6006", [(sku, 1)])
    await post(env, erp, sale)

    nothing = await env.run(erp.close_sales_order, CloseSalesOrderInput(external_id="OF-shopify-none"))
    closed = await env.run(erp.close_sales_order, CloseSalesOrderInput(external_id="OF-shopify-6006"))
    again = await env.run(erp.close_sales_order, CloseSalesOrderInput(external_id="OF-shopify-6006"))

    assert (nothing.closed, closed.closed, again.closed) == (False, True, True)
    (sales_order,) = records(await state(sandbox, "netsuite"), "salesOrder", "OF-shopify-6006")
    assert all(ln["isClosed"] for ln in sales_order["item"])


async def test_fulfilment_and_invoice_are_recorded_once_however_often_they_run(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("6007", [(sku, 2)])
    posted = await post(env, erp, sale)
    confirm = ConfirmShipmentInput(
        order=sale,
        shipment=shipment("700001", "9400000000000000000001", [(sku, 2)]),
        erp_order_id=posted.sales_order.erp_order_id,
        erp_external_id=posted.sales_order.external_id,
    )
    bill = InvoiceOrderInput(
        erp_order_id=posted.sales_order.erp_order_id, external_id=idempotency_key(sale.key, "invoice")
    )

    fulfilled = await env.run(erp.record_fulfillment, confirm)
    assert (await env.run(erp.record_fulfillment, confirm)).fulfillment == fulfilled.fulfillment
    invoiced = await env.run(erp.invoice_order, bill)
    assert (await env.run(erp.invoice_order, bill)).invoice.erp_invoice_id == invoiced.invoice.erp_invoice_id

    snapshot = await state(sandbox, "netsuite")
    assert fulfilled.fulfillment.external_id == "OF-shopify-6007-fulfil-700001"
    assert len(records(snapshot, "itemFulfillment", "OF-shopify-6007-fulfil-700001")) == 1
    (invoice,) = records(snapshot, "invoice", "OF-shopify-6007-invoice")
    assert invoice["id"] == invoiced.invoice.erp_invoice_id
    assert invoiced.invoice.total.amount == CATALOG_BY_SKU[sku].price * 2


async def test_a_netsuite_outage_stays_retryable(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "netsuite", "kind": "error", "status": 503, "path": "*suiteql*"}
    assert (await sandbox.post("/sandbox/faults", json=rule)).status_code == 201

    with pytest.raises(ApplicationError) as caught:
        await env.run(erp.check_credit, CreditCheckInput(erp_customer_id="3001", order_total=Money.of("1", "USD")))

    assert not caught.value.non_retryable
    assert caught.value.type == "TransientError"
    assert failure_details(caught.value)["status_code"] == 503
