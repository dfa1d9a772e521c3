"""`orderflow doctor` against the real dev server and the sandbox: green when all is well, a named fix when not."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.temporal import free_port
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from orderflow.cli import doctor
from orderflow.settings import Settings

runner = CliRunner()
# Wide enough that rich never wraps a cell, so a fix reads on one line.
WIDE = {"COLUMNS": "400"}


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


def _secrets(settings: Settings) -> list[str]:
    return [
        settings.shopify.access_token.get_secret_value(),
        settings.netsuite.consumer_secret.get_secret_value(),
        settings.netsuite.token_secret.get_secret_value(),
        settings.wms.token.get_secret_value(),
        settings.carrier.api_key.get_secret_value(),
        settings.amazon.client_secret.get_secret_value(),
        settings.amazon.refresh_token.get_secret_value(),
    ]


def test_doctor_is_all_green_against_the_dev_server_and_the_sandbox(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor, "get_settings", lambda: settings)

    result = runner.invoke(doctor.app, ["--address", _address(dev_server), "--namespace", "default"], env=WIDE)

    assert result.exit_code == 0, result.output
    assert "all green" in result.output
    assert "FAIL" not in result.output
    for name in (
        "namespace default",
        "search attributes",
        "database",
        "Shopify",
        "NetSuite",
        "WMS",
        "carrier",
        "Amazon",
    ):
        assert name in result.output
    for secret in _secrets(settings):
        assert secret not in result.output


async def test_bad_netsuite_credentials_are_named_with_their_fix(
    dev_server: WorkflowEnvironment, settings: Settings
) -> None:
    wrong = settings.model_copy(update={"netsuite": settings.netsuite.model_copy(update={"client_id": "not-ours"})})

    checks = _by_name(await doctor.run_checks(wrong, address=_address(dev_server), namespace="default", limit=5))

    netsuite = checks["NetSuite"]
    assert netsuite.status is doctor.Status.FAIL
    assert "credentials refused" in netsuite.detail
    assert "ORDERFLOW_NETSUITE__CLIENT_ID" in netsuite.fix
    assert [name for name, check in checks.items() if not check.ok] == ["NetSuite"]


def test_bad_netsuite_credentials_exit_1_and_the_table_says_so(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = settings.model_copy(update={"netsuite": settings.netsuite.model_copy(update={"client_id": "not-ours"})})
    monkeypatch.setattr(doctor, "get_settings", lambda: wrong)

    result = runner.invoke(doctor.app, ["--address", _address(dev_server)], env=WIDE)

    assert result.exit_code == 1, result.output
    netsuite_row = next(line for line in result.output.splitlines() if "NetSuite" in line)
    assert "FAIL" in netsuite_row
    assert "ORDERFLOW_NETSUITE__CLIENT_ID" in netsuite_row
    assert "1 check(s) failed" in result.output


async def test_a_stopped_temporal_is_reported_and_the_rest_is_still_checked(settings: Settings) -> None:
    nobody = f"127.0.0.1:{free_port()}"

    checks = await doctor.run_checks(settings, address=nobody, namespace="default", limit=5)

    temporal = checks[0]
    assert temporal.status is doctor.Status.FAIL
    assert f"not reachable at {nobody}" in temporal.detail
    assert "orderflow dev" in temporal.fix
    statuses = {check.name: check.status for check in checks[1:]}
    assert statuses == {
        "namespace default": doctor.Status.SKIPPED,
        "search attributes": doctor.Status.SKIPPED,
        "database": doctor.Status.OK,
        "payload encryption": doctor.Status.OK,
        "Shopify": doctor.Status.OK,
        "NetSuite": doctor.Status.OK,
        "WMS": doctor.Status.OK,
        "carrier": doctor.Status.OK,
        "Amazon": doctor.Status.OK,
    }


async def test_a_namespace_that_does_not_exist_is_named(dev_server: WorkflowEnvironment, settings: Settings) -> None:
    checks = _by_name(await doctor.run_checks(settings, address=_address(dev_server), namespace="no-such-ns", limit=5))

    assert checks["namespace no-such-ns"].status is doctor.Status.FAIL
    assert "does not exist" in checks["namespace no-such-ns"].detail
    assert "temporal operator namespace create" in checks["namespace no-such-ns"].fix


async def test_an_unmigrated_database_says_to_upgrade(
    dev_server: WorkflowEnvironment, settings: Settings, tmp_path: pytest.TempPathFactory
) -> None:
    (Path(str(tmp_path)) / "empty.db").touch()
    empty = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/empty.db"})

    checks = _by_name(await doctor.run_checks(empty, address=_address(dev_server), limit=5))

    assert checks["database"].status is doctor.Status.FAIL
    assert "at migration none" in checks["database"].detail
    assert checks["database"].fix == "run `orderflow db upgrade`"


async def test_a_missing_sqlite_database_is_reported_and_not_created(
    dev_server: WorkflowEnvironment, settings: Settings, tmp_path: pytest.TempPathFactory
) -> None:
    missing = Path(str(tmp_path)) / "never-made.db"
    absent = settings.model_copy(update={"database_url": f"sqlite:///{missing}"})

    checks = _by_name(await doctor.run_checks(absent, address=_address(dev_server), limit=5))

    assert checks["database"].status is doctor.Status.FAIL
    assert "does not exist yet" in checks["database"].detail and "orderflow db upgrade" in checks["database"].fix
    assert not missing.exists()


def test_bad_arguments_exit_2() -> None:
    result = runner.invoke(doctor.app, ["--timeout", "0"])

    assert result.exit_code == 2


async def test_a_vendor_nobody_answers_for_is_named_with_its_base_url(settings: Settings) -> None:
    gone = f"http://127.0.0.1:{free_port()}/wms"
    moved = settings.model_copy(update={"wms": settings.wms.model_copy(update={"base_url": gone})})

    checks = _by_name(await doctor.run_checks(moved, address=f"127.0.0.1:{free_port()}", limit=5))

    assert checks["WMS"].status is doctor.Status.FAIL
    assert f"{gone} not reachable" in checks["WMS"].detail
    assert "ORDERFLOW_WMS__BASE_URL" in checks["WMS"].fix


async def test_an_api_key_against_a_plaintext_server_says_tls_is_on_and_hides_the_key(
    dev_server: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "a-very-secret-api-key")

    checks = await doctor.run_checks(settings, address=_address(dev_server), limit=5)

    temporal = checks[0]
    assert temporal.status is doctor.Status.FAIL
    assert "(API key)" in temporal.detail
    assert "TEMPORAL_TLS=false" in temporal.fix
    assert all("a-very-secret-api-key" not in f"{c.detail} {c.fix}" for c in checks)
