"""The demo's return leg: customers return part of some completed orders, and staff refund one in admin.

Each return starts the way it does in production: the customer asks on Shopify (the sandbox's
`returns/request`), Shopify's webhook reaches the webhook service, and the relay starts the
return's saga. The sandbox WMS receives the goods by itself after a delay (demo mode), finding a
share of the units damaged. One more completed order is refunded by a person in Shopify admin,
which `refunds/create` turns into an ERP credit memo (`ChannelRefund`).

The check that matters is the books: for every order involved, what Shopify refunded must equal
what the ERP credited, to the cent. Both sides are read from the sandbox's records, not from the
sagas' own accounts of what they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from orderflow.canonical.channel_refund import ChannelRefundResult, ChannelRefundStatus, channel_refund_key
from orderflow.canonical.return_saga import ReturnStatus, ReturnToRefundResult, return_key
from orderflow.cli.demo_sandbox import DemoError
from orderflow.cli.demo_sandbox import control as _control

# Share of the units the sandbox warehouse finds damaged in a returned box.
DAMAGED_SHARE = 0.25
# How long after a return's label the sandbox warehouse "receives" the box.
RECEIVE_AFTER_SECONDS = 1.0
POLL_SECONDS = 0.2


@dataclass
class ReturnOutcome:
    """One return the demo asked for, and how its saga ended."""

    order_key: str
    lines: list[tuple[str, int]]
    key: str | None = None
    status: ReturnStatus | None = None
    damaged: int = 0
    erp_credit_id: str | None = None
    problem: str | None = None


@dataclass
class AdminRefundOutcome:
    """The refund a person made in Shopify admin, and the ERP credit memo it became."""

    order_key: str
    key: str | None = None
    status: ChannelRefundStatus | None = None
    erp_credit_id: str | None = None
    problem: str | None = None


@dataclass
class Reconciliation:
    """Per order involved: refunded on Shopify against credited in the ERP (sandbox records)."""

    refunded: dict[str, Decimal] = field(default_factory=dict)
    credited: dict[str, Decimal] = field(default_factory=dict)
    # Refunds Shopify holds per order, against the returns and admin refunds the demo made there.
    refunds: dict[str, int] = field(default_factory=dict)
    expected_refunds: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> list[str]:
        """Orders whose Shopify refunds and ERP credits differ, or that were refunded more or less often than asked."""
        amounts = [
            f"{key}: Shopify refunded {self.refunded.get(key, Decimal(0))}, ERP credited "
            f"{self.credited.get(key, Decimal(0))}"
            for key in sorted(set(self.refunded) | set(self.credited))
            if self.refunded.get(key, Decimal(0)) != self.credited.get(key, Decimal(0))
        ]
        counts = [
            f"{key}: {self.refunds.get(key, 0)} refunds on Shopify (want {want})"
            for key, want in sorted(self.expected_refunds.items())
            if self.refunds.get(key, 0) != want
        ]
        return amounts + counts

    @property
    def total_refunded(self) -> Decimal:
        """Everything Shopify refunded on the orders involved."""
        return sum(self.refunded.values(), Decimal(0))

    @property
    def total_credited(self) -> Decimal:
        """Everything the ERP credited for them."""
        return sum(self.credited.values(), Decimal(0))


@dataclass
class ReturnsReport:
    """The return leg's outcomes and the reconciliation of the books."""

    returns: list[ReturnOutcome]
    admin_refund: AdminRefundOutcome | None
    reconciliation: Reconciliation

    @property
    def problems(self) -> list[str]:
        """Every return or refund that did not end well, and every order whose books disagree."""
        found = [
            f"{r.key or r.order_key}: {r.problem or f'ended {r.status.value if r.status else None}'}"
            for r in self.returns
            if r.problem or r.status is not ReturnStatus.COMPLETED
        ]
        refund = self.admin_refund
        if refund is not None and (refund.problem or refund.status is not ChannelRefundStatus.CREDITED):
            found.append(f"{refund.key or refund.order_key}: {refund.problem or f'ended {refund.status}'}")
        return found + self.reconciliation.mismatches

    @property
    def ok(self) -> bool:
        """Every return completed, the admin refund was credited, and the books agree to the cent."""
        return not self.problems


def plan_returns(
    completed: Sequence[tuple[str, list[tuple[str, int]]]], *, share: float, seed: int
) -> tuple[list[ReturnOutcome], str | None]:
    """Which completed orders get a partial return (and of what), and which one staff refund in admin."""
    rng = random.Random(seed)
    pool = list(completed)
    rng.shuffle(pool)
    count = min(len(pool), max(1, round(len(pool) * share))) if pool else 0
    returns = []
    for key, lines in pool[:count]:
        sku, quantity = lines[0]
        # Partial: half of one line (at least one unit), so the rest of the order stays sold.
        returns.append(ReturnOutcome(order_key=key, lines=[(sku, max(1, quantity // 2))]))
    admin = pool[count][0] if len(pool) > count else None
    return returns, admin


async def _result(client: Client, key: str, result_type: type[Any], within: float) -> Any:
    """The saga's result once it ends, waiting first for the webhook to have started it."""
    handle = client.get_workflow_handle(key, result_type=result_type)
    async with asyncio.timeout(within):
        while True:
            try:
                await handle.describe()
                break
            except RPCError:
                await asyncio.sleep(POLL_SECONDS)
        return await handle.result()


async def drive_return(outcome: ReturnOutcome, client: Client, sandbox: httpx.AsyncClient, within: float) -> None:
    """Ask for the return on Shopify as the customer would, then follow its saga to the end."""
    channel_order_id = outcome.order_key.rsplit(":", 1)[1]
    try:
        requested = await _control(
            sandbox,
            "POST",
            "/shopify/sandbox/returns/request",
            json={
                "order_id": channel_order_id,
                "lines": [{"sku": sku, "quantity": qty, "reason": "UNWANTED"} for sku, qty in outcome.lines],
            },
        )
        outcome.key = return_key("shopify", str(requested["id"]))
        result: ReturnToRefundResult = await _result(client, outcome.key, ReturnToRefundResult, within)
        outcome.status = result.status
        outcome.damaged = sum(result.state.lines_damaged.values())
        outcome.erp_credit_id = result.state.ids.erp_credit_id
        if result.state.attention_reason and result.status is not ReturnStatus.COMPLETED:
            outcome.problem = f"needs attention: {result.state.attention_reason}"
    except TimeoutError:
        outcome.problem = f"not finished within {within:g} s"
    except (DemoError, WorkflowFailureError, RPCError) as exc:
        outcome.problem = str(exc)


async def drive_admin_refund(
    outcome: AdminRefundOutcome, lines: list[tuple[str, int]], client: Client, sandbox: httpx.AsyncClient, within: float
) -> None:
    """Refund one unit in Shopify admin as staff would, then follow its booking in the ERP."""
    sku, _quantity = lines[-1]
    try:
        refunded = await _control(
            sandbox,
            "POST",
            "/shopify/sandbox/refunds",
            json={
                "order_id": outcome.order_key.rsplit(":", 1)[1],
                "lines": [{"sku": sku, "quantity": 1, "restock": False}],
                "note": "goodwill: scratched on arrival",
            },
        )
        outcome.key = channel_refund_key("shopify", str(refunded["id"]))
        result: ChannelRefundResult = await _result(client, outcome.key, ChannelRefundResult, within)
        outcome.status, outcome.erp_credit_id = result.status, result.erp_credit_memo_id
    except TimeoutError:
        outcome.problem = f"not booked within {within:g} s"
    except (DemoError, WorkflowFailureError, RPCError) as exc:
        outcome.problem = str(exc)


async def reconcile(sandbox: httpx.AsyncClient, report_returns: Sequence[ReturnOutcome],
                    admin: AdminRefundOutcome | None) -> Reconciliation:  # fmt: skip
    """Shopify's refunds and the ERP's credits for every order involved, from the sandbox's records."""
    shopify = await _control(sandbox, "GET", "/sandbox/state/shopify")
    netsuite = await _control(sandbox, "GET", "/sandbox/state/netsuite")
    credits_by_id = {
        str(record["id"]): Decimal(str(record.get("total") or 0))
        for kind in ("creditMemo", "cashRefund")
        for record in netsuite["records"].get(kind, [])
    }
    involved: dict[str, list[str | None]] = {}
    for r in report_returns:
        involved.setdefault(r.order_key, []).append(r.erp_credit_id)
    if admin is not None:
        involved.setdefault(admin.order_key, []).append(admin.erp_credit_id)
    check = Reconciliation()
    orders = {f"order:shopify:{o['id']}": o for o in shopify["orders"]}
    for key, credit_ids in involved.items():
        refunds = orders.get(key, {}).get("refunds", [])
        check.refunds[key] = len(refunds)
        check.expected_refunds[key] = len(credit_ids)
        check.refunded[key] = sum(
            (
                Decimal(str(t.get("amount") or 0))
                for refund in refunds
                for t in refund.get("transactions") or []
                if t.get("kind") == "refund" and t.get("status", "success") == "success"
            ),
            Decimal(0),
        )
        check.credited[key] = sum((credits_by_id.get(str(i), Decimal(0)) for i in credit_ids if i), Decimal(0))
    return check


async def run_returns(
    *,
    client: Client,
    sandbox: httpx.AsyncClient,
    completed: Sequence[tuple[str, list[tuple[str, int]]]],
    share: float = 0.3,
    seed: int = 20,
    finish_within: float = 120.0,
) -> ReturnsReport:
    """Return part of a share of the completed orders, refund one more in admin, and reconcile the books."""
    returns, admin_key = plan_returns(completed, share=share, seed=seed)
    lines_by_key = dict(completed)
    admin = AdminRefundOutcome(order_key=admin_key) if admin_key is not None else None
    demo_before = await _control(sandbox, "GET", "/sandbox/demo")
    await _control(
        sandbox,
        "PUT",
        "/sandbox/demo",
        json={
            **demo_before,
            "wms_return_receive_after_seconds": RECEIVE_AFTER_SECONDS,
            "wms_return_damaged_share": DAMAGED_SHARE,
        },
    )
    try:
        work = [drive_return(r, client, sandbox, finish_within) for r in returns]
        if admin is not None:
            work.append(drive_admin_refund(admin, lines_by_key[admin.order_key], client, sandbox, finish_within))
        await asyncio.gather(*work)
    finally:
        with contextlib.suppress(DemoError):
            await _control(sandbox, "PUT", "/sandbox/demo", json=demo_before)
    return ReturnsReport(returns=returns, admin_refund=admin, reconciliation=await reconcile(sandbox, returns, admin))


def returns_table(report: ReturnsReport) -> Table:
    """Returns by final status, with units damaged, and the books: refunded on Shopify against credited in the ERP."""
    table = Table(title=f"returns: {len(report.returns)} partial returns and an admin refund")
    table.add_column("final status")
    table.add_column("returns", justify="right")
    table.add_column("units damaged", justify="right")
    by_status = Counter(r.status.value if r.status else "problem" for r in report.returns)
    for status, count in sorted(by_status.items()):
        damaged = sum(r.damaged for r in report.returns if (r.status.value if r.status else "problem") == status)
        table.add_row(status, str(count), str(damaged))
    if report.admin_refund is not None:
        status = report.admin_refund.status.value if report.admin_refund.status else "problem"
        table.add_row(f"admin refund: {status}", "1", "-")
    return table
