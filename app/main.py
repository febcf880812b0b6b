"""The application: middleware, routers, error handlers, and the start-up work."""

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import __version__, docs_pages, idempotency, openapi_extras, ui
from app.db import create_driver_pool, create_engine, create_session_pool, create_sessionmaker
from app.lean import LeanPath
from app.limits import BodySizeLimitMiddleware
from app.logging import configure_logging
from app.metrics import InFlight, RequestMetrics
from app.problems import Problem, install_error_handlers
from app.ratelimit import RateLimiter
from app.routers import (
    api_keys,
    assignments,
    audit,
    codes,
    coupon_sets,
    deliveries,
    events,
    exports,
    health,
    imports,
    pools,
    recipients,
    redemptions,
    stats,
    webhooks,
)
from app.routers.webhook_events import install_webhooks
from app.services import api_keys as api_key_service
from app.services.api_keys import KeyCache
from app.services.assignments import Claimer
from app.services.assignments import fast_path as assignment_path
from app.services.deliveries import Confirmations
from app.services.events.dispatch import EventDispatcher
from app.services.imports import ImportRunner
from app.services.redemptions import RedemptionEngine
from app.services.redemptions import fast_path as redemption_path
from app.services.stats import StatsFolder
from app.services.stats.gauges import PoolGauges
from app.settings import Settings, redact_url

logger = logging.getLogger(__name__)

DESCRIPTION = """
Manage marketing coupons end to end: coupon sets, pools of single-use codes,
handing one code to one recipient, redemptions and statistics.

Every route but `/healthz`, `/readyz` and the documentation needs an API key:
`Authorization: Bearer <key>`. Errors are `application/problem+json` (RFC 9457)
with a stable `type` to branch on.
"""


async def _provision_admin_key(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with sessionmaker.begin() as session:
        if settings.admin_api_key is not None:
            await api_key_service.provision_admin_key(
                session,
                secret=settings.admin_api_key.get_secret_value(),
                name="admin (COUPONS_ADMIN_API_KEY)",
            )
            return
        if settings.environment != "development":
            return
        secret = await api_key_service.create_bootstrap_admin_key(session)
    if secret is not None:
        # Printed once to the console, never through logging: log files outlive consoles.
        print(
            "\n  No admin API key existed, so one was created. It is shown only now:\n\n"
            f"      {secret}\n\n"
            "  Use it as 'Authorization: Bearer <key>'. Set COUPONS_ADMIN_API_KEY to choose "
            "your own.\n",
            file=sys.stderr,
            flush=True,
        )


def _openapi_with_problems(app: FastAPI) -> dict[str, Any]:
    """The generated document, plus the Problem schema every error response refers to."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
        app.openapi_schema = openapi_extras.complete(schema)
    return app.openapi_schema


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (``COUPONS_WORKERS`` > 1), configured from
    the environment that ``app.serve`` prepared (DATABASE_URL is always set there)."""
    settings = Settings()
    configure_logging(settings)
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set")
    return create_app(settings, database_url=settings.database_url)


def create_app(settings: Settings, *, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.driver_pool = await create_driver_pool(settings, database_url)
        app.state.key_cache = KeyCache(app.state.driver_pool)
        watch_keys = asyncio.create_task(app.state.key_cache.watch())
        # Imports keep session state (a temporary table): straight to PostgreSQL when
        # DATABASE_URL is PgBouncer.
        app.state.session_pool = await create_session_pool(settings)
        app.state.claimer = Claimer(
            app.state.driver_pool,
            coalesce=settings.coalesce_claims,
            max_in_flight=settings.coalesce_in_flight,
        )
        app.state.redemptions = RedemptionEngine(
            app.state.driver_pool,
            coalesce=settings.coalesce_redemptions,
            acquire_timeout=settings.db_pool_timeout,
        )
        logger.info("using database %s", redact_url(database_url))
        await _provision_admin_key(app.state.sessionmaker, settings)
        app.state.confirmations = Confirmations(
            app.state.driver_pool,
            batch_size=settings.confirm_batch_size,
            workers=settings.confirm_workers,
        )
        await app.state.confirmations.recover()
        app.state.import_runner = ImportRunner(
            app.state.driver_pool, app.state.sessionmaker, session_pool=app.state.session_pool
        )
        await app.state.import_runner.recover()
        purge = asyncio.create_task(idempotency.purge_periodically(app.state.driver_pool))
        app.state.stats_folder = StatsFolder(
            app.state.driver_pool,
            app.state.metrics_registry,
            interval=settings.stats_fold_seconds,
            recount_every=settings.stats_recount_seconds,
        )
        app.state.stats_folder.start()
        app.state.pool_gauges = PoolGauges(
            app.state.driver_pool, app.state.metrics_registry, max_pools=settings.metrics_max_pools
        )
        app.state.events = EventDispatcher(
            app.state.driver_pool, settings, app.state.metrics_registry, app.state.in_flight
        )
        app.state.events.start(background=settings.webhook_dispatch)
        # What start-up built (modules, the app, its pools: some 140,000 objects) lives
        # as long as the process. Out of the collector's sight, a full collection no
        # longer walks it: each took ~100 ms with the event loop stopped, which was most
        # of the assignments' p99 (docs/benchmarks.md, B1).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        purge.cancel()
        watch_keys.cancel()
        await asyncio.gather(purge, watch_keys, return_exceptions=True)
        await app.state.stats_folder.stop()
        await app.state.events.stop()
        await app.state.confirmations.stop()
        # Imports merging in the background finish before their connections close.
        await app.state.import_runner.stop()
        await app.state.driver_pool.close()
        if app.state.session_pool is not None:
            await app.state.session_pool.close()
        await engine.dispose()

    app = FastAPI(
        title="Coupon service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # app/docs_pages.py serves /docs and /redoc without a CDN
        redoc_url=None,
        # operationIds are the Python function names: stable, readable in generated clients.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.metrics_registry = CollectorRegistry()
    app.state.in_flight = InFlight()
    install_error_handlers(app)
    app.state.redeem_limiter = RateLimiter(
        settings.redeem_rate_limit,
        processes=settings.workers,
        storage=settings.rate_limit_storage.get_secret_value(),
    )
    routers = (
        health.router,
        api_keys.router,
        coupon_sets.router,
        pools.router,
        codes.router,
        deliveries.router,
        assignments.router,
        redemptions.router,
        audit.router,
        recipients.router,
        exports.router,
        imports.router,
        stats.router,
        webhooks.router,
        events.router,
    )
    for router in routers:
        app.include_router(router)
    docs_pages.install(app)
    ui.install(app)
    install_webhooks(app)

    lean = [assignment_path.route()] if settings.assign_fast_path else []
    lean += redemption_path.routes() if settings.redeem_fast_path else []
    if lean:
        # Just inside the metrics middleware, which records its answers like any other.
        app.add_middleware(LeanPath, routes=lean, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestMetrics,
        known=[(route.path, route.route) for route in lean],
        excluded_handlers=["/metrics"],
        registry=app.state.metrics_registry,
        in_flight=app.state.in_flight,
    )
    # Outermost, so every log line of the request and every response carry the id.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    app.openapi = lambda: _openapi_with_problems(app)  # type: ignore[method-assign]
    return app
