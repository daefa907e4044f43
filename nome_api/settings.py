"""Configuration, from the environment only (API.md §9)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import cast

import msgspec

from nome_api.keyring import parse_secret
from nome_core.keys import secrets as key_secrets
from nome_core.values import PROVIDERS, Provider

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# Settings whose values are secrets: never shown.
SECRET_FIELDS = frozenset(
    {"secret_key", "bootstrap_admin_key", "bootstrap_platform_key", "openai_api_key"}
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every NOME_* setting with its default."""

    database_url: str = "sqlite:///./.nome/events.db"
    # Postgres schema for the events table; tests and benchmarks use one per run.
    database_schema: str | None = None
    redis_url: str = "memory://"
    redis_prefix: str = "nome:"
    host: str = "127.0.0.1"
    port: int = 8080
    bootstrap_admin_key: str | None = None
    # First start: the platform operator's key (API.md §1, §6).
    bootstrap_platform_key: str | None = None
    # The deployment secret (nome_api/keyring.py): base64url of 32 random bytes. Required
    # with PostgreSQL; with SQLite, made once and kept in secret.key next to the database.
    secret_key: str | None = None
    auth: str = "keys"
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    model_provider: str = "scripted"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str | None = None
    openai_model: str = "gpt-4o-mini"
    # Attempts of one model turn (the first and its retries) before the run fails, and the
    # first retry's back-off (doubled per attempt, capped at 30 s, jittered).
    model_attempts: int = 4
    model_backoff_s: float = 1.0
    # Browser origins that may use /mcp (comma-separated, e.g. https://app.example.com); any
    # other request with an Origin header is 403 there (API.md §11).
    allowed_origins: str = ""
    # Hosts http.fetch may reach even though they resolve to private addresses.
    fetch_allow_hosts: str = ""
    # How long a package tool's endpoint may take to answer a call (the core bounds every
    # call at 30 s whatever this says).
    tool_timeout_s: float = 30.0
    # A package import's git work (resolve, fetch, read) and the most it may download.
    import_timeout_s: float = 60.0
    import_max_bytes: int = 50 * 1024 * 1024
    # file:// repositories: any git repository on the server's disk. For development and
    # tests (`make run` turns it on); a shared deployment keeps tenants to the network.
    import_file_urls: bool = False
    # A worker's claim on a run; another worker takes the run over once it lapses.
    run_lease_s: float = 15.0
    approval_ttl_s: float = 3600.0
    log_format: str = "console"
    log_level: str = "info"
    rate_limit: int = 600
    max_body_bytes: int = 1024 * 1024
    sse_heartbeat_s: float = 15.0
    min_position_wait_s: float = 5.0
    # /metrics without a key (a scraper on a private network); an admin key otherwise.
    metrics_public: bool = False
    # How long a past-due tenant keeps starting work after its period ends (API.md §6).
    billing_grace_days: float = 7.0
    # The release manifest behind /v1/account/downloads and bootstrap's update fields
    # (docs/downloads.schema.json; examples/downloads.json). None: no releases to offer.
    downloads_file: str | None = None
    # Create tables at start-up. Off when `nome migrate` ran once before many processes start.
    migrate: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get("NOME_" + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = raw
        settings = msgspec.convert(values, cls, strict=False)
        settings.check()
        return settings

    def check(self) -> None:
        if self.database_schema is not None and not _SCHEMA.match(self.database_schema):
            raise ValueError("NOME_DATABASE_SCHEMA must be a lower-case SQL identifier")
        if self.auth not in ("keys", "oidc"):
            raise ValueError("NOME_AUTH must be 'keys' or 'oidc'")
        if self.auth == "oidc" and not (
            self.oidc_issuer and self.oidc_audience and self.oidc_jwks_url
        ):
            raise ValueError(
                "NOME_AUTH=oidc needs NOME_OIDC_ISSUER, NOME_OIDC_AUDIENCE and NOME_OIDC_JWKS_URL"
            )
        if self.log_format not in ("console", "json"):
            raise ValueError("NOME_LOG_FORMAT must be 'console' or 'json'")
        for name, key in (
            ("NOME_BOOTSTRAP_ADMIN_KEY", self.bootstrap_admin_key),
            ("NOME_BOOTSTRAP_PLATFORM_KEY", self.bootstrap_platform_key),
        ):
            if key is not None and not key_secrets.is_well_formed(key):
                raise ValueError(f"{name} must be nome_sk_ and 43 url-safe characters")
        if self.model_provider not in PROVIDERS:
            raise ValueError(f"NOME_MODEL_PROVIDER must be one of {', '.join(PROVIDERS)}")
        if self.model_attempts < 1 or self.model_backoff_s < 0:
            raise ValueError("NOME_MODEL_ATTEMPTS must be at least 1, NOME_MODEL_BACKOFF_S >= 0")
        if self.billing_grace_days < 0:
            raise ValueError("NOME_BILLING_GRACE_DAYS must be a number of days >= 0")
        if self.secret_key is not None:
            parse_secret(self.secret_key)
        elif not self.database_url.startswith("sqlite:"):
            raise ValueError(
                "NOME_SECRET_KEY is not set; it is required with a PostgreSQL database (it "
                "signs audit exports). Set it, the same in every process of the deployment, "
                "to base64url of 32 random bytes, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, and keep it safe"
            )

    def __repr__(self) -> str:
        """Every setting but the secrets' values: settings get logged."""
        shown = {
            name: ("<set>" if value is not None else None) if name in SECRET_FIELDS else value
            for name, value in msgspec.structs.asdict(self).items()
        }
        return f"Settings({shown})"

    @property
    def provider(self) -> Provider:
        """The default agent's model provider (checked to be one)."""
        return cast(Provider, self.model_provider)

    @property
    def fetch_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.fetch_allow_hosts.split(",") if h.strip())

    def prepare_paths(self) -> None:
        """Create the directory of a SQLite database file."""
        if self.database_url.startswith("sqlite:///"):
            path = self.database_url[len("sqlite:///") :]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)


def revision() -> str:
    """The VCS revision of the running code, when there is one."""
    env = os.environ.get("NOME_REVISION")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=2,
            cwd=Path(__file__).parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
