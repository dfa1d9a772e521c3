"""The return saga's contract and rules without a server: keys, the start input, refusals, the refund's money."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fake_returns import BOLT, NUT, SHIPPED_AT, return_request, returnable_order, usd
from pydantic import ValidationError

from orderflow.canonical import InvoiceLine
from orderflow.canonical.erp import CreditMemo
from orderflow.canonical.return_saga import (
    LoadErpOrderResult,
    RefundMethod,
    ReturnOrigin,
    ReturnToRefundInput,
    channel_order_id_of,
    operator_return,
    return_key,
    return_key_from_reference,
    return_reference,
    return_step_key,
    return_to_refund_input,
)
from orderflow.canonical.saga import order_key_from_reference
from orderflow.settings import ReturnSettings, Settings
from orderflow.workflows.return_to_refund import refund_for, validate_return

SHIPPED = LoadErpOrderResult(found=True, erp_order_id="SO-1", shipped={BOLT: 4, NUT: 2})


def test_a_return_reference_leads_back_to_its_saga_and_never_to_an_order() -> None:
    key = return_key("shopify", "5001")
    assert key == return_request().key == "return:shopify:5001"
    assert return_reference(key) == "OFR-shopify-5001"
    assert return_step_key(key, "rcpt-A/1-s") == "OFR-shopify-5001-rcpt-A-1-s"
    assert return_key_from_reference("OFR-shopify-5001") == key
    assert return_key_from_reference("OFR-shopify-R-77") == "return:shopify:R-77"
    assert return_key_from_reference("OF-shopify-1042") is None
    assert return_key_from_reference("OFR-ebay-1") is None
    assert order_key_from_reference(return_reference(key)) is None


def test_the_channel_order_id_comes_out_of_the_order_key() -> None:
    assert channel_order_id_of("order:amazon:112-3-4") == "112-3-4"
    with pytest.raises(ValueError, match="not an order key"):
        channel_order_id_of("return:shopify:5001")


def test_the_start_input_refuses_an_order_key_of_another_channel_or_shape() -> None:
    with pytest.raises(ValidationError, match="another channel"):
        ReturnToRefundInput(return_request=return_request().model_copy(update={"order_key": "order:amazon:1"}))
    with pytest.raises(ValidationError, match="not an order key"):
        ReturnToRefundInput(return_request=return_request().model_copy(update={"order_key": "1042"}))


def test_the_start_input_snapshots_the_policy_in_the_settings() -> None:
    returns = ReturnSettings(window_days=14, restocking_fee_percent=Decimal("12.5"), refund_method="cash_refund",
                             receipt_deadline=timedelta(days=10))  # fmt: skip
    settings = Settings(returns=returns)
    start = return_to_refund_input(return_request(), origin=ReturnOrigin.OPERATOR, settings=settings.returns)
    assert start.key == "return:shopify:5001" and start.origin is ReturnOrigin.OPERATOR
    policy = start.policy
    assert (policy.window_days, policy.restocking_fee_percent, policy.refund_method) == (
        14, Decimal("12.5"), RefundMethod.CASH_REFUND)  # fmt: skip
    assert policy.receipt_deadline == timedelta(days=10) and policy.write_off_location_id == "9"
    assert return_to_refund_input(return_request()).policy.window_days == 30


def test_every_reason_a_return_is_refused_is_given_at_once() -> None:
    request = return_request(lines={BOLT: 5, "WASH-M8-S": 1}, requested_at=SHIPPED_AT + timedelta(days=31))
    earlier = SHIPPED.model_copy(update={"returned_earlier": {BOLT: 2}})
    reasons = validate_return(request, order=returnable_order(), erp=earlier, shipped_at=SHIPPED_AT, window_days=30)
    assert reasons == [
        "requested 31 days after the order shipped on 2026-11-02; the return window is 30 days",
        f"{BOLT}: 5 requested but 2 returnable (4 shipped, 2 already returned)",
        "WASH-M8-S is not on order order:shopify:1042",
    ]


def test_a_return_on_the_last_day_of_the_window_is_in_time() -> None:
    request = return_request(lines={BOLT: 4, NUT: 2}, requested_at=SHIPPED_AT + timedelta(days=30))
    assert validate_return(request, order=returnable_order(), erp=SHIPPED, shipped_at=SHIPPED_AT, window_days=30) == []


def test_without_a_warehouse_record_the_window_runs_from_the_order_date() -> None:
    request = return_request(requested_at=SHIPPED_AT + timedelta(days=30))  # the order was placed a day earlier
    reasons = validate_return(request, order=returnable_order(), erp=SHIPPED, shipped_at=None, window_days=30)
    assert reasons == ["requested 31 days after the order shipped on 2026-11-01; the return window is 30 days"]


def test_the_refund_is_merchandise_plus_proportional_tax_less_the_fee() -> None:
    quote = refund_for(returnable_order(), {BOLT: 3, NUT: 1}, restocking_fee_percent=Decimal(10), note="r")
    # Bolts 3 x 18.50 = 55.50 with 6.11 x 3/4 = 4.5825 -> 4.58 tax; a nut 9.75 with 0.805 -> 0.80 (half even).
    assert quote.merchandise == usd("65.25") and quote.tax == usd("5.38")
    assert quote.restocking_fee == usd("6.52")  # 6.525 -> 6.52
    assert quote.refund.total == usd("64.11")
    assert [(ln.line_id, ln.quantity, ln.amount, ln.restock) for ln in quote.refund.lines] == [
        ("L1", 3, usd("60.08"), False), ("L2", 1, usd("10.55"), False)]  # fmt: skip


def test_once_credited_the_refund_follows_the_erp_to_the_cent_and_keeps_the_fee_it_was_given() -> None:
    credited = InvoiceLine(sku=BOLT, erp_item_id="1", quantity=3, amount=usd("55.49"))
    credit = CreditMemo(erp_credit_memo_id="CM-1", lines=[credited], total=usd("55.49"))
    quote = refund_for(returnable_order(), {BOLT: 3}, restocking_fee_percent=Decimal(10), credit=credit,
                       restocking_fee=usd("5.55"), note="r")  # fmt: skip
    assert quote.merchandise == usd("55.49") and quote.restocking_fee == usd("5.55")
    assert quote.refund.total == usd("54.52")  # 55.49 + 4.58 - 5.55
    assert quote.refund.lines[0].amount == usd("60.07")


def test_a_fee_larger_than_the_refund_refunds_nothing_rather_than_charging() -> None:
    quote = refund_for(returnable_order(), {NUT: 1}, restocking_fee_percent=Decimal(0),
                       restocking_fee=usd("50.00"), note="r")  # fmt: skip
    assert quote.refund.total == usd("0")


def test_an_operator_return_is_keyed_on_the_order_channel_and_starts_without_a_channel_return() -> None:
    opened = operator_return("order:shopify:1042", {BOLT: 2}, return_id="ops-1a2b", requested_at=SHIPPED_AT,
                             reason="wrong size")  # fmt: skip
    assert opened.key == "return:shopify:ops-1a2b" and opened.order_key == "order:shopify:1042"
    assert [(ln.sku, ln.quantity, ln.reason) for ln in opened.lines] == [(BOLT, 2, "wrong size")]
    assert return_key_from_reference(return_reference(opened.key)) == opened.key
    start = return_to_refund_input(opened, origin=ReturnOrigin.OPERATOR)
    assert start.origin is ReturnOrigin.OPERATOR
    with pytest.raises(ValueError, match="not an order key"):
        operator_return("1042", {BOLT: 1}, return_id="ops-1", requested_at=SHIPPED_AT)
