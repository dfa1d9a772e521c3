"""NetSuite's side of a return, against the simulator: authorization, receipts, credit, cancellation of lines.

Amounts are checked against the sandbox's own records (`/sandbox/state/netsuite`), to the cent.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from contracts.returns_sandbox import (
    add_fault,
    posted_order,
    records_with_external_id,
    system_state,
    until_done,
)

from orderflow.adapters.errors import TransientError, ValidationRejectedError
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.canonical import ItemCondition, Money, RefundLine, ReturnLine, SalesOrderStatus
from orderflow.canonical.erp import ReturnAuthorizationStatus
from orderflow.sandbox.seed import CATALOG_BY_SKU, RETURNS_WRITE_OFF_LOCATION
from orderflow.settings import Settings

pytestmark = pytest.mark.integration

WRITE_OFF = RETURNS_WRITE_OFF_LOCATION[0]


@pytest.fixture
def client(http: httpx.AsyncClient, settings: Settings) -> NetSuiteClient:
    return NetSuiteClient(http, settings.netsuite)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


async def test_a_partial_return_is_received_in_two_locations_and_credited_to_the_cent(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    # 3 x 18.50 less a 1.00 discount sells at 54.50, so a unit is 18.1666...: the credit must round once.
    order_id = await posted_order(client, "5001", {"BOLT-M8-S": 3, "NUT-M8-M": 2}, invoiced=True,
                                  discounts={"BOLT-M8-S": "1.00"})  # fmt: skip
    ra = await client.create_return_authorization(
        order_id, [ReturnLine(sku="BOLT-M8-S", quantity=2), ReturnLine(sku="NUT-M8-M", quantity=1)],
        external_id="RMA-5001",
    )  # fmt: skip
    authorization = await client.get_return_authorization(ra.erp_id)
    assert authorization.status is ReturnAuthorizationStatus.PENDING_RECEIPT
    assert authorization.erp_order_id == order_id
    assert {(ln.sku, ln.quantity, ln.rate.amount) for ln in authorization.lines} == {
        ("BOLT-M8-S", 2, Decimal("18.1667")), ("NUT-M8-M", 1, CATALOG_BY_SKU["NUT-M8-M"].price)}  # fmt: skip
    assert authorization.total == usd("36.33") + Money.of(CATALOG_BY_SKU["NUT-M8-M"].price, "USD")

    sellable = await client.receive_return(ra.erp_id, [ReturnLine(sku="BOLT-M8-S", quantity=1)],
                                           external_id="IR-5001-1", location_id="6")  # fmt: skip
    damaged = await client.receive_return(
        ra.erp_id, [ReturnLine(sku="BOLT-M8-S", quantity=1, condition=ItemCondition.DAMAGED)],
        external_id="IR-5001-2", location_id=WRITE_OFF,
    )  # fmt: skip
    again = await client.receive_return(ra.erp_id, [ReturnLine(sku="BOLT-M8-S", quantity=1)], external_id="IR-5001-1")
    assert again == sellable
    partly = await client.get_return_authorization(ra.erp_id)
    assert partly.status is ReturnAuthorizationStatus.PENDING_REFUND_PARTIALLY_RECEIVED
    assert [(ln.sku, ln.quantity_received, ln.quantity_open) for ln in partly.lines] == [
        ("BOLT-M8-S", 2, 0), ("NUT-M8-M", 0, 1)]  # fmt: skip

    memo_ref = await client.create_credit_memo(ra.erp_id, external_id="CM-5001", tax=usd("2.27"),
                                               restocking_fee=usd("1.50"))  # fmt: skip
    memo = await client.get_credit_memo(memo_ref.erp_id)
    assert memo.created_from_id == ra.erp_id
    assert [(ln.sku, ln.quantity, ln.amount) for ln in memo.lines] == [("BOLT-M8-S", 2, usd("36.33"))]
    assert memo.tax_total == usd("2.27")
    assert memo.total == usd("37.10")  # 36.33 + 2.27 tax - 1.50 restocking fee
    assert await client.find_credit_memo("CM-5001") == memo
    assert await client.find_credit_memo("CM-NONE") is None

    state = await system_state(sandbox, "netsuite")
    receipts = {r["externalId"]: r for r in state["records"]["itemReceipt"]}
    assert receipts["IR-5001-1"]["item"][0]["location"]["id"] == "6"
    assert receipts["IR-5001-2"]["item"][0]["location"]["id"] == WRITE_OFF
    assert damaged.erp_id == receipts["IR-5001-2"]["id"]
    (stored,) = records_with_external_id(state, "creditMemo", "CM-5001")
    assert Decimal(str(stored["total"])) == Decimal("37.10")
    assert stored["discountItem"]["refName"] == "Restocking fee"
    (ra_record,) = records_with_external_id(state, "returnAuthorization", "RMA-5001")
    assert ra_record["status"]["id"] == "Partially Received"  # the nut is still expected, nothing owed

    # The nut arrives later: a second receipt, a second memo for it alone.
    await client.receive_return(ra.erp_id, [ReturnLine(sku="NUT-M8-M", quantity=1)], external_id="IR-5001-3")
    second = await client.get_credit_memo((await client.create_credit_memo(ra.erp_id, external_id="CM-5001-2")).erp_id)
    assert [(ln.sku, ln.quantity) for ln in second.lines] == [("NUT-M8-M", 1)]
    assert second.total == Money.of(CATALOG_BY_SKU["NUT-M8-M"].price, "USD")
    assert (await client.get_return_authorization(ra.erp_id)).status is ReturnAuthorizationStatus.REFUNDED


async def test_a_cash_refund_credits_what_was_received(client: NetSuiteClient) -> None:
    order_id = await posted_order(client, "5002", {"GLOVE-NIT-S": 2}, invoiced=True)
    ra = await client.create_return_authorization(order_id, [ReturnLine(sku="GLOVE-NIT-S", quantity=2)],
                                                  external_id="RMA-5002")  # fmt: skip
    await client.receive_return(ra.erp_id, [ReturnLine(sku="GLOVE-NIT-S", quantity=1)], external_id="IR-5002")
    refund = await client.create_cash_refund(ra.erp_id, external_id="CR-5002", tax=usd("1.50"))
    assert refund.record_type == "cashRefund"
    read = await client.get_cash_refund(refund.erp_id)
    assert (read.record_type, read.total) == ("cashRefund", usd("24.00") + usd("1.50"))
    assert await client.find_credit_memo("CR-5002") is None  # a cash refund is not a credit memo


async def test_returns_are_net_of_earlier_authorizations_and_a_closed_one_gives_its_units_back(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await posted_order(client, "5003", {"TAPE-PKG-S": 3}, invoiced=True)
    first = await client.create_return_authorization(order_id, [ReturnLine(sku="TAPE-PKG-S", quantity=2)],
                                                     external_id="RMA-5003-1")  # fmt: skip
    second = await client.create_return_authorization(order_id, [ReturnLine(sku="TAPE-PKG-S", quantity=1)],
                                                      external_id="RMA-5003-2")  # fmt: skip
    with pytest.raises(ValidationRejectedError):
        await client.create_return_authorization(order_id, [ReturnLine(sku="TAPE-PKG-S", quantity=1)],
                                                 external_id="RMA-5003-3")  # fmt: skip
    await client.receive_return(first.erp_id, [ReturnLine(sku="TAPE-PKG-S", quantity=1)], external_id="IR-5003-1")

    closed = await client.close_return_authorization(first.erp_id)
    assert closed.status is ReturnAuthorizationStatus.CLOSED
    assert await client.close_return_authorization(first.erp_id) == closed
    with pytest.raises(ValidationRejectedError):
        await client.receive_return(first.erp_id, [ReturnLine(sku="TAPE-PKG-S", quantity=1)], external_id="IR-5003-2")
    # The closed authorization keeps the unit it received; the one that never came may be returned again.
    third = await client.create_return_authorization(order_id, [ReturnLine(sku="TAPE-PKG-S", quantity=1)],
                                                     external_id="RMA-5003-3")  # fmt: skip

    listed = await client.list_return_authorizations(order_id)
    assert [ra.erp_return_authorization_id for ra in listed] == [first.erp_id, second.erp_id, third.erp_id]
    assert [ra.status for ra in listed] == [ReturnAuthorizationStatus.CLOSED,
                                            ReturnAuthorizationStatus.PENDING_RECEIPT,
                                            ReturnAuthorizationStatus.PENDING_RECEIPT]  # fmt: skip
    assert listed[0].authorized() == {"TAPE-PKG-S": 1}
    state = await system_state(sandbox, "netsuite")
    (stored,) = records_with_external_id(state, "returnAuthorization", "RMA-5003-1")
    assert stored["status"]["id"] == "Closed" and all(line["isClosed"] for line in stored["item"])
    assert await client.list_return_authorizations(await posted_order(client, "5004", {"TAPE-PKG-S": 1})) == []


async def test_credit_memos_and_cash_refunds_are_made_once_when_answers_are_lost(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await posted_order(client, "5005", {"CABLE-TIE-S": 4}, invoiced=True)
    ra = await client.create_return_authorization(order_id, [ReturnLine(sku="CABLE-TIE-S", quantity=4)],
                                                  external_id="RMA-5005")  # fmt: skip
    await client.receive_return(ra.erp_id, [ReturnLine(sku="CABLE-TIE-S", quantity=2)], external_id="IR-5005-1")
    await add_fault(sandbox, "netsuite", kind="timeout_after_commit", path="*!transform/creditMemo", times=1)
    with pytest.raises(TransientError):
        await client.create_credit_memo(ra.erp_id, external_id="CM-5005", tax=usd("0.99"))
    memo = await client.create_credit_memo(ra.erp_id, external_id="CM-5005", tax=usd("0.99"))

    await client.receive_return(ra.erp_id, [ReturnLine(sku="CABLE-TIE-S", quantity=2)], external_id="IR-5005-2")
    await add_fault(sandbox, "netsuite", kind="timeout_after_commit", path="*!transform/cashRefund", times=1)
    refund = await until_done(lambda: client.create_cash_refund(ra.erp_id, external_id="CR-5005"))

    state = await system_state(sandbox, "netsuite")
    assert [r["id"] for r in records_with_external_id(state, "creditMemo", "CM-5005")] == [memo.erp_id]
    assert [r["id"] for r in records_with_external_id(state, "cashRefund", "CR-5005")] == [refund.erp_id]
    unit = CATALOG_BY_SKU["CABLE-TIE-S"].price
    assert (await client.get_credit_memo(memo.erp_id)).total == Money.of(2 * unit, "USD") + usd("0.99")
    assert (await client.get_cash_refund(refund.erp_id)).total == Money.of(2 * unit, "USD")
    assert (await client.get_return_authorization(ra.erp_id)).status is ReturnAuthorizationStatus.REFUNDED


async def test_a_refund_made_in_shopify_admin_credits_the_invoice_once(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await posted_order(client, "5006", {"BOX-12-M": 2, "WRAP-STR-S": 1}, invoiced=True)
    invoice = (await system_state(sandbox, "netsuite"))["records"]["invoice"][0]
    assert invoice["createdFrom"]["id"] == order_id
    # As `refund_from_webhook` gives it: the line amount includes the line's tax.
    lines = [RefundLine(line_id="11", sku="BOX-12-M", quantity=1, amount=usd("39.12"))]
    await add_fault(sandbox, "netsuite", kind="timeout_after_commit", path="*!transform/creditMemo", times=1)
    with pytest.raises(TransientError):
        await client.credit_invoice(invoice["id"], lines, external_id="SHOPIFY-REFUND-77", memo="Shopify refund 77",
                                    shipping=usd("4.00"))  # fmt: skip
    ref = await client.credit_invoice(invoice["id"], lines, external_id="SHOPIFY-REFUND-77",
                                      memo="Shopify refund 77", shipping=usd("4.00"))  # fmt: skip
    again = await client.credit_invoice(invoice["id"], lines, external_id="SHOPIFY-REFUND-77")
    assert again == ref

    memo = await client.get_credit_memo(ref.erp_id)
    assert (memo.created_from_id, memo.memo) == (invoice["id"], "Shopify refund 77")
    assert [(ln.sku, ln.quantity, ln.amount) for ln in memo.lines] == [("BOX-12-M", 1, usd("39.12"))]
    assert memo.total == usd("43.12")
    state = await system_state(sandbox, "netsuite")
    assert len(records_with_external_id(state, "creditMemo", "SHOPIFY-REFUND-77")) == 1
    with pytest.raises(ValidationRejectedError):  # money without units has no item line to go on
        await client.credit_invoice(
            invoice["id"],
            [RefundLine(line_id="11", sku="BOX-12-M", quantity=0, amount=usd("5.00"))],
            external_id="SHOPIFY-REFUND-78",
        )


async def test_closing_sales_order_lines_cancels_unshipped_units_once(client: NetSuiteClient) -> None:
    order_id = await posted_order(client, "5007", {"SAFETY-GL-S": 5, "LABEL-4X6-S": 2}, shipped={"SAFETY-GL-S": 1})
    cut = await client.close_sales_order_lines(order_id, {"SAFETY-GL-S": 2})
    assert [(ln.sku, ln.quantity, ln.is_closed) for ln in cut.lines] == [("SAFETY-GL-S", 3, False),
                                                                         ("LABEL-4X6-S", 2, False)]  # fmt: skip
    assert await client.close_sales_order_lines(order_id, {"SAFETY-GL-S": 2}) == cut  # a retry cuts nothing more

    # Everything left unshipped: the gloves stop at the one fulfilled, the labels (none shipped) close.
    final = await client.close_sales_order_lines(order_id, {"SAFETY-GL-S": 4, "LABEL-4X6-S": 2})
    assert [(ln.sku, ln.quantity, ln.quantity_fulfilled, ln.is_closed) for ln in final.lines] == [
        ("SAFETY-GL-S", 1, 1, False), ("LABEL-4X6-S", 2, 0, True)]  # fmt: skip
    assert final.status is SalesOrderStatus.PENDING_BILLING
    assert await client.close_sales_order_lines(order_id, {"SAFETY-GL-S": 9, "LABEL-4X6-S": 2}) == final
    invoice = await client.invoice_sales_order(order_id, external_id="INV-5007")
    assert invoice.total == Money.of(CATALOG_BY_SKU["SAFETY-GL-S"].price, "USD")
    assert (await client.get_sales_order(order_id)).status is SalesOrderStatus.BILLED
    with pytest.raises(ValidationRejectedError):
        await client.close_sales_order_lines(order_id, {"BOLT-M8-S": 1})
