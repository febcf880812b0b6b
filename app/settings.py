"""The one settings object, read from the environment once at start."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

Environment = Literal["development", "test", "production"]

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}


def to_asyncpg_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and point it at asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"DATABASE_URL is not a database URL: {exc}") from None
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://...), not {parsed.drivername}://"
        )
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL as it may appear in logs: the password masked."""
    parsed: URL = make_url(url)
    return parsed.render_as_string(hide_password=True)


class Settings(BaseSettings):
    """Every knob of the service. Environment variables use the COUPONS_ prefix,
    except the conventional DATABASE_URL, HOST and PORT."""

    model_config = SettingsConfigDict(
        env_prefix="COUPONS_", extra="ignore", frozen=True, populate_by_name=True
    )

    environment: Environment = "development"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "COUPONS_DATABASE_URL")
    )
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
    redeem_rate_limit: str = Field(
        default="100/second",
        description=(
            "Redeem + validate requests per API key in all, e.g. '100/second', "
            "'5000/minute'; each worker process allows its share"
        ),
    )

    @field_validator("redeem_rate_limit")
    @classmethod
    def _parseable_rate(cls, value: str) -> str:
        parse(value)  # raises ValueError with the reason
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return to_asyncpg_url(value.strip())

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
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
