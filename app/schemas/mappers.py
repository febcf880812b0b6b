"""From a table row to what the API shows: every mapping in one place, so a Public schema
and the columns it is read from are compared here and nowhere else."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.models.api_key import ApiKey
from app.models.audit import AuditEvent
from app.models.code import Code
from app.models.coupon_set import CouponSet, SetFacts
from app.models.delivery import Delivery, DeliveryStatus
from app.models.events import WebhookAttempt, WebhookEndpoint
from app.models.import_job import ImportJob
from app.models.pool import Pool
from app.models.redemption import RedemptionStatus
from app.schemas.api_key import ApiKeyCreated, ApiKeyPublic
from app.schemas.assignment import AssignmentPublic
from app.schemas.audit import AuditEventPublic
from app.schemas.code import CodePublic
from app.schemas.coupon_set import CouponSetListed, CouponSetPublic
from app.schemas.delivery import Analysis, DeliveryPublic, TargetPublic
from app.schemas.events import WebhookAttemptPublic, WebhookEndpointPublic
from app.schemas.import_job import ImportJobPublic
from app.schemas.pool import PoolPublic, PoolStock
from app.schemas.redemption import RedemptionPublic
from app.schemas.stats import SetGlance


def api_key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(key)


def api_key_created(key: ApiKey, secret: str) -> ApiKeyCreated:
    """The key as created: the only answer that holds its secret."""
    return ApiKeyCreated(**api_key_public(key).model_dump(), secret=secret)


def audit_event_public(event: AuditEvent) -> AuditEventPublic:
    return AuditEventPublic.model_validate(event)


def code_public(code: Code, pool: str) -> CodePublic:
    """``pool``: the name of the code's pool."""
    columns = {
        c: getattr(code, c) for c in CodePublic.model_fields if c not in ("pool", "metadata")
    }
    return CodePublic.model_validate({**columns, "pool": pool, "metadata": code.metadata_})


def coupon_set_public(coupon_set: CouponSet) -> CouponSetPublic:
    # The schema reads ``metadata`` from the column attribute ``metadata_``.
    return CouponSetPublic.model_validate(coupon_set)


def coupon_set_listed(coupon_set: CouponSet, glance: SetGlance) -> CouponSetListed:
    fields = coupon_set_public(coupon_set).model_dump()
    fields["metadata_"] = fields.pop("metadata")
    return CouponSetListed.model_validate({**fields, "stats": glance})


def import_job_public(job: ImportJob) -> ImportJobPublic:
    return ImportJobPublic.model_validate(job)


def pool_public(pool: Pool, stock: PoolStock) -> PoolPublic:
    columns = {
        f: getattr(pool, f)
        for f in (
            "id", "set_id", "name", "low_stock_threshold", "low_stock_days", "stock_state",
            "stock_state_at", "created_at", "updated_at",
        )
    }  # fmt: skip
    return PoolPublic.model_validate({**columns, "stock": stock})


def assignment_public(
    coupon_set: CouponSet | SetFacts, row: Any, *, code: str, pool: str | None, recipient_id: str
) -> AssignmentPublic:
    """``row``: a code row, a shared assignment or a claim's result row."""
    return AssignmentPublic(
        code=code,
        set_id=coupon_set.id,
        set_key=coupon_set.key,
        pool=pool,
        recipient_id=recipient_id,
        address=row.address,
        channel=row.channel,
        delivery_id=row.delivery_id,
        additional=row.additional,
        assigned_at=row.assigned_at,
    )


def delivery_public(delivery: Delivery, *, set_key: str, pool: str | None) -> DeliveryPublic:
    messages = None
    if delivery.status in (DeliveryStatus.sending, DeliveryStatus.finished):
        messages = delivery.analysis.get("messages") if delivery.analysis else None
    return DeliveryPublic(
        id=delivery.id,
        label=delivery.label,
        coupon_set_id=delivery.coupon_set_id,
        coupon_set_key=set_key,
        pool=pool,
        channel=delivery.channel,  # type: ignore[arg-type]
        subject=delivery.subject,
        template=delivery.template,
        content_type=delivery.content_type,  # type: ignore[arg-type]
        status=delivery.status,  # type: ignore[arg-type]
        message_limit=delivery.message_limit,
        metadata=delivery.metadata_,
        recipients=delivery.recipient_count,
        messages=messages,
        processed=delivery.processed,
        assigned=delivery.assigned,
        kept=delivery.kept,
        failed_messages=delivery.failed_messages,
        failure_reason=delivery.failure_reason,
        analysis=Analysis.model_validate(delivery.analysis) if delivery.analysis else None,
        confirmed_at=delivery.confirmed_at,
        finished_at=delivery.finished_at,
        sent_at=delivery.sent_at,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
    )


def _status(stored: str, hold_expires_at: datetime | None) -> RedemptionStatus:
    status = RedemptionStatus(stored)
    if (
        status is RedemptionStatus.held
        and hold_expires_at is not None
        and hold_expires_at <= datetime.now(UTC)
    ):
        return RedemptionStatus.expired
    return status


def redemption_public(row: Mapping[str, Any]) -> RedemptionPublic:
    """A redemption as the API shows it, from its stored columns and its set's key."""
    status = _status(row["status"], row["hold_expires_at"])
    return RedemptionPublic.model_validate({**row, "status": status})


def target_public(row: Any) -> TargetPublic:
    """A target of a delivery's list (a row of its TARGETS_* statement), with its code."""
    return TargetPublic(
        recipient_id=row.recipient_id,
        address=row.address,
        fields=row.fields,
        code=row.code,
        failed_at=row.failed_at,
    )


def webhook_endpoint_public(endpoint: WebhookEndpoint) -> WebhookEndpointPublic:
    return WebhookEndpointPublic.model_validate(endpoint)


def webhook_attempt_public(attempt: WebhookAttempt) -> WebhookAttemptPublic:
    return WebhookAttemptPublic.model_validate(attempt, from_attributes=True)
