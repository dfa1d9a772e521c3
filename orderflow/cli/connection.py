"""How the CLI reaches Temporal: the address, namespace and task queue options, and a connect that exits 2."""

from __future__ import annotations

import asyncio
from typing import Annotated, NoReturn

import typer
from temporalio.client import Client

from orderflow.canonical.saga import TASK_QUEUE
from orderflow.temporal import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, connect

# A refused connection fails at once; this bounds the wait for an address that never answers.
CONNECT_TIMEOUT_SECONDS = 10.0

AddressOption = Annotated[
    str,
    typer.Option("--address", envvar="TEMPORAL_ADDRESS", help="Temporal frontend, host:port."),
]
NamespaceOption = Annotated[
    str,
    typer.Option("--namespace", envvar="TEMPORAL_NAMESPACE", help="Temporal namespace."),
]
TaskQueueOption = Annotated[
    str,
    typer.Option("--task-queue", envvar="ORDERFLOW_TASK_QUEUE", help="Task queue the sagas and the worker use."),
]

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "TASK_QUEUE",
    "AddressOption",
    "NamespaceOption",
    "TaskQueueOption",
    "connect_or_exit",
    "fail",
]


def fail(message: str, code: int) -> NoReturn:
    """Tell the operator what went wrong, on stderr, and exit with `code`."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


async def connect_or_exit(address: str, namespace: str) -> Client:
    """A Temporal client, or exit 2 with where we tried and how to start a local server."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            return await connect(address, namespace)
    except ValueError as exc:
        # A payload-encryption key that cannot be used; the message names the setting, never the key.
        fail(f"the payload encryption settings are not usable: {exc}", 2)
    # The SDK reports a failed connect as a bare RuntimeError ("Failed client connect: ...").
    except (RuntimeError, TimeoutError) as exc:
        fail(
            f"Temporal is not reachable at {address} (namespace {namespace}): {exc or 'timed out'}\n"
            "Start the local stack with `orderflow dev`, or set TEMPORAL_ADDRESS.",
            2,
        )


# For commands that read Temporal's standard client configuration (environment or profile file):
# unset, the address and namespace come from there rather than from a built-in default.
ProfileAddressOption = Annotated[
    str | None, typer.Option("--address", help="Temporal frontend, host:port (default: TEMPORAL_ADDRESS/profile).")
]
ProfileNamespaceOption = Annotated[
    str | None, typer.Option("--namespace", help="Temporal namespace (default: TEMPORAL_NAMESPACE/profile).")
]
