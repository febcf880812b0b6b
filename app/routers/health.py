"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.auth import ReadKey
from app.db import Engine
from app.errors import ServiceUnavailable
from app.metrics import Registry
from app.migrations import head_revisions
from app.problems import problem_responses
from app.services.stats.gauges import PoolGaugesDep

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its migrations are at head",
    responses={503: problem_responses(ServiceUnavailable)[503]},
)
async def readyz(engine: Engine) -> Health:
    try:
        async with engine.connect() as connection:
            applied = set(
                (
                    await connection.execute(text("SELECT version_num FROM alembic_version"))
                ).scalars()
            )
    except Exception:  # any failure to read the version means "not ready"
        raise ServiceUnavailable(
            "The database is unreachable.", headers={"Retry-After": "5"}
        ) from None
    if applied != head_revisions():
        raise ServiceUnavailable(
            "The database schema is not at the latest migration; run the migrations.",
            headers={"Retry-After": "5"},
            applied=sorted(applied),
        )
    return Health(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics: request counts and latencies per route, codes per pool",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **problem_responses(),
    },
)
async def metrics(_: ReadKey, registry: Registry, gauges: PoolGaugesDep) -> Response:
    await gauges.refresh()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
