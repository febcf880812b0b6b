"""The OpenAPI 3.1 ``webhooks`` section: one entry per event type, the request the
service sends to an endpoint (body, Standard Webhooks headers, what to answer)."""

from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field

from app.services.events.catalogue import PING, EventType

_SET = {"set_id": "0d3c3b8e-5d3e-4a43-9a1c-3c9e3a4b5f10", "set_key": "spring-2026"}

EXAMPLES: dict[str, dict[str, Any]] = {
    EventType.code_assigned: {
        **_SET,
        "code": "SPRING-AB12",
        "recipient_id": "contact-42",
        "pool": "default",
        "delivery_id": None,
    },
    EventType.code_returned: {
        **_SET,
        "code": "SPRING-AB12",
        "recipient_id": "contact-42",
        "pool": "default",
        "delivery_id": "6f1f7c1e-8a55-4c38-9a56-0d4b8e0e2a11",
        "reason": "bounced",
    },
    EventType.redemption_created: {
        **_SET,
        "code": "SPRING-AB12",
        "recipient_id": "contact-42",
        "redemption_id": "9b2f0a40-1f7e-4d8e-8d6e-2f3c4b5a6d7e",
        "order_id": "order-1001",
        "amount": 59.9,
        "status": "redeemed",
    },
    EventType.redemption_rolled_back: {
        **_SET,
        "code": "SPRING-AB12",
        "recipient_id": "contact-42",
        "redemption_id": "9b2f0a40-1f7e-4d8e-8d6e-2f3c4b5a6d7e",
        "order_id": "order-1001",
        "amount": 59.9,
        "status": "rolled_back",
    },
    EventType.pool_low_stock: {
        **_SET,
        "pool_id": "3e0f5d2a-6b7c-4d8e-9f01-2a3b4c5d6e7f",
        "pool": "default",
        "available": 100,
        "days_left": 2.5,
        "low_stock_threshold": 100,
        "low_stock_days": 3,
        "state": "low",
    },
    EventType.pool_exhausted: {
        **_SET,
        "pool_id": "3e0f5d2a-6b7c-4d8e-9f01-2a3b4c5d6e7f",
        "pool": "default",
        "available": 0,
        "days_left": None,
        "low_stock_threshold": 100,
        "low_stock_days": None,
        "state": "exhausted",
    },
    EventType.pool_restocked: {
        **_SET,
        "pool_id": "3e0f5d2a-6b7c-4d8e-9f01-2a3b4c5d6e7f",
        "pool": "default",
        "available": 5000,
        "days_left": None,
        "low_stock_threshold": 100,
        "low_stock_days": None,
        "state": "ok",
    },
    EventType.import_finished: {
        "import_id": "5c4b3a29-1807-4f6e-9d5c-4b3a29180716",
        **_SET,
        "kind": "codes",
        "status": "succeeded",
        "filename": "codes.csv",
        "rows_read": 1000,
        "accepted": 998,
        "duplicates": 2,
        "rejected": 0,
        "error": None,
    },
    EventType.delivery_finished: {
        "delivery_id": "6f1f7c1e-8a55-4c38-9a56-0d4b8e0e2a11",
        "label": "Spring mailing",
        **_SET,
        "pool": "default",
        "status": "finished",
        "recipients": 5000,
        "processed": 5000,
        "assigned": 4990,
        "kept": 10,
        "failure_reason": None,
    },
    EventType.coupon_set_expiring: {
        **_SET,
        "label": "Spring sale",
        "valid_until": "2026-06-01T00:00:00+00:00",
        "expiry_warning_days": 7,
    },
    EventType.webhook_endpoint_disabled: {
        "endpoint_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "url": "https://hooks.example.com/coupons",
        "failing_since": "2026-05-01T10:00:00+00:00",
        "reason": "every delivery failed since 2026-05-01T10:00:00Z",
    },
    PING: {"endpoint_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},
}


class WebhookEvent(BaseModel):
    """The body of every delivery (Standard Webhooks)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="The event type")
    timestamp: str = Field(description="When the event happened (ISO 8601, UTC)")
    data: dict[str, Any] = Field(description="The event's facts: ids, keys, code, counts")


def _webhook(app: FastAPI, name: str, example: dict[str, Any]) -> None:
    body_example = {"type": name, "timestamp": "2026-05-01T10:00:00.123456Z", "data": example}

    async def receive(
        body: Annotated[WebhookEvent, Field(examples=[body_example])],
        webhook_id: Annotated[
            str, Header(alias="webhook-id", description="The event's id, the same on every try")
        ],
        webhook_timestamp: Annotated[
            str, Header(alias="webhook-timestamp", description="Unix seconds of this try")
        ],
        webhook_signature: Annotated[
            str,
            Header(
                alias="webhook-signature",
                description="`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, "
                "space-separated when two secrets sign (after a rotation)",
            ),
        ],
    ) -> None:
        """Answer 2xx within the timeout. Anything else (3xx, 4xx, 5xx, a timeout) is
        retried with back-off for about 24 hours; 429/503 with Retry-After are retried
        after that many seconds."""

    receive.__name__ = "webhook_" + name.replace(".", "_")
    app.webhooks.post(
        name,
        summary=f"{name}",
        description=f"Sent when {_WHEN[name]}. Verify the signature first (docs/events.md).",
        operation_id=receive.__name__,
    )(receive)


_WHEN = {
    EventType.code_assigned: "a code was handed to a recipient (single, batch or delivery)",
    EventType.code_returned: "an assigned code went back to its pool",
    EventType.redemption_created: "a code was redeemed or held at a checkout",
    EventType.redemption_rolled_back: "a redemption was rolled back",
    EventType.pool_low_stock: "a pool's free codes fell to its low_stock_threshold or its "
    "days of stock left to low_stock_days (once, re-armed when above again)",
    EventType.pool_exhausted: "a pool's last free code was handed out",
    EventType.pool_restocked: "a low or exhausted pool got codes again",
    EventType.import_finished: "an import job succeeded or failed",
    EventType.delivery_finished: "a delivery's confirm finished or failed",
    EventType.coupon_set_expiring: "a set's valid_until is expiry_warning_days away (once)",
    EventType.webhook_endpoint_disabled: "another endpoint was disabled after failing for 3 days",
    PING: "an endpoint's test was asked for (POST /v1/webhook-endpoints/{id}/test)",
}


def install_webhooks(app: FastAPI) -> None:
    for name, example in EXAMPLES.items():
        _webhook(app, str(name), example)
