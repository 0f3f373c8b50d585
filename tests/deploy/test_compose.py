"""The compose deployment agrees with the code: Debian's docker-compose validates the file, each
service sets exactly the CONTACTS_* settings its code reads (and their values pass the same
validation the service applies at start), ports line up with the images, and the images are
built the way the deployment needs (multi-stage with uv, slim, non-root, with a HEALTHCHECK).

No Docker engine is needed: `docker-compose config` resolves the file without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from contacts_shared.settings import (
    BillingCheckSettings,
    NotifierSettings,
    RequestsSettings,
)
from contacts_tools import bus_access
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PRODUCTION = ROOT / "docker-compose.production.yml"
# What the production variant takes from the environment, and cannot start without.
PRODUCTION_VARIABLES = {
    "POSTGRES_PASSWORD": "pg-" + "p" * 29,
    "REQUESTS_DB_PASSWORD": "rq-" + "r" * 29,
    "BILLING_CHECK_DB_PASSWORD": "bc-" + "b" * 29,
    "NOTIFIER_DB_PASSWORD": "nt-" + "n" * 29,
    "RABBITMQ_DEFINITIONS": "/srv/contacts/rabbitmq-definitions.json",
    "BUS_PASSWORD_REQUESTS": "br-" + "r" * 29,
    "BUS_PASSWORD_BILLING_CHECK": "bb-" + "b" * 29,
    "BUS_PASSWORD_NOTIFIER": "bn-" + "n" * 29,
    "CONTACTS_JWT_SECRET": "jwt-" + "j" * 40,
    "CONTACTS_TOKEN_SECRET": "tok-" + "t" * 40,
    "CONTACTS_PUBLIC_URL": "https://contacts.example.com",
    "CONTACTS_FORWARDED_ALLOW_IPS": "10.0.0.2",
    "CONTACTS_SMTP_HOST": "smtp.example.com",
    "CONTACTS_MAIL_FROM": "Contacts <contacts@example.com>",
    "RABBITMQ_ERLANG_COOKIE": "ck-" + "c" * 40,
}
# The RabbitMQ nodes only `--profile cluster` starts.
CLUSTER_ONLY = {"rabbitmq-2", "rabbitmq-3"}

# Compose service -> the settings class its program loads at start.
SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "requests": RequestsSettings,
    "billing-check": BillingCheckSettings,
    "notifier": NotifierSettings,
}
# `contacts demo` only publishes: of the CLI's settings it uses the broker's (commands.publish_all).
DEMO_SETTINGS = {"CONTACTS_AMQP_URL", "CONTACTS_NAMESPACE"}
# Compose service -> (the workspace member its image installs, the folder of that member, the
# console script it runs). Every image is built from the one Dockerfile at the root.
IMAGES = {
    "requests": ("contacts-requests", "services/requests", "contacts-requests"),
    "billing-check": ("contacts-billing-check", "services/billing-check", "contacts-billing-check"),
    "notifier": ("contacts-notifier", "services/notifier", "contacts-notifier"),
    "demo": ("contacts-tools", "tools", "contacts"),
}
DOCKERFILE = ROOT / "Dockerfile"
SERVICE_ROLES = {"requests": "contacts_requests", "billing-check": "contacts_billing_check", "notifier": "contacts_notifier"}


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def resolve(*files: Path, env: dict[str, str] | None = None, profile: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of `files` (anchors merged, ${VAR…} substituted from `env`)."""
    program = shutil.which("docker-compose")
    if program is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose (scripts/test does it as root)")
    options = [arg for file in files for arg in ("--file", str(file))] + (["--profile", profile] if profile else [])
    return subprocess.run([program, *options, "config"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False, env=env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The demo's file as docker-compose resolves it."""
    result = resolve(COMPOSE)
    assert result.returncode == 0, f"docker-compose config rejected the file:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_has_the_whole_system(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "rabbitmq", "broker", "mailpit", "requests", "billing-check", "notifier", "demo"} | CLUSTER_ONLY
    assert {name for name, service in services.items() if service.get("profiles")} == CLUSTER_ONLY
    assert "management" in services["rabbitmq"]["image"]
    assert services["demo"]["command"] == ["contacts", "demo"] and services["demo"].get("restart") == "no"
    # Data survives `docker compose down` (without -v).
    assert {"postgres-data", "rabbitmq-data"} <= set(compose["volumes"])
    assert any(str(v.get("target", v)).startswith("/var/lib/postgresql/data") for v in _volumes(services["postgres"]))
    assert any(str(v.get("target", v)).startswith("/var/lib/rabbitmq") for v in _volumes(services["rabbitmq"]))
    # The role script runs when PostgreSQL initialises its volume.
    init = [v for v in _volumes(services["postgres"]) if v.get("target") == "/docker-entrypoint-initdb.d"]
    assert init and Path(init[0]["source"]).resolve() == (ROOT / "deploy/postgres").resolve()


def test_everything_waits_for_what_it_needs_to_be_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "mailpit"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in SERVICE_SETTINGS:
        needs = services[name]["depends_on"]
        for dependency in ("postgres", "rabbitmq"):
            assert needs[dependency]["condition"] == "service_healthy", (name, dependency)
        # The balancer has no health of its own: it is up, and sends on to the nodes that are.
        assert needs["broker"]["condition"] == "service_started", name
    # The notifier does not wait for SMTP: emails wait in its table until the server answers.
    assert "mailpit" not in services["notifier"]["depends_on"]
    # The demo data is published once every consumer's queue is bound (the services are ready).
    assert {k: v["condition"] for k, v in services["demo"]["depends_on"].items()} == dict.fromkeys(
        SERVICE_SETTINGS, "service_healthy"
    )


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_each_service_sets_exactly_the_settings_its_code_reads(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = _environment(compose["services"][service])
    settings_class = SERVICE_SETTINGS[service]
    assert set(environment) == env_names(settings_class), (
        f"compose sets {sorted(set(environment) - env_names(settings_class))} that the code does not read, "
        f"and misses {sorted(env_names(settings_class) - set(environment))}"
    )
    # The values pass the validation the service applies at start.
    settings = settings_from(settings_class, environment, monkeypatch)
    assert settings.log_format == "json"
    # Each service connects as its own role (deploy/postgres/init-roles.sh creates them).
    assert settings.database_url.startswith(f"postgresql://{SERVICE_ROLES[service]}:")


def test_the_demo_job_sets_only_the_broker_settings(compose: dict[str, Any]) -> None:
    assert set(_environment(compose["services"]["demo"])) == DEMO_SETTINGS


def test_ports_agree_between_settings_images_and_compose(compose: dict[str, Any]) -> None:
    services = compose["services"]
    text = DOCKERFILE.read_text()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE)
    assert re.search(r"^    CONTACTS_METRICS_PORT=9100$", text, re.MULTILINE)
    assert "os.environ.get('CONTACTS_METRICS_PORT', '9100')" in text, "the HEALTHCHECK is not on the metrics port"
    assert {int(_environment(services["requests"])["CONTACTS_HTTP_PORT"]), 9100} == set(map(int, exposed.split()))
    for service in ("requests", "billing-check", "notifier"):
        assert _environment(services[service])["CONTACTS_METRICS_PORT"] == "9100", service
    published = {int(p["target"]): int(p["published"]) for p in services["requests"]["ports"]}
    assert published == {8000: 8000}
    assert {int(p["target"]) for p in services["rabbitmq"]["ports"]} == {15672}
    assert {int(p["target"]) for p in services["mailpit"]["ports"]} == {8025}
    assert _environment(services["notifier"])["CONTACTS_SMTP_PORT"] == "1025"  # Mailpit's SMTP port
    assert _environment(services["requests"])["CONTACTS_PUBLIC_URL"] == "http://localhost:8000"


DEFINITIONS = ROOT / "deploy/rabbitmq/definitions.json"
DEFINITIONS_IN_RABBITMQ = "/etc/rabbitmq/definitions.json"
# The demo's console administrator, as the README and the compose file's header give it.
DEMO_ADMIN = ("contacts", "contacts-dev-password")


def _bus_users(services: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{bus_access user: (RabbitMQ user, password)} from the services' AMQP URLs; the demo job
    publishes as the other systems do."""
    users = {**{name: name for name in SERVICE_SETTINGS}, "demo": "other-systems"}
    found = {}
    for service, user in users.items():
        url = urlsplit(_environment(services[service])["CONTACTS_AMQP_URL"])
        found[user] = (url.username or "", unquote(url.password or ""))
    return found


def test_rabbitmq_loads_the_bus_users_and_their_permissions_at_start(compose: dict[str, Any]) -> None:
    rabbitmq = compose["services"]["rabbitmq"]
    mounted = {v["target"]: Path(v["source"]).resolve() for v in _volumes(rabbitmq) if v.get("type", "bind") == "bind"}
    assert mounted[DEFINITIONS_IN_RABBITMQ] == DEFINITIONS.resolve()
    config = mounted["/etc/rabbitmq/conf.d/20-contacts.conf"]
    assert f"definitions.local.path = {DEFINITIONS_IN_RABBITMQ}" in config.read_text()
    assert not any(k.startswith("RABBITMQ_DEFAULT") for k in _environment(rabbitmq))  # no guest-style user besides


def test_the_demo_definitions_are_what_bus_definitions_makes_of_the_demo_passwords(compose: dict[str, Any]) -> None:
    """Each service (and the demo job) connects as its own user, whose password the committed
    definitions hold hashed, with exactly the permissions `contacts bus-definitions` gives."""
    committed = json.loads(DEFINITIONS.read_text())
    users = _bus_users(compose["services"])
    for user, (name, _) in users.items():
        assert name == bus_access.user_name("", user), user
    expected = bus_access.definitions("", "/", {u: p for u, (_, p) in users.items()}, DEMO_ADMIN)
    hashes = {u["name"]: u.pop("password_hash") for u in committed["users"]}
    for u in expected["users"]:
        u.pop("password_hash")
    assert committed == expected
    for name, password in [DEMO_ADMIN, *users.values()]:
        assert bus_access.hash_matches(hashes[name], password), name
    assert f"user `{DEMO_ADMIN[0]}`, password `{DEMO_ADMIN[1]}`" in (ROOT / "README.md").read_text()


def test_the_production_variant_takes_the_operators_definitions_and_bus_passwords() -> None:
    result = resolve(COMPOSE, PRODUCTION, env=_without_contacts_variables() | PRODUCTION_VARIABLES)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    mounted = {v["target"]: v["source"] for v in _volumes(services["rabbitmq"])}
    assert mounted[DEFINITIONS_IN_RABBITMQ] == PRODUCTION_VARIABLES["RABBITMQ_DEFINITIONS"]
    for user, (name, password) in _bus_users(services).items():
        if user != "other-systems":  # the demo job, in the demo profile only
            variable = bus_access.password_variable(user).removeprefix("CONTACTS_")  # BUS_PASSWORD_REQUESTS…
            assert (name, password) == (bus_access.user_name("", user), PRODUCTION_VARIABLES[variable])


def test_the_demo_says_it_is_development(compose: dict[str, Any]) -> None:
    for service in SERVICE_SETTINGS:
        assert _environment(compose["services"][service])["CONTACTS_ENV"] == "development"


def _without_contacts_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES and not k.startswith("CONTACTS_")}


@pytest.mark.parametrize("missing", sorted(PRODUCTION_VARIABLES))
def test_the_production_variant_cannot_start_without_its_secrets(missing: str) -> None:
    env = _without_contacts_variables() | {k: v for k, v in PRODUCTION_VARIABLES.items() if k != missing}
    result = resolve(COMPOSE, PRODUCTION, env=env)
    assert result.returncode != 0 and f"set {missing}" in result.stderr, result.stderr


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_the_production_variant_runs_in_production_on_the_operators_secrets(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = resolve(COMPOSE, PRODUCTION, env=_without_contacts_variables() | PRODUCTION_VARIABLES)
    assert result.returncode == 0, result.stderr
    assert "dev-password" not in result.stdout and "not-for-production" not in result.stdout
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["mailpit"]["profiles"] == ["demo"] and resolved["demo"]["profiles"] == ["demo"]
    environment = _environment(resolved[service])
    settings_class = SERVICE_SETTINGS[service]
    assert set(environment) == env_names(settings_class)
    settings = settings_from(settings_class, environment, monkeypatch)
    assert settings.env == "production" and settings.refused_in_production() == []


def test_database_passwords_agree_with_the_role_script(compose: dict[str, Any]) -> None:
    postgres = _environment(compose["services"]["postgres"])
    script = (ROOT / "deploy/postgres/init-roles.sh").read_text()
    for service, role in SERVICE_ROLES.items():
        url = _environment(compose["services"][service])["CONTACTS_DATABASE_URL"]
        password_variable = f"{service.upper().replace('-', '_')}_DB_PASSWORD"
        assert f'"{role}:' in script and f"${password_variable}" in script, (role, password_variable)
        assert url == f"postgresql://{role}:{postgres[password_variable]}@postgres:5432/{postgres['POSTGRES_DB']}"


def test_the_images_are_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build", stages
    assert stages[-1][0] == "python:3.11-slim"
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=ghcr.io/astral-sh/uv:" in text and "uv sync --frozen --no-dev" in text
    # A build that forgets an argument stops with a line saying which, not with an empty image.
    assert '"${PACKAGE:?name the workspace member' in text and '"${PROGRAM:?name the program to run' in final
    assert "astral-sh/uv" not in final and "uv sync" not in final
    assert "apt-get" not in final and "pip install" not in final  # no build tools in the final image
    assert re.search(r"^USER contacts$", final, re.MULTILINE) and "useradd" in final
    assert "HEALTHCHECK" in final and "urllib.request" in final
    assert re.search(r'^CMD \["sh", "-c", "exec \\"\$CONTACTS_PROGRAM\\""\]$', final, re.MULTILINE)
    assert re.search(r"^    CONTACTS_PROGRAM=\$\{PROGRAM\} \\$", final, re.MULTILINE)


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_each_image_installs_its_member_and_runs_its_program(compose: dict[str, Any], service: str) -> None:
    package, folder, program = IMAGES[service]
    build = compose["services"][service]["build"]
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile" and Path(build["context"]) == ROOT
    assert build["args"] == {"PACKAGE": package, "PROGRAM": program}
    pyproject = (ROOT / folder / "pyproject.toml").read_text()
    assert f'name = "{package}"' in pyproject and f"\n{program} = " in pyproject


def settings_from(settings_class: type[BaseSettings], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings a service reads from exactly `environment` (validated as at its start)."""
    for name in list(os.environ):
        if name.startswith("CONTACTS_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return settings_class()


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            volume = {"source": source, "target": rest.split(":")[0]}
        found.append(volume)
    return found
