"""The one settings object, read from the environment once at start."""

import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from fastapi import Depends, Request
from limits import parse
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

Environment = Literal["development", "test", "production"]

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}


def to_asyncpg_url(url: str, variable: str = "DATABASE_URL") -> str:
    """Accept the usual spellings of a PostgreSQL URL and point it at asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"{variable} is not a database URL: {exc}") from None
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"{variable} must be a PostgreSQL URL (postgresql://...), not {parsed.drivername}://"
        )
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL as it may appear in logs: the password masked."""
    parsed: URL = make_url(url)
    return parsed.render_as_string(hide_password=True)


def retry_delays(schedule: str) -> tuple[float, ...]:
    """The seconds between tries of a webhook delivery, from the setting's text."""
    try:
        delays = tuple(float(part) for part in schedule.split(","))
    except ValueError:
        raise ValueError("must be comma-separated seconds, e.g. '5,300,1800'") from None
    if not delays or any(d <= 0 or d > 86_400 for d in delays):
        raise ValueError("each delay must be more than 0 and at most 86400 seconds")
    return delays


class Settings(BaseSettings):
    """Every knob of the service. Environment variables use the COUPONS_ prefix,
    except the conventional DATABASE_URL, HOST and PORT."""

    model_config = SettingsConfigDict(
        env_prefix="COUPONS_", extra="ignore", frozen=True, populate_by_name=True
    )

    environment: Environment = "development"
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "COUPONS_DATABASE_URL"),
        description="a PostgreSQL URL, postgresql://user:password@host:5432/database",
    )
    database_direct_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_DIRECT_URL", "COUPONS_DATABASE_DIRECT_URL"),
        description=(
            "a PostgreSQL URL straight to the server (not through PgBouncer), for migrations "
            "and work that needs a session of its own"
        ),
    )
    # DATABASE_URL goes through PgBouncer in transaction mode: no prepared statement is
    # named or cached, and nothing keeps session state on it (docs/scaling.md).
    db_pgbouncer: bool = False
    data_dir: Path = Field(default=Path(".data"), description="embedded PostgreSQL data folder")
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("HOST", "COUPONS_HOST"))
    port: int = Field(
        default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "COUPONS_PORT")
    )
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    admin_api_key: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout: float = Field(default=5.0, gt=0, le=120)
    # 10,000 codes of 100 characters, the most one request may add, fit in 2 MiB.
    max_body_bytes: int = Field(default=2_097_152, ge=1024)
    # A delivery's confirm answers 200 when it finishes within this time, else 202.
    confirm_wait_seconds: float = Field(default=10.0, ge=0, le=60)
    # Targets per transaction of a confirm: bigger is faster, smaller holds locks less long.
    confirm_batch_size: int = Field(default=20_000, ge=1, le=1_000_000)
    # Connections one confirm works on at once (its batches are independent).
    confirm_workers: int = Field(default=2, ge=1, le=16)
    # Request heads (request line + headers): bounded before they are buffered (431), and
    # a connection must finish each head in time (slowloris); see app/http_limits.py.
    max_header_bytes: int = Field(default=65_536, ge=4096, le=1_048_576)
    max_headers: int = Field(default=100, ge=10, le=1000)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Import uploads are streamed, never held whole, so their bound is a policy, not memory.
    max_upload_bytes: int = Field(default=209_715_200, ge=1024)
    # Concurrent assignments of one pool are claimed together, one statement per batch.
    coalesce_claims: bool = True
    # Batches of one pool in flight at once per process (more: less waiting, smaller
    # batches).
    coalesce_in_flight: int = Field(default=1, ge=1, le=16)
    # Concurrent redemptions (and validations) are run together, one statement per batch.
    coalesce_redemptions: bool = True
    # Plain assignments are answered by a lean ASGI layer instead of the FastAPI route.
    assign_fast_path: bool = True
    # So are plain redemptions and validations.
    redeem_fast_path: bool = True
    # Statistics: how often each process folds the counters' deltas (0: never; reads
    # stay exact, only slower as deltas pile up), how often it recounts them from the
    # rows (0: only when asked), and how many pools /metrics exports (0: none).
    stats_fold_seconds: float = Field(default=1.0, ge=0, le=3600)
    stats_recount_seconds: float = Field(default=86_400.0, ge=0)
    metrics_max_pools: int = Field(default=1000, ge=0, le=100_000)
    redeem_rate_limit: str = Field(
        default="100/second",
        description=(
            "Redeem + validate requests per API key in all, e.g. '100/second', "
            "'5000/minute'; each worker process allows its share"
        ),
    )

    rate_limit_storage: SecretStr = Field(  # a Redis URI may carry a password
        default=SecretStr("memory://"),
        description=(
            "where rate limit windows live: memory:// (each process its share) or "
            "redis://host:6379/0 (one window shared by every process and instance)"
        ),
    )

    # Events out (docs/events.md).
    # Endpoint URLs whose host is or resolves to a private, loopback, link-local, ...
    # address are refused unless this is true (tests, in-cluster receivers).
    webhook_allow_private: bool = False
    # The dispatcher (fan-out of events to endpoints, sending, alerts) runs in each
    # process; instances share the work. Off: events are still recorded (the feed).
    webhook_dispatch: bool = True
    # Requests in flight at once per process.
    webhook_concurrency: int = Field(default=100, ge=1, le=2000)
    # While the process serves requests, the dispatcher's steps (pump, sends) take at
    # most this share of its time: each pauses for what it took x (1 - share) / share.
    # Deliveries then lag (coupons_webhook_lag_seconds) and catch up when requests
    # ease. 1: never yield.
    webhook_busy_share: float = Field(default=0.1, gt=0, le=1)
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A whole try: connect, send, the answer's head and up to 64 KiB of its body.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    # Seconds between tries after a failure (each ±20 % jitter); after the last one the
    # attempt is failed. The default adds up to about 24 hours.
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,28800,28800",
        description="comma-separated seconds between tries, e.g. '5,300,1800'",
    )
    # An endpoint whose deliveries all failed for this long is disabled.
    webhook_disable_after_seconds: float = Field(default=259_200, gt=0)
    # How often the dispatcher looks for new events when it found none (and the feed's
    # long poll looks again).
    events_poll_seconds: float = Field(default=0.2, gt=0, le=10)
    # The longest a feed's long poll stays open, whatever its `wait` asks (≤ 30): a proxy
    # that cuts idle requests sooner, or a test that cannot wait, sets it lower.
    events_max_wait_seconds: float = Field(default=30.0, ge=0, le=30)
    # Events in the feed (and attempts) are kept at least this long.
    events_retention_days: int = Field(default=7, ge=7, le=3650)

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_storage(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(
            ("memory://", "redis://", "rediss://", "redis+unix://")
        ):
            raise ValueError("must be memory:// or a redis://, rediss:// or redis+unix:// URI")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _parseable_schedule(cls, value: str) -> str:
        retry_delays(value)  # raises ValueError with the reason
        return value

    @field_validator("redeem_rate_limit")
    @classmethod
    def _parseable_rate(cls, value: str) -> str:
        parse(value)  # raises ValueError with the reason
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        return to_asyncpg_url(value.strip(), str(info.field_name).upper())

    @field_validator("admin_api_key")
    @classmethod
    def _strong_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("COUPONS_ADMIN_API_KEY must be at least 24 characters long")
        return value

    @model_validator(mode="after")
    def _no_unsafe_defaults_in_production(self) -> "Settings":
        if self.environment == "production" and self.database_url is None:
            raise ValueError(
                "DATABASE_URL must be set when COUPONS_ENVIRONMENT=production "
                "(the embedded PostgreSQL is for development and tests)"
            )
        if self.db_pgbouncer and self.database_direct_url is None:
            raise ValueError(
                "COUPONS_DB_PGBOUNCER=true needs DATABASE_DIRECT_URL, a URL straight to "
                "PostgreSQL: migrations and import jobs (a temporary table of one session) "
                "cannot go through PgBouncer in transaction mode"
            )
        return self

    @property
    def direct_url(self) -> str | None:
        """Where migrations and session work go: DATABASE_DIRECT_URL, else DATABASE_URL."""
        return self.database_direct_url or self.database_url


def _variable(name: str, field: FieldInfo | None) -> str:
    """The environment variable a field is read from."""
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if field is None:  # already an alias (DATABASE_URL, HOST, PORT)
        return name
    return f"COUPONS_{name.upper()}"


def _expected(field: FieldInfo) -> str:
    """The form a field's value takes, in words."""
    annotation: Any = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in typing.get_args(annotation))
    bounds = []
    for rule in field.metadata:
        for attribute, words in (("ge", "at least"), ("gt", "more than"), ("le", "at most")):
            if isinstance(rule, getattr(annotated_types, attribute.capitalize())):
                bounds.append(f"{words} {getattr(rule, attribute)}")
    kind = {
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        Path: "a folder path",
        SecretStr: field.description or "a secret of at least 24 characters",
    }.get(annotation, field.description or "text")
    return kind + (" " + " and ".join(bounds) if bounds else "")


_SECRET_VARIABLES = {
    "COUPONS_ADMIN_API_KEY",
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "COUPONS_RATE_LIMIT_STORAGE",
}


def describe(error: ValidationError) -> list[str]:
    """One line per bad variable: its name, what is wrong with its value, the form it
    takes. Secret values (keys, URLs with passwords) are never repeated."""
    fields = Settings.model_fields
    lines = []
    for problem in error.errors():
        reason = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:
            lines.append(f"configuration: {reason}")
            continue
        name = str(problem["loc"][0])
        field = fields.get(name)
        if field is None:
            field = next(
                (f for f in fields.values() if _variable("", f) == name),
                None,
            )
            name = name if field is None else _variable("", field)
        else:
            name = _variable(name, field)
        shown = "" if name in _SECRET_VARIABLES else f" = {problem['input']!r}"
        expected = f" (expected {_expected(field)})" if field is not None else ""
        lines.append(f"{name}{shown}: {reason}{expected}")
    return lines


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def _app_settings(request: Request) -> Settings:
    """The settings the app was created with (each test app has its own). Async: a plain
    function would be run in a worker thread."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_app_settings)]
