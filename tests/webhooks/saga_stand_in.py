"""Stand-ins for the order and return sagas: same workflow names and messages, and they only record them.

It keeps the webhook tests about the webhook service: what was started, with which input, and
which signals arrived. Like the real saga, it upserts the tracking numbers it is told about, so a
carrier event can find it through visibility.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from orderflow.canonical.return_saga import SIGNAL_RETURN_RECEIVED, ReturnReceived, ReturnToRefundInput
    from orderflow.canonical.saga import (
        SIGNAL_CANCEL,
        SIGNAL_DELIVERY_RECORDED,
        SIGNAL_SHIPMENT_CONFIRMED,
        CancelRequest,
        DeliveryRecorded,
        OrderToCashInput,
        ShipmentConfirmed,
    )
    from orderflow.temporal import TRACKING_NUMBERS

QUERY_RECORDING = "recording"


class Recording(BaseModel):
    """Everything the stand-in saga received."""

    input: OrderToCashInput
    cancels: list[CancelRequest] = []
    shipments: list[ShipmentConfirmed] = []
    deliveries: list[DeliveryRecorded] = []


@workflow.defn(name="OrderToCash")
class OrderToCashStandIn:
    """Records its start and its signals, and runs until the test terminates it."""

    @workflow.init
    def __init__(self, saga_input: OrderToCashInput) -> None:
        self._recording = Recording(input=saga_input)

    @workflow.run
    async def run(self, saga_input: OrderToCashInput) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self, request: CancelRequest) -> None:
        self._recording.cancels.append(request)

    @workflow.signal(name=SIGNAL_SHIPMENT_CONFIRMED)
    def shipment_confirmed(self, confirmed: ShipmentConfirmed) -> None:
        self._recording.shipments.append(confirmed)
        numbers = sorted({s.shipment.tracking.number for s in self._recording.shipments})
        workflow.upsert_search_attributes([TRACKING_NUMBERS.value_set(numbers)])

    @workflow.signal(name=SIGNAL_DELIVERY_RECORDED)
    def delivery_recorded(self, recorded: DeliveryRecorded) -> None:
        self._recording.deliveries.append(recorded)

    @workflow.query(name=QUERY_RECORDING)
    def recording(self) -> Recording:
        return self._recording


class ReturnRecording(BaseModel):
    """Everything the return stand-in received."""

    input: ReturnToRefundInput
    cancels: list[CancelRequest] = []
    receipts: list[ReturnReceived] = []


@workflow.defn(name="ReturnToRefund")
class ReturnToRefundStandIn:
    """The return saga's name and messages; records its start and its signals."""

    @workflow.init
    def __init__(self, saga_input: ReturnToRefundInput) -> None:
        self._recording = ReturnRecording(input=saga_input)

    @workflow.run
    async def run(self, saga_input: ReturnToRefundInput) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self, request: CancelRequest) -> None:
        self._recording.cancels.append(request)

    @workflow.signal(name=SIGNAL_RETURN_RECEIVED)
    def return_received(self, received: ReturnReceived) -> None:
        self._recording.receipts.append(received)

    @workflow.query(name=QUERY_RECORDING)
    def recording(self) -> ReturnRecording:
        return self._recording
