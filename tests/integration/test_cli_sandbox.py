"""`orderflow sandbox ...` commands against a running sandbox: accepted, refused, unreachable."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from orderflow.cli import app

runner = CliRunner()


def test_faults_can_be_added_listed_and_cleared(sandbox_url: str) -> None:
    added = runner.invoke(
        app, ["sandbox", "faults", "add", "throttle", "--system", "wms", "--times", "2", "--url", sandbox_url]
    )
    assert added.exit_code == 0, added.output
    rule = json.loads(added.output)
    assert rule["kind"] == "throttle" and rule["system"] == "wms"

    listed = runner.invoke(app, ["sandbox", "faults", "list", "--url", sandbox_url])
    assert [r["id"] for r in json.loads(listed.output)] == [rule["id"]]

    cleared = runner.invoke(app, ["sandbox", "faults", "clear", "--url", sandbox_url])
    assert cleared.exit_code == 0
    assert httpx.get(f"{sandbox_url}/sandbox/faults").json() == []


def test_a_bad_fault_kind_exits_2_with_the_sandboxs_reason(sandbox_url: str) -> None:
    result = runner.invoke(app, ["sandbox", "faults", "add", "explode", "--url", sandbox_url])
    assert result.exit_code == 2
    assert "HTTP 422" in result.output and "kind" in result.output
    assert httpx.get(f"{sandbox_url}/sandbox/faults").json() == []


def test_an_unknown_system_exits_2_without_calling_the_sandbox(sandbox_url: str) -> None:
    result = runner.invoke(app, ["sandbox", "state", "quickbooks", "--url", sandbox_url])
    assert result.exit_code == 2
    assert "unknown system" in result.output


def test_an_unreachable_sandbox_exits_2_with_how_to_start_it() -> None:
    result = runner.invoke(app, ["sandbox", "faults", "list", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "orderflow sandbox" in result.output


def test_state_prints_every_system(sandbox_url: str) -> None:
    result = runner.invoke(app, ["sandbox", "state", "--url", sandbox_url])
    assert result.exit_code == 0
    assert set(json.loads(result.output)) == {"shopify", "netsuite", "wms", "carrier", "amazon"}
