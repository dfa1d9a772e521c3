"""Amazon orders (Orders API 2026-01-01 shapes) mapped to canonical orders, and canonical data to feeds."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import pytest

from orderflow.adapters.amazon import (
    AFN_REASON,
    acknowledgement_feed,
    adjustment_feed,
    cancel_reason_code,
    order_from_payload,
    order_page_from_payload,
    package_reference_id,
    processing_report_summary,
    shipment_confirmation_payload,
)
from orderflow.adapters.errors import ValidationRejectedError
from orderflow.canonical import Shipment, ShipmentLine, Tracking
from orderflow.canonical.money import Money
from orderflow.canonical.order import Channel
from orderflow.canonical.returns import Refund, RefundLine


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currencyCode": "USD"}


def mfn_order() -> dict[str, Any]:
    """An MFN order as getOrder returns it with BUYER, RECIPIENT, PROCEEDS, PROMOTION, FULFILLMENT."""
    return {
        "orderId": "113-1234567-7654321",
        "createdTime": "2026-11-20T10:30:00Z",
        "lastUpdatedTime": "2026-11-20T10:45:00Z",
        "salesChannel": {"channelName": "AMAZON", "marketplaceId": "ATVPDKIKX0DER", "marketplaceName": "Amazon.com"},
        "buyer": {"buyerName": "Jane Doe", "buyerEmail": "abc123@marketplace.amazon.com"},
        "recipient": {
            "deliveryAddress": {
                "name": "Jane Doe",
                "addressLine1": "123 Main Street",
                "addressLine2": "Suite 4",
                "city": "Seattle",
                "stateOrRegion": "WA",
                "postalCode": "98101",
                "countryCode": "US",
                "phone": "555-123-4567",
                "addressType": "RESIDENTIAL",
            }
        },
        "proceeds": {
            "grandTotal": usd("74.72"),
            "breakdowns": [
                {"type": "ITEM", "subtotal": usd("64.97")},
                {"type": "SHIPPING", "subtotal": usd("5.99")},
                {"type": "DISCOUNT", "subtotal": usd("-5.00")},
                {"type": "TAX", "subtotal": usd("5.26")},
                {"type": "DELIVERY_TIP", "status": "FINALIZED", "subtotal": usd("3.50")},
            ],
        },
        "fulfillment": {
            "fulfillmentStatus": "UNSHIPPED",
            "fulfilledBy": "MERCHANT",
            "fulfillmentServiceLevel": "STANDARD",
        },
        "orderItems": [
            {
                "orderItemId": "11111111111111",
                "quantityOrdered": 2,
                "product": {
                    "asin": "B000000001",
                    "title": "Pallet wrap 500mm",
                    "sellerSku": "WRAP-500",
                    "price": {"unitPrice": usd("19.99")},
                },
                "proceeds": {
                    "proceedsTotal": usd("44.11"),
                    "breakdowns": [
                        {"type": "ITEM", "subtotal": usd("39.98")},
                        {"type": "SHIPPING", "subtotal": usd("5.99")},
                        {
                            "type": "DISCOUNT",
                            "subtotal": usd("-5.00"),
                            "detailedBreakdowns": [
                                {"subtype": "ITEM", "value": usd("-4.00")},
                                {"subtype": "SHIPPING", "value": usd("-1.00")},
                            ],
                        },
                        {
                            "type": "TAX",
                            "subtotal": usd("3.14"),
                            "detailedBreakdowns": [
                                {"subtype": "ITEM", "value": usd("2.72")},
                                {"subtype": "SHIPPING", "value": usd("0.42")},
                            ],
                        },
                    ],
                },
                "promotion": {"breakdowns": [{"promotionId": "HOLIDAY-4OFF"}]},
                "fulfillment": {"quantityFulfilled": 0, "quantityUnfulfilled": 2},
            },
            {
                "orderItemId": "22222222222222",
                "quantityOrdered": 1,
                "product": {"sellerSku": "TAPE-48", "title": "Packing tape", "price": {"unitPrice": usd("24.99")}},
                # No split of the tax: all of it is the item's.
                "proceeds": {
                    "breakdowns": [{"type": "ITEM", "subtotal": usd("24.99")}, {"type": "TAX", "subtotal": usd("2.12")}]
                },
                "fulfillment": {"quantityFulfilled": 0, "quantityUnfulfilled": 1},
            },
        ],
    }


def test_maps_prices_as_exact_decimals_in_the_orders_currency() -> None:
    order = order_from_payload(mfn_order())

    assert order.channel is Channel.AMAZON
    assert order.key == "order:amazon:113-1234567-7654321"
    assert order.currency == "USD"
    wrap, tape = order.lines
    assert (wrap.line_id, wrap.sku, wrap.quantity) == ("11111111111111", "WRAP-500", 2)
    assert wrap.unit_price == Money.of("19.99", "USD")
    assert isinstance(wrap.unit_price.amount, Decimal)
    assert tape.unit_price == Money.of("24.99", "USD")
    assert order.placed_at == datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


def test_maps_item_tax_and_shipping_tax_separately() -> None:
    order = order_from_payload(mfn_order())

    wrap, tape = order.lines
    assert wrap.tax_total == Money.of("2.72", "USD")
    assert tape.tax_total == Money.of("2.12", "USD")
    (shipping,) = order.shipping
    assert shipping.amount == Money.of("5.99", "USD")
    assert [t.amount for t in shipping.tax_lines] == [Money.of("0.42", "USD")]
    assert order.tax_total == Money.of("5.26", "USD")


def test_maps_promotions_as_positive_discounts_on_the_line_and_on_shipping() -> None:
    order = order_from_payload(mfn_order())

    (discount,) = order.lines[0].discounts
    assert discount.amount == Money.of("4.00", "USD")
    assert discount.code == "HOLIDAY-4OFF"
    assert order.lines[0].net == Money.of("35.98", "USD")
    assert [d.amount for d in order.shipping[0].discounts] == [Money.of("1.00", "USD")]
    assert order.shipping_total == Money.of("4.99", "USD")


def test_total_is_what_the_buyer_paid_without_the_delivery_tip() -> None:
    order = order_from_payload(mfn_order())

    # 35.98 + 2.72 + 24.99 + 2.12 + (5.99 - 1.00) + 0.42; the 3.50 tip is not the order's.
    assert order.total == Money.of("71.22", "USD")
    assert order.total == order.subtotal + order.shipping_total + order.tax_total


def test_maps_the_recipient_and_buyer() -> None:
    order = order_from_payload(mfn_order())

    assert order.ship_to.name == "Jane Doe"
    assert (order.ship_to.line1, order.ship_to.line2) == ("123 Main Street", "Suite 4")
    assert (order.ship_to.city, order.ship_to.region, order.ship_to.country) == ("Seattle", "WA", "US")
    assert order.customer.email == "abc123@marketplace.amazon.com"
    assert order.ship_method == "STANDARD"


def test_refuses_an_amazon_fulfilled_order_with_the_reason() -> None:
    payload = mfn_order()
    payload["fulfillment"]["fulfilledBy"] = "AMAZON"

    with pytest.raises(ValidationRejectedError) as caught:
        order_from_payload(payload)

    assert AFN_REASON in str(caught.value)
    assert caught.value.vendor_code == "AFN"


def test_refuses_an_address_whose_restricted_parts_were_withheld() -> None:
    payload = mfn_order()
    payload["recipient"] = {"deliveryAddress": {"city": "Seattle", "postalCode": "98101", "countryCode": "US"}}

    with pytest.raises(ValidationRejectedError, match="restricted data"):
        order_from_payload(payload)


def test_refuses_money_in_another_currency() -> None:
    payload = mfn_order()
    payload["orderItems"][1]["product"]["price"]["unitPrice"] = {"amount": "24.99", "currencyCode": "CAD"}

    with pytest.raises(ValidationRejectedError, match="CAD"):
        order_from_payload(payload)


def test_search_page_marks_buyer_cancellations_and_afn_orders() -> None:
    cancelled = mfn_order()
    cancelled["orderItems"][0]["cancellation"] = {
        "cancellationRequest": {"requester": "BUYER", "cancelReason": "Ordered by mistake"}
    }
    afn = copy.deepcopy(mfn_order())
    afn["orderId"] = "113-0000000-0000002"
    afn["fulfillment"] = {"fulfillmentStatus": "SHIPPED", "fulfilledBy": "AMAZON"}

    page = order_page_from_payload({"orders": [cancelled, afn], "pagination": {"nextToken": "page-2"}})

    first, second = page.orders
    assert (first.fulfillment_channel, first.cancellation_requested, first.status) == ("MFN", True, "UNSHIPPED")
    assert first.marketplace_id == "ATVPDKIKX0DER"
    assert (second.fulfillment_channel, second.cancellation_requested) == ("AFN", False)
    assert page.next_token == "page-2"
    assert order_page_from_payload({"orders": []}).next_token is None


def shipment(lines: list[tuple[str, int]], *, shipment_id: str = "SHP-1", carrier: str = "UPS") -> Shipment:
    return Shipment(
        shipment_id=shipment_id,
        tracking=Tracking(carrier=carrier, number="1Z999AA10123456784", service="Ground"),
        lines=[ShipmentLine(sku=sku, quantity=q) for sku, q in lines],
        shipped_at=datetime(2026, 11, 21, 18, tzinfo=UTC),
    )


def test_a_partial_shipment_confirms_only_its_units_on_the_order_items() -> None:
    body = shipment_confirmation_payload(mfn_order(), shipment([("WRAP-500", 1)]), default_marketplace="X")

    detail = body["packageDetail"]
    assert body["marketplaceId"] == "ATVPDKIKX0DER"
    assert detail["orderItems"] == [{"orderItemId": "11111111111111", "quantity": 1}]
    assert (detail["carrierCode"], detail["trackingNumber"], detail["shipDate"]) == (
        "UPS",
        "1Z999AA10123456784",
        "2026-11-21T18:00:00Z",
    )
    assert detail["packageReferenceId"] == package_reference_id("SHP-1")
    assert int(detail["packageReferenceId"]) > 0
    assert "carrierName" not in detail


def test_a_repeated_shipment_edits_the_package_amazon_already_has() -> None:
    payload = mfn_order()
    payload["orderItems"][0]["fulfillment"] = {"quantityFulfilled": 2, "quantityUnfulfilled": 0}
    payload["packages"] = [
        {
            "packageReferenceId": package_reference_id("SHP-1"),
            "packageItems": [{"orderItemId": "11111111111111", "quantity": 2}],
        }
    ]

    body = shipment_confirmation_payload(payload, shipment([("WRAP-500", 2)]), default_marketplace="X")

    assert body["packageDetail"]["orderItems"] == [{"orderItemId": "11111111111111", "quantity": 2}]


def test_refuses_to_confirm_more_units_than_are_unshipped() -> None:
    with pytest.raises(ValidationRejectedError, match="more than"):
        shipment_confirmation_payload(mfn_order(), shipment([("TAPE-48", 2)]), default_marketplace="X")


def test_an_unknown_carrier_is_sent_as_other_with_its_name() -> None:
    body = shipment_confirmation_payload(
        mfn_order(), shipment([("TAPE-48", 1)], carrier="Pallet Express"), default_marketplace="X"
    )

    assert (body["packageDetail"]["carrierCode"], body["packageDetail"]["carrierName"]) == ("Other", "Pallet Express")


def test_the_cancel_feed_acknowledges_every_item_as_failed_with_amazons_reason_code() -> None:
    document = acknowledgement_feed(
        mfn_order(), reason="buyer requested cancel", seller_id="A2SELLER", merchant_order_id="k1"
    )

    root = ElementTree.fromstring(document)  # noqa: S314 - our own document
    assert root.findtext("MessageType") == "OrderAcknowledgement"
    ack = root.find("Message/OrderAcknowledgement")
    assert ack is not None
    assert ack.findtext("AmazonOrderID") == "113-1234567-7654321"
    assert ack.findtext("StatusCode") == "Failure"
    assert [i.findtext("CancelReason") for i in ack.iter("Item")] == ["BuyerCanceled", "BuyerCanceled"]
    assert cancel_reason_code("out of stock: backorder deadline") == "NoInventory"
    assert cancel_reason_code("operator asked") == "GeneralAdjustment"


def test_the_refund_feed_splits_each_lines_amount_into_principal_and_tax() -> None:
    # One wrap returned: its net 17.99 plus tax 1.36 (the order line's tax per unit).
    refund = Refund(
        order_key="order:amazon:113-1234567-7654321",
        lines=[RefundLine(line_id="11111111111111", sku="WRAP-500", quantity=1, amount=Money.of("19.35", "USD"))],
        total=Money.of("19.35", "USD"),
        reason="return",
    )

    document = adjustment_feed(mfn_order(), refund, seller_id="A2SELLER", key="return:amazon:9:refund")

    root = ElementTree.fromstring(document)  # noqa: S314 - our own document

    item = root.find("Message/OrderAdjustment/AdjustedItem")
    assert item is not None
    assert item.findtext("AdjustmentReason") == "CustomerReturn"
    amounts = {c.findtext("Type"): Decimal(c.findtext("Amount") or "") for c in item.iter("Component")}
    # Tax share = 19.35 x 2.72 / (39.98 - 5.00 + 2.72): the item's tax over what its buyer paid.
    assert amounts == {"Principal": Decimal("17.95"), "Tax": Decimal("1.40")}
    assert sum(amounts.values()) == Decimal("19.35")
    assert item.findtext("MerchantAdjustmentItemID") == "return:amazon:9:refund:0"


def test_the_refund_feed_refuses_a_line_that_is_not_on_the_order() -> None:
    refund = Refund(
        order_key="order:amazon:x",
        lines=[RefundLine(line_id="999", sku="WRAP-500", quantity=1, amount=Money.of("1.00", "USD"))],
        total=Money.of("1.00", "USD"),
    )

    with pytest.raises(ValidationRejectedError, match="not on order"):
        adjustment_feed(mfn_order(), refund, seller_id="A2SELLER", key="k")


def test_reads_the_counts_and_errors_of_an_xml_processing_report() -> None:
    report = """<?xml version="1.0"?><AmazonEnvelope><Header><DocumentVersion>1.02</DocumentVersion></Header>
    <MessageType>ProcessingReport</MessageType><Message><MessageID>1</MessageID><ProcessingReport>
    <DocumentTransactionID>50001</DocumentTransactionID><StatusCode>Complete</StatusCode>
    <ProcessingSummary><MessagesProcessed>1</MessagesProcessed><MessagesSuccessful>0</MessagesSuccessful>
    <MessagesWithError>1</MessagesWithError><MessagesWithWarning>0</MessagesWithWarning></ProcessingSummary>
    <Result><MessageID>1</MessageID><ResultCode>Error</ResultCode><ResultMessageCode>18028</ResultMessageCode>
    <ResultDescription>The adjustment exceeds the amount paid.</ResultDescription></Result>
    </ProcessingReport></Message></AmazonEnvelope>"""

    summary = processing_report_summary(report)

    assert summary["messages_processed"] == 1
    assert summary["messages_with_error"] == 1
    assert summary["errors"] == ["18028: The adjustment exceeds the amount paid."]


def test_reads_a_clean_json_processing_report() -> None:
    report = (
        '{"header": {}, "issues": [], "summary": {"messagesProcessed": 1, "messagesAccepted": 1, "messagesInvalid": 0}}'
    )

    summary = processing_report_summary(report)

    assert (summary["messages_successful"], summary["messages_with_error"], summary["errors"]) == (1, 0, [])
