"""Both Temporal servers start from their wheels and run a workflow; the dev server knows our search attributes."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.temporal import SEARCH_ATTRIBUTES


@workflow.defn
class SleepThenAnswer:
    """Sleeps a day of workflow time, then answers."""

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(timedelta(days=1))
        return f"hello {name}"


async def test_the_time_skipping_server_skips_a_day(time_skipping: WorkflowEnvironment) -> None:
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(time_skipping.client, task_queue=queue, workflows=[SleepThenAnswer]):
        result = await time_skipping.client.execute_workflow(
            SleepThenAnswer.run, "orders", id=f"wf-{uuid.uuid4()}", task_queue=queue
        )
    assert result == "hello orders"


async def test_the_dev_server_has_orderflows_search_attributes(dev_server: WorkflowEnvironment) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    response = await dev_server.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=dev_server.client.namespace)
    )
    assert set(SEARCH_ATTRIBUTES) <= set(response.custom_attributes)
