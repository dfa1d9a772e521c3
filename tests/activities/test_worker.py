"""The worker's wiring on the real Temporal dev server: real activities by name, failures as Temporal sees them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow

# The workflow sandbox re-imports this module to validate the probes: everything else passes through.
with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ActivityError, ApplicationError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.sample import order, plentiful, state
    from orderflow.activities import ErpActivities, WarehouseActivities
    from orderflow.canonical import AllocationStatus
    from orderflow.canonical.saga import AcceptOrderInput, AcceptOrderResult, AllocateInput, AllocateResult
    from orderflow.settings import Settings
    from orderflow.worker import activities_for, build_worker, run_worker

pytestmark = pytest.mark.integration


@workflow.defn(name="AllocateProbe")
class AllocateProbe:
    """Calls the allocate activity by method reference, as the saga does."""

    @workflow.run
    async def run(self, input: AllocateInput) -> AllocateResult:
        return await workflow.execute_activity_method(
            WarehouseActivities.allocate, input, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn(name="AcceptProbe")
class AcceptProbe:
    """Calls the accept activity by method reference, as the saga does."""

    @workflow.run
    async def run(self, input: AcceptOrderInput) -> AcceptOrderResult:
        return await workflow.execute_activity_method(
            ErpActivities.accept_order, input, start_to_close_timeout=timedelta(seconds=10)
        )


def queue() -> str:
    """A fresh task queue, so tests never share pollers."""
    return f"activities-{uuid.uuid4()}"


async def test_the_real_activities_run_on_the_server_with_pydantic_payloads(
    dev_server: WorkflowEnvironment, settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("9101", [(sku, 2)])
    task_queue = queue()
    async with Worker(
        dev_server.client, task_queue=task_queue, workflows=[AllocateProbe], activities=activities_for(settings, http)
    ):
        result = await dev_server.client.execute_workflow(
            AllocateProbe.run,
            AllocateInput(reference="OF-shopify-9101", order=sale),
            id=task_queue,
            task_queue=task_queue,
        )

    assert isinstance(result, AllocateResult)
    assert result.allocation.status is AllocationStatus.ALLOCATED
    assert [r["reference_id"] for r in (await state(sandbox, "wms"))["reservations"]] == ["OF-shopify-9101"]


async def test_a_permanent_failure_reaches_the_workflow_once_not_retried(
    dev_server: WorkflowEnvironment, settings: Settings, http: httpx.AsyncClient
) -> None:
    sale = order("9102", [("NO-SUCH-SKU", 1)])
    task_queue = queue()
    async with Worker(
        dev_server.client, task_queue=task_queue, workflows=[AcceptProbe], activities=activities_for(settings, http)
    ):
        with pytest.raises(WorkflowFailureError) as caught:
            await dev_server.client.execute_workflow(
                AcceptProbe.run,
                AcceptOrderInput(order=sale, customer_external_id="shopify-customer-1"),
                id=task_queue,
                task_queue=task_queue,
            )

    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    failure = activity_error.cause
    assert isinstance(failure, ApplicationError)
    assert failure.type == "ValidationRejectedError" and failure.non_retryable
    assert "NO-SUCH-SKU" in failure.message
    assert activity_error.retry_state is not None and activity_error.retry_state.name == "NON_RETRYABLE_FAILURE"


async def test_the_worker_registers_the_saga_and_every_activity_by_name(
    dev_server: WorkflowEnvironment, settings: Settings, http: httpx.AsyncClient
) -> None:
    names = {fn.__name__ for fn in activities_for(settings, http)}

    worker = build_worker(dev_server.client, settings, http, task_queue=queue())

    assert isinstance(worker, Worker)
    assert names == {
        "accept_order", "check_credit", "post_sales_order", "close_sales_order", "record_fulfillment",
        "invoice_order", "allocate", "release_allocation", "release_to_warehouse", "cancel_fulfillment_order",
        "buy_label", "void_label", "confirm_shipment_on_channel", "cancel_on_channel", "publish_availability",
        # Partial cancellation of a partly shipped order.
        "cancel_unshipped_lines", "close_unshipped_lines",
        # Return to refund.
        "load_channel_order", "approve_channel_return", "send_return_label", "close_channel_return",
        "cancel_channel_return", "refund_on_channel", "load_erp_order_for_return", "create_return_authorization",
        "close_return_authorization", "receive_return_in_erp", "issue_return_credit",
        "load_warehouse_order_for_return", "create_wms_return", "cancel_wms_return", "restock_return",
        "buy_return_label", "void_return_label",
        # A refund made on the channel, booked in the ERP.
        "credit_invoice_for_refund",
    }  # fmt: skip


async def test_run_worker_stops_when_asked(dev_server: WorkflowEnvironment, settings: Settings) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, client=dev_server.client, task_queue=queue(), stop=stop))
    await asyncio.sleep(0.3)
    assert not running.done()

    stop.set()

    await asyncio.wait_for(running, timeout=15)
