"""`orderflow worker`: run the sagas and their activities against Temporal until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket

import typer

from orderflow.cli.connection import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    TASK_QUEUE,
    AddressOption,
    NamespaceOption,
    TaskQueueOption,
    connect_or_exit,
)
from orderflow.settings import get_settings

SERVICE_NAME = "orderflow-worker"


def worker(
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Run a worker: the order-to-cash saga and its activities, against the systems in settings."""
    from orderflow.store.db import DatabaseNotMigratedError
    from orderflow.telemetry import TracingConfigError, configure_tracing

    try:
        # Traces go where the OTEL_* variables say (off when none are set); see docs/operations.md.
        configure_tracing(SERVICE_NAME)
    except TracingConfigError as exc:
        typer.secho(f"the worker will not start: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    try:
        asyncio.run(_run(task_queue=task_queue, address=address, namespace=namespace))
    except DatabaseNotMigratedError as exc:
        typer.secho(f"the worker will not start: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


async def _run(*, task_queue: str, address: str, namespace: str) -> None:
    from temporalio.runtime import Runtime

    from orderflow.metrics import worker_runtime
    from orderflow.worker import run_worker

    settings = get_settings()
    # Temporal's runtime exports the SDK's and the sagas' metrics in Prometheus text on a loopback
    # port of its own; the worker's /metrics serves it with the process's. Set before any client exists.
    runtime_bind = f"127.0.0.1:{_free_loopback_port()}" if settings.worker_http_port else None
    Runtime.set_default(worker_runtime(runtime_bind), error_if_already_set=False)
    client = await connect_or_exit(address, namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Both end the worker the same way: finish in-flight activities (within the grace period), then exit 0.
    # `orderflow dev` stops its worker with SIGTERM; a person at a terminal presses Ctrl-C.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    typer.echo(f"orderflow worker on task queue {task_queue!r} at {address} (namespace {namespace}); Ctrl-C stops it")
    if settings.worker_http_port:
        where = f"http://{settings.worker_http_host}:{settings.worker_http_port}"
        typer.echo(f"health and metrics: {where}/healthz, {where}/readyz, {where}/metrics")
    try:
        await run_worker(
            settings,
            client=client,
            task_queue=task_queue,
            stop=stop,
            http_port=settings.worker_http_port,
            runtime_metrics_bind=runtime_bind,
        )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    typer.echo("orderflow worker stopped")


def _free_loopback_port() -> int:
    """A loopback port nothing listens on now, for the runtime's internal metrics endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
