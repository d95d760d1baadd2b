"""Live connections per person (WebSockets and event streams), capped at their
``connections`` limit on every worker.

With Redis (REDIS_URL) each person has a sorted set of their open connections, scored by
when each expires; one script drops the expired, counts and adds, atomically, so
parallel connects on any number of workers cannot overshoot. Each worker renews its
connections' entries every REFRESH_S seconds, so a worker that dies frees its entries
within TTL_S. On the in-memory layer everything runs in one process, which counts them
itself. A Redis that cannot be reached refuses nothing here (the live layer itself is
down then, and the connection says so).
"""

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from conversations import errors
from conversations.db import db_call
from conversations.live import layer

from .limits import limits_for, remembered_limits

log = logging.getLogger(__name__)

TTL_S = 60.0
REFRESH_S = 20.0
# A connection waits no longer than this for Redis to count it.
REDIS_TIMEOUT_S = 2.0

# KEYS[1]: the person's set. ARGV: now, limit, TTL, the connection's member.
_OPEN = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 2))
return 1
"""

_open: dict[str, str] = {}  # this process's connections in Redis: member → key
_local: Counter = Counter()  # without Redis: user id → connections open


def _key(user_id: Any) -> str:
    # Under the channel layer's prefix: deployments (and test runs) that share one Redis
    # never count each other's connections.
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "chatsite")
    return f"{prefix}:quota.connections.{user_id}"


async def _nothing() -> None:
    return None


async def open_connection(user_id: Any, kind: str) -> Callable[[], Awaitable[None]]:
    """A place for one more live connection of the person (hooks.connection_opening), or
    ChatError ``too_many_connections``; returns what frees the place."""
    # Read from the database at most once per limits.CACHE_S per person: a stream opened
    # under load does not queue behind the flushes for it.
    limits = remembered_limits(user_id) or await db_call(limits_for, user_id)
    limit = limits.connections
    if not limit:
        return _nothing
    key = _key(user_id)
    client = layer.redis(key)
    if client is None:
        if _local[user_id] >= limit:
            raise errors.too_many_connections(limit)
        _local[user_id] += 1
        return _local_release(user_id)
    member = f"{kind}.{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            admitted = await client.eval(_OPEN, 1, key, time.time(), limit, TTL_S, member)
    except Exception as exc:
        # Redis is down: the live layer with it, which the connection reports itself.
        log.warning("could not count a live connection in Redis (%s); let through", exc)
        return _nothing
    if not admitted:
        raise errors.too_many_connections(limit)
    _open[member] = key

    async def release() -> None:
        if _open.pop(member, None) is None:
            return
        try:
            await layer.redis(key).zrem(key, member)
        except Exception as exc:
            log.warning("could not free a live connection's place (%s); it expires", exc)

    return release


def _local_release(user_id: Any) -> Callable[[], Awaitable[None]]:
    released = False

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            _local[user_id] -= 1
            if _local[user_id] <= 0:
                del _local[user_id]

    return release


def forget() -> None:
    """Count this process's connections from nothing (tests: a new database)."""
    _local.clear()
    _open.clear()


async def refresh() -> None:
    """Renew the entries of this process's open connections."""
    expires = time.time() + TTL_S
    for member, key in list(_open.items()):
        # XX: an entry freed meanwhile is not made again.
        await layer.redis(key).zadd(key, {member: expires}, xx=True)


async def _refresh_forever() -> None:
    while True:
        await asyncio.sleep(REFRESH_S)
        try:
            await refresh()
        except Exception as exc:
            log.warning("could not renew live connections' entries (%s)", exc)


_refresher: asyncio.Task | None = None


def start_refresher() -> None:
    """In every worker (hooks.worker_started)."""
    global _refresher
    if _refresher is None or _refresher.done():
        _refresher = asyncio.get_running_loop().create_task(_refresh_forever())
