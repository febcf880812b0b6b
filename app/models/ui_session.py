"""Dashboard sessions (/ui/): a browser signed in with an API key, behind a cookie."""

import uuid
from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field

from app.models.base import Base, Col, insert_time


class UiSession(Base, table=True):
    __tablename__ = "ui_sessions"
    # Sessions of a key are ended together when it is revoked; idle ones are removed by age.
    __table_args__ = (
        Index("ix_ui_sessions_api_key_id", "api_key_id"),
        Index("ix_ui_sessions_last_seen_at", "last_seen_at"),
    )

    # SHA-256 of the cookie's token: a stolen table does not give the cookies.
    token_sha256: Col[str] = Field(primary_key=True, max_length=64)
    api_key_id: Col[uuid.UUID] = Field(foreign_key="api_keys.id", ondelete="CASCADE")
    # The token every form of the session carries (synchroniser token against CSRF).
    csrf_token: Col[str] = Field(max_length=64)
    # A one-time message shown by the next page (what a form did or why it was refused).
    flash: Col[str | None] = Field(default=None)
    created_at: Col[datetime] = insert_time()
    last_seen_at: Col[datetime] = insert_time()
