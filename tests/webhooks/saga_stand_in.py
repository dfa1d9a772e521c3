"""A stand-in for the order-to-cash saga: same workflow name and messages, and it only records them.

It keeps the webhook tests about the webhook service: what was started, with which input, and
which signals arrived. Like the real saga, it upserts the tracking numbers it is told about, so a
carrier event can find it through visibility.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
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
