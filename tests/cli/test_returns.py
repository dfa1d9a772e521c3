"""`orderflow returns ...` on the real dev server: what a start sends the saga, bad input, the list, exit codes."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from orderflow.canonical.return_saga import ReturnOrigin, ReturnToRefundInput
from orderflow.cli import app
from orderflow.temporal import CHANNEL, RETURN_STATUS

pytestmark = pytest.mark.integration

runner = CliRunner()


def target(env: WorkflowEnvironment) -> list[str]:
    """The CLI's options for this test's dev server, on a task queue no worker polls."""
    client = env.client
    return ["--address", client.service_client.config.target_host, "--namespace", client.namespace]


async def invoke(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


async def test_start_sends_the_saga_an_operator_return_of_the_summed_lines_and_a_second_start_is_a_no_op(
    dev_server: WorkflowEnvironment,
) -> None:
    return_id = f"ops-{uuid.uuid4().hex[:8]}"
    queue = ["--task-queue", f"returns-cli-{uuid.uuid4()}"]
    args = ["returns", "start", "--order", "shopify:1042", "--lines", "BOLT-M8-S:2,NUT-M8-M:1,BOLT-M8-S:1"]

    first = await invoke(*args, "--return-id", return_id, "--reason", "wrong size", *queue, *target(dev_server))
    again = await invoke(*args, "--return-id", return_id, *queue, *target(dev_server))

    key = f"return:shopify:{return_id}"
    assert first == (0, f"started {key} for order:shopify:1042\n")
    assert again == (0, f"{key} already exists; nothing started\n")
    handle = dev_server.client.get_workflow_handle(key)
    described = await handle.describe()
    assert described.workflow_type == "ReturnToRefund"
    assert described.typed_search_attributes.get(RETURN_STATUS) == "REQUESTED"
    assert described.typed_search_attributes.get(CHANNEL) == "shopify"
    started = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    payload = started[0].workflow_execution_started_event_attributes.input.payloads[0]
    saga_input = ReturnToRefundInput.model_validate(json.loads(payload.data))
    assert saga_input.origin is ReturnOrigin.OPERATOR
    assert {(line.sku, line.quantity, line.reason) for line in saga_input.return_request.lines} == {
        ("BOLT-M8-S", 3, "wrong size"),
        ("NUT-M8-M", 1, "wrong size"),
    }
    assert saga_input.policy.window_days == 30

    listed = await invoke("returns", "list", "--json", *target(dev_server))
    for _ in range(50):  # visibility catches up asynchronously
        if key in listed[1]:
            break
        await asyncio.sleep(0.1)
        listed = await invoke("returns", "list", "--json", *target(dev_server))
    rows = {row["key"]: row for row in json.loads(listed[1])}
    assert rows[key]["status"] == "REQUESTED" and rows[key]["execution"] == "RUNNING"

    # No worker polls this queue: the status query and a cancel say so and exit 2.
    status = await invoke("returns", "status", key, "--timeout", "0.5", *target(dev_server))
    cancel = await invoke("returns", "cancel", key, "--reason", "changed mind", "--timeout", "0.5", *target(dev_server))
    assert status[0] == 2 and "is a worker running?" in status[1]
    assert cancel[0] == 2 and "was not applied" in cancel[1], cancel
    await handle.terminate("cli test finished")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("BOLT-M8-S:0", "'BOLT-M8-S:0' is not SKU:QTY with a quantity of 1 or more"),
        ("BOLT-M8-S", "'BOLT-M8-S' is not SKU:QTY"),
        ("BOLT-M8-S:2,:1", "':1' is not SKU:QTY"),
    ],
)
async def test_start_refuses_lines_that_are_not_sku_and_a_positive_quantity_with_exit_2(
    dev_server: WorkflowEnvironment, lines: str, message: str
) -> None:
    code, output = await invoke("returns", "start", "--order", "shopify:1042", "--lines", lines, *target(dev_server))

    assert code == 2 and message in output


async def test_start_refuses_an_unknown_channel_and_a_return_id_vendors_cannot_hold(
    dev_server: WorkflowEnvironment,
) -> None:
    channel = await invoke("returns", "start", "--order", "ebay:1", "--lines", "A:1", *target(dev_server))
    return_id = await invoke(
        "returns", "start", "--order", "shopify:1", "--lines", "A:1", "--return-id", "a b", *target(dev_server)
    )

    assert channel[0] == 2 and "unknown channel 'ebay'" in channel[1]
    assert return_id[0] == 2 and "may hold only letters, digits, - and _" in return_id[1]
