"""compose.yaml and the Dockerfile, checked as configuration (Docker does not run here)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from nome_api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

ROLES = ("api", "projector", "worker")
LONG_RUNNING = ("postgres", "redis", *ROLES)


def command(service: str) -> list[str]:
    cmd = SERVICES[service].get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: str) -> dict[str, str]:
    deps = SERVICES[service].get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_text(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def compose_nome_variables() -> list[str]:
    names = set()
    for service in SERVICES:
        names.update(key for key in environment(service) if key.startswith("NOME_"))
    names.update(re.findall(r"\$\{(NOME_[A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))
    return sorted(names)


def test_the_six_services_are_defined() -> None:
    assert set(SERVICES) >= {"postgres", "redis", "migrate", *ROLES}


def test_postgres_and_redis_use_the_pinned_major_versions() -> None:
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["redis"]["image"] == "redis:7"


def test_postgres_keeps_its_data_in_a_named_volume() -> None:
    volumes = SERVICES["postgres"]["volumes"]
    named = [v.split(":", 1)[0] for v in volumes if isinstance(v, str)]
    assert any(name in (COMPOSE.get("volumes") or {}) for name in named)


@pytest.mark.parametrize("role", ROLES)
def test_each_app_service_runs_nome_serve_with_its_role(role: str) -> None:
    assert command(role) == ["nome", "serve", "--role", role]


@pytest.mark.parametrize("role", ROLES)
def test_each_app_service_is_built_from_the_dockerfile(role: str) -> None:
    build = SERVICES[role]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck_and_restarts(service: str) -> None:
    assert SERVICES[service]["healthcheck"]["test"]
    assert SERVICES[service]["restart"] == "unless-stopped"


def test_postgres_and_redis_healthchecks_use_their_own_clients() -> None:
    assert "pg_isready" in healthcheck_text("postgres")
    assert "redis-cli ping" in healthcheck_text("redis")


@pytest.mark.parametrize("role", ROLES)
def test_app_healthchecks_fetch_v1_health_with_python_urllib(role: str) -> None:
    text = healthcheck_text(role)
    assert "python" in text
    assert "urllib" in text
    assert "http://127.0.0.1:8080/v1/health" in text


def test_migrate_is_a_one_shot_nome_migrate_after_postgres_is_healthy() -> None:
    assert command("migrate") == ["nome", "migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert depends_on("migrate") == {"postgres": "service_healthy"}


@pytest.mark.parametrize("role", ROLES)
def test_app_services_start_after_migrate_succeeds_and_the_stores_are_healthy(role: str) -> None:
    deps = depends_on(role)
    assert deps["migrate"] == "service_completed_successfully"
    assert deps["postgres"] == "service_healthy"
    assert deps["redis"] == "service_healthy"


@pytest.mark.parametrize("service", ["migrate", *ROLES])
def test_the_database_url_points_at_the_postgres_service(service: str) -> None:
    assert environment(service)["NOME_DATABASE_URL"] == "postgresql://nome:nome@postgres:5432/nome"


@pytest.mark.parametrize("role", ROLES)
def test_app_services_use_the_redis_service_and_listen_on_8080_with_json_logs(role: str) -> None:
    env = environment(role)
    assert env["NOME_REDIS_URL"] == "redis://redis:6379/0"
    assert env["NOME_HOST"] == "0.0.0.0"
    assert env["NOME_PORT"] == "8080"
    assert env["NOME_LOG_FORMAT"] == "json"


def test_the_postgres_credentials_match_the_database_url() -> None:
    env = environment("postgres")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        "nome",
        "nome",
        "nome",
    )


def test_the_api_takes_the_bootstrap_admin_key_from_the_host() -> None:
    assert environment("api")["NOME_BOOTSTRAP_ADMIN_KEY"] == "${NOME_BOOTSTRAP_ADMIN_KEY:-}"


@pytest.mark.parametrize("service", ["migrate", *ROLES])
def test_every_nome_service_refuses_to_start_without_the_secret_key_from_the_host(
    service: str,
) -> None:
    # `${VAR:?message}`: compose stops with the message instead of starting NOME without
    # the key; a default here would give every deployment the same signing key.
    value = environment(service)["NOME_SECRET_KEY"]
    assert re.fullmatch(r"\$\{NOME_SECRET_KEY:\?[^}]*NOME_SECRET_KEY[^}]*\}", value), value


def test_only_the_api_publishes_a_port_and_it_is_8080() -> None:
    publishing = {name for name, spec in SERVICES.items() if spec.get("ports")}
    assert publishing == {"api"}
    assert [str(p) for p in SERVICES["api"]["ports"]] == ["8080:8080"]


@pytest.mark.parametrize("role", ROLES)
def test_app_services_do_not_create_tables_themselves(role: str) -> None:
    assert environment(role)["NOME_MIGRATE"] == "0"


@pytest.mark.parametrize("variable", compose_nome_variables())
def test_every_nome_variable_in_compose_is_a_settings_field(variable: str) -> None:
    fields = {field.name for field in msgspec.structs.fields(Settings)}
    assert variable.removeprefix("NOME_").lower() in fields


def test_the_dockerfile_copies_exactly_the_packages_pyproject_includes() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in include}
    copied = set()
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            copied.update(p.rstrip("/") for p in parts[:-1])
    assert {"pyproject.toml", "README.md"} <= copied
    assert {p for p in copied if (ROOT / p).is_dir()} == packages


def test_the_image_is_python_slim_and_installs_the_project() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert any(k == "RUN" and "pip install --no-cache-dir ." in a for k, a in steps)
    assert ("EXPOSE", "8080") in steps
    assert [a for k, a in steps if k == "CMD"][-1] == '["nome", "serve"]'


def test_the_image_does_not_run_as_root() -> None:
    users = [args.split(":", 1)[0] for keyword, args in instructions() if keyword == "USER"]
    assert users, "the Dockerfile sets no USER"
    assert users[-1] not in ("root", "0")
