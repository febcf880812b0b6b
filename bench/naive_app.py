"""The naive baseline of B1: a minimal FastAPI endpoint that claims one code per request.

``POST /claim {"recipient_id": ...}`` takes a pooled asyncpg connection and runs the
obvious transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE ... WHERE id``,
on the anchor's plain ``codes`` table. No batching, no scan hint, no ORM: what a first
version of the service would do. bench/assign.py serves it with uvicorn (one worker).

Environment: ``NAIVE_DSN`` (a libpq URL), ``NAIVE_POOL_ID`` (the pool of codes to drain),
``NAIVE_DB_CONNECTIONS`` (default 20, the service's default pool size + overflow)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

_POOL_ID = int(os.environ.get("NAIVE_POOL_ID", "1"))

_PICK = """
    SELECT id FROM codes
    WHERE pool_id = $1 AND status = 'available'
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
"""
_ASSIGN = """
    UPDATE codes SET status = 'assigned', recipient_id = $2, assigned_at = now()
    WHERE id = $1
    RETURNING code
"""


class ClaimIn(BaseModel):
    recipient_id: str = Field(min_length=1, max_length=200)
    channel: str | None = None


class ClaimOut(BaseModel):
    code: str
    recipient_id: str


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("NAIVE_DB_CONNECTIONS", "20"))
    app.state.db = await asyncpg.create_pool(os.environ["NAIVE_DSN"], min_size=size, max_size=size)
    try:
        yield
    finally:
        await app.state.db.close()


app = FastAPI(lifespan=_lifespan)


@app.post("/claim", status_code=201)
async def claim(body: ClaimIn) -> ClaimOut:
    async with app.state.db.acquire() as conn, conn.transaction():
        code_id = await conn.fetchval(_PICK, _POOL_ID)
        if code_id is None:
            raise HTTPException(status_code=409, detail="pool exhausted")
        code = await conn.fetchval(_ASSIGN, code_id, body.recipient_id)
    return ClaimOut(code=code, recipient_id=body.recipient_id)
