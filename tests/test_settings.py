import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.settings import Settings, describe, redact_url, to_asyncpg_url


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db:5432/coupons",
        "postgresql://u:p@db:5432/coupons",
        "postgresql+asyncpg://u:p@db:5432/coupons",
    ],
)
def test_database_urls_are_pointed_at_asyncpg(url: str) -> None:
    assert to_asyncpg_url(url) == "postgresql+asyncpg://u:p@db:5432/coupons"


@pytest.mark.parametrize("url", ["mysql://u@db/x", "not a url", "sqlite:///x.db"])
def test_other_urls_are_refused_with_a_clear_message(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(database_url=url)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@b/c")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("COUPONS_LOG_LEVEL", "debug")
    monkeypatch.setenv("COUPONS_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://a@b/c"
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_production_needs_a_real_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="DATABASE_URL must be set"):
        Settings(environment="production")


def test_a_weak_admin_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 24"):
        Settings(admin_api_key="short")


def test_secrets_do_not_show_in_reprs() -> None:
    settings = Settings(
        admin_api_key="a-very-long-admin-secret-123456", database_url="postgresql://u:pw@h/d"
    )
    assert "a-very-long-admin-secret" not in repr(settings)
    assert redact_url(str(settings.database_url)) == "postgresql+asyncpg://u:***@h/d"


@pytest.mark.parametrize(("name", "value"), [("PORT", "0"), ("COUPONS_LOG_FORMAT", "xml")])
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_bad_configuration_is_one_line_per_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("COUPONS_LOG_FORMAT", "xml")
    monkeypatch.setenv("COUPONS_DB_POOL_TIMEOUT", "-1")
    monkeypatch.setenv("COUPONS_ADMIN_API_KEY", "short-secret")
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(ValidationError) as caught:
        Settings()
    lines = describe(caught.value)
    assert len(lines) == 5
    by_name = {line.split(" ", 1)[0].rstrip(":"): line for line in lines}
    assert "PORT = 'abc'" in by_name["PORT"]
    assert "expected a whole number at least 1 and at most 65535" in by_name["PORT"]
    assert "expected one of text, json" in by_name["COUPONS_LOG_FORMAT"]
    assert "expected a number more than 0" in by_name["COUPONS_DB_POOL_TIMEOUT"]
    assert "postgresql://" in by_name["DATABASE_URL"]
    text = "\n".join(lines)
    assert "hunter2" not in text, "secrets are not repeated"
    assert "short-secret" not in text
    assert "pydantic" not in text


def test_the_server_refuses_a_bad_configuration_plainly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPONS_")}
    env |= {"COUPONS_WORKERS": "0", "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    done = subprocess.run(
        [sys.executable, "-m", "app.serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Invalid configuration:",
        "  COUPONS_WORKERS = '0': Input should be greater than or equal to 1 "
        "(expected a whole number at least 1 and at most 64)",
    ]


def test_pgbouncer_needs_a_direct_url() -> None:
    with pytest.raises(ValidationError, match="DATABASE_DIRECT_URL"):
        Settings(database_url="postgresql://a@bouncer/c", db_pgbouncer=True)
    settings = Settings(
        database_url="postgresql://a@bouncer:6432/c",
        database_direct_url="postgres://a@db:5432/c",
        db_pgbouncer=True,
    )
    assert settings.direct_url == "postgresql+asyncpg://a@db:5432/c"
    assert Settings(database_url="postgresql://a@db/c").direct_url == "postgresql+asyncpg://a@db/c"
    with pytest.raises(ValidationError, match="DATABASE_DIRECT_URL must be a PostgreSQL URL"):
        Settings(database_url="postgresql://a@db/c", database_direct_url="mysql://a@db/c")
