"""The operator's actions on any saga (orders, returns): who acts, the update, and exit codes that say why.

Exit codes, shared by every command group: 1 when the saga is not there or refused the action,
2 when Temporal (or a worker to take the action) is not there.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import typer
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from orderflow.canonical.base import CanonicalModel
from orderflow.canonical.saga import ActionOutcome
from orderflow.cli.connection import connect_or_exit, fail

T = TypeVar("T")

# Statuses that mean "Temporal is not there right now", as opposed to "this request is wrong".
UNAVAILABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})


def operator_name() -> str:
    """Who is acting, when `--by` and $USER do not say: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@dataclass(frozen=True)
class ActionAnswer:
    """What became of one operator action: accepted or not, in the saga's (or Temporal's) words, and its exit code."""

    accepted: bool
    message: str
    exit_code: int = 0


async def act(
    key: str, update: str, payload: CanonicalModel, *, answer_within: float, address: str, namespace: str
) -> None:
    """Send an operator's action as an update; exit 0 with what it did, or 1 with why it was refused."""
    client = await connect_or_exit(address, namespace)
    answer = await attempt(client, key, update, payload, answer_within=answer_within, address=address)
    if not answer.accepted:
        fail(answer.message, answer.exit_code)
    typer.echo(answer.message)


async def attempt(
    client: Client, key: str, update: str, payload: CanonicalModel, *, answer_within: float, address: str
) -> ActionAnswer:
    """Send an operator's action as an update and say what became of it, without exiting (bulk actions go on)."""
    try:
        description = await client.get_workflow_handle(key).describe()
    except RPCError as exc:
        return ActionAnswer(False, *rpc_reason(exc, key, address))
    if description.status is not WorkflowExecutionStatus.RUNNING:
        status = description.status.name if description.status else "CLOSED"
        return ActionAnswer(False, f"refused: the saga {key} has already ended ({status})", 1)
    handle = client.get_workflow_handle(key)
    try:
        async with asyncio.timeout(answer_within):
            outcome = await handle.execute_update(update, payload, result_type=ActionOutcome)
    # The SDK reports our own deadline cutting the update short as its own error, not TimeoutError.
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # Not accepted by a worker means not applied: an update is only recorded once a worker takes it.
        return ActionAnswer(
            False,
            f"no worker took the action on {key} within {answer_within:g} s, so it was not applied; is a worker up?",
            2,
        )
    except WorkflowUpdateFailedError as exc:
        return ActionAnswer(False, f"refused: {update_reason(exc.cause)}", 1)
    except RPCError as exc:
        return ActionAnswer(False, *rpc_reason(exc, key, address))
    if not outcome.accepted:
        return ActionAnswer(False, f"refused: {outcome.message}", 1)
    return ActionAnswer(True, outcome.message)


def update_reason(cause: BaseException) -> str:
    """The validator's or handler's own words, without the SDK's wrapping."""
    return str(getattr(cause, "message", None) or cause)


async def describe_saga(client: Client, key: str) -> WorkflowExecutionDescription | None:
    """The saga's latest run, or None if there is no saga under this key."""
    try:
        return await client.get_workflow_handle(key).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        rpc_failure(exc, key, client.service_client.config.target_host)


async def guard(call: Awaitable[T], key: str, address: str) -> T:
    """Await a Temporal call about a saga; exit 1 when the saga is not there, 2 when Temporal is not."""
    try:
        return await call
    except RPCError as exc:
        rpc_failure(exc, key, address)


def rpc_failure(exc: RPCError, key: str, address: str) -> NoReturn:
    """Exit 1 when the saga is not there, 2 when Temporal is not."""
    fail(*rpc_reason(exc, key, address))


def rpc_reason(exc: RPCError, key: str, address: str) -> tuple[str, int]:
    """Why Temporal did not take a request about a saga, and the exit code: 1 no such saga, 2 Temporal."""
    if exc.status is RPCStatusCode.NOT_FOUND:
        return f"no saga for {key}", 1
    if exc.status in UNAVAILABLE:
        return f"Temporal at {address} did not answer ({exc.status.name}): {exc.message}", 2
    return f"Temporal refused the request for {key} ({exc.status.name}): {exc.message}", 2
