"""The Amazon feed ledger on SQLite and PostgreSQL: one row per key, shared by workers, race-safe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from orderflow.adapters.amazon import FeedEntry
from orderflow.store.db import Database
from orderflow.store.feed_ledger import AmazonFeed, AmazonFeedLedger

REFUND = "POST_PAYMENT_ADJUSTMENT_DATA"


def entry(key: str, document_id: str, *, recorded_at: datetime | None = None) -> FeedEntry:
    """A submission about to be sent: its document recorded, no feed id yet."""
    return FeedEntry(
        key=key,
        feed_type=REFUND,
        amazon_order_id="111-0000001-0000001",
        document_id=document_id,
        recorded_at=recorded_at or datetime.now(UTC),
    )


async def rows(database: Database) -> int:
    """How many submissions the table holds."""
    async with database.session() as session:
        return int((await session.execute(select(func.count()).select_from(AmazonFeed))).scalar_one())


@pytest.fixture
async def other_worker(database: Database) -> AsyncIterator[Database]:
    """The same database as a second worker process sees it: its own engine and connections."""
    other = Database(database.url, schema=database.schema)
    try:
        yield other
    finally:
        await other.dispose()


async def test_a_submission_is_found_by_its_key_first_in_doubt_then_with_its_feed(database: Database) -> None:
    ledger = AmazonFeedLedger(database)
    mine = entry("return:amazon:r1:refund", "doc-1")

    assert await ledger.find(mine.key) is None
    assert await ledger.claim(mine) == mine
    in_doubt = await ledger.find(mine.key)
    await ledger.record(mine.key, document_id="doc-1", feed_id="50001")
    found = await ledger.find(mine.key)

    assert in_doubt is not None and (in_doubt.document_id, in_doubt.feed_id) == ("doc-1", None)
    # The time is read back with its zone (SQLite stores it naive), so ages can be computed from it.
    assert in_doubt.recorded_at == mine.recorded_at
    assert found is not None and (found.document_id, found.feed_id, found.feed_type) == ("doc-1", "50001", REFUND)
    assert found.amazon_order_id == "111-0000001-0000001"


async def test_concurrent_workers_submitting_one_key_leave_one_row_and_all_see_one_feed(
    database: Database, other_worker: Database
) -> None:
    key = "return:amazon:r2:refund"

    async def attempt(worker: Database, n: int) -> FeedEntry:
        # What `AmazonClient._submit_feed` does: claim with its own document, send only if it won.
        ledger = AmazonFeedLedger(worker)
        standing = await ledger.claim(entry(key, f"doc-{n}"))
        if standing.document_id == f"doc-{n}":
            await ledger.record(key, document_id=f"doc-{n}", feed_id=f"feed-{n}")
        return standing

    standings = await asyncio.gather(*(attempt(database if n % 2 else other_worker, n) for n in range(6)))
    found = [await AmazonFeedLedger(worker).find(key) for worker in (database, other_worker)]

    assert await rows(database) == 1
    # Every attempt was told the same document won, so exactly one would have called createFeed.
    (document,) = {standing.document_id for standing in standings}
    assert [f.feed_id if f else None for f in found] == [document.replace("doc", "feed")] * 2


async def test_a_refused_document_frees_its_key_but_a_recorded_feed_is_never_released(database: Database) -> None:
    ledger = AmazonFeedLedger(database)
    await ledger.claim(entry("k-refused", "doc-a"))
    await ledger.claim(entry("k-sent", "doc-b"))
    await ledger.record("k-sent", document_id="doc-b", feed_id="50002")

    await ledger.release("k-refused", document_id="someone-elses-doc")
    kept = await ledger.find("k-refused")
    await ledger.release("k-refused", document_id="doc-a")
    await ledger.release("k-sent", document_id="doc-b")
    # A later record for a document that no longer stands changes nothing.
    await ledger.record("k-sent", document_id="doc-z", feed_id="99999")

    assert kept is not None and kept.document_id == "doc-a"
    assert await ledger.find("k-refused") is None
    sent = await ledger.find("k-sent")
    assert sent is not None and sent.feed_id == "50002"


async def test_an_operator_lists_submissions_in_doubt_and_settles_one_with_the_feed_found(database: Database) -> None:
    ledger = AmazonFeedLedger(database)
    now = datetime.now(UTC)
    await ledger.claim(entry("k-old", "doc-old", recorded_at=now - timedelta(hours=1)))
    await ledger.claim(entry("k-fresh", "doc-fresh", recorded_at=now))
    await ledger.claim(entry("k-done", "doc-done", recorded_at=now - timedelta(hours=2)))
    await ledger.record("k-done", document_id="doc-done", feed_id="50003")

    doubtful = await ledger.in_doubt(recorded_before=now - timedelta(minutes=5))
    settled = await ledger.settle("k-old", feed_id="50004")
    again = await ledger.settle("k-old", feed_id="50005")

    assert [e.key for e in doubtful] == ["k-old"]
    assert (settled, again) == (True, False)
    old = await ledger.find("k-old")
    assert old is not None and old.feed_id == "50004"
