"""ChannelRefund: book a refund someone made on the channel as one ERP credit memo against the invoice.

One workflow per channel refund (`refund:{channel}:{refund_id}`), so a redelivered `refunds/create`
finds it already started. The one step retries transient failures for as long as it takes (an
order refunded before its invoice was posted waits for the invoice); a permanent failure parks the
workflow with `NeedsAttention` until an operator retries (after fixing the cause) or skips it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from orderflow.activities.channel_refunds import ChannelRefundActivities
    from orderflow.canonical.channel_refund import (
        ChannelRefundInput,
        ChannelRefundResult,
        ChannelRefundState,
        ChannelRefundStatus,
        CreditChannelRefundInput,
        credit_memo_external_id,
    )
    from orderflow.canonical.saga import (
        QUERY_STATUS,
        SIGNAL_RETRY,
        SIGNAL_SKIP,
        OperatorCommand,
        idempotency_key,
    )
    from orderflow.temporal import NEEDS_ATTENTION
    from orderflow.workflows.order_to_cash import failure_reason

# Transient failures back off to ten minutes: an invoice still to be posted may be days away.
CREDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
)


@workflow.defn(name="ChannelRefund")
class ChannelRefund:
    """A refund made on the channel, credited once against the order's invoice in the ERP."""

    @workflow.init
    def __init__(self, input: ChannelRefundInput) -> None:
        self.input = input
        self.status = ChannelRefundStatus.CREDITING
        self.attention_reason: str | None = None
        self.erp_credit_memo_id: str | None = None
        self.command: str | None = None

    @workflow.run
    async def run(self, input: ChannelRefundInput) -> ChannelRefundResult:
        """Credit the invoice; park on a permanent failure until retried or skipped."""
        refund = input.refund
        memo = f"{input.channel.value} refund {input.channel_refund_id}"
        request = CreditChannelRefundInput(
            refund=refund,
            external_id=credit_memo_external_id(input.key),
            invoice_external_id=idempotency_key(refund.order_key, "invoice"),
            memo=f"{memo}: {refund.note}" if refund.note else memo,
        )
        while True:
            try:
                result = await workflow.execute_activity_method(
                    ChannelRefundActivities.credit_invoice_for_refund,
                    request,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=CREDIT_RETRY,
                )
            except ActivityError as error:
                _permanent, reason = failure_reason(error)
                self._park(reason)
                await workflow.wait_condition(lambda: self.command is not None)
                command, self.command = self.command, None
                self._unpark()
                if command == SIGNAL_SKIP:
                    self.status = ChannelRefundStatus.SKIPPED
                    return self._result()
                continue
            self.erp_credit_memo_id = result.credit_memo.erp_credit_memo_id
            self.status = ChannelRefundStatus.CREDITED
            return self._result(str(result.credit_memo.total.amount))

    def _park(self, reason: str) -> None:
        self.status, self.attention_reason = ChannelRefundStatus.NEEDS_ATTENTION, reason
        workflow.upsert_search_attributes([NEEDS_ATTENTION.value_set(True)])

    def _unpark(self) -> None:
        self.status, self.attention_reason = ChannelRefundStatus.CREDITING, None
        workflow.upsert_search_attributes([NEEDS_ATTENTION.value_set(False)])

    def _result(self, credited: str | None = None) -> ChannelRefundResult:
        return ChannelRefundResult(
            key=self.input.key, status=self.status, erp_credit_memo_id=self.erp_credit_memo_id, credited=credited
        )

    @workflow.signal(name=SIGNAL_RETRY)
    def retry(self, command: OperatorCommand) -> None:
        """An operator fixed the cause: try the credit again."""
        if self.status is ChannelRefundStatus.NEEDS_ATTENTION:
            self.command = SIGNAL_RETRY

    @workflow.signal(name=SIGNAL_SKIP)
    def skip(self, command: OperatorCommand) -> None:
        """An operator booked it by hand (or it needs no booking): end without a credit memo."""
        if self.status is ChannelRefundStatus.NEEDS_ATTENTION:
            self.command = SIGNAL_SKIP

    @workflow.query(name=QUERY_STATUS)
    def state(self) -> ChannelRefundState:
        """Where booking the refund stands."""
        return ChannelRefundState(
            key=self.input.key,
            order_key=self.input.refund.order_key,
            status=self.status,
            attention_reason=self.attention_reason,
            erp_credit_memo_id=self.erp_credit_memo_id,
        )
