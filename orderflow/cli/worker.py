"""`orderflow worker`: run the sagas and their activities against Temporal until SIGINT or SIGTERM.

With `--processes N` (N > 1) this process only supervises: it starts N worker processes (this
command with `--processes 1`, through `main`, in the same environment plus their own HTTP port),
passes SIGINT and SIGTERM on to each so every one drains its activities, starts again one that
dies without being asked to (backing off while it keeps dying), and exits once all have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, NoReturn

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

# A worker process that dies is started again after this, doubling while it keeps dying, up to the cap;
# one that ran this long before dying was healthy, so its next death starts the backoff over.
RESTART_BACKOFF_INITIAL_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
# Beyond the workers' own grace for their activities: closing their connections and database.
STOP_GRACE_MARGIN_SECONDS = 10.0
# `orderflow worker` exits 2 when it will not start (settings, database, Temporal unreachable). On a
# process's first start that is the configuration, and restarting cannot fix it: the supervisor stops.
WILL_NOT_START = 2

ProcessesOption = Annotated[
    int,
    typer.Option(
        "--processes",
        min=1,
        envvar="ORDERFLOW_WORKER_PROCESSES",
        help=(
            "Worker processes to run on this machine. Python runs workflow code on one core per process, "
            "so use up to one per core. With more than one, this process supervises them: it passes "
            "SIGINT/SIGTERM on, restarts one that dies, and process i serves its health and metrics on "
            "ORDERFLOW_WORKER_HTTP_PORT + i (none when that is 0)."
        ),
    ),
]


def worker(
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    processes: ProcessesOption = 1,
) -> None:
    """Run a worker: the order-to-cash saga and its activities, against the systems in settings."""
    if processes > 1:
        supervisor = WorkerProcesses(
            processes, env=_child_env(task_queue=task_queue, address=address, namespace=namespace)
        )
        raise typer.Exit(asyncio.run(supervisor.run()))

    from orderflow.store.db import DatabaseNotMigratedError
    from orderflow.telemetry import TracingConfigError, configure_tracing

    try:
        # Traces go where the OTEL_* variables say (off when none are set); see docs/operations.md.
        configure_tracing(SERVICE_NAME)
    except TracingConfigError as exc:
        typer.secho(f"the worker will not start: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(WILL_NOT_START) from None
    try:
        asyncio.run(_run(task_queue=task_queue, address=address, namespace=namespace))
    except DatabaseNotMigratedError as exc:
        typer.secho(f"the worker will not start: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(WILL_NOT_START) from None


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


def _child_env(*, task_queue: str, address: str | None, namespace: str | None) -> dict[str, str]:
    """The environment every worker process gets: this one's, with the Temporal options given here."""
    env = dict(os.environ)
    # Through the environment rather than flags, so a child reads them exactly as its parent did
    # (the same variables the options and Temporal's client configuration read).
    env["ORDERFLOW_TASK_QUEUE"] = task_queue
    if address:
        env["TEMPORAL_ADDRESS"] = address
    if namespace:
        env["TEMPORAL_NAMESPACE"] = namespace
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _describe_exit(returncode: int) -> str:
    """How a worker process ended, in words: its exit code, or the signal that killed it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class WorkerProcesses:
    """N worker processes on this machine, kept running until SIGINT or SIGTERM asks them all to drain."""

    count: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # Process i serves /healthz, /readyz and /metrics on base + i; 0 leaves every process without one.
    http_port_base: int | None = None
    # After a stop, how long the processes may take to drain before the ones left are killed;
    # unset, the workers' own grace (settings.worker) plus time to close their connections.
    stop_grace_seconds: float | None = None
    # How many times a process that died has been started again.
    restarts: int = field(default=0, init=False)
    _running: dict[int, asyncio.subprocess.Process] = field(default_factory=dict, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _stop_signal: signal.Signals = field(default=signal.SIGTERM, init=False)
    _reaper: asyncio.Task[None] | None = field(default=None, init=False)

    def argv(self) -> list[str]:
        """The command line of one worker process: this command, through `main`."""
        return [sys.executable, "-c", "from orderflow.cli.worker import main; main()", "--processes", "1"]

    def env_of(self, index: int) -> dict[str, str]:
        """The environment of worker process `index`: the shared one, with its own HTTP port."""
        base = self.http_port_base if self.http_port_base is not None else get_settings().worker_http_port
        return {
            **self.env,
            "ORDERFLOW_WORKER_PROCESSES": "1",
            "ORDERFLOW_WORKER_HTTP_PORT": str(base + index if base else 0),
        }

    def pids(self) -> dict[int, int]:
        """The process id of each running worker process, by index."""
        return {index: process.pid for index, process in self._running.items()}

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """Ask every worker process to drain and exit (the signal is passed on as it came)."""
        self._stop_signal = signum
        self._stopping.set()
        for process in self._running.values():
            _send(process, signum)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._kill_stragglers())

    async def _kill_stragglers(self) -> None:
        """Kill what has not exited once the grace is over: a stop must end, even with a worker stuck."""
        grace = self.stop_grace_seconds
        if grace is None:
            grace = get_settings().worker.graceful_shutdown_seconds + STOP_GRACE_MARGIN_SECONDS
        await asyncio.sleep(grace)
        for index, process in list(self._running.items()):
            _say(
                f"orderflow worker: process {index} (pid {process.pid}) still running "
                f"{grace:g} s after the stop; killing it"
            )
            _send(process, signal.SIGKILL)

    async def run(self) -> int:
        """Run the processes until stopped; 0 when every one then exited cleanly, else 1 (2: they will not start)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, signum)
        _say(f"orderflow worker: supervising {self.count} worker processes; Ctrl-C stops them all")
        cores = os.cpu_count() or 1
        if self.count > cores:
            # Each process runs workflow code on one core; more processes than cores only share them.
            _say(
                f"orderflow worker: {self.count} processes on {cores} cores; "
                "workflow code gains nothing past one process a core"
            )
        try:
            codes = await asyncio.gather(*(self._keep_running(index) for index in range(self.count)))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if self._reaper is not None:
                self._reaper.cancel()
        if WILL_NOT_START in codes:
            return WILL_NOT_START
        _say("orderflow worker: every worker process stopped")
        return 0 if all(code == 0 for code in codes) else 1

    async def _keep_running(self, index: int) -> int:
        """Run worker process `index`, starting it again whenever it dies unasked; its last exit code."""
        backoff = RESTART_BACKOFF_INITIAL_SECONDS
        first = True
        while True:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(*self.argv(), env=self.env_of(index))
            self._running[index] = process
            _say(f"orderflow worker: process {index} started (pid {process.pid})")
            if self._stopping.is_set():
                # The stop came while this one was being started, so the broadcast missed it.
                _send(process, self._stop_signal)
            returncode = await process.wait()
            del self._running[index]
            if self._stopping.is_set():
                _say(f"orderflow worker: process {index} (pid {process.pid}) stopped, {_describe_exit(returncode)}")
                # Ended by the very signal passed on: it was still starting (no handler yet), so it held no work.
                return 0 if returncode == -self._stop_signal else returncode
            if first and returncode == WILL_NOT_START:
                _say(f"orderflow worker: process {index} will not start (see above); stopping the others")
                self.stop()
                return returncode
            first = False
            if time.monotonic() - started >= HEALTHY_RUN_SECONDS:
                backoff = RESTART_BACKOFF_INITIAL_SECONDS
            _say(
                f"orderflow worker: process {index} (pid {process.pid}) died, {_describe_exit(returncode)}; "
                f"starting it again in {backoff:g} s"
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
                # Stopped while waiting to restart it: nothing of this one is left running.
                return 0
            except TimeoutError:
                pass
            self.restarts += 1
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_SECONDS)


def _send(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    if process.returncode is None:
        # It may exit between the check and the signal; its wait reports how.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def _say(message: str) -> None:
    # Stderr, with the children's own output: a log collector sees one stream per container.
    typer.echo(message, err=True)


# This command alone, for tests (CliRunner) and for `main`; `orderflow worker` is the same function.
app = typer.Typer(name="worker", add_completion=False, pretty_exceptions_show_locals=False)
app.command()(worker)


def main() -> NoReturn:
    """A supervised worker process: run the command, then exit without the interpreter's teardown.

    Temporal's client threads can call into Python while the interpreter finalizes, which aborts
    the process (SIGABRT; temporalio/sdk-python#300), now and then, after a clean stop or a refused
    connection alike. The supervisor reads a worker's exit code (2: it will not start; a signal: it
    died), so each worker process flushes what it has and leaves with its code as it is.
    """
    try:
        app(prog_name="orderflow worker")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    from orderflow.telemetry import shutdown_tracing

    # What an ordinary exit would have done for us: the last spans exported, the streams written out.
    shutdown_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
