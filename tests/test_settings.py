import pytest
from pydantic import ValidationError

from app.settings import Settings, redact_url, to_asyncpg_url


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
