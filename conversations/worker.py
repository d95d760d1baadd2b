"""Background work every worker process does beside serving: sweeping dead replies, and
what other apps start with it (hooks.worker_started: webhooks' deliveries).

Started once per process by the ASGI application on its first connection (so it runs
under daphne, uvicorn or a test server alike), on the process's event loop.
"""

import asyncio
import logging
import weakref

from django.conf import settings

from . import hooks
from .services import sweeper

log = logging.getLogger(__name__)

# The sweeper of each event loop (one per process; tests run a loop per test).
_sweepers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def start_worker_tasks() -> None:
    loop = asyncio.get_running_loop()
    if loop not in _sweepers:
        _sweepers[loop] = loop.create_task(sweep_periodically(), name="sweep-replies")
        hooks.run(hooks.worker_started)


async def sweep_periodically() -> None:
    """Mark replies whose run died as interrupted, at least every half lease."""
    while True:
        await asyncio.sleep(settings.CHAT_RUN_LEASE_S / 2)
        try:
            await sweeper.sweep_replies()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database or Redis outage must not end the sweeper: try again next time.
            log.warning(
                "sweeping replies failed; retrying in %.0f s",
                settings.CHAT_RUN_LEASE_S / 2,
                exc_info=True,
            )


class WorkerTasksMiddleware:
    """ASGI middleware that starts the worker's background tasks with its first call."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            start_worker_tasks()
        return await self.app(scope, receive, send)
