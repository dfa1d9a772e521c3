"""The local stack: all four services start on free ports and answer; reuse, port clashes, nothing left running."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from orderflow.devstack import SERVICES, DevStack, PortInUseError, StackPorts
from orderflow.temporal import SEARCH_ATTRIBUTES, connect


@contextmanager
def listening_socket() -> Iterator[int]:
    """A port held by something that is not an orderflow service."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_in_groups(groups: set[int]) -> list[int]:
    """Live processes whose process group is one of `groups` (the stack's children lead their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) in groups and fields[0] != "Z":
            found.append(int(entry.name))
    return found


async def test_the_stack_starts_all_four_services_reuses_them_and_leaves_nothing_running(tmp_path: Path) -> None:
    ports = StackPorts(
        temporal=free_port(), ui=free_port(), sandbox=free_port(), webhooks=free_port(), worker_http=free_port()
    )
    task_queue = f"devstack-{uuid.uuid4()}"
    stack = DevStack(ports=ports, state_dir=tmp_path, task_queue=task_queue, stop_grace=10)

    async with stack:
        pids = stack.child_pids()
        assert set(pids) == set(SERVICES)
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{stack.sandbox_url}/sandbox/health")).json()["status"] == "ok"
            assert (await http.get(f"{stack.webhook_url}/healthz")).json()["status"] == "ok"
            assert (await http.get(stack.ui_url)).status_code == 200
            # Readiness says why until each dependency answers; once the worker polls, all hold.
            for service in (stack.webhook_url, f"http://127.0.0.1:{ports.worker_http}"):
                ready = await http.get(f"{service}/readyz")
                assert ready.status_code == 200, ready.text
                assert set(ready.json()["checks"].values()) == {"ok"}
            metrics = (await http.get(f"http://127.0.0.1:{ports.worker_http}/metrics")).text
            # Temporal's SDK metrics from the worker's runtime, next to the process's own.
            assert "temporal_" in metrics and "process_cpu_seconds_total" in metrics
            assert "orderflow_webhook_requests" in (await http.get(f"{stack.webhook_url}/metrics")).text
            # The sandbox delivers its webhooks to this stack's webhook service.
            subscriptions = (await http.get(f"{stack.sandbox_url}/sandbox/webhooks/subscriptions")).text
            assert f"{stack.webhook_url}/webhooks/wms" in subscriptions
        client = await connect(stack.temporal_address)
        attributes = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        assert set(SEARCH_ATTRIBUTES) <= set(attributes.custom_attributes)
        pollers = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        assert pollers.pollers, "the worker polls the stack's task queue"
        assert (tmp_path / "logs" / "worker.log").exists()

        # A second stack on the same ports finds every service already there and starts nothing.
        async with DevStack(ports=ports, state_dir=tmp_path / "second", task_queue=task_queue) as again:
            assert again.child_pids() == {}
            assert all(svc.reused for svc in again.services.values())
            assert set(again.services) == set(SERVICES)

        # A port held by something else is an error naming the option that moves it.
        with listening_socket() as busy:
            clash = DevStack(ports=dataclasses.replace(ports, sandbox=busy), services=["sandbox"], state_dir=tmp_path)
            with pytest.raises(PortInUseError, match="--sandbox-port"):
                await clash.start()
            assert clash.child_pids() == {}

    assert stack.child_pids() == {}
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert processes_in_groups(set(pids.values())) == []
