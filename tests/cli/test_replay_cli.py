"""`orderflow replay`: stored and live saga histories replay against the current code; a changed saga fails loudly."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner
from workflows.fake_systems import FakeSystems, make_order, shipment_for

from orderflow.canonical.saga import OrderStatus, OrderToCashInput, ShipmentConfirmed
from orderflow.cli import replay
from orderflow.codec import CodecKey, EncryptionCodec, decode_key, new_key
from orderflow.settings import get_settings
from orderflow.temporal import data_converter
from orderflow.workflows.order_to_cash import OrderToCash

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))
STORED = Path(__file__).parents[1] / "histories" / "order_to_cash_happy_path.json"

runner = CliRunner()


@workflow.defn(name="OrderToCash", sandboxed=False)
class OrderToCashThatReservesFirst:
    """An OrderToCash changed without a patch: it reserves stock before accepting the order."""

    @workflow.run
    async def run(self, input: OrderToCashInput) -> None:
        await workflow.execute_activity("reserve_stock", input, start_to_close_timeout=timedelta(seconds=5))


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The command through its own typer app, as `orderflow replay ...` runs it, reading settings afresh."""
    # Settings are read once per process; each invocation here stands for a process of its own, and
    # one run with a codec key must not leave it to the tests after it.
    get_settings.cache_clear()
    try:
        return runner.invoke(replay.app, list(args), env={"COLUMNS": "250", **(env or {})})
    finally:
        get_settings.cache_clear()


def test_every_stored_history_replays_against_the_current_sagas() -> None:
    result = invoke(*map(str, HISTORIES))

    assert result.exit_code == 0, result.output
    ok_lines = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(ok_lines) == len(HISTORIES) >= 19
    # Each saga type the worker runs and the stored histories hold was replayed by its own class.
    assert {line.split()[1] for line in ok_lines} == {"OrderToCash", "ReturnToRefund", "ChannelOrderPoller"}
    assert f"all {len(HISTORIES)} histories" in result.stdout


def test_a_saga_history_the_code_no_longer_matches_fails_loudly_with_the_error(tmp_path: Path) -> None:
    # The history recorded an activity the current OrderToCash does not schedule at that point, as it
    # would read after an activity was renamed in the code without a patch.
    history = json.loads(STORED.read_text())
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "allocate":
            scheduled["activityType"]["name"] = "reserve_stock"
    changed = tmp_path / "renamed_step.json"
    changed.write_text(json.dumps(history))

    result = invoke(str(STORED), str(changed))

    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok ") and "order_to_cash_happy_path" in lines[0]
    assert lines[1].startswith("NONDETERMINISTIC") and "renamed_step" in lines[1]
    assert "'reserve_stock' does not match activity type of activity command 'allocate'" in lines[1]
    # The summary goes to stderr with the first failure in full.
    assert "1 of 2 histories" in result.stderr and "nondetermin" in result.stderr.lower()
    assert "NondeterminismError" in result.stderr and "workflow.patched" in result.stderr


def test_a_history_of_a_saga_type_the_code_does_not_have_is_a_failure(tmp_path: Path) -> None:
    history = json.loads(STORED.read_text())
    history["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"] = "OrderToCashV0"
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps(history))

    result = invoke(str(gone))

    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("FAILED") and "Workflow class OrderToCashV0 is not registered" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "either history FILEs or --from-namespace"),
        (("--from-namespace", str(STORED)), "either history FILEs or --from-namespace"),
        ((str(STORED), "--limit", "3"), "use them with --from-namespace"),
        (("--from-namespace", "--workflow-type", "Invoice"), "unknown workflow type(s) Invoice"),
        (("does-not-exist.json",), "cannot read does-not-exist.json"),
    ],
)
def test_bad_arguments_exit_2_and_say_why(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)

    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_no_temporal_at_the_address_exits_2() -> None:
    result = invoke("--from-namespace", "--address", "127.0.0.1:1")

    assert result.exit_code == 2, result.output
    assert "Temporal is not reachable at 127.0.0.1:1" in result.stderr


async def completed_sagas(client: Client, prefix: str, count: int) -> list[str]:
    """Run `count` order sagas to completion on stand-in systems; their workflow ids."""
    queue = f"replay-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[OrderToCash], activities=FakeSystems().activities()):
        handles = [
            await client.start_workflow(
                OrderToCash.run, OrderToCashInput(order=make_order(str(n))), id=f"{prefix}{n}", task_queue=queue
            )
            for n in range(count)
        ]
        for n, handle in enumerate(handles):
            for _ in range(200):
                if (await handle.query(OrderToCash.state)).status is OrderStatus.RELEASED:
                    break
                await asyncio.sleep(0.05)
            await handle.signal(
                OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment_for(make_order(str(n))))
            )
        for handle in handles:
            assert (await handle.result()).status is OrderStatus.COMPLETED
    # Visibility lags the sagas a little; the command should see them all.
    query = f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Completed'"
    for _ in range(100):
        if (await client.count_workflows(query)).count == count:
            break
        await asyncio.sleep(0.1)
    return [h.id for h in handles]


async def test_the_sagas_of_a_namespace_replay_and_a_changed_saga_fails_on_them(
    dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = dev_server.client
    prefix = f"replay-test-{uuid.uuid4().hex[:8]}-"
    ids = await completed_sagas(client, prefix, 2)
    env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace}
    args = ("--from-namespace", "--query", f"WorkflowId STARTS_WITH '{prefix}'")

    # Off the event loop, like a separate process: the command runs its own.
    result = await asyncio.to_thread(invoke, *args, env=env)

    assert result.exit_code == 0, result.output
    ok_ids = {line.split()[2] for line in result.stdout.splitlines() if line.startswith("ok ")}
    assert ok_ids == set(ids)
    assert "all 2 histories from namespace" in result.stdout

    # The same live histories against a saga changed without a patch: the deploy must be stopped.
    monkeypatch.setattr(replay, "WORKFLOWS", (OrderToCashThatReservesFirst,))
    changed = await asyncio.to_thread(invoke, *args, "--limit", "1", env=env)

    assert changed.exit_code == 1, changed.output
    assert changed.stdout.count("NONDETERMINISTIC") == 1 and "ok " not in changed.stdout
    assert "1 of 1 histories from namespace" in changed.stderr and "NondeterminismError" in changed.stderr


async def test_a_query_visibility_refuses_exits_2_with_its_reason(dev_server: WorkflowEnvironment) -> None:
    client = dev_server.client
    env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace}

    result = await asyncio.to_thread(invoke, "--from-namespace", "--query", "NoSuchAttribute = 'x'", env=env)

    assert result.exit_code == 2, result.output
    assert "Temporal refused to list the workflows" in result.stderr and "NoSuchAttribute" in result.stderr


async def test_encrypted_sagas_replay_with_the_configured_key_and_fail_without_it(
    dev_server: WorkflowEnvironment,
) -> None:
    key = new_key()
    plain = dev_server.client
    codec = EncryptionCodec(CodecKey("replay-test", decode_key(key)))
    encrypting = await Client.connect(
        plain.service_client.config.target_host, namespace=plain.namespace, data_converter=data_converter(codec)
    )
    prefix = f"replay-encrypted-{uuid.uuid4().hex[:8]}-"
    [saga_id] = await completed_sagas(encrypting, prefix, 1)
    env = {"TEMPORAL_ADDRESS": plain.service_client.config.target_host, "TEMPORAL_NAMESPACE": plain.namespace}
    args = ("--from-namespace", "--query", f"WorkflowId STARTS_WITH '{prefix}'")

    with_key = await asyncio.to_thread(
        invoke, *args, env={**env, "ORDERFLOW_CODEC__KEY_ID": "replay-test", "ORDERFLOW_CODEC__KEY": key}
    )
    without_key = await asyncio.to_thread(invoke, *args, env=env)

    assert with_key.exit_code == 0, with_key.output
    assert with_key.stdout.splitlines()[1].startswith("ok ") and saga_id in with_key.stdout
    # Without the key the saga's input cannot be read: a failure, though not a nondeterministic one.
    assert without_key.exit_code == 1, without_key.output
    assert without_key.stdout.splitlines()[1].startswith("FAILED") and saga_id in without_key.stdout
    assert "Failed decoding arguments" in without_key.stdout and "ORDERFLOW_CODEC__KEY" in without_key.stderr
