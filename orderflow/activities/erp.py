"""ERP steps of order to cash: accept, credit check, post, close, record fulfilment, invoice (NetSuite).

Who is credit-checked: a customer buys on terms when the ERP files them as a company (not a
person) with a credit limit above zero; everyone else is prepaid on the channel and passes. For a
customer the ERP does not know yet, the same rule is applied to what the channel says about them.

Accept reads the cross-references first (when the worker gives it them): a channel SKU's ERP item
and a channel customer's ERP id and terms. What it has to learn from the ERP instead (an item found
by name, a customer matched or created) it writes back, so the next order needs no lookup; a SKU
neither knows parks the order with the `orderflow xref set` command that fixes it.
"""

from __future__ import annotations

import hashlib
import string
from decimal import Decimal

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.errors import NotFoundError, ValidationRejectedError
from orderflow.adapters.netsuite import SYSTEM, NetSuiteClient
from orderflow.canonical import Channel, Customer, Money, Order, PaymentTerms, SalesOrderStatus
from orderflow.canonical.money import CurrencyMismatchError
from orderflow.canonical.saga import (
    AcceptOrderInput,
    AcceptOrderResult,
    CloseSalesOrderInput,
    CloseSalesOrderResult,
    CloseUnshippedLinesInput,
    CloseUnshippedLinesResult,
    ConfirmShipmentInput,
    CreditCheckInput,
    CreditCheckResult,
    CreditDecision,
    InvoiceOrderInput,
    InvoiceOrderResult,
    PostSalesOrderInput,
    PostSalesOrderResult,
    RecordFulfillmentResult,
    idempotency_key,
)
from orderflow.store.xref import CrossReferences, CustomerXref, SkuXref

CLOSED = frozenset({SalesOrderStatus.CLOSED, SalesOrderStatus.CANCELLED})


def terms_of(customer: Customer) -> PaymentTerms:
    """Terms for a company with a credit line above zero, prepaid for everyone else."""
    limit = customer.credit_limit
    has_credit_line = limit is not None and limit.amount > 0
    return PaymentTerms.TERMS if customer.terms is PaymentTerms.TERMS and has_credit_line else PaymentTerms.PREPAID


def _money(value: Money) -> str:
    return f"{value.amount:,.2f} {value.currency}"


def _unknown_skus(channel: Channel, skus: list[str], with_xref: bool) -> str:
    """Why accept refuses these SKUs, and (with cross-references) the command that fixes each."""
    if not with_xref:
        return f"SKU(s) {', '.join(skus)} are not items in NetSuite"
    if len(skus) == 1:
        return (
            f"no ERP item for {channel.value} SKU '{skus[0]}': "
            f"add it with orderflow xref set sku {channel.value} {skus[0]} --erp-item ..."
        )
    named = ", ".join(f"'{sku}'" for sku in skus)
    return (
        f"no ERP item for {channel.value} SKUs {named}: "
        f"add each with orderflow xref set sku {channel.value} SKU --erp-item ..."
    )


# What NetSuite takes in an external id: letters, digits, '_' and '-', at most 255 characters.
_ERP_EXTERNAL_ID_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_ERP_EXTERNAL_ID_MAX = 255


def erp_customer_external_id(channel_identity: str) -> str:
    """The customer's ERP external id from the channel's identity of them, in the characters NetSuite takes.

    A buyer known only by email (a Shopify guest, an Amazon buyer's anonymised address) would be
    refused as it is; the other characters become '-', and a digest of the whole identity is
    appended so two buyers who differ only in those characters never share a customer record.
    """
    if all(c in _ERP_EXTERNAL_ID_CHARS for c in channel_identity) and 0 < len(channel_identity) <= _ERP_EXTERNAL_ID_MAX:
        return channel_identity
    digest = hashlib.sha256(channel_identity.encode()).hexdigest()[:12]
    safe = "".join(c if c in _ERP_EXTERNAL_ID_CHARS else "-" for c in channel_identity)
    return f"{safe[: _ERP_EXTERNAL_ID_MAX - len(digest) - 1]}-{digest}"


class ErpActivities:
    """The saga's steps in the ERP, each safe to repeat."""

    def __init__(self, netsuite: NetSuiteClient, *, xref: CrossReferences | None = None) -> None:
        self.netsuite = netsuite
        self.xref = xref

    @activity.defn
    async def accept_order(self, input: AcceptOrderInput) -> AcceptOrderResult:
        """Map every SKU to a live ERP item and the customer to an ERP customer, cross-references first."""
        order = input.order
        skus = sorted({line.sku for line in order.lines})
        with translated_failures():
            item_ids, weights = await self._items(order.channel, skus)
            erp_customer_id, terms = await self._customer(order, erp_customer_external_id(input.customer_external_id))
        return AcceptOrderResult(
            erp_customer_id=erp_customer_id, terms=terms, item_ids=item_ids, item_weights_oz=weights
        )

    async def _items(self, channel: Channel, skus: list[str]) -> tuple[dict[str, str], dict[str, Decimal]]:
        """Each SKU's ERP item id (cross-reference, else the ERP by item name) and its shipping weight."""
        mapped = await self.xref.skus(channel, skus) if self.xref is not None else {}
        # One SuiteQL query for every SKU: it finds the unmapped ones, and the weight and active
        # flag of mapped ones whose ERP item is named as the channel names it.
        items = await self.netsuite.find_items_by_sku(skus)
        item_ids: dict[str, str] = {}
        for sku in skus:
            if sku in mapped:
                item_ids[sku] = mapped[sku].erp_item_id
            elif sku in items:
                item_ids[sku] = items[sku].erp_item_id
        unknown = [sku for sku in skus if sku not in item_ids]
        if unknown:
            raise ValidationRejectedError(_unknown_skus(channel, unknown, self.xref is not None),
                                          system=SYSTEM, vendor_code="UNKNOWN_SKU")  # fmt: skip
        same = {sku: item for sku, item in items.items() if item.erp_item_id == item_ids[sku]}
        inactive = [sku for sku in skus if sku in same and same[sku].is_inactive]
        if inactive:
            raise ValidationRejectedError(
                f"SKU(s) {', '.join(inactive)} are inactive in NetSuite", system=SYSTEM, vendor_code="INACTIVE_ITEM"
            )
        if self.xref is not None:
            learnt = [SkuXref(channel=channel, channel_sku=sku, erp_item_id=item_ids[sku])
                      for sku in skus if sku not in mapped]  # fmt: skip
            if learnt:
                await self.xref.remember(learnt)
        weights = {sku: item.weight_oz for sku, item in same.items() if item.weight_oz is not None}
        return item_ids, weights

    async def _customer(self, order: Order, external_id: str) -> tuple[str, PaymentTerms]:
        """The ERP customer and terms: cross-reference first, else matched by external id or created."""
        channel_customer_id = order.customer.channel_customer_id
        if self.xref is not None and channel_customer_id:
            mapped = await self.xref.customer(order.channel, channel_customer_id)
            if mapped is not None:
                return mapped.erp_customer_id, mapped.terms
        known = await self.netsuite.find_customer(external_id)
        if known is not None and known.erp_customer_id is not None:
            # Matched: the ERP's record is the master; the channel's copy never overwrites it.
            erp_customer_id, terms = known.erp_customer_id, known.terms
        else:
            erp_customer_id = await self.netsuite.upsert_customer(order.customer, external_id=external_id)
            terms = terms_of(order.customer)
        if self.xref is not None and channel_customer_id:
            learnt = CustomerXref(channel=order.channel, channel_customer_id=channel_customer_id,
                                  erp_customer_id=erp_customer_id, terms=terms)  # fmt: skip
            await self.xref.remember([learnt])
        return erp_customer_id, terms

    @activity.defn
    async def check_credit(self, input: CreditCheckInput) -> CreditCheckResult:
        """Approve a prepaid customer; hold a terms customer on credit hold or without the credit for the order."""
        with translated_failures():
            customer = await self.netsuite.get_customer(input.erp_customer_id)
            if customer.terms is PaymentTerms.PREPAID:
                return CreditCheckResult(decision=CreditDecision.APPROVED, reason="prepaid: no credit line to check")
            standing = await self.netsuite.get_customer_credit(input.erp_customer_id)
        total = input.order_total
        if standing.on_credit_hold:
            reason = f"customer {standing.erp_customer_id} is on credit hold in NetSuite"
            return CreditCheckResult(decision=CreditDecision.HOLD, reason=reason, standing=standing)
        try:
            available = standing.available
            short = (available - total).amount < 0
        except CurrencyMismatchError:
            reason = f"the order is in {total.currency} but the credit line is in {standing.credit_limit.currency}"
            return CreditCheckResult(decision=CreditDecision.HOLD, reason=reason, standing=standing)
        if short:
            reason = (
                f"available credit {_money(available)} is less than the order total {_money(total)} "
                f"(limit {_money(standing.credit_limit)}, balance {_money(standing.balance)}, "
                f"unbilled orders {_money(standing.unbilled_orders)})"
            )
            return CreditCheckResult(decision=CreditDecision.HOLD, reason=reason, standing=standing)
        reason = f"available credit {_money(available)} covers the order total {_money(total)}"
        return CreditCheckResult(decision=CreditDecision.APPROVED, reason=reason, standing=standing)

    @activity.defn
    async def post_sales_order(self, input: PostSalesOrderInput) -> PostSalesOrderResult:
        """Upsert the sales order under its external id: however often it runs, one sales order."""
        with translated_failures():
            ref = await self.netsuite.upsert_sales_order(
                input.order,
                external_id=input.external_id,
                erp_customer_id=input.erp_customer_id,
                item_ids=input.item_ids,
                location_id=input.location_id,
            )
        return PostSalesOrderResult(sales_order=ref)

    @activity.defn
    async def close_sales_order(self, input: CloseSalesOrderInput) -> CloseSalesOrderResult:
        """Close the sales order posted under an external id; none posted is success too."""
        with translated_failures():
            try:
                order = await self.netsuite.get_sales_order(external_id=input.external_id)
            except NotFoundError:
                return CloseSalesOrderResult(closed=False)
            closed = await self.netsuite.close_sales_order(order.erp_order_id)
        return CloseSalesOrderResult(closed=closed.status in CLOSED)

    @activity.defn
    async def close_unshipped_lines(self, input: CloseUnshippedLinesInput) -> CloseUnshippedLinesResult:
        """Close units of the sales order that will not ship (a partly shipped order cancelled); none posted is success.

        The adapter never closes below what was fulfilled and closing the same units again changes
        nothing, so a retry after a lost answer leaves the order as one call would.
        """
        with translated_failures():
            try:
                order = await self.netsuite.get_sales_order(external_id=input.external_id)
            except NotFoundError:
                return CloseUnshippedLinesResult(sales_order=None)
            closed = await self.netsuite.close_sales_order_lines(order.erp_order_id, input.quantities)
        return CloseUnshippedLinesResult(sales_order=closed)

    @activity.defn
    async def record_fulfillment(self, input: ConfirmShipmentInput) -> RecordFulfillmentResult:
        """Record a shipment as an item fulfillment of the sales order, once per shipment."""
        external_id = idempotency_key(input.order.key, f"fulfil-{input.shipment.shipment_id}")
        skus = sorted({line.sku for line in input.shipment.lines})
        # A channel SKU need not be the ERP's item name; the cross-references say which item it is.
        mapped = await self.xref.skus(input.order.channel, skus) if self.xref is not None else {}
        item_ids = {sku: xref.erp_item_id for sku, xref in mapped.items()}
        with translated_failures():
            ref = await self.netsuite.fulfill_sales_order(
                input.erp_order_id, input.shipment, external_id=external_id, item_ids=item_ids
            )
        return RecordFulfillmentResult(fulfillment=ref)

    @activity.defn
    async def invoice_order(self, input: InvoiceOrderInput) -> InvoiceOrderResult:
        """Invoice what shipped on the sales order, once per external id."""
        with translated_failures():
            invoice = await self.netsuite.invoice_sales_order(input.erp_order_id, external_id=input.external_id)
        return InvoiceOrderResult(invoice=invoice)
