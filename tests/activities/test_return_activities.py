"""Return-to-refund activities against the sandbox over HTTP: the real adapters, checked on the systems' state.

Each test sets up what the order saga would have left behind (a Shopify order, its sales order
posted under the saga's reference and fulfilled, its WMS order shipped) and runs the return's
activities on it as the saga does, repeats included.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from contracts.returns_sandbox import add_fault, records_with_external_id
from contracts.wms_sandbox import plentiful_skus, stock_cell
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.returns_sample import (
    PARCEL,
    WRITE_OFF,
    customer_requests_return,
    delivered_order,
    held,
    received_in_warehouse,
    shipped_in_warehouse,
    sold_and_shipped,
    until_committed,
    usd,
)
from activities.sample import SHIP_TO, state
from orderflow.activities.returns import (
    ReturnCarrierActivities,
    ReturnChannelActivities,
    ReturnErpActivities,
    ReturnWarehouseActivities,
)
from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel, ItemCondition, Label, Money, Rate, RefundStatus, ReturnLine
from orderflow.canonical.return_saga import (
    BuyReturnLabelInput,
    CancelWmsReturnInput,
    ChannelReturnInput,
    CloseReturnAuthorizationInput,
    CreateReturnAuthorizationInput,
    CreateWmsReturnInput,
    IssueReturnCreditInput,
    LoadChannelOrderInput,
    LoadErpOrderInput,
    LoadWarehouseOrderInput,
    ReceiveReturnInput,
    RefundMethod,
    RefundOnChannelInput,
    RestockReturnInput,
    SendReturnLabelInput,
    VoidReturnLabelInput,
)
from orderflow.canonical.returns import ReturnReceiptLine
from orderflow.sandbox.seed import CATALOG_BY_SKU, WAREHOUSES
from orderflow.settings import Settings
from orderflow.workflows.return_to_refund import refund_for

pytestmark = pytest.mark.integration


@pytest.fixture
def returns_erp(netsuite: NetSuiteClient) -> ReturnErpActivities:
    """The return's ERP activities over the real NetSuite adapter."""
    return ReturnErpActivities(netsuite)


@pytest.fixture
def returns_warehouse(wms: WmsClient) -> ReturnWarehouseActivities:
    """The return's warehouse activities over the real WMS adapter."""
    return ReturnWarehouseActivities(wms)


@pytest.fixture
def returns_carrier(settings: Settings, http: httpx.AsyncClient, wms: WmsClient) -> ReturnCarrierActivities:
    """The return label activities over the real carrier and WMS adapters."""
    return ReturnCarrierActivities(CarrierClient(http, settings.carrier), wms)


@pytest.fixture
def returns_channel(shopify: ShopifyClient) -> ReturnChannelActivities:
    """The return's channel activities with the Shopify adapter."""
    return ReturnChannelActivities({Channel.SHOPIFY: shopify})


async def authorized(
    env: ActivityEnvironment, erp: ReturnErpActivities, erp_order_id: str, lines: dict[str, int], external_id: str
) -> str:
    """A return authorization made by the activity; its ERP id."""
    request = CreateReturnAuthorizationInput(
        erp_order_id=erp_order_id,
        lines=[ReturnLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
        external_id=external_id,
    )
    return (await env.run(erp.create_return_authorization, request)).authorization.erp_id


# ---------------------------------------------------------------------------------------------
# ERP
# ---------------------------------------------------------------------------------------------


async def test_the_erp_order_shows_shipped_units_net_of_other_returns_but_not_this_one(
    env: ActivityEnvironment, returns_erp: ReturnErpActivities
) -> None:
    order, erp_order_id = await sold_and_shipped(returns_erp.netsuite, "8101", {"BOLT-M8-S": 3, "NUT-M8-M": 2},
                                                 shipped={"BOLT-M8-S": 3, "NUT-M8-M": 1})  # fmt: skip
    await authorized(env, returns_erp, erp_order_id, {"BOLT-M8-S": 1}, "OFR-shopify-other-ra")
    # This return's own authorization, from an earlier attempt, must not count against it.
    await authorized(env, returns_erp, erp_order_id, {"NUT-M8-M": 1}, "OFR-shopify-8101-ra")
    request = LoadErpOrderInput(order_key=order.key, skus=["BOLT-M8-S", "NUT-M8-M"],
                                return_authorization_external_id="OFR-shopify-8101-ra")  # fmt: skip

    loaded = await env.run(returns_erp.load_erp_order_for_return, request)
    missing = await env.run(
        returns_erp.load_erp_order_for_return, request.model_copy(update={"order_key": "order:shopify:no-such"})
    )

    assert loaded.found and loaded.erp_order_id == erp_order_id and loaded.erp_customer_id == "3001"
    assert loaded.shipped == {"BOLT-M8-S": 3, "NUT-M8-M": 1}
    assert loaded.returned_earlier == {"BOLT-M8-S": 1}
    assert loaded.item_weights_oz == {sku: CATALOG_BY_SKU[sku].weight_oz for sku in ("BOLT-M8-S", "NUT-M8-M")}
    assert not missing.found and missing.shipped == {}


async def test_a_closed_earlier_return_counts_only_what_it_received(
    env: ActivityEnvironment, returns_erp: ReturnErpActivities
) -> None:
    order, erp_order_id = await sold_and_shipped(returns_erp.netsuite, "8102", {"TAPE-PKG-S": 3})
    earlier = await authorized(env, returns_erp, erp_order_id, {"TAPE-PKG-S": 3}, "OFR-shopify-8102a-ra")
    await env.run(returns_erp.receive_return_in_erp, ReceiveReturnInput(
        erp_return_authorization_id=earlier, lines=[ReturnLine(sku="TAPE-PKG-S", quantity=1)],
        external_id="OFR-shopify-8102a-rcpt-1-s",
    ))  # fmt: skip
    closing = CloseReturnAuthorizationInput(erp_order_id=erp_order_id, external_id="OFR-shopify-8102a-ra")
    closed = await env.run(returns_erp.close_return_authorization, closing)
    again = await env.run(returns_erp.close_return_authorization, closing)
    never = await env.run(returns_erp.close_return_authorization,
                          closing.model_copy(update={"external_id": "OFR-shopify-never-ra"}))  # fmt: skip

    loaded = await env.run(returns_erp.load_erp_order_for_return, LoadErpOrderInput(
        order_key=order.key, skus=["TAPE-PKG-S"], return_authorization_external_id="OFR-shopify-8102b-ra"))  # fmt: skip

    assert (closed.closed, closed.status) == (True, "closed") and again.closed
    assert not never.closed
    assert loaded.shipped == {"TAPE-PKG-S": 3} and loaded.returned_earlier == {"TAPE-PKG-S": 1}


async def test_the_return_authorization_is_made_once_and_asking_for_more_than_shipped_parks(
    env: ActivityEnvironment, returns_erp: ReturnErpActivities, sandbox: httpx.AsyncClient
) -> None:
    _, erp_order_id = await sold_and_shipped(returns_erp.netsuite, "8103", {"GLOVE-NIT-S": 2})

    first = await authorized(env, returns_erp, erp_order_id, {"GLOVE-NIT-S": 2}, "OFR-shopify-8103-ra")
    again = await authorized(env, returns_erp, erp_order_id, {"GLOVE-NIT-S": 2}, "OFR-shopify-8103-ra")
    with pytest.raises(ApplicationError) as refused:
        await authorized(env, returns_erp, erp_order_id, {"GLOVE-NIT-S": 1}, "OFR-shopify-8103b-ra")

    assert again == first
    assert refused.value.non_retryable and refused.value.type == "ValidationRejectedError"
    ras = records_with_external_id(await state(sandbox, "netsuite"), "returnAuthorization", "OFR-shopify-8103-ra")
    assert [ra["id"] for ra in ras] == [first]


async def test_sellable_units_are_received_where_the_order_shipped_from_and_damaged_ones_into_write_off(
    env: ActivityEnvironment, returns_erp: ReturnErpActivities, sandbox: httpx.AsyncClient
) -> None:
    _, erp_order_id = await sold_and_shipped(returns_erp.netsuite, "8104", {"BOLT-M8-S": 2})
    ra = await authorized(env, returns_erp, erp_order_id, {"BOLT-M8-S": 2}, "OFR-shopify-8104-ra")
    sellable = ReceiveReturnInput(
        erp_return_authorization_id=ra,
        external_id="OFR-shopify-8104-rcpt-R1-s",
        lines=[ReturnLine(sku="BOLT-M8-S", quantity=1, condition=ItemCondition.SELLABLE)],
    )
    damaged = ReceiveReturnInput(erp_return_authorization_id=ra, external_id="OFR-shopify-8104-rcpt-R1-d",
                                 lines=[ReturnLine(sku="BOLT-M8-S", quantity=1, condition=ItemCondition.DAMAGED)],
                                 location_id=WRITE_OFF)  # fmt: skip

    first = await env.run(returns_erp.receive_return_in_erp, sellable)
    repeated = await env.run(returns_erp.receive_return_in_erp, sellable)
    written_off = await env.run(returns_erp.receive_return_in_erp, damaged)

    assert repeated == first
    snapshot = await state(sandbox, "netsuite")
    (kept,) = records_with_external_id(snapshot, "itemReceipt", "OFR-shopify-8104-rcpt-R1-s")
    (scrap,) = records_with_external_id(snapshot, "itemReceipt", "OFR-shopify-8104-rcpt-R1-d")
    assert kept["id"] == first.item_receipt.erp_id and scrap["id"] == written_off.item_receipt.erp_id
    assert scrap["item"][0]["location"]["id"] == WRITE_OFF
    assert kept["item"][0].get("location", {}).get("id") != WRITE_OFF


@pytest.mark.parametrize(("method", "record_type"), [(RefundMethod.CREDIT_MEMO, "creditMemo"),
                                                     (RefundMethod.CASH_REFUND, "cashRefund")])  # fmt: skip
async def test_the_credit_carries_the_refunded_tax_less_the_fee_and_is_made_once_when_its_answer_is_lost(
    env: ActivityEnvironment,
    returns_erp: ReturnErpActivities,
    sandbox: httpx.AsyncClient,
    method: RefundMethod,
    record_type: str,
) -> None:
    number = f"8105{len(record_type)}"
    _, erp_order_id = await sold_and_shipped(returns_erp.netsuite, number, {"NUT-M8-M": 3})
    ra = await authorized(env, returns_erp, erp_order_id, {"NUT-M8-M": 3}, f"OFR-shopify-{number}-ra")
    await env.run(returns_erp.receive_return_in_erp, ReceiveReturnInput(
        erp_return_authorization_id=ra, lines=[ReturnLine(sku="NUT-M8-M", quantity=2)],
        external_id=f"OFR-shopify-{number}-rcpt-1-s",
    ))  # fmt: skip
    await add_fault(sandbox, "netsuite", kind="timeout_after_commit", path=f"*!transform/{record_type}", times=1)
    request = IssueReturnCreditInput(erp_return_authorization_id=ra, external_id=f"OFR-shopify-{number}-credit",
                                     method=method, tax=usd("1.61"), restocking_fee=usd("2.00"))  # fmt: skip

    credit = await until_committed(env, returns_erp.issue_return_credit, request)
    again = await env.run(returns_erp.issue_return_credit, request)

    unit = CATALOG_BY_SKU["NUT-M8-M"].price
    assert again == credit
    assert credit.credit.record_type == record_type and credit.credit.created_from_id == ra
    assert [(ln.sku, ln.quantity) for ln in credit.credit.lines] == [("NUT-M8-M", 2)]
    assert credit.credit.total == Money.of(2 * unit, "USD") + usd("1.61") - usd("2.00")
    stored = records_with_external_id(await state(sandbox, "netsuite"), record_type, f"OFR-shopify-{number}-credit")
    assert [r["id"] for r in stored] == [credit.credit.erp_credit_memo_id]


# ---------------------------------------------------------------------------------------------
# Warehouse
# ---------------------------------------------------------------------------------------------


async def test_the_warehouse_order_says_where_and_when_it_shipped(
    env: ActivityEnvironment, returns_warehouse: ReturnWarehouseActivities, settings: Settings
) -> None:
    (sku,) = plentiful_skus(1)
    wms_order_id = await shipped_in_warehouse(returns_warehouse.wms, settings, "order:shopify:8201", [(sku, 2)])

    found = await env.run(returns_warehouse.load_warehouse_order_for_return,
                          LoadWarehouseOrderInput(order_reference="OF-shopify-8201"))  # fmt: skip
    never = await env.run(returns_warehouse.load_warehouse_order_for_return,
                          LoadWarehouseOrderInput(order_reference="OF-shopify-no-such"))  # fmt: skip

    assert (found.wms_order_id, found.warehouse_id) == (wms_order_id, "8")
    assert found.last_shipped_at is not None
    assert never.wms_order_id is None and never.last_shipped_at is None


async def test_the_warehouse_return_is_made_once_and_a_receipt_restocks_only_its_sellable_units(
    env: ActivityEnvironment,
    returns_warehouse: ReturnWarehouseActivities,
    settings: Settings,
    sandbox: httpx.AsyncClient,
) -> None:
    (sku,) = plentiful_skus(1)
    wms_order_id = await shipped_in_warehouse(returns_warehouse.wms, settings, "order:shopify:8202", [(sku, 3)])
    on_hand = stock_cell(await state(sandbox, "wms"), sku, 8)["on_hand"]
    create = CreateWmsReturnInput(reference="OFR-shopify-8202", lines=[ReturnLine(sku=sku, quantity=3)],
                                  original_wms_order_id=wms_order_id, tracking_number="9400RET8202",
                                  warehouse_id="8")  # fmt: skip

    made = await env.run(returns_warehouse.create_wms_return, create)
    again = await env.run(returns_warehouse.create_wms_return, create)
    wms_return_id = made.wms_return.wms_return_id
    box = await received_in_warehouse(settings, sandbox, wms_return_id, [(sku, "Restock", 2), (sku, "Dispose", 1)])
    restock = RestockReturnInput(wms_return_id=wms_return_id, receipt=box)
    restocked = await env.run(returns_warehouse.restock_return, restock)
    repeated = await env.run(returns_warehouse.restock_return, restock)
    overstated = box.model_copy(
        update={"lines": [ReturnReceiptLine(sku=sku, quantity=3, condition=ItemCondition.SELLABLE)]}
    )
    with pytest.raises(ApplicationError) as conflict:
        await env.run(returns_warehouse.restock_return, RestockReturnInput(wms_return_id=wms_return_id,
                                                                           receipt=overstated))  # fmt: skip

    assert again.wms_return.wms_return_id == wms_return_id and made.wms_return.reference == "OFR-shopify-8202"
    assert (box.sellable, box.damaged) == ({sku: 2}, {sku: 1})
    assert repeated == restocked
    assert stock_cell(await state(sandbox, "wms"), sku, 8)["on_hand"] == on_hand + 2
    assert conflict.value.non_retryable and conflict.value.type == "ConflictError"


async def test_cancelling_the_warehouse_return_is_safe_to_repeat_and_none_made_is_success(
    env: ActivityEnvironment, returns_warehouse: ReturnWarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    await env.run(returns_warehouse.create_wms_return, CreateWmsReturnInput(
        reference="OFR-shopify-8203", lines=[ReturnLine(sku=sku, quantity=1)], warehouse_id="8"))  # fmt: skip

    cancelled = await env.run(returns_warehouse.cancel_wms_return, CancelWmsReturnInput(reference="OFR-shopify-8203"))
    repeated = await env.run(returns_warehouse.cancel_wms_return, CancelWmsReturnInput(reference="OFR-shopify-8203"))
    never = await env.run(returns_warehouse.cancel_wms_return, CancelWmsReturnInput(reference="OFR-shopify-none"))

    assert cancelled.cancelled and repeated.cancelled and cancelled.status == "Cancelled"
    assert not never.cancelled
    statuses = {r["reference_id"]: r["status"] for r in (await state(sandbox, "wms"))["returns"]}
    assert statuses == {"OFR-shopify-8203": "Cancelled"}


# ---------------------------------------------------------------------------------------------
# Carrier
# ---------------------------------------------------------------------------------------------


async def test_the_return_label_runs_from_the_customer_to_the_warehouse_is_bought_once_and_voids(
    env: ActivityEnvironment, returns_carrier: ReturnCarrierActivities, sandbox: httpx.AsyncClient
) -> None:
    buy = BuyReturnLabelInput(reference="OFR-shopify-8301", customer=SHIP_TO, warehouse_id="8", parcel=PARCEL)

    first = await env.run(returns_carrier.buy_return_label, buy)
    again = await env.run(returns_carrier.buy_return_label, buy)
    voided = await env.run(returns_carrier.void_return_label, VoidReturnLabelInput(reference="OFR-shopify-8301"))
    nothing = await env.run(returns_carrier.void_return_label, VoidReturnLabelInput(reference="OFR-shopify-none"))
    with pytest.raises(ApplicationError) as nowhere:
        await env.run(returns_carrier.buy_return_label, buy.model_copy(update={"warehouse_id": None}))

    assert again.label == first.label and first.label.is_return
    assert voided.refund_status in (RefundStatus.SUBMITTED, RefundStatus.REFUNDED)
    assert nothing.refund_status is None
    assert nowhere.value.non_retryable and "no warehouse to return to" in nowhere.value.message
    (bought,) = [s for s in (await state(sandbox, "carrier"))["shipments"] if s["reference"] == "OFR-shopify-8301"]
    # The label brings the parcel from the customer back to Cicero.
    assert bought["is_return"] is True and bought["purchased"]
    assert (bought["from_zip"], bought["to_zip"]) == (SHIP_TO.postal_code, first.warehouse.postal_code)
    assert first.warehouse.postal_code == next(w.zip for w in WAREHOUSES if w.wms_location_id == 8)


# ---------------------------------------------------------------------------------------------
# Channel
# ---------------------------------------------------------------------------------------------


async def test_the_channel_order_is_read_back_and_an_unknown_one_is_none(
    env: ActivityEnvironment, returns_channel: ReturnChannelActivities, shopify: ShopifyClient
) -> None:
    sale = await delivered_order(shopify, [("BOLT-M8-S", 2)], "1Z8400")

    found = await env.run(
        returns_channel.load_channel_order,
        LoadChannelOrderInput(channel=Channel.SHOPIFY, channel_order_id=sale.channel_order_id),
    )
    unknown = await env.run(returns_channel.load_channel_order,
                            LoadChannelOrderInput(channel=Channel.SHOPIFY, channel_order_id="999999999"))  # fmt: skip

    assert found.order == sale
    assert unknown.order is None


async def test_the_channel_return_is_approved_labelled_and_closed_and_each_step_is_safe_to_repeat(
    env: ActivityEnvironment,
    returns_channel: ReturnChannelActivities,
    shopify: ShopifyClient,
    sandbox: httpx.AsyncClient,
) -> None:
    sale = await delivered_order(shopify, [("NUT-M8-M", 3)], "1Z8401")
    return_id = await customer_requests_return(sandbox, sale, {"NUT-M8-M": 2})
    on_return = ChannelReturnInput(channel=Channel.SHOPIFY, channel_return_id=return_id)
    label = Label(carrier_shipment_id="shp_r8401", rate=Rate(rate_id="r", carrier="USPS", service="Ground",
                  amount=usd("6.10")), tracking_number="9400R8401", label_url="https://labels.example/r8401.pdf",
                  tracking_url="https://track.example/9400R8401", is_return=True)  # fmt: skip

    for _ in range(2):
        await env.run(returns_channel.approve_channel_return, on_return)
        await env.run(returns_channel.send_return_label, SendReturnLabelInput(
            channel=Channel.SHOPIFY, channel_return_id=return_id, label=label))  # fmt: skip
    assert await shopify.return_status(return_id) == "open"
    for _ in range(2):
        await env.run(returns_channel.close_channel_return, on_return)
    with pytest.raises(ApplicationError) as closed:
        await env.run(returns_channel.cancel_channel_return, on_return)

    assert await shopify.return_status(return_id) == "closed"
    assert closed.value.non_retryable and closed.value.type == "ConflictError"
    ((delivery,),) = [r["reverse_deliveries"] for r in held(await state(sandbox, "shopify"), sale)["returns"]]
    assert (delivery["tracking_number"], delivery["label_url"]) == ("9400R8401", "https://labels.example/r8401.pdf")


async def test_a_refused_or_cancelled_return_is_cancelled_on_the_channel_once(
    env: ActivityEnvironment,
    returns_channel: ReturnChannelActivities,
    shopify: ShopifyClient,
    sandbox: httpx.AsyncClient,
) -> None:
    sale = await delivered_order(shopify, [("GLOVE-NIT-S", 2)], "1Z8402")
    return_id = await customer_requests_return(sandbox, sale, {"GLOVE-NIT-S": 2})
    on_return = ChannelReturnInput(channel=Channel.SHOPIFY, channel_return_id=return_id, reason="outside the window")

    first = await env.run(returns_channel.cancel_channel_return, on_return)
    again = await env.run(returns_channel.cancel_channel_return, on_return)
    nowhere = await env.run(returns_channel.cancel_channel_return,
                            on_return.model_copy(update={"channel_return_id": "999999999"}))  # fmt: skip

    assert await shopify.return_status(return_id) == "canceled"
    assert first.detail == again.detail and "cancelled" in first.detail
    assert "nothing to do" in nowhere.detail


async def test_the_refund_is_made_once_even_when_its_answer_is_lost(
    env: ActivityEnvironment, returns_channel: ReturnChannelActivities, shopify: ShopifyClient,
    sandbox: httpx.AsyncClient,
) -> None:  # fmt: skip
    sale = await delivered_order(shopify, [("BOLT-M8-S", 2), ("NUT-M8-M", 1)], "1Z8403")
    quote = refund_for(sale, {"BOLT-M8-S": 1}, restocking_fee_percent=Decimal(0), note="return 8403")
    request = RefundOnChannelInput(channel=Channel.SHOPIFY, channel_order_id=sale.channel_order_id,
                                   refund=quote.refund, idempotency_key="OFR-shopify-8403-refund")  # fmt: skip
    await add_fault(sandbox, "shopify", kind="timeout_after_commit", operation="refundCreate", times=1)

    made = await until_committed(env, returns_channel.refund_on_channel, request)
    again = await env.run(returns_channel.refund_on_channel, request)

    assert again.already_issued and again.refund.channel_refund_id == made.refund.channel_refund_id
    assert quote.tax.amount > 0 and made.refund.amount == quote.refund.total == quote.merchandise + quote.tax
    refunds = held(await state(sandbox, "shopify"), sale)["refunds"]
    assert [Decimal(str(t["amount"])) for r in refunds for t in r["transactions"]] == [quote.refund.total.amount]
