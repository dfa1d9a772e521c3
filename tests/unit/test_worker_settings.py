"""Worker tuning is configuration: the `worker` settings group reaches the Temporal worker it builds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from orderflow.cli.worker import WorkerProcesses
from orderflow.settings import Settings, WorkerSettings
from orderflow.store.db import Database
from orderflow.worker import build_worker


def test_worker_tuning_is_read_from_the_environment_beside_the_worker_http_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERFLOW_WORKER__MAX_CONCURRENT_ACTIVITIES", "16")
    monkeypatch.setenv("ORDERFLOW_WORKER__MAX_CONCURRENT_WORKFLOW_TASKS", "8")
    monkeypatch.setenv("ORDERFLOW_WORKER__MAX_CACHED_WORKFLOWS", "0")
    monkeypatch.setenv("ORDERFLOW_WORKER__GRACEFUL_SHUTDOWN_SECONDS", "30")
    # The dev stack and every deployment already set this one; the group must not take it over.
    monkeypatch.setenv("ORDERFLOW_WORKER_HTTP_PORT", "9101")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.worker == WorkerSettings(
        max_concurrent_activities=16,
        max_concurrent_workflow_tasks=8,
        max_cached_workflows=0,
        graceful_shutdown_seconds=30,
    )
    assert settings.worker_http_port == 9101


def test_worker_tuning_defaults_are_what_the_worker_ran_with_before_it_was_a_setting() -> None:
    tuning = Settings(_env_file=None).worker  # type: ignore[call-arg]

    assert (tuning.max_concurrent_activities, tuning.max_concurrent_workflow_tasks) == (64, 100)
    assert tuning.max_cached_workflows == 1000
    assert tuning.graceful_shutdown == timedelta(seconds=10)


def test_a_workflow_task_limit_below_two_is_refused() -> None:
    # The SDK needs two workflow task slots while the sticky cache is on; say so at start, not at poll.
    with pytest.raises(ValueError, match="max_concurrent_workflow_tasks"):
        WorkerSettings(max_concurrent_workflow_tasks=1)


async def test_build_worker_runs_with_the_configured_tuning(
    dev_server: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    tuning = WorkerSettings(
        max_concurrent_activities=7,
        max_concurrent_workflow_tasks=5,
        max_cached_workflows=3,
        graceful_shutdown_seconds=2,
    )
    database = Database(f"sqlite:///{tmp_path / 'orderflow.db'}")
    try:
        async with httpx.AsyncClient() as http:
            worker = build_worker(
                dev_server.client,
                settings.model_copy(update={"worker": tuning}),
                http,
                task_queue="tuning-unused",
                database=database,
            )
            config = worker.config()
    finally:
        await database.dispose()

    assert config.get("max_concurrent_activities") == 7
    assert config.get("max_concurrent_workflow_tasks") == 5
    assert config.get("max_cached_workflows") == 3
    assert config.get("graceful_shutdown_timeout") == timedelta(seconds=2)


def test_each_worker_process_serves_health_on_its_own_port_or_none() -> None:
    processes = WorkerProcesses(3, env={"PATH": "/usr/bin"}, http_port_base=8001)
    assert [processes.env_of(i)["ORDERFLOW_WORKER_HTTP_PORT"] for i in range(3)] == ["8001", "8002", "8003"]
    # A child never supervises in turn, whatever its parent was told.
    assert {processes.env_of(i)["ORDERFLOW_WORKER_PROCESSES"] for i in range(3)} == {"1"}

    off = WorkerProcesses(2, env={}, http_port_base=0)
    assert [off.env_of(i)["ORDERFLOW_WORKER_HTTP_PORT"] for i in range(2)] == ["0", "0"]
