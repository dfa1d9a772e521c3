"""Documents in the ERP: sales orders, fulfillments, invoices, return authorizations, credit memos."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.money import Money


class SalesOrderStatus(StrEnum):
    """A sales order's state in the ERP."""

    PENDING_APPROVAL = "pending_approval"
    PENDING_FULFILLMENT = "pending_fulfillment"
    PARTIALLY_FULFILLED = "partially_fulfilled"
    PENDING_BILLING = "pending_billing"
    BILLED = "billed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class SalesOrderLine(CanonicalModel):
    """A line of an ERP sales order, with what has been fulfilled and billed against it."""

    line_number: int
    sku: Sku | None = None
    erp_item_id: str
    quantity: int
    quantity_fulfilled: int = 0
    quantity_billed: int = 0
    rate: Money
    is_closed: bool = False


class SalesOrderRef(CanonicalModel):
    """Where an order lives in the ERP: internal id plus the external id we upserted by."""

    erp_order_id: NonEmptyStr
    external_id: NonEmptyStr


class SalesOrder(CanonicalModel):
    """A sales order as the ERP holds it."""

    erp_order_id: str
    external_id: str | None
    erp_customer_id: str
    status: SalesOrderStatus
    lines: list[SalesOrderLine]
    total: Money
    memo: str | None = None


class ErpDocumentRef(CanonicalModel):
    """A document the ERP created by transforming another (fulfillment, invoice, receipt, memo)."""

    record_type: NonEmptyStr
    erp_id: NonEmptyStr
    external_id: str | None = None


class InvoiceLine(CanonicalModel):
    """A billed quantity of one item."""

    sku: Sku | None = None
    erp_item_id: str
    quantity: int = Field(gt=0)
    amount: Money


class Invoice(CanonicalModel):
    """A bill raised against a sales order."""

    erp_invoice_id: str
    erp_order_id: str
    external_id: str | None = None
    issued_on: date
    lines: list[InvoiceLine]
    total: Money


class ReturnAuthorizationStatus(StrEnum):
    """A return authorization's state in the ERP."""

    PENDING_RECEIPT = "pending_receipt"
    PARTIALLY_RECEIVED = "partially_received"
    PENDING_REFUND_PARTIALLY_RECEIVED = "pending_refund_partially_received"
    PENDING_REFUND = "pending_refund"
    REFUNDED = "refunded"
    CLOSED = "closed"


class ReturnAuthorizationLine(CanonicalModel):
    """A line of a return authorization: units authorized, received and credited so far."""

    sku: Sku | None = None
    erp_item_id: str
    quantity: int = Field(ge=0)
    quantity_received: int = Field(default=0, ge=0)
    quantity_credited: int = Field(default=0, ge=0)
    rate: Money
    line_number: int = 0
    is_closed: bool = False

    @property
    def quantity_open(self) -> int:
        """Units still expected back (none once the line is closed)."""
        return 0 if self.is_closed else max(0, self.quantity - self.quantity_received)


class ReturnAuthorization(CanonicalModel):
    """A return authorization (RMA) as the ERP holds it."""

    erp_return_authorization_id: str
    erp_order_id: str
    external_id: str | None = None
    status: ReturnAuthorizationStatus
    lines: list[ReturnAuthorizationLine]
    total: Money

    def authorized(self) -> dict[str, int]:
        """Units per SKU this authorization still stands for: received ones, plus open ones."""
        result: dict[str, int] = {}
        for line in self.lines:
            if line.sku is not None:
                kept = line.quantity_received if line.is_closed else max(line.quantity, line.quantity_received)
                result[line.sku] = result.get(line.sku, 0) + kept
        return result


class CreditMemo(CanonicalModel):
    """Money the ERP owes the customer back: a credit memo, or a cash refund (`record_type`)."""

    erp_credit_memo_id: str
    external_id: str | None = None
    created_from_id: str | None = None
    lines: list[InvoiceLine]
    total: Money
    record_type: str = "creditMemo"
    tax_total: Money | None = None
    memo: str | None = None
