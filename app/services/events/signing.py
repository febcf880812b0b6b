"""Standard Webhooks signatures (https://www.standardwebhooks.com): ``webhook-signature``
is ``v1,`` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), one per secret that
signs (two during the 24 hours after a rotation), separated by spaces."""

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, the form every Standard Webhooks library reads."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secrets_: list[str], *, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header for ``body`` under each of ``secrets_``."""
    message = f"{msg_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(s), message, hashlib.sha256).digest()).decode()
        for s in secrets_
    )


def headers(secrets_: list[str], *, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets_, msg_id=msg_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
        "user-agent": "coupon-service-webhooks/1",
    }
