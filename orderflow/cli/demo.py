"""`orderflow demo`: N orders from Shopify (through the webhooks) and Amazon (through the order
poller), taken by the sagas to the end.

The mix is what a distributor's day looks like: mostly prepaid D2C orders, some B2B orders on
terms (one or two of them for a customer the ERP holds for credit, which the demo then approves as
an operator would), and a few orders the buyer cancels on Shopify before they ship. A third of the
orders (`--channel mixed`, the default; all of them with `--channel amazon`) are Amazon
merchant-fulfilled orders, which the poller's schedule finds; a few of those the buyer asks Amazon
to cancel, once before the poller has seen the order and otherwise after stock is reserved. Every
order has an expected end, COMPLETED or CANCELLED; the demo exits 0 only if each one got there.

`run_demo` is the whole demo against a running stack (a Temporal client, the sandbox, the webhook
service and a worker); the command around it starts what is not running and stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from orderflow.adapters.errors import AdapterError
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical import Channel
from orderflow.canonical.channel_polling import poller_schedule_id
from orderflow.canonical.order import order_key
from orderflow.canonical.saga import (
    QUERY_STATUS,
    TASK_QUEUE,
    UPDATE_APPROVE_CREDIT,
    ActionOutcome,
    CreditApproval,
    OrderSagaState,
    OrderStatus,
    OrderToCashResult,
    SagaStep,
    order_reference,
)
from orderflow.cli.connection import fail
from orderflow.cli.demo_amazon import AmazonPolls, ask_to_cancel, check_amazon, place_amazon_order, stop_polling
from orderflow.cli.demo_returns import ReturnsReport, returns_table, run_returns
from orderflow.cli.demo_sandbox import DemoError
from orderflow.cli.demo_sandbox import control as _control
from orderflow.devstack import DevStack, DevStackError, PortInUseError, StackPorts
from orderflow.sandbox.seed import CATALOG, CUSTOMERS, WAREHOUSES, CatalogItem, SeedCustomer
from orderflow.settings import SANDBOX_AMAZON_MARKETPLACE_ID, STATE_DIR, ShopifySettings
from orderflow.temporal import DEFAULT_NAMESPACE, connect

DEMO_OPERATOR = "orderflow-demo"
DEMO_TAG = "orderflow-demo"
# Where orders come from: the first warehouse is where the allocation looks first, so an order
# whose every line it can fill ships in one parcel from there.
HOME_WAREHOUSE = WAREHOUSES[0].wms_location_id
# A SKU is offered only while this many units stay free after the demo's own orders, so a scarce
# SKU (the seed has some on purpose) never turns a demo order into a backorder.
STOCK_MARGIN = 10
# The carrier rates parcels up to 150 lb, and the saga ships an order as one parcel: a B2B order
# heavier than that parks at buy_label. The demo keeps every order's goods under 100 lb.
MAX_PARCEL_OZ = Decimal(1600)
D2C_TAX_RATE = Decimal("0.0625")
D2C_SHIPPING = Decimal("9.95")
# Statuses from which a channel cancellation still lands before the warehouse ships: the saga has
# a reservation to give back, and the warehouse ships `ship_after` seconds after the release.
CANCEL_WINDOW = frozenset({OrderStatus.ALLOCATED, OrderStatus.POSTED, OrderStatus.LABELLED, OrderStatus.RELEASED})
SHIPPED_OR_LATER = frozenset(
    {OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED, OrderStatus.FULFILLED, OrderStatus.COMPLETED}
)
POLL_SECONDS = 0.2
# Two getOrder calls per order at Amazon's 0.5/s, once the burst is spent.
AMAZON_START_SECONDS_PER_ORDER = 4.0
# An Amazon order not yet seen asks for another poll this often.
REPOLL_SECONDS = 5.0
TERMINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED})

ORDER_CREATE = """mutation DemoOrderCreate($order: OrderCreateOrderInput!) {
  orderCreate(order: $order) { order { legacyResourceId name } userErrors { field message code } }
}"""


class OrderKind(StrEnum):
    """What happens to a demo order on its way."""

    D2C = "D2C prepaid"
    B2B = "B2B on terms"
    CREDIT_HOLD = "B2B credit hold, approved"
    CHANNEL_CANCEL = "cancelled on Shopify"
    AMAZON = "Amazon merchant-fulfilled"
    AMAZON_BUYER_CANCEL = "Amazon buyer cancelled"
    AMAZON_CANCEL_BEFORE_POLL = "Amazon buyer cancelled before the poll"


EXPECTED_END: dict[OrderKind, OrderStatus] = {
    OrderKind.D2C: OrderStatus.COMPLETED,
    OrderKind.B2B: OrderStatus.COMPLETED,
    OrderKind.CREDIT_HOLD: OrderStatus.COMPLETED,
    OrderKind.CHANNEL_CANCEL: OrderStatus.CANCELLED,
    OrderKind.AMAZON: OrderStatus.COMPLETED,
    OrderKind.AMAZON_BUYER_CANCEL: OrderStatus.CANCELLED,
    OrderKind.AMAZON_CANCEL_BEFORE_POLL: OrderStatus.CANCELLED,
}
AMAZON_KINDS = frozenset({OrderKind.AMAZON, OrderKind.AMAZON_BUYER_CANCEL, OrderKind.AMAZON_CANCEL_BEFORE_POLL})


class DemoChannel(StrEnum):
    """Where the demo's orders come from."""

    SHOPIFY = "shopify"
    AMAZON = "amazon"
    MIXED = "mixed"


@dataclass(frozen=True)
class PlannedOrder:
    """One order the sandbox Shopify will place: who buys what, and how it should end."""

    kind: OrderKind
    # None on Amazon: the marketplace invents its buyer, and orderflow learns it from the order.
    customer: SeedCustomer | None
    lines: tuple[tuple[CatalogItem, int], ...]

    @property
    def expected(self) -> OrderStatus:
        """The status the saga must end in."""
        return EXPECTED_END[self.kind]

    @property
    def channel(self) -> Channel:
        """The channel the buyer orders on."""
        return Channel.AMAZON if self.kind in AMAZON_KINDS else Channel.SHOPIFY

    @property
    def b2b(self) -> bool:
        """A terms customer's order: no tax, freight shipping, paid later on invoice."""
        return self.customer is not None and self.customer.terms == "terms"


@dataclass
class OrderOutcome:
    """How one demo order went: its saga, where it ended, what the demo did to it, and its latency."""

    planned: PlannedOrder
    key: str | None = None
    status: OrderStatus | None = None
    attention_reason: str | None = None
    problem: str | None = None
    actions: list[str] = field(default_factory=list)
    webhook_to_erp_ms: float | None = None

    @property
    def reached_expected_end(self) -> bool:
        """Whether the saga ended where the plan said it would."""
        return self.problem is None and self.status is self.planned.expected


@dataclass(frozen=True)
class LedgerCheck:
    """The sandbox's records for the completed orders: one sales order and one purchased label each."""

    checked: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Every completed order has exactly one sales order and one purchased label."""
        return not self.problems


@dataclass
class DemoReport:
    """Everything the summary prints."""

    outcomes: list[OrderOutcome]
    orders_seconds: float
    chaos: bool
    ledger: LedgerCheck | None = None
    faults_fired: dict[str, int] = field(default_factory=dict)
    returns: ReturnsReport | None = None
    # What the sandbox Amazon disagrees with (None: no Amazon orders), and how many polls the demo asked for.
    amazon_problems: list[str] | None = None
    amazon_polls: int = 0

    @property
    def failures(self) -> list[OrderOutcome]:
        """The orders that did not reach their expected end."""
        return [o for o in self.outcomes if not o.reached_expected_end]

    @property
    def ok(self) -> bool:
        """Every order at its expected end, the ledger clean, Amazon agreeing, and the returns reconciled."""
        ledger_ok = self.ledger is None or self.ledger.ok
        returns_ok = self.returns is None or self.returns.ok
        return not self.failures and ledger_ok and returns_ok and not self.amazon_problems


class DemoProgress:
    """What the demo is doing, for a progress bar: orders finished and where the others are."""

    def __init__(self, total: int, on_change: Callable[[DemoProgress], None] | None = None) -> None:
        self.total = total
        self.where: dict[int, str] = {}
        self.finished = 0
        self._on_change = on_change

    def update(self, index: int, where: str, *, finished: bool = False) -> None:
        """Record where order `index` is now."""
        self.where[index] = where
        if finished:
            self.finished += 1
        if self._on_change is not None:
            self._on_change(self)

    def describe(self) -> str:
        """A one-line count of the orders by where they are."""
        counts = Counter(self.where.values())
        return ", ".join(f"{n} {where}" for where, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ---- planning ---------------------------------------------------------------------------------


def free_stock(wms_state: dict[str, Any], location_id: int = HOME_WAREHOUSE) -> dict[str, int]:
    """Units free to reserve per SKU in one warehouse, from the sandbox WMS's state."""
    return {
        str(row["sku"]): int(row["fulfillable"])
        for row in wms_state.get("stock", [])
        if int(row["location_id"]) == location_id
    }


def amazon_share(count: int, channel: DemoChannel) -> int:
    """How many of `count` orders come from Amazon: none, all, or a third (at least one) when mixed."""
    if channel is DemoChannel.SHOPIFY:
        return 0
    if channel is DemoChannel.AMAZON:
        return count
    return max(1, count // 3) if count >= 2 else 0


def plan_orders(
    count: int, stock: dict[str, int], *, seed: int = 20, channel: DemoChannel = DemoChannel.SHOPIFY
) -> list[PlannedOrder]:
    """The demo's mix for `count` orders from the chosen channels, drawn only from SKUs with stock to spare.

    On Shopify, about one order in ten is held for credit (GLOBEX is near its limit, INITECH is on
    hold), one in ten is a B2B order that passes, about one in seven is cancelled on Shopify, the
    rest are D2C. On Amazon, about one in seven is cancelled by its buyer after stock is reserved,
    and (from five orders) one buyer asks to cancel before the poller has seen the order.
    """
    if count < 1:
        raise ValueError("the demo needs at least one order")
    amazon = amazon_share(count, channel)
    rng = random.Random(seed)
    left = dict(stock)
    planned = _plan_shopify(count - amazon, left, rng) if count > amazon else []
    return planned + _plan_amazon(amazon, left, rng)


def _plan_amazon(count: int, left: dict[str, int], rng: random.Random) -> list[PlannedOrder]:
    before_poll = 1 if count >= 5 else 0
    after_allocation = max(1, round(count * 0.15)) if count >= 3 else 0
    kinds = [OrderKind.AMAZON_CANCEL_BEFORE_POLL] * before_poll + [OrderKind.AMAZON_BUYER_CANCEL] * after_allocation
    kinds += [OrderKind.AMAZON] * (count - len(kinds))
    return [
        PlannedOrder(kind=kind, customer=None, lines=_pick_lines(rng, left, lines=rng.randint(1, 3), quantity=(1, 3)))
        for kind in kinds
    ]


def _plan_shopify(count: int, left: dict[str, int], rng: random.Random) -> list[PlannedOrder]:
    holds = max(1, count // 10) if count >= 2 else 0
    cancels = max(1, round(count * 0.15)) if count >= 3 else 0
    b2b = count // 10 if count >= 5 else 0
    kinds = [OrderKind.CREDIT_HOLD] * holds + [OrderKind.CHANNEL_CANCEL] * cancels + [OrderKind.B2B] * b2b
    kinds += [OrderKind.D2C] * (count - len(kinds))
    # The special orders early, so they are under way while the D2C orders stream in.
    special, plain = kinds[: holds + cancels + b2b], kinds[holds + cancels + b2b :]
    rng.shuffle(special)
    kinds = special + plain

    d2c_buyers = [c for c in CUSTOMERS if c.terms == "prepaid" and c.shopify_customer_id is not None]
    by_entity = {c.entity_id: c for c in CUSTOMERS}
    # GLOBEX has less credit left than any B2B order, INITECH is on credit hold: both are held.
    held = [by_entity["GLOBEX"], by_entity["INITECH"]]
    # ACME and UMBRELLA have tens of thousands of credit left, far more than a demo run uses.
    good = [by_entity["ACME"], by_entity["UMBRELLA"]]
    planned: list[PlannedOrder] = []
    counters: Counter[OrderKind] = Counter()
    for kind in kinds:
        n = counters[kind]
        counters[kind] += 1
        if kind is OrderKind.CREDIT_HOLD:
            customer = held[n % len(held)]
        elif kind is OrderKind.B2B:
            customer = good[n % len(good)]
        else:
            customer = d2c_buyers[rng.randrange(len(d2c_buyers))]
        b2b_order = customer.terms == "terms"
        lines = _pick_lines(rng, left, lines=rng.randint(1, 3), quantity=(8, 20) if b2b_order else (1, 3))
        planned.append(PlannedOrder(kind=kind, customer=customer, lines=lines))
    return planned


def plan_d2c_orders(count: int, stock: dict[str, int], *, seed: int = 20) -> list[PlannedOrder]:
    """`count` prepaid D2C orders (the benchmark's load), drawn only from SKUs with stock to spare."""
    rng = random.Random(seed)
    buyers = [c for c in CUSTOMERS if c.terms == "prepaid" and c.shopify_customer_id is not None]
    left = dict(stock)
    return [
        PlannedOrder(
            kind=OrderKind.D2C,
            customer=buyers[rng.randrange(len(buyers))],
            lines=_pick_lines(rng, left, lines=rng.randint(1, 3), quantity=(1, 3)),
        )
        for _ in range(count)
    ]


def _pick_lines(
    rng: random.Random, left: dict[str, int], *, lines: int, quantity: tuple[int, int]
) -> tuple[tuple[CatalogItem, int], ...]:
    chosen: list[tuple[CatalogItem, int]] = []
    weight = Decimal(0)
    candidates = list(CATALOG)
    rng.shuffle(candidates)
    for item in candidates:
        if len(chosen) == lines:
            break
        qty = rng.randint(*quantity)
        if weight + item.weight_oz * qty > MAX_PARCEL_OZ:
            qty = int((MAX_PARCEL_OZ - weight) // item.weight_oz)
        if qty >= 1 and left.get(item.sku, 0) - qty >= STOCK_MARGIN:
            left[item.sku] -= qty
            weight += item.weight_oz * qty
            chosen.append((item, qty))
    if not chosen:
        raise DemoError(
            "the sandbox warehouse has too little stock left for the demo's orders; "
            "reset it with `orderflow sandbox reset` (or restart the stack)"
        )
    return tuple(chosen)


def order_variables(order: PlannedOrder) -> dict[str, Any]:
    """The `orderCreate` input for a planned order, as a storefront or a sales rep would place it."""
    customer = order.customer
    if customer is None:
        raise ValueError(f"a {order.kind.value} order is not placed on Shopify")
    first, _, last = customer.name.partition(" ")
    address = {
        "firstName": "Receiving" if order.b2b else first,
        "lastName": "Dock" if order.b2b else (last or None),
        "company": customer.name if order.b2b else None,
        "address1": customer.street1,
        "city": customer.city,
        "provinceCode": customer.state,
        "zip": customer.zip,
        "countryCode": "US",
    }
    tax = [] if order.b2b else [{"title": "State Tax", "rate": str(D2C_TAX_RATE)}]
    shipping = ("Freight", "freight", Decimal(0)) if order.b2b else ("Standard", "standard", D2C_SHIPPING)
    return {
        "order": {
            "email": customer.email,
            # B2B buyers pay on the ERP's invoice; D2C buyers have paid at checkout.
            "financialStatus": "PENDING" if order.b2b else "PAID",
            "customer": {"toAssociate": {"id": f"gid://shopify/Customer/{customer.shopify_customer_id}"}},
            "lineItems": [
                {
                    "variantId": f"gid://shopify/ProductVariant/{item.shopify_variant_id}",
                    "quantity": qty,
                    "taxLines": tax,
                }
                for item, qty in order.lines
            ],
            "shippingAddress": address,
            "billingAddress": address,
            "shippingLines": [
                {
                    "title": shipping[0],
                    "code": shipping[1],
                    "priceSet": {"shopMoney": {"amount": str(shipping[2]), "currencyCode": "USD"}},
                }
            ],
            "tags": [DEMO_TAG, order.kind.name.lower()],
        }
    }


# ---- chaos ------------------------------------------------------------------------------------------


def chaos_rules() -> list[dict[str, Any]]:
    """The acceptance faults: ERP writes fail 20% with 5xx and lose 5% of answers; the carrier throttles."""
    record_writes = {"system": "netsuite", "path": "/services/rest/record/*", "mutating_only": True}
    return [
        # First, so it fires at its own 5% (a request takes the first non-latency rule that fires).
        {**record_writes, "kind": "timeout_after_commit", "rate": 0.05, "hold_seconds": 5.0},
        {**record_writes, "kind": "error", "rate": 0.2, "status": 503},
        {"system": "carrier", "kind": "throttle", "rate": 0.3, "retry_after": 1.0},
    ]


# ---- one order ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoContext:
    """What every order's driver shares."""

    client: Client
    shopify: ShopifyClient
    sandbox: httpx.AsyncClient
    progress: DemoProgress
    start_within: float
    finish_within: float
    # The Amazon poller's trigger; None when the demo places no Amazon orders.
    amazon: AmazonPolls | None = None
    amazon_start_within: float = 30.0
    # The early buyer cancellations whose polls are done, so the other Amazon orders may come.
    released: set[int] = field(default_factory=set)


async def drive_order(index: int, planned: PlannedOrder, ctx: DemoContext) -> OrderOutcome:
    """Place one order on Shopify, act on its saga as the plan says, and wait for its end."""
    outcome = OrderOutcome(planned=planned)
    progress = ctx.progress
    try:
        if planned.channel is Channel.AMAZON and planned.kind is not OrderKind.AMAZON_BUYER_CANCEL and ctx.amazon:
            # The buyer cancellations go first: their polls must be quick (see demo_amazon).
            progress.update(index, "waiting for the Amazon buyer cancellations")
            await ctx.amazon.cancels_polled.wait()
        progress.update(index, f"placing on {planned.channel.value.title()}")
        outcome.key = await _place(planned, ctx)
        handle = ctx.client.get_workflow_handle(outcome.key, result_type=OrderToCashResult)
        progress.update(index, "awaiting poll" if planned.channel is Channel.AMAZON else "awaiting webhook")
        if planned.channel is Channel.AMAZON:
            await _wait_started(handle, within=ctx.amazon_start_within, poll=ctx.amazon)
        else:
            await _wait_started(handle, within=ctx.start_within)
        progress.update(index, "in saga")
        async with asyncio.timeout(ctx.finish_within):
            if planned.kind is OrderKind.CREDIT_HOLD:
                await _approve_when_held(index, handle, outcome, ctx)
            elif planned.kind is OrderKind.CHANNEL_CANCEL:
                await _cancel_on_shopify_before_shipment(index, handle, outcome, ctx)
            elif planned.kind is OrderKind.AMAZON_BUYER_CANCEL:
                await _buyer_cancels_on_amazon(index, handle, outcome, ctx)
                _release_amazon_orders(index, planned, ctx)
            result = await handle.result()
        outcome.status = result.status
        outcome.attention_reason = result.state.attention_reason
        outcome.webhook_to_erp_ms = webhook_to_erp_ms(result.state)
    except TimeoutError:
        outcome.problem = f"not finished within {ctx.finish_within:g} s"
        await _note_last_state(outcome, ctx.client)
    except WorkflowFailureError as exc:
        outcome.problem = f"the saga failed: {exc.cause or exc}"
    except (DemoError, AdapterError, RPCError, WorkflowUpdateFailedError) as exc:
        outcome.problem = str(exc)
        await _note_last_state(outcome, ctx.client)
    finally:
        # A buyer cancellation that went wrong must not hold the other Amazon orders back.
        _release_amazon_orders(index, planned, ctx)
    final = outcome.status.value if outcome.status and outcome.problem is None else "problem"
    progress.update(index, final, finished=True)
    return outcome


def _release_amazon_orders(index: int, planned: PlannedOrder, ctx: DemoContext) -> None:
    """An early buyer cancellation is polled (or failed): once all are, the other Amazon orders are placed."""
    if planned.kind is OrderKind.AMAZON_BUYER_CANCEL and ctx.amazon is not None and index not in ctx.released:
        ctx.released.add(index)
        ctx.amazon.cancel_polled()


async def _place(planned: PlannedOrder, ctx: DemoContext) -> str:
    """Create the order on its channel; its saga key.

    Shopify sends `orders/create` to the webhook service; an Amazon order waits for the poller.
    """
    if planned.channel is Channel.AMAZON:
        lines = [(item.sku, quantity) for item, quantity in planned.lines]
        regret = "Ordered by mistake" if planned.kind is OrderKind.AMAZON_CANCEL_BEFORE_POLL else None
        key = await place_amazon_order(ctx.sandbox, lines, buyer_cancel_reason=regret)
        if ctx.amazon is not None:
            ctx.amazon.request()
        return key
    created = (await ctx.shopify.execute(ORDER_CREATE, order_variables(planned)))["orderCreate"]
    if created.get("userErrors"):
        raise DemoError(f"Shopify refused the order: {created['userErrors']}")
    return order_key(Channel.SHOPIFY, str(created["order"]["legacyResourceId"]))


async def _wait_started(handle: WorkflowHandle[Any, Any], *, within: float, poll: AmazonPolls | None = None) -> None:
    """Wait until the webhook service (or, with `poll`, the Amazon poller) has started the order's saga."""
    deadline = time.monotonic() + within
    ask_again = time.monotonic() + REPOLL_SECONDS
    while True:
        try:
            await handle.describe()
            return
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            if poll is not None:
                raise DemoError(f"no saga started within {within:g} s: is the Amazon poller's schedule running?")
            raise DemoError(f"no saga started within {within:g} s: did the orders/create webhook arrive?")
        if poll is not None and time.monotonic() > ask_again:
            # The poll that was to see it may have ended just before the order was stamped.
            poll.request()
            ask_again = time.monotonic() + REPOLL_SECONDS
        await asyncio.sleep(POLL_SECONDS)


async def _state(handle: WorkflowHandle[Any, Any]) -> OrderSagaState:
    state: OrderSagaState = await handle.query(QUERY_STATUS, result_type=OrderSagaState)
    return state


async def _wait_for(handle: WorkflowHandle[Any, Any], wanted: Callable[[OrderSagaState], bool]) -> OrderSagaState:
    while True:
        state = await _state(handle)
        if wanted(state):
            return state
        await asyncio.sleep(POLL_SECONDS)


async def _approve_when_held(
    index: int, handle: WorkflowHandle[Any, Any], outcome: OrderOutcome, ctx: DemoContext
) -> None:
    """As an operator would with `orderflow orders approve-credit`: release the order from credit hold."""
    state = await _wait_for(handle, lambda s: s.status is OrderStatus.CREDIT_HOLD or s.status not in _BEFORE_CREDIT)
    if state.status is not OrderStatus.CREDIT_HOLD:
        raise DemoError(f"expected a credit hold, but the saga went on to {state.status.value}")
    ctx.progress.update(index, "credit hold")
    answer = await handle.execute_update(
        UPDATE_APPROVE_CREDIT,
        CreditApproval(approved_by=DEMO_OPERATOR, note="approved by the demo, as an operator would"),
        result_type=ActionOutcome,
    )
    outcome.actions.append(f"credit approved: {answer.message}")
    ctx.progress.update(index, "credit approved")


_BEFORE_CREDIT = frozenset({OrderStatus.RECEIVED, OrderStatus.ACCEPTED})


async def _cancel_on_shopify_before_shipment(
    index: int, handle: WorkflowHandle[Any, Any], outcome: OrderOutcome, ctx: DemoContext
) -> None:
    """The buyer cancels on Shopify once stock is reserved; Shopify's orders/cancelled reaches the saga."""
    state = await _wait_for(handle, lambda s: s.status in CANCEL_WINDOW or s.status not in _BEFORE_ALLOCATION)
    if state.status in SHIPPED_OR_LATER:
        raise DemoError(f"the order was {state.status.value} before the demo could cancel it")
    assert outcome.key is not None
    channel_order_id = outcome.key.rsplit(":", 1)[1]
    await ctx.shopify.cancel_order(channel_order_id, reason="CUSTOMER", staff_note="buyer cancelled (orderflow demo)")
    outcome.actions.append(f"cancelled on Shopify at {state.status.value}")
    ctx.progress.update(index, "cancelled on Shopify")


async def _buyer_cancels_on_amazon(
    index: int, handle: WorkflowHandle[Any, Any], outcome: OrderOutcome, ctx: DemoContext
) -> None:
    """The buyer asks Amazon to cancel as soon as the saga runs; the next poll tells it, and it cancels there."""
    state = await _state(handle)
    if state.status in SHIPPED_OR_LATER or state.status in TERMINAL_STATUSES:
        raise DemoError(f"the order was {state.status.value} before its buyer could ask to cancel")
    assert outcome.key is not None
    await ask_to_cancel(ctx.sandbox, outcome.key, "Found a better price")
    outcome.actions.append(f"buyer asked Amazon to cancel at {state.status.value}")
    ctx.progress.update(index, "buyer asked Amazon to cancel")
    if ctx.amazon is not None:
        await ctx.amazon.poll_once()


_BEFORE_ALLOCATION = frozenset(
    {OrderStatus.RECEIVED, OrderStatus.ACCEPTED, OrderStatus.CREDIT_HOLD, OrderStatus.CREDIT_APPROVED}
)


def webhook_to_erp_ms(state: OrderSagaState) -> float | None:
    """From the orders/create webhook's arrival to the sales order's posting (its step record)."""
    posted = next((s for s in state.steps_done if s.step == SagaStep.POST_TO_ERP.value), None)
    if posted is None or state.received_at_epoch_ms is None:
        return None
    return datetime.fromisoformat(posted.at).timestamp() * 1000 - state.received_at_epoch_ms


async def _note_last_state(outcome: OrderOutcome, client: Client) -> None:
    """For the report: where a saga that did not reach its end was, and why it waits."""
    if outcome.key is None:
        return
    with contextlib.suppress(RPCError, TimeoutError, WorkflowUpdateFailedError):
        async with asyncio.timeout(5):
            state = await _state(client.get_workflow_handle(outcome.key))
            outcome.status = state.status
            outcome.attention_reason = state.attention_reason


# ---- the demo ---------------------------------------------------------------------------------------


async def run_demo(
    *,
    client: Client,
    shopify: ShopifyClient,
    sandbox: httpx.AsyncClient,
    orders: int = 20,
    chaos: bool = False,
    ship_after_seconds: float = 2.0,
    start_within: float = 30.0,
    finish_within: float = 150.0,
    seed: int = 20,
    returns_share: float = 0.3,
    on_progress: Callable[[DemoProgress], None] | None = None,
    channel: DemoChannel = DemoChannel.SHOPIFY,
    task_queue: str = TASK_QUEUE,
    marketplace: str = SANDBOX_AMAZON_MARKETPLACE_ID,
    amazon_schedule_id: str | None = None,
) -> DemoReport:
    """Send `orders` orders through Shopify's webhooks and Amazon's poller into the sagas; report how each ended.

    `sandbox` is a client for the sandbox's control API. Demo mode (the WMS ships `ship_after_seconds`
    after release) and, with `chaos`, the acceptance faults are switched on for the run and back off after.
    Amazon orders are found by the poller's schedule (`amazon_schedule_id`, by default the
    marketplace's own), created on `task_queue` if it does not exist and triggered when needed.
    """
    stock = free_stock(await _control(sandbox, "GET", "/sandbox/state/wms"))
    plan = plan_orders(orders, stock, seed=seed, channel=channel)
    demo_before = await _control(sandbox, "GET", "/sandbox/demo")
    await _control(sandbox, "PUT", "/sandbox/demo", json={**demo_before, "wms_ship_after_seconds": ship_after_seconds})
    fault_ids: list[str] = []
    progress = DemoProgress(len(plan), on_progress)
    amazon: AmazonPolls | None = None
    polling: asyncio.Task[None] | None = None
    if any(order.channel is Channel.AMAZON for order in plan):
        amazon = AmazonPolls(client, amazon_schedule_id or poller_schedule_id(Channel.AMAZON, marketplace))
        amazon.expect_cancels(sum(o.kind is OrderKind.AMAZON_BUYER_CANCEL for o in plan))
        await amazon.ensure_schedule(marketplace, task_queue=task_queue, every=timedelta(minutes=2))
        polling = asyncio.create_task(amazon.run())
    ctx = DemoContext(
        client=client,
        shopify=shopify,
        sandbox=sandbox,
        progress=progress,
        start_within=start_within,
        finish_within=finish_within,
        amazon=amazon,
        # Starting an Amazon order's saga reads it twice (with its buyer's address the second time)
        # at getOrder's 0.5/s once its burst of 30 is spent: a big batch takes a while to start.
        amazon_start_within=start_within
        + AMAZON_START_SECONDS_PER_ORDER * sum(o.channel is Channel.AMAZON for o in plan),
    )
    started = time.monotonic()
    try:
        if chaos:
            for rule in chaos_rules():
                fault_ids.append((await _control(sandbox, "POST", "/sandbox/faults", json=rule))["id"])
        outcomes = await asyncio.gather(*(drive_order(i, order, ctx) for i, order in enumerate(plan)))
        elapsed = time.monotonic() - started
        await stop_polling(polling)
        returns = None
        # Prepaid Shopify orders only: a terms customer's order was never paid on Shopify, so its
        # return is a credit against the invoice in the ERP and there is no money to refund on the
        # channel; an Amazon return is opened by an operator (tests/e2e cover it), not by a buyer.
        completed = [
            (o.key, [(item.sku, quantity) for item, quantity in o.planned.lines])
            for o in outcomes
            if o.key
            and o.status is OrderStatus.COMPLETED
            and not o.planned.b2b
            and o.planned.channel is Channel.SHOPIFY
        ]
        if returns_share > 0 and completed:
            progress.update(-1, "returns and refunds")
            # Still under the chaos faults, if any: credit memos and refunds must stay single through them.
            returns = await run_returns(
                client=client, sandbox=sandbox, completed=completed, share=returns_share, seed=seed,
                finish_within=finish_within,
            )  # fmt: skip
        fired = {}
        if fault_ids:
            rules = await _control(sandbox, "GET", "/sandbox/faults")
            fired = {f"{r['system']} {r['kind']}": int(r["fired"]) for r in rules if r["id"] in fault_ids}
    finally:
        await stop_polling(polling)
        for rule_id in fault_ids:
            with contextlib.suppress(DemoError):
                await _control(sandbox, "DELETE", f"/sandbox/faults/{rule_id}")
        with contextlib.suppress(DemoError):
            await _control(sandbox, "PUT", "/sandbox/demo", json=demo_before)
    ledger = await check_ledger(sandbox, [o.key for o in outcomes if o.key and o.status is OrderStatus.COMPLETED])
    amazon_problems: list[str] | None = None
    if amazon is not None:
        ended = [o for o in outcomes if o.key and o.planned.channel is Channel.AMAZON and o.reached_expected_end]
        amazon_problems = await check_amazon(
            sandbox,
            completed=[o.key for o in ended if o.key and o.status is OrderStatus.COMPLETED],
            cancelled=[o.key for o in ended if o.key and o.status is OrderStatus.CANCELLED],
        )
    return DemoReport(
        outcomes=list(outcomes),
        orders_seconds=elapsed,
        chaos=chaos,
        ledger=ledger,
        faults_fired=fired,
        returns=returns,
        amazon_problems=amazon_problems,
        amazon_polls=amazon.polls if amazon is not None else 0,
    )


async def check_ledger(sandbox: httpx.AsyncClient, completed_keys: Iterable[str]) -> LedgerCheck:
    """Exactly one ERP sales order and one purchased label per completed order, from the sandbox's state."""
    netsuite = await _control(sandbox, "GET", "/sandbox/state/netsuite")
    carrier = await _control(sandbox, "GET", "/sandbox/state/carrier")
    sales_orders = Counter(str(r.get("externalId")) for r in netsuite["records"].get("salesOrder", []))
    labels = Counter(str(s["reference"]) for s in carrier["shipments"] if s["purchased"] and not s.get("is_return"))
    keys = list(completed_keys)
    problems: list[str] = []
    for key in keys:
        reference = order_reference(key)
        if sales_orders[reference] != 1:
            problems.append(f"{key}: {sales_orders[reference]} ERP sales orders (want 1)")
        if labels[reference] != 1:
            problems.append(f"{key}: {labels[reference]} purchased labels (want 1)")
    return LedgerCheck(checked=len(keys), problems=tuple(problems))


# ---- the summary ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile by nearest rank (p50 of one value is that value)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_table(report: DemoReport) -> Table:
    """Per final status: orders, how many were expected there, and p50/p95 webhook-to-ERP latency."""
    table = Table(title=f"orderflow demo: {len(report.outcomes)} orders{' with chaos' if report.chaos else ''}")
    table.add_column("final status")
    table.add_column("orders", justify="right")
    table.add_column("as expected", justify="right")
    table.add_column("received→ERP p50", justify="right")
    table.add_column("received→ERP p95", justify="right")
    groups: dict[str, list[OrderOutcome]] = {}
    for outcome in report.outcomes:
        groups.setdefault(outcome.status.value if outcome.status is not None else "no saga", []).append(outcome)
    for name, members in sorted(groups.items()):
        # A credit hold's wait is an operator's time, not the system's; it is left out of latency.
        latencies = [
            o.webhook_to_erp_ms
            for o in members
            if o.webhook_to_erp_ms is not None and o.planned.kind is not OrderKind.CREDIT_HOLD
        ]
        table.add_row(
            name,
            str(len(members)),
            str(sum(o.reached_expected_end for o in members)),
            f"{percentile(latencies, 50):.0f} ms" if latencies else "-",
            f"{percentile(latencies, 95):.0f} ms" if latencies else "-",
        )
    return table


def print_report(console: Console, report: DemoReport, *, wall_seconds: float) -> None:
    """The summary table, the ledger check, the faults that fired, and every order that went astray."""
    console.print(summary_table(report))
    kinds = Counter(o.planned.kind.value for o in report.outcomes)
    console.print("mix: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
    console.print(
        "received: the webhook's arrival, or the poll that found the Amazon order; "
        "latency excludes orders held for credit (their wait is the operator's)."
    )
    if report.faults_fired:
        console.print("faults fired: " + ", ".join(f"{what} x{n}" for what, n in report.faults_fired.items()))
    if report.ledger is not None:
        if report.ledger.ok:
            console.print(
                f"[green]sandbox check:[/] exactly one ERP sales order and one purchased label "
                f"for each of the {report.ledger.checked} completed orders"
            )
        else:
            console.print("[red]sandbox check failed:[/]")
            for problem in report.ledger.problems:
                console.print(f"  {problem}", markup=False)
    if report.amazon_problems is not None:
        amazon = [o for o in report.outcomes if o.planned.channel is Channel.AMAZON]
        if not report.amazon_problems:
            console.print(
                f"[green]Amazon check:[/] the {len(amazon)} Amazon orders, found by {report.amazon_polls} triggered "
                "poll(s), are shipped there with their label's tracking number or cancelled there"
            )
        else:
            console.print("[red]Amazon check failed:[/]")
            for problem in report.amazon_problems:
                console.print(f"  {problem}", markup=False)
    if report.returns is not None:
        print_returns(console, report.returns)
    console.print(f"orders took {report.orders_seconds:.1f} s; total wall time {wall_seconds:.1f} s")
    failures = report.failures
    if failures:
        console.print(f"[red]{len(failures)} order(s) did not reach their expected end:[/]")
        for o in failures:
            status = o.status.value if o.status else "no saga"
            detail = (
                f"{o.key or '(not placed)'} [{o.planned.kind.value}] expected {o.planned.expected.value}, is {status}"
            )
            if o.attention_reason:
                detail += f"; needs attention: {o.attention_reason}"
            if o.problem:
                detail += f"; {o.problem}"
            console.print(f"  {detail}", markup=False, highlight=False)
    elif report.ok:
        console.print("[bold green]every order reached its expected end[/]")


def print_returns(console: Console, returns: ReturnsReport) -> None:
    """The returns by status, and Shopify's refunds reconciled against the ERP's credit memos."""
    console.print(returns_table(returns))
    books = returns.reconciliation
    if not books.mismatches:
        console.print(
            f"[green]books check:[/] Shopify refunded {books.total_refunded} and the ERP credited "
            f"{books.total_credited} for the {len(books.refunded)} orders involved, to the cent"
        )
    for problem in returns.problems:
        console.print(f"  [red]return problem:[/] {problem}", highlight=False)


# ---- the command ------------------------------------------------------------------------------------


def demo(
    orders: Annotated[int, typer.Option("--orders", min=1, max=500, help="How many orders the channels send.")] = 20,
    channel: Annotated[
        DemoChannel,
        typer.Option("--channel", help="Where orders come from: shopify, amazon, or mixed (a third from Amazon)."),
    ] = DemoChannel.MIXED,
    chaos: Annotated[
        bool,
        typer.Option("--chaos", help="Inject faults: ERP 20% 5xx and 5% lost answers on writes, carrier throttling."),
    ] = False,
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Leave the stack up afterwards (to browse the Temporal UI)."),
    ] = False,
    ship_after: Annotated[
        float,
        typer.Option("--ship-after", min=0, help="The sandbox WMS ships released orders after this many seconds."),
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds each order may take from webhook to its end.")
    ] = 150.0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", file_okay=False, help="Temporal's database and the logs go here.")
    ] = STATE_DIR,
) -> None:
    """Start what isn't running, send N orders from Shopify and Amazon into the sagas, and report how each ended."""
    code = asyncio.run(
        _main(
            orders=orders,
            channel=channel,
            chaos=chaos,
            keep_running=keep_running,
            ship_after=ship_after,
            finish_within=timeout,
            state_dir=state_dir,
        )
    )
    raise typer.Exit(code)


async def _main(
    *,
    orders: int,
    channel: DemoChannel,
    chaos: bool,
    keep_running: bool,
    ship_after: float,
    finish_within: float,
    state_dir: Path,
) -> int:
    console = Console()
    began = time.monotonic()
    stack = DevStack(ports=StackPorts(), state_dir=state_dir, ship_after_seconds=ship_after)
    detached: subprocess.Popen[bytes] | None = None
    try:
        if keep_running:
            detached = await _ensure_stack_detached(stack, console, ship_after=ship_after)
        console.print(f"starting what is not running yet (logs in {stack.log_dir}) ...")
        await stack.start()
    except PortInUseError as exc:
        fail(str(exc), 2)
    except DevStackError as exc:
        fail(f"the local stack did not start: {exc}", 1)
    try:
        started = [name for name, svc in stack.services.items() if not svc.reused]
        reused = [name for name, svc in stack.services.items() if svc.reused]
        if started:
            console.print(f"started: {', '.join(started)} ({time.monotonic() - began:.1f} s)")
        if reused:
            console.print(f"already running, reused: {', '.join(reused)}")
        console.print(f"Temporal UI: {stack.ui_url}")
        report = await _run_against(stack, console, orders=orders, channel=channel, chaos=chaos,
                                    ship_after=ship_after, finish_within=finish_within)  # fmt: skip
    except DemoError as exc:
        fail(str(exc), 2)
    finally:
        stopping = [name for name, svc in stack.services.items() if not svc.reused]
        if stopping:
            console.print(f"stopping what the demo started: {', '.join(stopping)} (--keep-running leaves it up)")
        await stack.stop()
    print_report(console, report, wall_seconds=time.monotonic() - began)
    if detached is not None:
        console.print(
            f"the stack keeps running (`orderflow dev`, pid {detached.pid}, log {stack.log_dir / 'dev.log'}); "
            f"UI on {stack.ui_url}; stop it with `kill {detached.pid}`"
        )
    elif not stopping:
        console.print("the stack was already running before the demo and is left running")
    return 0 if report.ok else 1


async def _run_against(
    stack: DevStack,
    console: Console,
    *,
    orders: int,
    channel: DemoChannel,
    chaos: bool,
    ship_after: float,
    finish_within: float,
) -> DemoReport:
    client = await connect(stack.temporal_address, DEFAULT_NAMESPACE)
    shopify_settings = ShopifySettings(base_url=f"{stack.sandbox_url}/shopify")
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]orders[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    async with (
        httpx.AsyncClient() as http,
        httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox,
    ):
        await _ensure_subscriptions(sandbox, stack.webhook_url, console)
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("", total=orders)

            def show(progress: DemoProgress) -> None:
                bar.update(task, completed=progress.finished, description=progress.describe())

            return await run_demo(
                client=client,
                shopify=ShopifyClient(http, shopify_settings),
                sandbox=sandbox,
                orders=orders,
                chaos=chaos,
                ship_after_seconds=ship_after,
                finish_within=finish_within,
                on_progress=show,
                channel=channel,
                task_queue=stack.task_queue,
            )


async def _ensure_subscriptions(sandbox: httpx.AsyncClient, webhook_url: str, console: Console) -> None:
    """A sandbox started on its own may not deliver to the webhook service; subscribe it if not."""
    existing = await _control(sandbox, "GET", "/sandbox/webhooks/subscriptions")
    for system in ("shopify", "wms", "carrier"):
        url = f"{webhook_url}/webhooks/{system}"
        if not any(s.get("system") == system and s.get("url") == url and s.get("active", True) for s in existing):
            await _control(
                sandbox, "POST", f"/sandbox/webhooks/subscriptions/{system}", json={"topics": ["*"], "url": url}
            )
            console.print(f"subscribed the sandbox's {system} webhooks to {url}")


async def _ensure_stack_detached(
    stack: DevStack, console: Console, *, ship_after: float
) -> subprocess.Popen[bytes] | None:
    """For --keep-running: run `orderflow dev` in the background (it outlives the demo), unless all is up."""
    probe = DevStack(ports=stack.ports, state_dir=stack.state_dir, services=())
    if await _all_running(probe):
        return None
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    log_file = stack.log_dir / "dev.log"
    console.print(f"starting `orderflow dev` in the background (log {log_file}) ...")
    with log_file.open("wb") as log:
        # Its own session: it outlives this process, and Ctrl-C here does not reach it. Not an
        # asyncio subprocess: asyncio kills a child whose transport is still open when the loop closes.
        process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and module; Popen returns at once
            [sys.executable, "-m", "orderflow.cli", "dev", "--ship-after", str(ship_after),
             "--state-dir", str(stack.state_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + stack.start_timeout * 2
    while "orderflow local stack is up" not in log_file.read_text(errors="replace"):
        if process.poll() is not None:
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
            raise DevStackError(f"`orderflow dev` exited with code {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise DevStackError(f"`orderflow dev` did not come up; see {log_file}")
        await asyncio.sleep(0.3)
    return process


async def _all_running(probe: DevStack) -> bool:
    """Whether every service of the stack already answers (nothing would be started)."""
    async with httpx.AsyncClient(timeout=2) as http:
        for url in (f"{probe.sandbox_url}/sandbox/health", f"{probe.webhook_url}/openapi.json"):
            try:
                if (await http.get(url)).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    try:
        async with asyncio.timeout(3):
            client = await connect(probe.temporal_address, probe.namespace)
    except (RuntimeError, TimeoutError):
        return False
    return await _worker_polling(client, probe.task_queue)


async def _worker_polling(client: Client, task_queue: str) -> bool:
    """Whether a worker polled the task queue lately (an idle worker long-polls, so "lately" is 90 s)."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError:
        return False
    since = time.time() - 90
    return any(p.last_access_time.ToDatetime().timestamp() >= since for p in response.pollers)
