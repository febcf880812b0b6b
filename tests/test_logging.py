import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from asgi_correlation_id import correlation_id

from app.logging import configure_logging
from app.settings import Settings
from tests.conftest import ADMIN_SECRET


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="json"))
    token = correlation_id.set("abc123")
    try:
        logging.getLogger("app.test").info("assigned %s codes", 3)
    finally:
        correlation_id.reset(token)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "assigned 3 codes"
    assert line["request_id"] == "abc123"
    assert line["level"] == "INFO"
    assert line["logger"] == "app.test"


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="text"))
    token = correlation_id.set("def456")
    try:
        logging.getLogger("app.test").warning("low stock")
    finally:
        correlation_id.reset(token)
    assert "[def456] app.test: low stock" in capsys.readouterr().err


async def test_keys_never_reach_the_logs(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await client.post("/v1/api-keys", json={"name": "k", "scopes": ["read"]})
    await anonymous.get("/v1/coupon-sets", headers={"Authorization": "Bearer cpn_wrong-secret"})
    await client.get("/v1/coupon-sets")
    logged = caplog.text
    for secret in (ADMIN_SECRET, created.json()["secret"], "cpn_wrong-secret"):
        assert secret not in logged
