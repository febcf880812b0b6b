"""Messages the sending system reports as failed: the codes the delivery gave those
recipients go back to the pool.

Runs in the request's transaction, on the asyncpg connection under the session
(``session_driver``), because it gives codes back with the confirm's own asyncpg
statement (``giveback.give_back``)."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_driver
from app.errors import DeliveryNotFinished, NotFound
from app.models.api_key import ApiKey
from app.models.delivery import DeliveryStatus
from app.schemas.delivery import FailuresRecorded
from app.services.deliveries import sql
from app.services.deliveries.drafts import key
from app.services.deliveries.giveback import give_back, run_of


async def record_failures(
    session: AsyncSession, *, delivery_id: str, recipient_ids: list[str], actor: ApiKey
) -> FailuresRecorded:
    delivery_key = key(delivery_id)
    wanted = list(dict.fromkeys(recipient_ids))
    connection = await session_driver(session)
    row = await connection.fetchrow(sql.RUN_FOR_UPDATE, delivery_key)
    if row is None:
        raise NotFound(f"No delivery has the id '{delivery_id}'.")
    if row["status"] != DeliveryStatus.finished:
        raise DeliveryNotFinished(
            f"The delivery is {row['status']}: failures are reported after it finished.",
            delivery_status=row["status"],
        )
    run = run_of(row)
    run.api_key_id = actor.id
    targeted = await connection.fetch(sql.MARK_FAILED, delivery_key, wanted, run.last_seq)
    marked = {r["recipient_id"] for r in targeted if r["newly"]}
    newly = [r for r in wanted if r in marked]
    returned = set(await give_back(connection, run, newly, "message failed")) if newly else set()
    failed = await connection.fetchval(
        sql.COUNT_FAILED,
        delivery_key,
        len(newly),
        len(returned) if run.pool_id is not None else 0,
    )
    known = {r["recipient_id"] for r in targeted}
    return FailuresRecorded(
        returned=len(returned),
        kept=[r for r in newly if r not in returned],
        unknown=[r for r in wanted if r not in known],
        failed_messages=int(failed),
    )
