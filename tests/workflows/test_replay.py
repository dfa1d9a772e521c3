"""Stored histories replay against the current workflow code: a change that breaks a running saga fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from orderflow.workflows.amazon_orders import ChannelOrderPoller
from orderflow.workflows.order_to_cash import OrderToCash
from orderflow.workflows.return_to_refund import ReturnToRefund

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("order_to_cash_*.json"))
RETURN_HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("return_*.json"))


def test_there_are_stored_histories_to_replay() -> None:
    assert len(HISTORIES) >= 2


def patches_in(path: Path) -> set[str]:
    """The `workflow.patched` ids a stored history recorded."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    markers = [
        e.marker_recorded_event_attributes for e in history.events if e.HasField("marker_recorded_event_attributes")
    ]
    return {
        json.loads(m.details["patch-data"].payloads[0].data)["id"] for m in markers if m.marker_name == "core_patch"
    }


def test_histories_from_before_and_after_partial_cancellation_are_replayed() -> None:
    with_patch = [p for p in HISTORIES if "partial-cancel" in patches_in(p)]
    assert [p for p in HISTORIES if "partial-cancel" not in patches_in(p)], "no history from before the patch"
    # One of them cancels what had not shipped of a partly shipped order, with the new activities.
    assert any("cancel_unshipped_lines" in p.read_text() and "close_unshipped_lines" in p.read_text()
               for p in with_patch)  # fmt: skip


def test_histories_from_before_and_after_availability_publishing_are_replayed() -> None:
    with_patch = [p for p in HISTORIES if "publish-availability" in patches_in(p)]
    assert [p for p in HISTORIES if "publish-availability" not in patches_in(p)], "no history from before the patch"
    # The reservation and the release each published, in the background, with the new activity.
    assert any(p.read_text().count('"publish_availability"') >= 2 for p in with_patch)


def test_histories_from_before_and_after_the_credit_hold_guard_are_replayed() -> None:
    assert [p for p in HISTORIES if "credit-hold-refuses-retry" in patches_in(p)], "no history with the patch"
    assert [p for p in HISTORIES if "credit-hold-refuses-retry" not in patches_in(p)], "none from before it"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_stored_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[OrderToCash], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_there_are_stored_return_histories_to_replay() -> None:
    assert len(RETURN_HISTORIES) >= 2


def test_return_histories_from_before_and_after_availability_publishing_are_replayed() -> None:
    with_patch = [p for p in RETURN_HISTORIES if "publish-availability" in patches_in(p)]
    assert [p for p in RETURN_HISTORIES if "publish-availability" not in patches_in(p)], "none from before the patch"
    assert any('"publish_availability"' in p.read_text() for p in with_patch)


@pytest.mark.parametrize("path", RETURN_HISTORIES, ids=[p.stem for p in RETURN_HISTORIES])
async def test_a_stored_return_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ReturnToRefund], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


POLLER_HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("poller_*.json"))


def test_there_are_stored_poller_histories_to_replay() -> None:
    assert len(POLLER_HISTORIES) >= 2
    # One of them continued as new mid-search, carrying its cursor, page and seen orders.
    assert any("CONTINUED_AS_NEW" in p.read_text() for p in POLLER_HISTORIES)


@pytest.mark.parametrize("path", POLLER_HISTORIES, ids=[p.stem for p in POLLER_HISTORIES])
async def test_a_stored_poller_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ChannelOrderPoller], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
