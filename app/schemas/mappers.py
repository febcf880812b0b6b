"""From a table row to what the API shows: every mapping in one place, so a Public schema
and the columns it is read from are compared here and nowhere else."""

from app.models.api_key import ApiKey
from app.models.audit import AuditEvent
from app.models.code import Code
from app.models.coupon_set import CouponSet
from app.models.import_job import ImportJob
from app.models.pool import Pool
from app.schemas.api_key import ApiKeyCreated, ApiKeyPublic
from app.schemas.audit import AuditEventPublic
from app.schemas.code import CodePublic
from app.schemas.coupon_set import CouponSetPublic
from app.schemas.import_job import ImportJobPublic
from app.schemas.pool import PoolPublic, PoolStock


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


def import_job_public(job: ImportJob) -> ImportJobPublic:
    return ImportJobPublic.model_validate(job)


def pool_public(pool: Pool, stock: PoolStock) -> PoolPublic:
    columns = {f: getattr(pool, f) for f in ("id", "set_id", "name", "created_at", "updated_at")}
    return PoolPublic.model_validate({**columns, "stock": stock})
