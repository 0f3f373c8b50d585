"""Settings read from CONTACTS_* environment variables (spec section 8).

Each service reads only what it uses (so a deployment sets exactly those). A missing or
malformed setting stops the service at start with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from datetime import timedelta
from typing import Annotated, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TTL = timedelta(days=14)

# Secrets published in this repository for the demo and `contacts dev`: refused in production.
DEV_JWT_SECRET = "contacts-development-secret-not-for-production"
DEV_TOKEN_SECRET = "contacts-development-token-key-not-for-production"
# Shortest secret production accepts for signing (HS256 keys shorter than its hash are weak).
MIN_SECRET_BYTES = 32


def _seconds_or_iso(value: object) -> object:
    # Environment values are strings: "3600" means seconds; "P14D" is left to pydantic.
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        return float(value)
    return value


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be a positive duration")
    return value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


# A duration setting: seconds ("3600") or ISO 8601 ("P14D"), strictly positive.
Duration = Annotated[timedelta, BeforeValidator(_seconds_or_iso), AfterValidator(_positive)]


def _is_https_or_loopback(url: str) -> bool:
    """Production's public address: https, or plain http only to this machine itself."""
    scheme, _, rest = url.partition("://")
    if scheme == "https":
        return True
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _empty_is_none(value: object) -> object:
    # An empty variable (as a compose file sets it) means "not set".
    return None if value == "" else value


OptionalText = Annotated[str | None, BeforeValidator(_empty_is_none)]


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// address")
    return value


# A setting production refuses, and why: (setting, reason).
Refused = tuple[str, str]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    # `production` (the default) refuses to start with a development convenience switched on
    # (see `refused_in_production`); `development` allows them and says so once at start.
    env: Literal["production", "development"] = "production"

    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", pattern=r"^postgres(ql)?://")
    # Connections each process may hold (PostgreSQL's max_connections bounds replicas x this);
    # at least 3: the outbox relay and the mailer each keep one to LISTEN.
    database_pool_size: int = Field(10, ge=3, le=100)
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2f", pattern=r"^amqps?://")
    # Prefix of exchange, queue and schema names so test runs and tenants never collide.
    namespace: str = Field("", pattern=r"^[a-z0-9_]{0,40}$")
    # `json` (one object a line, for log collectors: the images set it) or `console` (readable).
    log_format: Literal["json", "console"] = "console"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    # Days that bookkeeping is kept (inbox rows, sent mail texts) before the
    # periodic pruning drops it (contacts_shared.retention); requests and their history are kept.
    retention_days: int = Field(30, ge=1, le=36500)

    def refused_in_production(self) -> list[Refused]:
        """The settings that make this process unsafe to run for real."""
        if os.environ.get("CONTACTS_CRASH_AT"):
            return [("CONTACTS_CRASH_AT", "makes the process kill itself on purpose (a fault-test switch)")]
        return []


def _public_url_refused(url: str) -> list[Refused]:
    if _is_https_or_loopback(url):
        return []
    return [("CONTACTS_PUBLIC_URL", "is not https:// (codes and sessions would cross the network in clear)")]


class MetricsServerSettings(CommonSettings):
    """/healthz, /readyz and /metrics on a port of their own: the consumers' only HTTP, and the
    requests service's metrics (kept off its public port)."""

    # 0 = no server (the default, so that several services on one machine never clash).
    metrics_port: int = Field(0, ge=0, le=65535)



class RequestsSettings(MetricsServerSettings):
    jwt_secret: str = Field(min_length=16)
    http_port: int = Field(8000, ge=1, le=65535)
    public_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://")
    # Seconds or ISO 8601 (P14D); how long a request may wait for its confirmers.
    request_ttl: Duration = DEFAULT_TTL
    # Seconds or ISO 8601; a request waiting this long for the billing check's verdict asks again.
    vetting_reask: Duration = timedelta(minutes=5)
    # Confirmers who have not answered get a reminder with a fresh code this long after the
    # request, and again this long before it expires; at most CONTACTS_REMINDERS of them (0: none).
    remind_after: Duration = timedelta(days=3)
    remind_before_expiry: Duration = timedelta(days=1)
    reminders: int = Field(2, ge=0, le=10)
    # Development only: a sign-in page where anyone may pick a NIC (CONTACTS_DEV_LOGIN=1).
    dev_login: bool = False
    # An identity provider signing with its own private key (Keycloak, Auth0, a cloud IAM): the
    # address of its JSON Web Key Set. RS256 and ES256 tokens are then verified against it,
    # besides HS256 ones under CONTACTS_JWT_SECRET.
    jwt_jwks_url: Annotated[OptionalText, AfterValidator(_http_url)] = None
    # When set, a token must name this issuer (`iss`) / this audience (`aud`).
    jwt_issuer: OptionalText = None
    jwt_audience: OptionalText = None
    # The longest a token may live (`exp` - `iat`): a stolen one is of use for no longer.
    jwt_max_lifetime: Duration = timedelta(hours=24)
    # The claim holding a token's roles (a dotted path reaches into nesting, as Keycloak's
    # `realm_access.roles`); the role `support` makes the caller a support agent.
    jwt_roles_claim: str = Field("roles", pattern=r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$")
    # What one person may make the service mail (kept in PostgreSQL: they hold across replicas).
    # A request's codes may be sent again once at any time, then once per interval, so often in all.
    # The TLS proxy's addresses (comma-separated, or * for any): its X-Forwarded-Proto makes
    # cookies Secure and pages send HSTS. Unset: such headers are ignored.
    forwarded_allow_ips: OptionalText = None
    resend_interval: Duration = timedelta(minutes=1)
    resends_per_request: int = Field(5, ge=1, le=100)
    submissions_per_hour: int = Field(30, ge=1, le=100000)

    def refused_in_production(self) -> list[Refused]:
        refused = super().refused_in_production()
        if self.jwt_jwks_url and not _is_https_or_loopback(self.jwt_jwks_url):
            refused.append(("CONTACTS_JWT_JWKS_URL", "is not https:// (anyone on the way could hand out their own keys)"))
        if self.jwt_secret == DEV_JWT_SECRET:
            refused.append(("CONTACTS_JWT_SECRET", "is the development secret published with the code: anyone could sign tokens"))
        elif len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            refused.append(("CONTACTS_JWT_SECRET", f"is shorter than {MIN_SECRET_BYTES} bytes"))
        if self.dev_login:
            refused.append(("CONTACTS_DEV_LOGIN", "is on: anyone could sign in as any NIC"))
        return refused + _public_url_refused(self.public_url)


class BillingCheckSettings(MetricsServerSettings):
    pass


class NotifierSettings(MetricsServerSettings):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(1025, ge=1, le=65535)
    # Both set: log in to the SMTP server; empty or unset: send without logging in.
    smtp_user: OptionalText = None
    smtp_password: OptionalText = None
    smtp_starttls: bool = False
    mail_from: str = Field("contacts@localhost", pattern=r"^[^@\s]+@[^@\s]+$|^.+<[^@\s]+@[^@\s]+>$")
    public_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://")
    token_ttl: Duration = DEFAULT_TTL
    # The key validation codes are derived from (contacts_notifier.domain.validation_code): with
    # it and the database, anyone can compute every open code, so keep it like a password. No
    # default; changing it voids the codes already mailed (their confirmers ask for new ones).
    token_secret: SecretStr = Field(min_length=32)
    # An email the mail server refuses for good (5xx to its recipient or content) this many times
    # is given up: marked failed, and the request's history says who could not be reached.
    smtp_max_refusals: int = Field(5, ge=1, le=100)

    def refused_in_production(self) -> list[Refused]:
        refused = super().refused_in_production()
        if self.token_secret.get_secret_value() == DEV_TOKEN_SECRET:
            refused.append(("CONTACTS_TOKEN_SECRET", "is the development key published with the code: anyone could compute the codes"))
        return refused + _public_url_refused(self.public_url)


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S], program: str) -> S:
    """Read the settings or exit 2 with one clear line (never a traceback): a setting missing or
    malformed, or, in production, one only development may use."""
    try:
        settings = cls()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "CONTACTS_" + str(error["loc"][0]).upper() if error["loc"] else "CONTACTS_*"
        problem = "is missing" if error["type"] == "missing" else f"is invalid: {error['msg']}"
        _stop(program, f"setting {name} {problem}")
    if settings.env == "production" and (refused := settings.refused_in_production()):
        name, reason = refused[0]
        _stop(program, f"setting {name} {reason}; refused in production (CONTACTS_ENV=development allows it, for a demo)")
    return settings


def _stop(program: str, line: str) -> NoReturn:
    print(f"{program}: {line}", file=sys.stderr)
    raise SystemExit(2)
