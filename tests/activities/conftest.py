"""Fixtures for activity tests: the real adapters over HTTP to the sandbox, and an activity context."""

from __future__ import annotations

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from orderflow.activities import CarrierActivities, ChannelActivities, ErpActivities, WarehouseActivities
from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel
from orderflow.settings import Settings


@pytest.fixture
def env() -> ActivityEnvironment:
    """A Temporal activity context to run activity methods in, as the worker would."""
    return ActivityEnvironment()


@pytest.fixture
def netsuite(settings: Settings, http: httpx.AsyncClient) -> NetSuiteClient:
    """The NetSuite adapter as the worker builds it, pointed at the test sandbox."""
    return NetSuiteClient(http, settings.netsuite)


@pytest.fixture
def wms(settings: Settings, http: httpx.AsyncClient) -> WmsClient:
    """The WMS adapter as the worker builds it, pointed at the test sandbox."""
    return WmsClient(http, settings.wms)


@pytest.fixture
def shopify(settings: Settings, http: httpx.AsyncClient) -> ShopifyClient:
    """The Shopify adapter as the worker builds it, pointed at the test sandbox."""
    return ShopifyClient(http, settings.shopify)


@pytest.fixture
def erp(netsuite: NetSuiteClient) -> ErpActivities:
    """The ERP activities over the real NetSuite adapter."""
    return ErpActivities(netsuite)


@pytest.fixture
def warehouse(wms: WmsClient) -> WarehouseActivities:
    """The warehouse activities over the real WMS adapter."""
    return WarehouseActivities(wms)


@pytest.fixture
def labels(settings: Settings, http: httpx.AsyncClient, wms: WmsClient) -> CarrierActivities:
    """The carrier activities over the real carrier and WMS adapters."""
    return CarrierActivities(CarrierClient(http, settings.carrier), wms)


@pytest.fixture
def channels(shopify: ShopifyClient) -> ChannelActivities:
    """The channel activities with the Shopify adapter for Shopify orders."""
    return ChannelActivities({Channel.SHOPIFY: shopify})
