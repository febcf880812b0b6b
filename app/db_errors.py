"""PostgreSQL's own account of a failed statement, read the same way from both database
paths (a SQLAlchemy error or a plain asyncpg one)."""


def sqlstate(exc: BaseException) -> str:
    """PostgreSQL's error code of an asyncpg error or of the asyncpg error behind a
    SQLAlchemy one ("" when there is none)."""
    orig = getattr(exc, "orig", None)
    cause = orig.__cause__ if orig is not None else exc
    return str(getattr(cause, "sqlstate", "") or "")
