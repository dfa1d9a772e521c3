"""docker-compose.temporal.yml and the Dockerfile, checked without a Docker engine.

What an operator would otherwise find out at `docker compose up`: a service with nothing to run, an
unpinned image, a dependency that does not wait, a variable orderflow never reads, a setting the worker
needs and does not get, search attributes the sagas publish but nobody registered.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import BaseModel

from orderflow.cli import app as cli_app
from orderflow.settings import Settings, is_local_url
from orderflow.temporal import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
PRODUCTION_ENV = DEPLOY / "orderflow.env.example"
STAGING_ENV = DEPLOY / "orderflow.staging.env"

ORDERFLOW_SERVICES = ("orderflow-migrate", "orderflow-worker", "orderflow-webhooks", "orderflow-codec-server")
# Services whose process talks to Temporal and the database with the full settings.
CONNECTED_SERVICES = ("orderflow-migrate", "orderflow-worker", "orderflow-webhooks")
HEALTHY_CONDITIONS = {"service_healthy", "service_completed_successfully"}
# Variables an orderflow container may carry that are not `Settings` fields: the Temporal client's
# (temporalio.envconfig), OpenTelemetry's and Python's own.
FOREIGN_PREFIXES = ("TEMPORAL_", "OTEL_", "PYTHON")
# What each system needs to reach a real vendor: its base URL and its credentials (by field name).
ADAPTER_NEEDS: dict[str, set[str]] = {
    "shopify": {"base_url", "shop_domain", "client_id", "client_secret"},
    "netsuite": {"base_url", "account_id", "auth_method", "client_id", "certificate_id", "private_key_file"},
    "wms": {"base_url", "token", "channel_id", "webhook_secret"},
    "carrier": {"base_url", "api_key", "webhook_secret"},
    "amazon": {"base_url", "lwa_url", "client_id", "client_secret", "refresh_token", "seller_id", "marketplace_ids"},
}
# The webhook service verifies every vendor's signature and reads Shopify returns through the Admin API.
WEBHOOK_NEEDS = {
    "shopify__base_url",
    "shopify__client_id",
    "shopify__client_secret",
    "wms__webhook_secret",
    "carrier__webhook_secret",
}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of an env file, as compose reads them (comments and blanks skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """`value` with ${VAR}, ${VAR:-default} and ${VAR:?error} filled from `env`; a missing required one fails."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op in (":-", "-") else ""

    return _INTERPOLATION.sub(one, value).replace("$$", "$")


# The operator's compose environment: the template they copy, nothing else set.
COMPOSE_ENV = read_env_file(DEPLOY / "compose.env.example")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Docker Compose would load it (YAML, anchors and merge keys resolved)."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services, by name."""
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:`, interpolated as `docker compose --env-file deploy/compose.env.example` would."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value), COMPOSE_ENV) for key, value in raw.items()}


def container_env(service: dict[str, Any], env_file: Path) -> dict[str, str]:
    """What the container's process sees: the env file, overridden by `environment:` (compose's precedence)."""
    return {**read_env_file(env_file), **environment(service)}


def one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services something waits on to finish: they run to completion and have nothing to probe."""
    return {
        name
        for service in services.values()
        for name, dependency in service.get("depends_on", {}).items()
        if dependency.get("condition") == "service_completed_successfully"
    }


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "ORDERFLOW_") -> Iterator[str]:
    """Every variable name `Settings` reads, nested groups joined by `__` (lower case: names are case-insensitive)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from settings_env_names(annotation, f"{prefix}{name}__")
        else:
            yield f"{prefix}{name}".lower()


def cli_env_names() -> set[str]:
    """Every variable an `orderflow` command reads through an option's envvar (ORDERFLOW_TASK_QUEUE, ...)."""
    names: set[str] = set()
    pending = [typer.main.get_command(cli_app)]
    while pending:
        command = pending.pop()
        # Typer's groups are not `click.Group` instances (it vendors click), so go by their subcommands.
        pending.extend(getattr(command, "commands", {}).values())
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`Settings` exactly as a container with environment `env` builds it (this machine's variables removed)."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("ORDERFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_compose_file_brings_up_the_whole_topology(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "orderflow-migrate",
        "orderflow-worker",
        "orderflow-webhooks",
        "orderflow-codec-server",
        "sandbox",
        "otel-collector",
    }


def test_every_service_has_something_to_run(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    finished = one_shots(services)
    assert finished == {"temporal-schema", "temporal-setup", "orderflow-migrate"}
    for name, service in services.items():
        if name in finished:
            # A one-shot retries a failure a few times, and is never restarted after it succeeded.
            assert str(service.get("restart", "no")).startswith(("no", "on-failure")), name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted when it dies"


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = interpolate(service["image"], COMPOSE_ENV)
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image!r} is not a version"
        if "build" in service:
            assert image == f"orderflow:{version}", f"{name} builds {image!r}, not this version of orderflow"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        # The short list form starts a dependency without waiting for it; only the long form waits.
        assert isinstance(depends_on, dict), f"{name} lists depends_on without conditions"
        for target, dependency in depends_on.items():
            condition = dependency.get("condition")
            assert condition in HEALTHY_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}'s health, it has no check"
            # A service outside every profile cannot wait for one that only runs in a profile.
            assert not services[target].get("profiles") or services[target]["profiles"] == service.get("profiles")


def test_the_stack_starts_in_order(services: dict[str, dict[str, Any]]) -> None:
    def waits_for(name: str) -> dict[str, str]:
        return {target: dep["condition"] for target, dep in services[name].get("depends_on", {}).items()}

    assert waits_for("temporal") == {"temporal-schema": "service_completed_successfully"}
    assert waits_for("temporal-setup") == {"temporal": "service_healthy"}
    for name in ("orderflow-worker", "orderflow-webhooks"):
        assert waits_for(name) == {
            "orderflow-migrate": "service_completed_successfully",
            "temporal-setup": "service_completed_successfully",
        }
    assert services["orderflow-migrate"]["command"] == ["db", "upgrade"]


def test_optional_parts_are_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert services["sandbox"]["profiles"] == ["staging"]
    assert services["otel-collector"]["profiles"] == ["observability"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert "sandbox" not in always and "otel-collector" not in always
    assert len(always) == len(services) - 2


def test_the_worker_runs_at_least_two_replicas(services: dict[str, dict[str, Any]]) -> None:
    worker = services["orderflow-worker"]
    assert worker["deploy"]["replicas"] >= 2
    # Replicas cannot share a host port; a fixed container_name would also stop the second one.
    assert "ports" not in worker and "container_name" not in worker


def test_search_attributes_registered_at_start_are_the_ones_the_sagas_publish(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = environment(services["temporal-setup"])
    registered = dict(pair.split("=", 1) for pair in setup["ORDERFLOW_SEARCH_ATTRIBUTES"].split())
    assert registered == SEARCH_ATTRIBUTES
    assert setup["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert setup["TEMPORAL_NAMESPACE"] == environment(services["orderflow-worker"])["TEMPORAL_NAMESPACE"]


@pytest.mark.parametrize("env_file", [PRODUCTION_ENV, STAGING_ENV], ids=["production", "staging"])
def test_every_orderflow_variable_is_a_setting(services: dict[str, dict[str, Any]], env_file: Path) -> None:
    known = set(settings_env_names()) | {name.lower() for name in cli_env_names()}
    for name in ORDERFLOW_SERVICES:
        env = container_env(services[name], env_file) if "env_file" in services[name] else environment(services[name])
        for key in env:
            if key.startswith(FOREIGN_PREFIXES):
                continue
            assert key.lower() in known, f"{name}: {key} is neither a field of orderflow's Settings nor a CLI option"


def test_every_connected_service_reaches_temporal_and_the_database(services: dict[str, dict[str, Any]]) -> None:
    for name in CONNECTED_SERVICES:
        service = services[name]
        assert service["env_file"] == ["${ORDERFLOW_ENV_FILE:-deploy/orderflow.env}"], name
        env = environment(service)
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233", name
        assert env["TEMPORAL_NAMESPACE"] == "default", name
        database = urlsplit(env["ORDERFLOW_DATABASE_URL"])
        assert (database.scheme, database.hostname, database.path) == ("postgresql", "postgresql", "/orderflow"), name
        assert database.password == COMPOSE_ENV["ORDERFLOW_DB_PASSWORD"], name
    # `docker compose run --rm orderflow-migrate doctor` checks what the worker uses, so it mounts the same keys.
    assert set(services["orderflow-worker"]["secrets"]) <= set(services["orderflow-migrate"]["secrets"])


def test_the_worker_gets_every_adapters_url_and_credentials(services: dict[str, dict[str, Any]]) -> None:
    env = {key.lower() for key in container_env(services["orderflow-worker"], PRODUCTION_ENV)}
    for system, fields in ADAPTER_NEEDS.items():
        missing = {field for field in fields if f"orderflow_{system}__{field}" not in env}
        assert not missing, f"the worker has no {system} {sorted(missing)}"
    assert "orderflow_codec__key_file" in env


def test_the_webhook_service_gets_every_signing_secret(services: dict[str, dict[str, Any]]) -> None:
    env = {key.lower() for key in container_env(services["orderflow-webhooks"], PRODUCTION_ENV)}
    assert {f"orderflow_{need}" for need in WEBHOOK_NEEDS} <= env


def test_production_settings_load_and_point_at_no_sandbox(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(container_env(services["orderflow-worker"], PRODUCTION_ENV), monkeypatch)
    for system in ADAPTER_NEEDS:
        assert not is_local_url(getattr(settings, system).base_url), f"{system} still points at the sandbox"
    assert not is_local_url(settings.amazon.lwa_url)
    assert settings.netsuite.auth_method == "oauth2"
    assert settings.codec.enabled and settings.codec.key_file == Path("/run/secrets/codec_key")
    assert settings.netsuite.private_key_file == Path("/run/secrets/netsuite_m2m_key")
    assert settings.worker_http_host == "0.0.0.0"  # noqa: S104 - probes and Prometheus come from outside the container
    assert settings.database_url is not None and settings.database_url.startswith("postgresql://orderflow:")


def test_staging_settings_load_and_point_every_adapter_at_the_sandbox(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(container_env(services["orderflow-worker"], STAGING_ENV), monkeypatch)
    for system in ADAPTER_NEEDS:
        assert getattr(settings, system).base_url == f"http://sandbox:8700/{system}"


def test_no_credential_is_written_in_the_compose_file(services: dict[str, dict[str, Any]]) -> None:
    credential = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY|CODEC__KEY$")
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if credential.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}: {key} is written inline"
    # The database URL carries its password as an interpolation too.
    url = services["orderflow-worker"]["environment"]["ORDERFLOW_DATABASE_URL"]
    assert re.fullmatch(r"postgresql://orderflow:\$\{ORDERFLOW_DB_PASSWORD:\?[^}]+\}@postgresql:5432/orderflow", url)


def test_key_material_is_mounted_from_files_git_ignores(compose: dict[str, Any]) -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {"compose.env", "orderflow.env", "secrets/"} <= set(ignored)
    for secret in compose["secrets"].values():
        assert Path(secret["file"]).parent == Path("deploy/secrets"), secret


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is not in the repository"


def healthcheck_url(service: dict[str, Any]) -> str:
    """The URL a service's python-urllib healthcheck asks."""
    found = re.search(r"urlopen\('([^']+)'", " ".join(service["healthcheck"]["test"]))
    assert found, service["healthcheck"]
    return found[1]


def test_orderflow_healthchecks_ask_the_port_each_process_serves(services: dict[str, dict[str, Any]]) -> None:
    worker = environment(services["orderflow-worker"])
    assert worker["ORDERFLOW_WORKER_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - see the compose file
    assert (
        healthcheck_url(services["orderflow-worker"])
        == f"http://127.0.0.1:{worker['ORDERFLOW_WORKER_HTTP_PORT']}/readyz"
    )
    for name, path in (("orderflow-webhooks", "/readyz"), ("orderflow-codec-server", "/healthz")):
        command = services[name]["command"]
        port = command[command.index("--port") + 1]
        assert healthcheck_url(services[name]) == f"http://127.0.0.1:{port}{path}", name
    sandbox = services["sandbox"]["command"]
    assert healthcheck_url(services["sandbox"]).startswith(f"http://127.0.0.1:{sandbox[sandbox.index('--port') + 1]}/")


def test_the_ui_decodes_through_the_codec_server(services: dict[str, dict[str, Any]]) -> None:
    ui = environment(services["temporal-ui"])
    codec = services["orderflow-codec-server"]
    # The browser calls the codec endpoint: it must be the codec server's port as published on the host,
    # and the codec server must answer CORS for the UI's origin as published on the host.
    codec_published = {port.rsplit(":", 2)[-2] for port in codec["ports"]}
    assert str(urlsplit(ui["TEMPORAL_CODEC_ENDPOINT"]).port) in codec_published
    ui_port = services["temporal-ui"]["ports"][0].rsplit(":", 2)[-2]
    origins = {codec["command"][i + 1] for i, arg in enumerate(codec["command"]) if arg == "--ui-origin"}
    assert f"http://localhost:{ui_port}" in origins
    assert ui["TEMPORAL_CORS_ORIGINS"] == f"http://localhost:{ui_port}"


def test_every_orderflow_command_is_one_the_cli_accepts(services: dict[str, dict[str, Any]]) -> None:
    root = typer.main.get_command(cli_app)
    for name in (*ORDERFLOW_SERVICES, "sandbox"):
        args = list(services[name]["command"])
        if services[name].get("entrypoint"):
            continue  # the webhook service runs uvicorn, checked below
        command = root
        while args and args[0] in getattr(command, "commands", {}):
            command = command.commands[args.pop(0)]
        assert command is not root, f"{name} runs no orderflow command: {services[name]['command']}"
        # Parsing (not running) fails on an unknown command or option, or a bad value.
        command.make_context(name, args)
    webhooks = services["orderflow-webhooks"]
    assert webhooks["entrypoint"] == ["uvicorn"]
    module, _, factory = webhooks["command"][0].partition(":")
    assert callable(getattr(__import__(module, fromlist=[factory]), factory))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    args = dict(arg.split("=", 1) for keyword, arg in instructions if keyword == "ARG" and "=" in arg)
    stages = [interpolate(arg.split()[0], args) for keyword, arg in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "a single stage ships the build tools"
    for image in stages:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), f"base image {image!r} is not pinned"
    runtime = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [arg for keyword, arg in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as root"
    assert any(keyword == "COPY" and "--from=builder" in arg for keyword, arg in runtime)
    healthchecks = [arg for keyword, arg in runtime if keyword == "HEALTHCHECK"]
    assert healthchecks and "urlopen" in healthchecks[-1]
    assert [arg for keyword, arg in runtime if keyword == "ENTRYPOINT"] == ['["orderflow"]']


def test_the_build_context_leaves_out_local_state_and_credentials() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".orderflow", ".env", "deploy", "tests"} <= ignored
    # What the Dockerfile copies must not be ignored.
    copied = {
        token
        for keyword, arg in dockerfile_instructions()
        if keyword == "COPY" and "--from" not in arg
        for token in shlex.split(arg)[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "orderflow"}
    assert not copied & ignored
