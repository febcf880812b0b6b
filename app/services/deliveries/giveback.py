"""Giving a delivery's codes back: to every target when a confirm cannot finish, to
some when their messages are reported failed.

Takes whichever asyncpg connection its caller runs on (the confirm's own, or the one
under the request's session) and opens no transaction: the caller's transaction holds
the give-back together with the counts it changes."""

import json
import uuid
from dataclasses import dataclass

import asyncpg

from app.services.deliveries import sql


@dataclass
class Run:
    """What the confirm's statements need of a delivery, its set and its pool."""

    delivery_id: uuid.UUID
    set_id: uuid.UUID
    pool_id: uuid.UUID | None
    pool_name: str | None
    shared_code: str | None
    channel: str | None
    last_seq: int
    api_key_id: uuid.UUID | None

    @property
    def audit_details(self) -> str:
        """The details of each ``assign`` audit row, the same for the whole confirm."""
        return json.dumps({"pool": self.pool_name, "delivery_id": str(self.delivery_id)})


def run_of(row: asyncpg.Record) -> Run:
    """The run of a ``sql.RUN`` row."""
    return Run(
        delivery_id=row["id"],
        set_id=row["coupon_set_id"],
        pool_id=row["pool_id"],
        pool_name=row["pool_name"],
        shared_code=row["shared_code"],
        channel=row["channel"],
        last_seq=row["last_seq"] or 0,
        api_key_id=row["api_key_id"],
    )


async def give_back(
    connection: asyncpg.Connection, run: Run, recipient_ids: list[str] | None, reason: str
) -> list[str]:
    """Return the codes the delivery handed out (to ``recipient_ids``, or to all)."""
    if run.pool_id is None:
        rows = await connection.fetch(
            sql.RETURN_SHARED,
            run.delivery_id, run.set_id, str(run.delivery_id), recipient_ids,
            run.shared_code, run.api_key_id, reason,
        )  # fmt: skip
    else:
        rows = await connection.fetch(
            sql.RETURN_CODES,
            run.delivery_id, run.pool_id, str(run.delivery_id), recipient_ids,
            run.set_id, run.api_key_id, reason,
        )  # fmt: skip
    return [row["recipient_id"] for row in rows]
