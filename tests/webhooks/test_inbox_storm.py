"""A duplicate storm: 500 deliveries, 30% exact redeliveries and 10% the same order under a new event id."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import pytest

from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxStatus

from .conftest import SHOP_DOMAIN, WebhookHarness, served, shopify_hmac, shopify_order

pytestmark = pytest.mark.integration


async def test_a_duplicate_storm_starts_one_saga_per_order_and_accounts_for_every_delivery(
    harness: WebhookHarness, settings: Settings, database: Database
) -> None:
    rng = random.Random(4)
    secret = settings.shopify.client_secret.get_secret_value()
    firsts = []
    for _ in range(300):
        raw = json.dumps(shopify_order(harness.new_order_id())).encode()
        firsts.append((raw, str(uuid.uuid4())))
    redeliveries = [rng.choice(firsts) for _ in range(150)]
    new_event_ids = [(raw, str(uuid.uuid4())) for raw, _ in rng.sample(firsts, 50)]
    storm = firsts + redeliveries + new_event_ids
    rng.shuffle(storm)

    # The service's own relay dispatches while the storm is still arriving, as in production.
    async with served(settings, harness.gateway, database, relay=True) as (http, _inbox):
        gate = asyncio.Semaphore(16)

        async def deliver(raw: bytes, event_id: str) -> int:
            headers = {
                "Content-Type": "application/json",
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Hmac-Sha256": shopify_hmac(raw, secret),
                "X-Shopify-Shop-Domain": SHOP_DOMAIN,
                "X-Shopify-Event-Id": event_id,
            }
            async with gate:
                for _ in range(5):
                    response = await http.post("/webhooks/shopify", content=raw, headers=headers)
                    # A 503 stored nothing and asks the vendor to send again, as Shopify would; on a
                    # loaded 2-core machine SQLite's single write lock can make an odd write wait too long.
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.2)
                return response.status_code

        codes = await asyncio.gather(*(deliver(raw, event_id) for raw, event_id in storm))
        for _ in range(600):
            if InboxStatus.PENDING not in await store.count_by_status(database):
                break
            await asyncio.sleep(0.1)

    assert codes == [200] * 500
    rows = await store.listing(database, limit=1000)
    assert len(rows) == 350  # one per event id
    assert sum(row.deliveries for row in rows) == 500  # every delivery accounted for
    started = [row.workflow_id or "" for row in rows if row.outcome == "started"]
    assert sorted(started) == sorted(harness.keys)  # one saga per order, started once
    assert await store.count_by_status(database) == {InboxStatus.DISPATCHED: 300, InboxStatus.DUPLICATE: 50}
    for key in rng.sample(harness.keys, 20):
        assert (await harness.recording(key)).input.order.key == key
