"""Fixtures shared by every test: the sandbox over real HTTP, and settings that point at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from support.temporal import start_dev_server, start_time_skipping_server
from temporalio.testing import WorkflowEnvironment

from orderflow.sandbox import SandboxConfig, create_app
from orderflow.sandbox.credentials import ensure_m2m_keypair
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import (
    AmazonSettings,
    CarrierSettings,
    NetSuiteSettings,
    Settings,
    ShopifySettings,
    WmsSettings,
)
from orderflow.store.db import Database, upgrade


@pytest.fixture(scope="session")
def m2m_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh private key for NetSuite M2M, with its public half registered in the sandbox."""
    private = tmp_path_factory.mktemp("keys") / "netsuite-m2m-key.pem"
    ensure_m2m_keypair(private)
    return private


@pytest.fixture(scope="session")
def sandbox_server(m2m_key_file: Path) -> Iterator[BackgroundServer]:
    """The whole sandbox, served over real HTTP on a free loopback port for the test session."""
    from orderflow.sandbox.credentials import public_key_path

    config = SandboxConfig(
        netsuite_public_key_file=public_key_path(m2m_key_file),
        # Retries in tests should take milliseconds, not minutes.
        webhook_time_scale=0.0005,
        tick_seconds=0.05,
    )
    with BackgroundServer(create_app(config)) as server:
        yield server


@pytest.fixture
def sandbox_url(sandbox_server: BackgroundServer) -> Iterator[str]:
    """The sandbox's base URL, reset to its seed state before each test."""
    response = httpx.post(f"{sandbox_server.url}/sandbox/reset", timeout=10)
    response.raise_for_status()
    yield sandbox_server.url


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the sandbox's control API (`/sandbox/...`): faults, state, clock, webhooks."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def settings_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database for the `settings` fixture's worker and webhook service."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'orderflow.db'}"
    upgrade(url)
    return url


@pytest.fixture
def settings(sandbox_url: str, m2m_key_file: Path, settings_database_url: str) -> Settings:
    """Settings whose every adapter points at this test's sandbox, with a migrated database."""
    return Settings(
        database_url=settings_database_url,
        shopify=ShopifySettings(base_url=f"{sandbox_url}/shopify", timeout_seconds=5),
        netsuite=NetSuiteSettings(base_url=f"{sandbox_url}/netsuite", private_key_file=m2m_key_file, timeout_seconds=5),
        wms=WmsSettings(base_url=f"{sandbox_url}/wms", timeout_seconds=5),
        carrier=CarrierSettings(base_url=f"{sandbox_url}/carrier", timeout_seconds=5),
        amazon=AmazonSettings(
            base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
        ),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client adapters are built with, as the worker builds them."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server for the whole session; tests use their own task queues."""
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server for the whole session."""
    env = await start_time_skipping_server()
    try:
        yield env
    finally:
        await env.shutdown()


POSTGRES_URL = os.environ.get("ORDERFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database migrated to head: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'orderflow.db'}"
        upgrade(url)
        db = Database(url)
        try:
            yield db
        finally:
            await db.dispose()
        return
    schema = f"of_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        upgrade(POSTGRES_URL, schema=schema)
        db = Database(POSTGRES_URL, schema=schema)
        try:
            yield db
        finally:
            await db.dispose()
    finally:
        with psycopg.connect(_plain(POSTGRES_URL), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
