"""The contract of `ChannelRefund`: a refund someone made on the channel, booked once in the ERP.

A refund made in Shopify admin (not by orderflow) arrives as `refunds/create`. The webhook service
starts one `ChannelRefund` per channel refund, under the workflow ID `refund:{channel}:{refund_id}`,
so redeliveries of the webhook never book it twice; the ERP credit memo carries an external id
derived from the same key, so a retried activity never books it twice either. A refund orderflow
issued itself (a return saga's) carries orderflow's marker in its note and starts nothing.
"""

from __future__ import annotations

from enum import StrEnum

from orderflow.canonical.base import CanonicalModel, NonEmptyStr
from orderflow.canonical.erp import CreditMemo
from orderflow.canonical.order import Channel
from orderflow.canonical.returns import Refund

WORKFLOW_TYPE = "ChannelRefund"


class ChannelRefundStatus(StrEnum):
    """Where booking a channel refund stands."""

    CREDITING = "CREDITING"
    CREDITED = "CREDITED"
    # A permanent failure (no item to credit, the ERP refused): an operator retries or skips it.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    SKIPPED = "SKIPPED"


class ChannelRefundInput(CanonicalModel):
    """Book a refund made on the channel: the refund as the channel reported it, and its id there."""

    channel: Channel
    channel_refund_id: NonEmptyStr
    refund: Refund

    @property
    def key(self) -> str:
        """The workflow ID: `refund:{channel}:{refund_id}`."""
        return channel_refund_key(self.channel, self.channel_refund_id)


class CreditChannelRefundInput(CanonicalModel):
    """Credit the order's invoice in the ERP for a channel refund, under one external id."""

    refund: Refund
    # The ERP credit memo's external id: the same on every attempt, so the memo is made once.
    external_id: NonEmptyStr
    # The external id the order saga invoiced the order under.
    invoice_external_id: NonEmptyStr
    memo: str | None = None


class CreditChannelRefundResult(CanonicalModel):
    """The credit memo the ERP holds for the refund, and whether this attempt made it."""

    credit_memo: CreditMemo
    erp_invoice_id: str
    created: bool


class ChannelRefundState(CanonicalModel):
    """The `status` query's answer."""

    key: str
    order_key: str
    status: ChannelRefundStatus
    attention_reason: str | None = None
    erp_credit_memo_id: str | None = None


class ChannelRefundResult(CanonicalModel):
    """How booking a channel refund ended."""

    key: str
    status: ChannelRefundStatus
    erp_credit_memo_id: str | None = None
    credited: str | None = None


def channel_refund_key(channel: Channel | str, channel_refund_id: str) -> str:
    """The workflow ID of a channel refund: `refund:shopify:{refund_id}`."""
    return f"refund:{Channel(channel).value}:{channel_refund_id}"


def credit_memo_external_id(key: str) -> str:
    """The ERP external id of a channel refund's credit memo (`OFRF-shopify-{refund_id}`; NetSuite's characters)."""
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in key.removeprefix("refund:"))
    return f"OFRF-{safe}"
