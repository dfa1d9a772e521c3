"""The ERP side of a refund made on the channel: one credit memo against the order's invoice."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from orderflow.activities.failures import translated_failures
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.canonical.channel_refund import CreditChannelRefundInput, CreditChannelRefundResult


class ChannelRefundActivities:
    """Books channel refunds in NetSuite."""

    def __init__(self, netsuite: NetSuiteClient) -> None:
        self.netsuite = netsuite

    @activity.defn(name="credit_invoice_for_refund")
    async def credit_invoice_for_refund(self, input: CreditChannelRefundInput) -> CreditChannelRefundResult:
        """Credit the order's invoice for what the channel refunded, once per external id."""
        with translated_failures():
            existing = await self.netsuite.find_credit_memo(input.external_id)
            if existing is not None:
                return CreditChannelRefundResult(
                    credit_memo=existing, erp_invoice_id=existing.created_from_id or "", created=False
                )
            invoice = await self.netsuite.find_invoice(input.invoice_external_id)
            if invoice is None:
                # Retryable: the order saga invoices after shipment, and a refund may come first.
                raise ApplicationError(
                    f"{input.refund.order_key} has no invoice in the ERP yet ({input.invoice_external_id}); "
                    "the credit waits for it",
                    type="InvoiceNotYetPosted",
                )
            ref = await self.netsuite.credit_invoice(
                invoice.erp_invoice_id,
                input.refund.lines,
                external_id=input.external_id,
                memo=input.memo,
                shipping=input.refund.shipping,
            )
            memo = await self.netsuite.get_credit_memo(ref.erp_id)
        return CreditChannelRefundResult(credit_memo=memo, erp_invoice_id=invoice.erp_invoice_id, created=True)
