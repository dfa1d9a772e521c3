"""Dispatch from the webhook sources to Temporal: start an order's saga, or signal the saga already running.

Each source (Shopify, the WMS, the carrier) is a `Source`: how to verify a request, how to name
its event, and how to map a stored delivery to a start or a signal. The inbox stores what the
routes verified and dispatches it through the `TemporalGateway`. Every connection or RPC failure
that means "try again later" becomes `TemporalUnavailableError`: the delivery stays pending in
the inbox and the relay dispatches it once Temporal is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orderflow.canonical import Order
from orderflow.canonical.base import CanonicalModel
from orderflow.canonical.channel_refund import WORKFLOW_TYPE as CHANNEL_REFUND_WORKFLOW_TYPE
from orderflow.canonical.channel_refund import ChannelRefundInput
from orderflow.canonical.return_saga import WORKFLOW_TYPE as RETURN_WORKFLOW_TYPE
from orderflow.canonical.return_saga import ReturnToRefundInput
from orderflow.canonical.saga import SIGNAL_CANCEL, TASK_QUEUE, CancelRequest, OrderToCashInput
from orderflow.settings import Settings
from orderflow.telemetry import client_interceptors, order_context, traced_client
from orderflow.temporal import (
    CHANNEL,
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    NEEDS_ATTENTION,
    TRACKING_NUMBERS,
    connect,
    initial_return_search_attributes,
    initial_search_attributes,
)

log = logging.getLogger("orderflow.webhooks")

WORKFLOW_TYPE = "OrderToCash"
# Vendors give up on a slow endpoint (Shopify after 5 s), so no Temporal call may take longer.
RPC_TIMEOUT = timedelta(seconds=4)
# The whole call, retries inside the SDK included.
CALL_DEADLINE = timedelta(seconds=5)
CONNECT_TIMEOUT_SECONDS = 4.0
# After a failed connect, webhooks arriving in the next moment do not each try again: during an
# outage at a flash sale's rate that would be hundreds of doomed connects a second.
RECONNECT_PAUSE_SECONDS = 1.0
# Statuses that mean "Temporal cannot take this now", as opposed to "this request is wrong".
UNAVAILABLE_STATUSES = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}
)
# A tracking number is quoted into a visibility query, so it may hold nothing that ends the quote.
_TRACKING_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TemporalUnavailableError(Exception):
    """Temporal (or a system a dispatch must read first) could not be reached; the relay tries again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StartOutcome(StrEnum):
    """What became of a request to start an order's saga."""

    STARTED = "started"
    DUPLICATE = "duplicate"


class WebhookReceipt(BaseModel):
    """The answer to a vendor: what orderflow did with its webhook, and why when it did nothing."""

    model_config = ConfigDict(frozen=True)

    # `accepted`: stored, and dispatched by the relay right after the answer (the inbox row tells the outcome).
    status: Literal["accepted", "started", "duplicate", "signalled", "ignored", "pending", "failed"]
    order_keys: list[str] = []
    reason: str | None = None


class Rejection(Exception):
    """A delivery that cannot be mapped: the HTTP answer, and the errors the inbox keeps for an operator."""

    def __init__(
        self, status_code: int, detail: str | dict[str, Any], errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors if errors is not None else [{"loc": [], "msg": str(detail)}]


@dataclass(frozen=True)
class Delivery:
    """An authentic delivery as the inbox stored it: all a source needs to map and dispatch it again."""

    inbox_id: int
    source: str
    topic: str
    event_id: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime

    @property
    def received_at_epoch_ms(self) -> int:
        """When it arrived, in epoch milliseconds (what a saga records as the order's arrival)."""
        return int(self.received_at.timestamp() * 1000)


Dispatch = Callable[["TemporalGateway"], Awaitable[WebhookReceipt]]
"""A mapped delivery's starts or signals, ready to run against Temporal."""

Plan = WebhookReceipt | Dispatch
"""What mapping a delivery came to: a receipt when there is nothing to dispatch, else the dispatch."""


@dataclass(frozen=True)
class Source:
    """One vendor's webhooks: how to verify them, name their event, and map a stored delivery to a dispatch."""

    name: str
    # Lower-case names of the headers the inbox keeps; never a signature.
    kept_headers: frozenset[str]
    # The reason a request is not authentic, or None when it is.
    verify: Callable[[bytes, Mapping[str, str], Settings], str | None]
    # The topic and the vendor's event id of an authentic request.
    identify: Callable[[bytes, Mapping[str, str]], tuple[str, str]]
    # Map a delivery without I/O; raises `Rejection` for a body no retry can fix. The edge plans
    # to answer 400/422 at once; the relay plans again from the stored bytes and runs the dispatch.
    plan: Callable[[Delivery, Settings], Plan]

    async def handle(self, delivery: Delivery, settings: Settings, temporal: TemporalGateway) -> WebhookReceipt:
        """Map a delivery and start or signal its sagas; raises `Rejection` or `TemporalUnavailableError`."""
        planned = self.plan(delivery, settings)
        return planned if isinstance(planned, WebhookReceipt) else await planned(temporal)


def body_digest(topic: str, raw: bytes) -> str:
    """An event id for a delivery that carries none: the same topic and body are the same event."""
    return "sha256:" + hashlib.sha256(topic.encode() + b"\n" + raw).hexdigest()


def ignored(reason: str) -> WebhookReceipt:
    """A receipt for a webhook that is authentic but has nothing for a saga to do."""
    return WebhookReceipt(status="ignored", reason=reason)


def is_valid_tracking_number(number: str) -> bool:
    """Whether a tracking number can be looked up through visibility (letters, digits, `_`, `.`, `-`)."""
    return _TRACKING_NUMBER.fullmatch(number) is not None


@asynccontextmanager
async def temporal_call(what: str) -> AsyncIterator[None]:
    """Bound a Temporal call by `CALL_DEADLINE`, and turn "Temporal is not there" into `TemporalUnavailableError`.

    The deadline is the SDK's: a call to a server that died after the client connected takes 6-10 s
    despite `rpc_timeout` (the SDK retries underneath), which would hold a relay pass far longer
    than a dispatch should take.
    """
    try:
        async with asyncio.timeout(CALL_DEADLINE.total_seconds()):
            yield
    except TimeoutError as exc:
        raise TemporalUnavailableError(f"Temporal did not answer within {CALL_DEADLINE} while {what}") from exc
    except RPCError as exc:
        if exc.status not in UNAVAILABLE_STATUSES:
            raise
        raise TemporalUnavailableError(f"Temporal unavailable while {what}: {exc.message}") from exc


class TemporalGateway:
    """Starts and signals order sagas through a Temporal client, connected on first use."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        task_queue: str = TASK_QUEUE,
        client: Client | None = None,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.task_queue = task_queue
        # A client handed in (the worker's, for the Amazon poller) gets tracing too, so the sagas it
        # starts join the trace of the activity that found the order.
        self._client = traced_client(client) if client is not None else None
        self._connecting = asyncio.Lock()
        self._unreachable: tuple[float, str] | None = None  # (monotonic time, reason) of the last failed connect

    @classmethod
    def from_env(cls, *, task_queue: str = TASK_QUEUE) -> TemporalGateway:
        """A gateway for the Temporal named by `TEMPORAL_ADDRESS` and `TEMPORAL_NAMESPACE`."""
        return cls(
            os.environ.get("TEMPORAL_ADDRESS", DEFAULT_ADDRESS),
            os.environ.get("TEMPORAL_NAMESPACE", DEFAULT_NAMESPACE),
            task_queue=task_queue,
        )

    @property
    def connected(self) -> bool:
        """Whether a client has been made (a later call may still find the server gone)."""
        return self._client is not None

    async def client(self) -> Client:
        """The Temporal client, connecting now if this is the first call or the last connect failed."""
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                loop = asyncio.get_running_loop()
                if self._unreachable is not None and loop.time() - self._unreachable[0] < RECONNECT_PAUSE_SECONDS:
                    raise TemporalUnavailableError(self._unreachable[1])
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                        # With tracing on, every start and signal carries the order's trace to the saga.
                        self._client = await connect(self.address, self.namespace, interceptors=client_interceptors())
                # The SDK reports a failed connect as a bare RuntimeError ("Failed client connect").
                except (RuntimeError, TimeoutError) as exc:
                    reason = f"cannot connect to Temporal at {self.address} (namespace {self.namespace}): {exc}"
                    self._unreachable = (loop.time(), reason)
                    raise TemporalUnavailableError(reason) from exc
                log.info("connected to Temporal at %s, namespace %s", self.address, self.namespace)
            return self._client

    async def start_order(
        self, order: Order, *, received_at_epoch_ms: int, cancel: CancelRequest | None = None
    ) -> StartOutcome:
        """Start the order's saga under its business key; a second start for the same order is a duplicate.

        With `cancel`, the saga starts with the cancel already delivered (signal-with-start): an
        order first seen with its buyer's cancel request is cancelled on the channel, not left open.
        A saga already running just gets the cancel.
        """
        return await self.start_saga(
            WORKFLOW_TYPE,
            OrderToCashInput(order=order, received_at_epoch_ms=received_at_epoch_ms),
            key=order.key,
            search_attributes=initial_search_attributes(order),
            summary=f"{order.channel.value} order {order.order_number}",
            start_signal=(SIGNAL_CANCEL, cancel) if cancel is not None else None,
        )

    async def start_return(self, input: ReturnToRefundInput) -> StartOutcome:
        """Start a return's saga under `return:{channel}:{return_id}`; a second start is a duplicate."""
        request = input.return_request
        return await self.start_saga(
            RETURN_WORKFLOW_TYPE,
            input,
            key=input.key,
            search_attributes=initial_return_search_attributes(request),
            summary=f"{request.channel.value} return {request.return_id} of {request.order_key}",
            order_key=request.order_key,
        )

    async def start_channel_refund(self, input: ChannelRefundInput) -> StartOutcome:
        """Start booking a channel refund in the ERP; a second start for the same refund is a duplicate."""
        return await self.start_saga(
            CHANNEL_REFUND_WORKFLOW_TYPE,
            input,
            key=input.key,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(CHANNEL, input.channel.value), SearchAttributePair(NEEDS_ATTENTION, False)]
            ),
            summary=f"{input.channel.value} refund {input.channel_refund_id} of {input.refund.order_key}",
            order_key=input.refund.order_key,
        )

    async def start_saga(
        self,
        workflow_type: str,
        arg: CanonicalModel,
        *,
        key: str,
        search_attributes: TypedSearchAttributes,
        summary: str,
        start_signal: tuple[str, CanonicalModel] | None = None,
        order_key: str | None = None,
    ) -> StartOutcome:
        """Start a saga under its business key, once: a second start is a duplicate, never a second run.

        With `start_signal`, a running saga is signalled instead (signal-with-start), and a new one
        starts with the signal already in its history; a saga that has ended is still a duplicate.
        `order_key` is the order a return or refund saga belongs to (the key itself for an order),
        the attribute every span of the saga's trace carries.
        """
        client = await self.client()
        signal: dict[str, Any] = {}
        if start_signal is not None:
            signal = {"start_signal": start_signal[0], "start_signal_args": [start_signal[1]]}
        async with temporal_call(f"starting {key}"):
            with order_context(order_key=order_key or key, workflow_id=key):
                try:
                    await client.start_workflow(
                        workflow_type,
                        arg,
                        id=key,
                        task_queue=self.task_queue,
                        # A redelivered webhook must never start a second saga, neither while the first
                        # runs (FAIL) nor after it ended (REJECT_DUPLICATE): one business key, one saga.
                        # Signal-with-start must reach a running saga, so it uses the existing one.
                        id_conflict_policy=(
                            WorkflowIDConflictPolicy.USE_EXISTING if signal else WorkflowIDConflictPolicy.FAIL
                        ),
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=search_attributes,
                        static_summary=summary,
                        rpc_timeout=RPC_TIMEOUT,
                        **signal,
                    )
                except WorkflowAlreadyStartedError:
                    return StartOutcome.DUPLICATE
        return StartOutcome.STARTED

    async def signal_order(self, order_key: str, signal: str, payload: CanonicalModel) -> bool:
        """Signal an order's saga; False when there is none running (never started, or already closed)."""
        return await self.signal_saga(order_key, signal, payload)

    async def signal_saga(self, key: str, signal: str, payload: CanonicalModel) -> bool:
        """Signal a saga by its key; False when there is none running (never started, or already closed)."""
        client = await self.client()
        async with temporal_call(f"signalling {signal} to {key}"):
            # A return's or refund's key names no order; its saga's spans carry the order from its start.
            with order_context(order_key=key if key.startswith("order:") else None, workflow_id=key):
                try:
                    await client.get_workflow_handle(key).signal(signal, payload, rpc_timeout=RPC_TIMEOUT)
                except RPCError as exc:
                    if exc.status is RPCStatusCode.NOT_FOUND:
                        return False
                    raise
        return True

    async def sagas_tracking(self, tracking_number: str) -> list[str]:
        """The keys of the running sagas whose shipments carry this tracking number (`TrackingNumbers`)."""
        if not is_valid_tracking_number(tracking_number):
            raise ValueError(f"tracking number {tracking_number!r} has characters a visibility query cannot hold")
        client = await self.client()
        query = (
            f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' "
            f"AND {TRACKING_NUMBERS.name} = '{tracking_number}'"
        )
        async with temporal_call(f"looking up tracking number {tracking_number}"):
            return [execution.id async for execution in client.list_workflows(query, rpc_timeout=RPC_TIMEOUT)]


def settings_of(request: Request) -> Settings:
    """The settings the webhook app was made with."""
    settings: Settings = request.app.state.settings
    return settings


def gateway_of(request: Request) -> TemporalGateway:
    """The Temporal gateway the webhook app was made with."""
    gateway: TemporalGateway = request.app.state.temporal
    return gateway


SettingsDep = Annotated[Settings, Depends(settings_of)]
GatewayDep = Annotated[TemporalGateway, Depends(gateway_of)]


def parse_body(raw: bytes, what: str) -> dict[str, Any]:
    """A webhook body as a JSON object; ValueError with the reason when it is not one."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{what} body is JSON but not an object")
    return body
