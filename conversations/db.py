"""Database work of the live path, on a few threads of its own that keep their
connection open.

Channels' ``database_sync_to_async`` runs every call of a process on one thread and,
with ``CONN_MAX_AGE=0`` (which PostgreSQL's connection pool requires, and Django advises
under ASGI), connects and disconnects around each call: on SQLite a new connection, its
pragmas and functions each time (about a millisecond of CPU), on PostgreSQL a pool
checkout. With many replies streaming, every send, flush and final save of the process
queued on that one thread (bench/, figure 4).

``db_call`` runs a function on one of ``CHAT_DB_THREADS`` long-lived threads instead.
Each keeps its connection between calls and opens a new one only after an error, so a
database that restarts costs one failed call per thread, not an outage. Pages, the
admin and everything else keep Django's usual handling.
"""

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, Error, connections

T = TypeVar("T")

_pool: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    with _lock:
        if "executor" not in _pool:
            _pool["executor"] = ThreadPoolExecutor(
                max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chatsite-db"
            )
        return _pool["executor"]


def _in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        return function(*args, **kwargs)
    except Error:
        # Broken or in an unknown state: the next call of this thread reconnects.
        connection.close()
        raise
    finally:
        # CONN_MAX_AGE=0 would have the connection closed when it is next checked; this
        # thread's connection lives on (and on PostgreSQL keeps its pooled connection).
        connection.close_at = None


async def db_call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on a live-path database thread."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, _in_thread, function, *args, **kwargs)
    return await loop.run_in_executor(_executor(), call)


def db(function: Callable[..., T]) -> Callable[..., Any]:
    """A decorator: the function becomes a coroutine run by ``db_call``."""

    @functools.wraps(function)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        return await db_call(function, *args, **kwargs)

    return wrapper


def on_every_thread(function: Callable[[], Any]) -> None:
    """Run ``function`` once on each database thread (its connection is the thread's
    own): a task per thread, held at a barrier so that no thread takes two."""
    everyone = threading.Barrier(settings.CHAT_DB_THREADS, timeout=10)

    def once() -> None:
        try:
            everyone.wait()
        finally:
            function()

    waits = [_executor().submit(once) for _ in range(settings.CHAT_DB_THREADS)]
    for wait in waits:
        wait.result()


def shutdown() -> None:
    """Close the threads' connections and stop them (tests, before the test database
    is dropped)."""
    if "executor" not in _pool:
        return
    on_every_thread(connections.close_all)
    with _lock:
        executor = _pool.pop("executor")
    executor.shutdown(wait=True)
