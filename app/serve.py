"""``make run``: migrate and serve, on DATABASE_URL or on an embedded PostgreSQL.

``python -m app.serve [--migrate-only]``. SIGINT or SIGTERM drains the requests in
flight, then stops the embedded database; its data stays in COUPONS_DATA_DIR."""

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import uvicorn
from pydantic import ValidationError

from app.embedded import EmbeddedPostgres
from app.http_limits import BoundedHttpToolsProtocol
from app.logging import configure_logging
from app.main import create_app
from app.migrations import upgrade
from app.settings import Settings, describe, redact_url

logger = logging.getLogger("app.serve")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    if settings.database_url is not None:
        yield settings.database_url
        return
    with EmbeddedPostgres(settings.data_dir / "postgres") as server:
        yield server.url()


def _serve(settings: Settings, database_url: str) -> None:
    if settings.workers == 1:
        app = create_app(settings, database_url=database_url)
        BoundedHttpToolsProtocol.limits = settings
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            http=BoundedHttpToolsProtocol,
        )
        uvicorn.Server(config).run()
        return
    # Worker processes build their app from the environment; the embedded server's URL
    # is only known here.
    os.environ["DATABASE_URL"] = database_url
    uvicorn.run(
        "app.main:app_from_environment",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_config=None,
        http="app.http_limits:BoundedHttpToolsProtocol",  # reads the environment
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__)
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print("Invalid configuration:", *describe(exc), sep="\n  ", file=sys.stderr)
        return 2
    configure_logging(settings)
    # uvicorn re-raises the signal after its graceful shutdown; this handler turns that
    # into an exception so the embedded database is stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with _database(settings) as database_url:
            # Straight to PostgreSQL (DATABASE_DIRECT_URL) when DATABASE_URL is PgBouncer.
            direct_url = settings.database_direct_url or database_url
            logger.info("applying migrations to %s", redact_url(direct_url))
            upgrade(direct_url)
            if args.migrate_only:
                return 0
            _serve(settings, database_url)
    except (_Stop, KeyboardInterrupt):
        pass
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
