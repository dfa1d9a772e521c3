"""`orderflow amazon feeds ...` on SQLite and PostgreSQL: what an operator sees in doubt, and what settling leaves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner, Result

from orderflow.adapters.amazon import ACKNOWLEDGEMENT_FEED, ADJUSTMENT_FEED, FeedEntry
from orderflow.cli import app
from orderflow.store.db import Database
from orderflow.store.feed_ledger import AmazonFeedLedger

# Keys as the sagas make them: a return's refund, an order's cancel.
REFUND_IN_DOUBT = "OFR-amazon-R1-refund"
REFUND_SETTLED = "OFR-amazon-R2-refund"
REFUND_SUBMITTING = "OFR-amazon-R3-refund"
CANCEL_IN_DOUBT = "OF-amazon-111-0000004-0000004-cancel_on_channel"
# Well past the submission window the default Amazon settings give (about 2.5 minutes).
LONG_AGO = timedelta(hours=1)


def cli_url(database: Database) -> str:
    """The database's URL as a command line gives it (a test schema rides in the connection options)."""
    if database.schema is None:
        return database.url
    return f"{database.url}?options=-csearch_path%3D{database.schema}"


async def invoke(database: Database, *args: str, answer: str | None = None) -> Result:
    """Run `orderflow amazon feeds ...` against the test database, as a separate process would."""
    # The CLI runs its own event loop: give it a thread.
    command = ["amazon", "feeds", *args, "--database-url", cli_url(database)]
    return await asyncio.to_thread(lambda: CliRunner().invoke(app, command, input=answer))


async def claim(
    ledger: AmazonFeedLedger, key: str, *, ago: timedelta, feed_type: str = ADJUSTMENT_FEED, feed_id: str | None = None
) -> FeedEntry:
    """A submission recorded `ago`, as `_submit_feed` records it; with its feed id if Amazon answered."""
    order = key.removeprefix("OF-amazon-").removesuffix("-cancel_on_channel") if key.startswith("OF-") else "111-1"
    entry = FeedEntry(
        key=key,
        feed_type=feed_type,
        amazon_order_id=order,
        document_id=f"amzn1.tortuga.doc-{key}",
        recorded_at=datetime.now(UTC) - ago,
    )
    await ledger.claim(entry)
    if feed_id is not None:
        await ledger.record(key, document_id=entry.document_id, feed_id=feed_id)
    return entry


async def seed(ledger: AmazonFeedLedger) -> None:
    """Two submissions in doubt, one Amazon answered, one an attempt is still sending."""
    await claim(ledger, REFUND_IN_DOUBT, ago=LONG_AGO)
    await claim(ledger, REFUND_SETTLED, ago=LONG_AGO, feed_id="50002")
    await claim(ledger, REFUND_SUBMITTING, ago=timedelta(seconds=5))
    await claim(ledger, CANCEL_IN_DOUBT, ago=2 * LONG_AGO, feed_type=ACKNOWLEDGEMENT_FEED)


def listed_keys(output: str) -> set[str]:
    """The seeded keys the output names."""
    return {k for k in (REFUND_IN_DOUBT, REFUND_SETTLED, REFUND_SUBMITTING, CANCEL_IN_DOUBT) if k in output}


async def test_list_shows_exactly_the_submissions_in_doubt_and_all_shows_every_state(database: Database) -> None:
    await seed(AmazonFeedLedger(database))

    in_doubt = await invoke(database, "list")
    everything = await invoke(database, "list", "--all")
    newest = await invoke(database, "list", "--all", "--limit", "1")

    assert in_doubt.exit_code == 0, in_doubt.output
    assert listed_keys(in_doubt.output) == {REFUND_IN_DOUBT, CANCEL_IN_DOUBT}
    assert "2 feed submission(s) in doubt" in in_doubt.output
    assert "amzn1.tortuga.doc-OFR-amazon-R1-refund" in in_doubt.output and "1h 00m" in in_doubt.output
    assert "orderflow amazon feeds settle KEY --feed-id ID" in in_doubt.output
    assert everything.exit_code == 0, everything.output
    assert listed_keys(everything.output) == {REFUND_IN_DOUBT, REFUND_SETTLED, REFUND_SUBMITTING, CANCEL_IN_DOUBT}
    assert "feed 50002" in everything.output and "submitting" in everything.output
    assert newest.exit_code == 0 and listed_keys(newest.output) == {REFUND_SUBMITTING}


async def test_settle_records_the_feed_so_the_refund_retry_finds_it_and_a_second_settle_is_refused(
    database: Database,
) -> None:
    ledger = AmazonFeedLedger(database)
    await seed(ledger)

    settled = await invoke(database, "settle", REFUND_IN_DOUBT, "--feed-id", "50001")
    again = await invoke(database, "settle", REFUND_IN_DOUBT, "--feed-id", "50009")
    cancel = await invoke(database, "settle", CANCEL_IN_DOUBT, "--feed-id", "50004")

    assert settled.exit_code == 0, settled.output
    assert "next: `orderflow returns retry return:amazon:R1`" in settled.output
    assert again.exit_code == 1 and "already has feed 50001" in again.output
    refund = await ledger.find(REFUND_IN_DOUBT)
    assert refund is not None and refund.feed_id == "50001"
    assert cancel.exit_code == 0, cancel.output
    assert "orderflow orders retry order:amazon:111-0000004-0000004" in cancel.output
    listed = await invoke(database, "list")
    assert listed.exit_code == 0 and listed_keys(listed.output) == set()
    assert "no feed submissions in doubt" in listed.output


async def test_release_frees_the_key_only_when_confirmed_and_never_one_with_a_feed(database: Database) -> None:
    ledger = AmazonFeedLedger(database)
    await seed(ledger)

    declined = await invoke(database, "release", REFUND_IN_DOUBT, answer="n\n")
    assert declined.exit_code == 1, declined.output
    assert "refunded TWICE" in declined.output
    assert await ledger.find(REFUND_IN_DOUBT) is not None

    confirmed = await invoke(database, "release", REFUND_IN_DOUBT, answer="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "next: `orderflow returns retry return:amazon:R1` (its refund step submits the refund feed again)" in (
        confirmed.output
    )
    assert await ledger.find(REFUND_IN_DOUBT) is None

    with_feed = await invoke(database, "release", REFUND_SETTLED, "--yes")
    assert with_feed.exit_code == 1 and "already has feed 50002" in with_feed.output
    kept = await ledger.find(REFUND_SETTLED)
    assert kept is not None and kept.feed_id == "50002"


async def test_a_submission_an_attempt_may_still_be_sending_is_neither_settled_nor_released(
    database: Database,
) -> None:
    ledger = AmazonFeedLedger(database)
    mine = await claim(ledger, REFUND_SUBMITTING, ago=timedelta(seconds=5))

    settled = await invoke(database, "settle", REFUND_SUBMITTING, "--feed-id", "50003")
    released = await invoke(database, "release", REFUND_SUBMITTING, "--yes")

    assert settled.exit_code == 1 and "may still be submitting it" in settled.output
    assert released.exit_code == 1 and "may still be submitting it" in released.output
    assert await ledger.find(REFUND_SUBMITTING) == mine


async def test_bad_input_exits_with_a_message_and_no_traceback(database: Database) -> None:
    unknown_settle = await invoke(database, "settle", "OFR-amazon-NOPE-refund", "--feed-id", "1")
    unknown_release = await invoke(database, "release", "OFR-amazon-NOPE-refund", "--yes")
    no_feed_id = await invoke(database, "settle", REFUND_IN_DOUBT)
    blank_feed_id = await invoke(database, "settle", REFUND_IN_DOUBT, "--feed-id", "  ")

    for result, code, says in [
        (unknown_settle, 1, "no feed submission under OFR-amazon-NOPE-refund"),
        (unknown_release, 1, "no feed submission under OFR-amazon-NOPE-refund"),
        (no_feed_id, 2, "Missing option '--feed-id'"),
        (blank_feed_id, 2, "--feed-id must be Amazon's feed id"),
    ]:
        assert (result.exit_code, says in result.output) == (code, True), result.output
        assert isinstance(result.exception, SystemExit | None), result.exception
        assert "Traceback" not in result.output


def test_list_against_an_unmigrated_database_says_what_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"

    result = CliRunner().invoke(app, ["amazon", "feeds", "list", "--database-url", url])

    assert result.exit_code == 2
    assert "orderflow db upgrade" in result.output
