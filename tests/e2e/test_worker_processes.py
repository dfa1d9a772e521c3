"""Two worker processes, one SIGKILLed with a sales order in flight: every saga still completes, exactly once.

Everything is real: `orderflow worker --processes 2` as an operator runs it (a supervisor and two
worker processes, each its own Python), the session's Temporal dev server, a PostgreSQL database of
the test's own shared by the workers and the webhook service, the webhook service over HTTP, and
the sandbox Shopify delivering signed `orders/create` webhooks for orders placed in it. The ERP
takes the first sales order and then holds its answer; the worker process waiting on it is killed
with SIGKILL, so nothing tells Temporal. The activity comes back to a live worker only after its
start-to-close timeout (the saga's own 60 s, not shortened for the test), and its retry must find
the sales order the dead worker created, not make a second. The assertions read what Temporal holds
(one run per order, every one COMPLETED, the timed-out attempt in history) and what the sandbox ERP holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from integration.test_shopify_contract import ORDER_CREATE, order_input
from support.temporal import free_port
from temporalio.api.enums.v1 import EventType, PendingActivityState, TaskQueueType, TimeoutType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import OrderStatus, OrderToCashResult, order_reference
from orderflow.cli.worker import WorkerProcesses
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings
from orderflow.store.db import upgrade
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway

pytestmark = pytest.mark.integration

ORDERS = 8
LINES = [("BOLT-M8-S", 2), ("NUT-M8-M", 1)]
# The ERP's answer to the first sales order is held this long: longer than it takes to find the
# worker waiting on it and kill it, shorter than the adapter's own timeout.
HOLD_SECONDS = 8.0
# The killed worker's activity returns after the saga's 60 s start-to-close timeout and a 1 s retry.
FINISH_WITHIN = 120.0
STARTED_WITHIN = 30.0
# The PostgreSQL server of tests/conftest.py; each run makes a database of its own there.
POSTGRES_URL = os.environ.get("ORDERFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of the test's own: several processes write to it at once."""
    name = f"of_workers_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_env(
    settings: Settings, *, target: str, task_queue: str, database_url: str, http_port: int, state_dir: Path
) -> dict[str, str]:
    """The worker processes' environment, as `orderflow dev` gives its worker: this test's Temporal and sandbox."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": target,
        "TEMPORAL_NAMESPACE": "default",
        "ORDERFLOW_TASK_QUEUE": task_queue,
        "ORDERFLOW_SHOPIFY__BASE_URL": settings.shopify.base_url,
        "ORDERFLOW_NETSUITE__BASE_URL": settings.netsuite.base_url,
        "ORDERFLOW_NETSUITE__PRIVATE_KEY_FILE": str(settings.netsuite.private_key_file),
        "ORDERFLOW_WMS__BASE_URL": settings.wms.base_url,
        "ORDERFLOW_CARRIER__BASE_URL": settings.carrier.base_url,
        "ORDERFLOW_AMAZON__BASE_URL": settings.amazon.base_url,
        "ORDERFLOW_AMAZON__LWA_URL": settings.amazon.lwa_url,
        "ORDERFLOW_DATABASE_URL": database_url,
        "ORDERFLOW_STATE_DIR": str(state_dir),
        "ORDERFLOW_WORKER_HTTP_PORT": str(http_port),
        # The held answer must outlast the kill, not the adapter's patience.
        "ORDERFLOW_NETSUITE__TIMEOUT_SECONDS": str(HOLD_SECONDS + 7),
        "PYTHONUNBUFFERED": "1",
    }


def two_free_ports() -> int:
    """A base port p with p and p + 1 both free, for the two processes' health endpoints."""
    for _ in range(50):
        base = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", base + 1))
            return base
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Supervisor:
    """`orderflow worker --processes 2` running as a child of the test, its output in a file."""

    process: asyncio.subprocess.Process
    log_file: Path

    def log(self) -> str:
        """What the supervisor and its worker processes have written so far."""
        return self.log_file.read_text(errors="replace")


@pytest.fixture
async def supervisor(
    dev_server: WorkflowEnvironment, settings: Settings, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Supervisor, str, int]]:
    queue = f"workers-{uuid.uuid4()}"
    target = dev_server.client.service_client.config.target_host
    http_port = two_free_ports()
    env = worker_env(
        settings, target=target, task_queue=queue, database_url=postgres_url, http_port=http_port, state_dir=tmp_path
    )
    log_file = tmp_path / "worker.log"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orderflow.cli", "worker", "--processes", "2",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env,
            # Its own process group, so whatever the test leaves running goes with one killpg.
            start_new_session=True,
        )  # fmt: skip
    try:
        yield Supervisor(process, log_file), queue, http_port
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


async def pollers(client: Client, queue: str) -> set[str]:
    """The identities (pid@host) of the workers polling the queue for activities."""
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return {poller.identity for poller in described.pollers}


async def eventually(what: str, check: Any, within: float, supervisor: Supervisor) -> Any:
    """Poll `check()` until it returns something truthy; fail with the workers' log otherwise."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {within:.0f} s; worker log:\n{supervisor.log()[-4000:]}")
        await asyncio.sleep(0.1)


async def test_sigkilled_worker_process_loses_no_saga_and_duplicates_no_sales_order(
    dev_server: WorkflowEnvironment,
    sandbox: httpx.AsyncClient,
    settings: Settings,
    postgres_url: str,
    supervisor: tuple[Supervisor, str, int],
    http: httpx.AsyncClient,
) -> None:
    workers, queue, http_port = supervisor
    client = dev_server.client
    target = client.service_client.config.target_host
    settings = settings.model_copy(update={"database_url": postgres_url})
    (await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 0.3})).raise_for_status()

    # The ERP commits the first sales order and holds its answer: its worker is waiting on it when killed.
    rule = {"system": "netsuite", "method": "PUT", "path": "*/salesOrder/eid:*", "kind": "timeout_after_commit"}
    (await sandbox.post("/sandbox/faults", json={**rule, "times": 1, "hold_seconds": HOLD_SECONDS})).raise_for_status()

    service = create_app(settings, temporal=TemporalGateway(target, task_queue=queue))
    with BackgroundServer(service) as hooks:
        subscriptions = {"shopify": ["orders/create"], "wms": ["order.shipped"], "carrier": ["tracker.updated"]}
        for system, topics in subscriptions.items():
            subscribed = await sandbox.post(
                f"/sandbox/webhooks/subscriptions/{system}",
                json={"topics": topics, "url": f"{hooks.url}/webhooks/{system}"},
            )
            subscribed.raise_for_status()
        shopify = ShopifyClient(http, settings.shopify)
        started = time.monotonic()
        keys = []
        for _ in range(ORDERS):
            created = (await shopify.execute(ORDER_CREATE, {"order": order_input(LINES)}))["orderCreate"]
            assert created["userErrors"] == [], created["userErrors"]
            keys.append(f"order:shopify:{created['order']['legacyResourceId']}")

        # Meanwhile the two processes came up (the sagas wait for them if not), each polling with its
        # own identity and serving health on its own port.
        async def two_pollers() -> set[str] | None:
            found = await pollers(client, queue)
            return found if len(found) >= 2 else None

        identities = await eventually("two worker processes polling", two_pollers, 60, workers)
        for port in (http_port, http_port + 1):
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        pids = {int(identity.split("@", 1)[0]) for identity in identities}

        async def held_sales_order() -> tuple[str, int] | None:
            for key in keys:
                with contextlib.suppress(RPCError):
                    described = await client.get_workflow_handle(key).describe()
                    for pending in described.raw_description.pending_activities:
                        if (
                            pending.activity_type.name == "post_sales_order"
                            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                        ):
                            return key, int(pending.last_worker_identity.split("@", 1)[0])
            return None

        held_key, victim = await eventually("a sales order in flight", held_sales_order, STARTED_WITHIN, workers)
        assert victim in pids, (victim, pids)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        handles: list[WorkflowHandle[Any, OrderToCashResult]] = [
            client.get_workflow_handle(key, result_type=OrderToCashResult) for key in keys
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), FINISH_WITHIN)
        finished = time.monotonic()

    assert [r.status for r in results] == [OrderStatus.COMPLETED] * ORDERS, [r.state.model_dump_json() for r in results]

    # Exactly once: one run per order on this queue, nothing started twice.
    runs = [execution.id async for execution in client.list_workflows(f'TaskQueue = "{queue}"')]
    assert sorted(runs) == sorted(keys), runs

    # The killed attempt really was lost and retried elsewhere: the sales order's recorded attempt is the
    # second, by another worker, after the first ran out its start-to-close timeout.
    history = await client.get_workflow_handle(held_key).fetch_history()
    (scheduled,) = [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "post_sales_order"
    ]
    (retried,) = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled
    ]
    assert retried.attempt == 2, retried
    assert retried.last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE, retried
    assert not retried.identity.startswith(f"{victim}@"), retried.identity

    # The ERP holds one sales order per order: the retry found what the dead worker had created.
    netsuite = (await sandbox.get("/sandbox/state/netsuite")).json()
    stored = netsuite["records"].get("salesOrder", [])
    sales_orders = stored if isinstance(stored, list) else list(stored.values())
    for key in keys:
        matching = [r for r in sales_orders if r.get("externalId") == order_reference(key)]
        assert len(matching) == 1, (key, matching)

    # The supervisor started the dead process again, and stops both cleanly on SIGTERM.
    assert "killed by SIGKILL; starting it again" in workers.log(), workers.log()[-4000:]
    workers.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert await asyncio.wait_for(workers.process.wait(), 30) == 0, workers.log()[-4000:]
    print(f"supervisor stopped {time.monotonic() - stopping:.1f} s after SIGTERM")
    print(f"\nkilled {victim} at +{killed_at - started:.1f} s; all {ORDERS} sagas done at +{finished - started:.1f} s")


async def test_worker_processes_that_will_not_start_stop_the_supervisor_with_exit_2(tmp_path: Path) -> None:
    # Nothing listens at this address: each worker process exits 2 at once, and restarting cannot help.
    env = {**os.environ, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "ORDERFLOW_WORKER_HTTP_PORT": "0"}
    env["ORDERFLOW_STATE_DIR"] = str(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow.cli", "worker", "--processes", "2",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert process.returncode == 2, text
    assert "Temporal is not reachable" in text
    assert "will not start" in text and "starting it again" not in text, text


class StandInProcesses(WorkerProcesses):
    """The supervisor, running a small Python program in place of each worker process."""

    def __init__(self, program: str, **kwargs: Any) -> None:
        super().__init__(1, env=dict(os.environ), http_port_base=0, **kwargs)
        self.program = program

    def argv(self) -> list[str]:
        """The stand-in's command line."""
        return [sys.executable, "-c", self.program]


async def running(processes: WorkerProcesses, *, restarts: int, ready: Path, within: float = 20) -> None:
    """Wait until the supervisor has restarted `restarts` times and its process says it is `ready`."""
    deadline = time.monotonic() + within
    while processes.restarts < restarts or not processes.pids() or not ready.exists():
        assert time.monotonic() < deadline, f"restarts {processes.restarts}, running {processes.pids()}"
        await asyncio.sleep(0.05)


async def test_a_worker_process_that_dies_is_started_again_and_a_stop_drains_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orderflow.cli.worker.RESTART_BACKOFF_INITIAL_SECONDS", 0.1)
    marker, ready = tmp_path / "died-once", tmp_path / "ready"
    # Dies at once the first time; the second time it runs until SIGTERM and then exits 0, as a worker drains.
    program = (
        "import pathlib, signal, sys, time\n"
        f"marker, ready = pathlib.Path({str(marker)!r}), pathlib.Path({str(ready)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch(); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "ready.touch()\n"
        "time.sleep(60)\n"
    )
    processes = StandInProcesses(program)
    supervising = asyncio.create_task(processes.run())
    await running(processes, restarts=1, ready=ready)

    processes.stop()
    assert await asyncio.wait_for(supervising, 10) == 0
    assert processes.restarts == 1 and not processes.pids()


async def test_a_worker_process_that_will_not_drain_is_killed_after_the_stop_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    program = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    processes = StandInProcesses(program, stop_grace_seconds=0.5)
    supervising = asyncio.create_task(processes.run())
    await running(processes, restarts=0, ready=ready)

    stopped_at = time.monotonic()
    processes.stop()
    assert await asyncio.wait_for(supervising, 10) == 1
    assert 0.5 <= time.monotonic() - stopped_at < 5
    assert processes.restarts == 0 and not processes.pids()
