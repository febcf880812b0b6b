"""Tables, one module per noun, as SQLModel classes. Importing this package registers
every table on ``Base.metadata`` (Alembic compares against it). API schemas are in
app/schemas."""

from app.models.api_key import ApiKey
from app.models.assignment import SharedAssignment
from app.models.audit import AuditEvent
from app.models.base import Base
from app.models.code import Code
from app.models.coupon_set import CouponSet
from app.models.delivery import Delivery, DeliveryRecipient
from app.models.events import EventCursor, EventOutbox, WebhookAttempt, WebhookEndpoint
from app.models.idempotency import IdempotencyRecord
from app.models.import_job import ImportJob, ImportReportRow
from app.models.pool import Pool
from app.models.redemption import Redemption
from app.models.stats import ActivityBucket, DeliveryStock, PoolStock, StatsDelta
from app.models.ui_session import UiSession
from app.models.usage import SetUsage

__all__ = [
    "ActivityBucket",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Code",
    "CouponSet",
    "Delivery",
    "DeliveryRecipient",
    "DeliveryStock",
    "EventCursor",
    "EventOutbox",
    "IdempotencyRecord",
    "ImportJob",
    "ImportReportRow",
    "Pool",
    "PoolStock",
    "Redemption",
    "SetUsage",
    "SharedAssignment",
    "StatsDelta",
    "UiSession",
    "WebhookAttempt",
    "WebhookEndpoint",
]
