"""Documents in the ERP: sales orders, fulfillments, invoices."""

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
