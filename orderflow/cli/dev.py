"""`orderflow dev`: the whole local stack in one command, until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orderflow.canonical.saga import TASK_QUEUE
from orderflow.cli.connection import TaskQueueOption, fail
from orderflow.devstack import ALL_SERVICES, DevStack, DevStackError, PortInUseError, StackPorts
from orderflow.settings import STATE_DIR


def dev(
    temporal_port: Annotated[int, typer.Option("--temporal-port", min=1, max=65535, help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option("--ui-port", min=1, max=65535, help="Temporal Web UI port.")] = 8233,
    sandbox_port: Annotated[int, typer.Option("--sandbox-port", min=1, max=65535, help="Sandbox port.")] = 8700,
    webhook_port: Annotated[int, typer.Option("--webhook-port", min=1, max=65535, help="Webhook service port.")] = 8000,
    ship_after: Annotated[
        float,
        typer.Option("--ship-after", min=0, help="The sandbox WMS ships released orders after this many seconds."),
    ] = 2.0,
    orders_per_minute: Annotated[
        float, typer.Option("--orders-per-minute", min=0, help="The sandbox Shopify invents this many orders a minute.")
    ] = 0.0,
    task_queue: TaskQueueOption = TASK_QUEUE,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", file_okay=False, help="Temporal's database and the logs go here.")
    ] = STATE_DIR,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help="Encrypt every payload and start a codec server the Temporal UI decodes through; without "
            "ORDERFLOW_CODEC__KEY(_FILE), a key is generated once into <state-dir>/codec.key.",
        ),
    ] = False,
    codec_port: Annotated[
        int, typer.Option("--codec-port", min=1, max=65535, help="Codec server port (with --encrypt).")
    ] = 8888,
    worker_http_port: Annotated[
        int,
        typer.Option("--worker-http-port", min=1, max=65535, help="The worker's /healthz, /readyz and /metrics."),
    ] = 8001,
) -> None:
    """Start Temporal (UI on :8233), the sandbox, the webhook service and a worker; Ctrl-C stops them all."""
    stack = DevStack(
        ports=StackPorts(
            temporal=temporal_port,
            ui=ui_port,
            sandbox=sandbox_port,
            webhooks=webhook_port,
            codec=codec_port,
            worker_http=worker_http_port,
        ),
        state_dir=state_dir,
        task_queue=task_queue,
        ship_after_seconds=ship_after,
        orders_per_minute=orders_per_minute,
        encrypt=encrypt,
    )
    code = asyncio.run(_run(stack))
    raise typer.Exit(code)


async def _run(stack: DevStack) -> int:
    console = Console()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    try:
        console.print(f"starting the local stack (logs in {stack.log_dir}) ...")
        starting = asyncio.ensure_future(stack.start())
        stopping = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Ctrl-C while starting: `start` stops what it had started when it is cancelled.
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            console.print("interrupted; everything started has been stopped")
            return 130
        stopping.cancel()
        try:
            starting.result()
        except PortInUseError as exc:
            fail(str(exc), 2)
        except DevStackError as exc:
            fail(f"the local stack did not start: {exc}", 1)

        console.print(_where(stack))
        console.print("[bold]Ctrl-C[/] stops everything.")
        exited = asyncio.ensure_future(stack.wait_for_exit())
        stopping = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if exited.done():
            name = exited.result()
            svc = stack.services[name]
            returncode = svc.process.returncode if svc.process else None
            console.print(
                f"[red]{name} exited (code {returncode}); stopping the rest.[/] Last lines of {svc.log_file}:"
            )
            for line in stack.log_tail(name):
                console.print(f"  {line}", markup=False, highlight=False)
            code = 1
        exited.cancel()
        stopping.cancel()
        console.print("stopping ...")
        await stack.stop()
        console.print("stopped")
        return code
    finally:
        await stack.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _where(stack: DevStack) -> str:
    """Where each service answers, whether it was started or reused, and where its log is."""
    lines = ["[bold green]orderflow local stack is up[/]"]
    if "temporal" in stack.services:
        lines.append(f"  {'Temporal UI':<12} [bold]{stack.ui_url}[/]")
    for name in ALL_SERVICES:
        svc = stack.services.get(name)
        if svc is None:
            continue
        state = "already running, reused" if svc.reused else f"started, pid {svc.pid}"
        lines.append(f"  {name:<12} {svc.url}  ({state})")
    for schedule_id, created in stack.schedules.items():
        every = stack.amazon_poll_every.total_seconds() / 60 if stack.amazon_poll_every else 0
        made = "created" if created else "already there, left as it is"
        lines.append(f"  {'schedule':<12} {schedule_id}: polls Amazon every {every:g} min ({made})")
    if stack.codec is not None:
        lines.append(_encryption(stack))
    lines.append(f"  {'logs':<12} {stack.log_dir}/<service>.log")
    return "\n".join(lines)


def _encryption(stack: DevStack) -> str:
    """How payloads are encrypted, and how to read them, for the stack's startup banner."""
    assert stack.codec is not None
    source = f"key file {stack.codec_key_file}" if stack.codec_key_file else "the configured key"
    lines = [
        f"  {'encryption':<12} payloads encrypted with key id {stack.codec.key_id} ({source})",
        f"  {'':<12} CLI: temporal workflow show --codec-endpoint {stack.codec_url} -w <workflow id>",
    ]
    temporal = stack.services.get("temporal")
    if temporal is not None and temporal.reused:
        # A server started elsewhere was not told about the codec server; the UI can still be pointed at it.
        lines.append(
            f"  {'':<12} [yellow]Temporal was already running, so its UI does not know the codec server: "
            f"set the UI's codec server (its codec settings) to {stack.codec_url}[/]"
        )
    return "\n".join(lines)
