"""`orderflow setup`: make a fresh namespace ready for orderflow, and say what it changed.

It registers orderflow's search attributes (only those missing) and creates the Amazon order
poller's schedule for each marketplace in the settings (one that exists is left as it is), so
running it again changes nothing and says so. The namespace itself must exist: create it with
`temporal operator namespace create`, or in Temporal Cloud. Exit codes: 0 done (or nothing to do),
1 refused (no such namespace, a search attribute of another type, no right to add attributes),
2 bad arguments, unusable settings, or Temporal not reachable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import typer
from pydantic import ValidationError
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from orderflow.canonical.channel_polling import poller_schedule_id
from orderflow.canonical.order import Channel
from orderflow.cli.amazon import AMAZON_SEARCH_LAG, SANDBOX_SEARCH_LAG, ensure_schedule, poller_schedule
from orderflow.cli.connection import TASK_QUEUE, ProfileAddressOption, ProfileNamespaceOption, TaskQueueOption
from orderflow.codec import codec_from_settings
from orderflow.settings import Settings, get_settings, is_local_url
from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS, client_connect_config, connect

app = typer.Typer(help="Register orderflow's search attributes and create its schedules on a namespace (idempotent).")

CONNECT_TIMEOUT_SECONDS = 10.0
# The poller's defaults, as `orderflow amazon schedule create` has them.
POLL_EVERY = timedelta(minutes=2)
POLL_OVERLAP = timedelta(minutes=10)


@dataclass(frozen=True)
class Step:
    """One thing setup looked at: a search attribute or a schedule, and whether it changed it."""

    name: str
    changed: bool
    detail: str


class SetupRefused(Exception):
    """The namespace cannot be set up as asked; the message says why and what to do."""


async def register_search_attributes(client: Client) -> list[Step]:
    """Add orderflow's search attributes the namespace lacks; refuse one registered with another type."""
    namespace = client.namespace
    wanted = {key.name: IndexedValueType.ValueType(int(key.indexed_value_type)) for key in SEARCH_ATTRIBUTE_KEYS}
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    registered = dict(listed.custom_attributes)
    conflicts = [
        f"{name} is {IndexedValueType.Name(registered[name])}, orderflow needs {IndexedValueType.Name(kind)}"
        for name, kind in wanted.items()
        if name in registered and registered[name] != kind
    ]
    if conflicts:
        raise SetupRefused(
            f"search attributes of another type in {namespace}: {'; '.join(conflicts)}. "
            "A search attribute's type cannot change: use another namespace, or remove these first."
        )
    missing = {name: kind for name, kind in wanted.items() if name not in registered}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as exc:
            if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
                # Temporal Cloud does not take these through the operator API.
                raise SetupRefused(
                    f"Temporal refused to add search attributes to {namespace} ({exc.status.name}). On Temporal "
                    f"Cloud add them with `tcld namespace search-attributes add` or in the Cloud UI: "
                    + ", ".join(f"{name} ({IndexedValueType.Name(kind)})" for name, kind in missing.items())
                ) from None
            raise
    return [
        Step(f"search attribute {name}", name in missing, "registered" if name in missing else "already registered")
        for name in wanted
    ]


async def create_schedules(client: Client, settings: Settings, *, task_queue: str, paused: bool) -> list[Step]:
    """Create the Amazon poller's schedule for each marketplace in the settings, leaving existing ones alone."""
    # Amazon wants a search to end 2 minutes before now; the sandbox has no such rule.
    search_lag = SANDBOX_SEARCH_LAG if is_local_url(settings.amazon.base_url) else AMAZON_SEARCH_LAG
    steps = []
    for marketplace in settings.amazon.marketplace_ids:
        schedule_id = poller_schedule_id(Channel.AMAZON, marketplace)
        schedule = poller_schedule(
            marketplace,
            every=POLL_EVERY,
            overlap=POLL_OVERLAP,
            task_queue=task_queue,
            paused=paused,
            search_lag=search_lag,
        )
        created = await ensure_schedule(client, schedule_id, schedule)
        state = "paused" if paused else "running"
        detail = f"created, every {POLL_EVERY.total_seconds() / 60:g} min, {state}" if created else "already exists"
        steps.append(Step(f"schedule {schedule_id}", created, detail))
    return steps


async def set_up(
    client: Client, settings: Settings, *, task_queue: str = TASK_QUEUE, paused: bool = False
) -> list[Step]:
    """Make the client's namespace ready for orderflow: search attributes first, then the schedules."""
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise SetupRefused(
                f"namespace {client.namespace} does not exist; create it first "
                f"(`temporal operator namespace create --namespace {client.namespace}`, or in Temporal Cloud)"
            ) from None
        raise
    attributes = await register_search_attributes(client)
    return attributes + await create_schedules(client, settings, task_queue=task_queue, paused=paused)


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def run_setup(
    settings: Settings,
    *,
    address: str | None = None,
    namespace: str | None = None,
    task_queue: str = TASK_QUEUE,
    paused: bool = False,
) -> None:
    """Connect as the settings and the Temporal profile say, set the namespace up, and print each step."""
    try:
        config = client_connect_config(address, namespace)
        # Schedules carry the poller's input as a payload: encrypted with the key the worker decrypts with.
        codec = codec_from_settings(settings.codec)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _fail(f"the Temporal or encryption settings are not usable: {exc}", 2) from None
    target, ns = config["target_host"], config["namespace"]

    async def run() -> list[Step]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                client = await connect(target, ns, codec=codec)
        except (RuntimeError, TimeoutError) as exc:
            raise _fail(
                f"Temporal is not reachable at {target} (namespace {ns}): {exc or 'timed out'}\n"
                "Start it (`orderflow dev` locally), or set TEMPORAL_ADDRESS and, for Temporal Cloud, TEMPORAL_API_KEY "
                "or TEMPORAL_TLS_CLIENT_CERT_PATH / TEMPORAL_TLS_CLIENT_KEY_PATH.",
                2,
            ) from None
        try:
            return await set_up(client, settings, task_queue=task_queue, paused=paused)
        except SetupRefused as exc:
            raise _fail(str(exc), 1) from None
        except RPCError as exc:
            raise _fail(f"Temporal at {target} refused ({exc.status.name}): {exc.message}", 2) from None

    steps = asyncio.run(run())
    for step in steps:
        typer.echo(f"{step.name}: {step.detail}")
    changed = sum(step.changed for step in steps)
    if changed:
        typer.echo(f"namespace {ns} is set up: {changed} change(s)")
    else:
        typer.echo(f"nothing to change: namespace {ns} was already set up")


@app.command()
def setup(
    address: ProfileAddressOption = None,
    namespace: ProfileNamespaceOption = None,
    task_queue: TaskQueueOption = TASK_QUEUE,
    paused: Annotated[bool, typer.Option("--paused", help="Create the poller's schedules paused.")] = False,
) -> None:
    """Register the search attributes and create the Amazon poller's schedules; a second run changes nothing."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Where and why only: the input of a bad field may be a secret.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise _fail(f"the settings cannot be read: {problems}", 2) from None
    run_setup(settings, address=address, namespace=namespace, task_queue=task_queue, paused=paused)
