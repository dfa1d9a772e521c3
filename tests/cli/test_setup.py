"""`orderflow setup` on a fresh namespace of the real dev server: everything registered once, then a no-op."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from orderflow.canonical.channel_polling import poller_schedule_id
from orderflow.canonical.order import Channel
from orderflow.cli import doctor, setup
from orderflow.settings import Settings
from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS, SEARCH_ATTRIBUTES, connect

runner = CliRunner()


async def _fresh_namespace(env: WorkflowEnvironment) -> Client:
    """A namespace of its own on the dev server, with none of orderflow's search attributes."""
    name = f"setup-{uuid.uuid4().hex[:8]}"
    await env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    )
    client = await connect(env.client.service_client.config.target_host, name, codec=None)
    # The frontend learns of a new namespace on its next cache refresh; wait until it answers for it.
    for _ in range(100):
        try:
            await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=name))
            return client
        except RPCError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"namespace {name} never became usable")


async def _custom_attributes(client: Client) -> dict[str, str]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return {name: IndexedValueType.Name(kind) for name, kind in listed.custom_attributes.items()}


def _invoke(client: Client, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        setup.app,
        ["--address", client.service_client.config.target_host, "--namespace", client.namespace, *args],
    )
    return result.exit_code, result.stdout, result.stderr


async def test_setup_registers_the_search_attributes_and_the_schedules_once(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await _fresh_namespace(dev_server)
    address = client.service_client.config.target_host
    before = {c.name: c for c in await doctor.run_checks(settings, address=address, namespace=client.namespace)}
    assert before["search attributes"].fix == "run `orderflow setup`"
    monkeypatch.setattr(setup, "get_settings", lambda: settings)

    code, out, err = await asyncio.to_thread(_invoke, client, "--paused")

    assert code == 0, out + err
    attributes = await _custom_attributes(client)
    assert {name: attributes.get(name) for name in SEARCH_ATTRIBUTES} == {
        key.name: IndexedValueType.Name(int(key.indexed_value_type)) for key in SEARCH_ATTRIBUTE_KEYS
    }
    schedule_ids = [poller_schedule_id(Channel.AMAZON, m) for m in settings.amazon.marketplace_ids]
    for schedule_id in schedule_ids:
        described = await client.get_schedule_handle(schedule_id).describe()
        assert described.schedule.state.paused
        assert f"schedule {schedule_id}: created" in out
    assert "namespace " + client.namespace + " is set up" in out
    after = {c.name: c for c in await doctor.run_checks(settings, address=address, namespace=client.namespace)}
    assert after["search attributes"].status is doctor.Status.OK

    code, out, err = await asyncio.to_thread(_invoke, client)

    assert code == 0, out + err
    assert f"nothing to change: namespace {client.namespace} was already set up" in out
    assert [line for line in out.splitlines() if line.endswith(": registered") or ": created" in line] == []
    # Left as it was: still paused, although this run did not ask for paused.
    for schedule_id in schedule_ids:
        assert (await client.get_schedule_handle(schedule_id).describe()).schedule.state.paused
    assert await _custom_attributes(client) == attributes


async def test_setup_refuses_a_search_attribute_of_another_type(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await _fresh_namespace(dev_server)
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace, search_attributes={"OrderStatus": IndexedValueType.INDEXED_VALUE_TYPE_TEXT}
        )
    )
    monkeypatch.setattr(setup, "get_settings", lambda: settings)

    code, out, err = await asyncio.to_thread(_invoke, client)

    assert code == 1, out + err
    assert "OrderStatus is INDEXED_VALUE_TYPE_TEXT" in err
    assert set(await _custom_attributes(client)) & set(SEARCH_ATTRIBUTES) == {"OrderStatus"}


def test_setup_on_a_namespace_that_does_not_exist_says_to_create_it(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(setup, "get_settings", lambda: settings)
    address = dev_server.client.service_client.config.target_host

    result = runner.invoke(setup.app, ["--address", address, "--namespace", "no-such-ns"])

    assert result.exit_code == 1
    assert "temporal operator namespace create --namespace no-such-ns" in result.stderr
