"""What the app does around its life: start-up puts its long-lived heap out of the
garbage collector's sight (a full collection stopped the event loop ~100 ms: B1's p99),
and shutdown gives it back."""

import gc

from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings


async def test_start_up_freezes_the_heap_and_shutdown_thaws_it(
    settings: Settings, database_url: str
) -> None:
    gc.unfreeze()
    application = create_app(settings, database_url=database_url)
    async with LifespanManager(application):
        # Modules, the app and its pools: far more than any request leaves behind.
        assert gc.get_freeze_count() > 50_000
    assert gc.get_freeze_count() == 0
