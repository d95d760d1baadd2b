"""The channel layer as chatsite uses it: who is addressed (the viewers of a
conversation, the process running its reply, one channel) and whether it is up.

The only module that knows channels_redis' internals (``consistent_hash``,
``connection`` and ``_group_key``, in ``reachable``, ``members`` and ``redis``;
tests/test_pins.py pins them). The layer is lossy by
design — the database holds the durable copy — so senders decide what a failure means.
"""

import asyncio
from typing import Any

from channels.layers import get_channel_layer


def layer():
    return get_channel_layer()


def viewers_group(conversation_id: Any) -> str:
    """Every viewer of a conversation, in any process."""
    return f"conv.{conversation_id}"


def runner_group(conversation_id: Any) -> str:
    """The process that runs the conversation's reply."""
    return f"run.{conversation_id}"


def user_group(user_id: Any) -> str:
    """Every process with a live connection of a user: control messages for them."""
    return f"user.{user_id}"


async def to_viewers(conversation_id: Any, message: dict) -> None:
    await layer().group_send(viewers_group(conversation_id), message)


async def to_runner(conversation_id: Any, message: dict) -> None:
    await layer().group_send(runner_group(conversation_id), message)


async def to_user(user_id: Any, message: dict) -> None:
    await layer().group_send(user_group(user_id), message)


async def to_channel(channel: str, message: dict) -> None:
    await layer().send(channel, message)


async def join(group: str, channel: str) -> None:
    await layer().group_add(group, channel)


async def leave(group: str, channel: str) -> None:
    await layer().group_discard(group, channel)


async def members(group: str) -> list[str]:
    """The channels in a group now: channels_redis' sorted set of them (``_group_key``
    on the group's connection; tests/test_pins.py pins both). Raises when Redis is down."""
    current = layer()
    connection = current.connection(current.consistent_hash(group))
    return [name.decode() for name in await connection.zrange(current._group_key(group), 0, -1)]


async def new_channel() -> str:
    # The default prefix: channels_redis receives all of a process's channels through
    # one blocking pop on it.
    return await layer().new_channel()


async def reachable(conversation_id: Any) -> bool:
    """Whether live events of a conversation can be delivered right now (Redis is up)."""
    current = layer()
    if not hasattr(current, "consistent_hash"):
        return True  # the in-memory layer lives in this process
    try:
        async with asyncio.timeout(2):
            await current.connection(current.consistent_hash(viewers_group(conversation_id))).ping()
    except Exception:
        return False
    return True


def redis(key: str):
    """The layer's Redis connection (of this event loop) for a key of another app's
    (quotas/connections.py), or None on the in-memory layer."""
    current = layer()
    if not hasattr(current, "consistent_hash"):
        return None
    return current.connection(current.consistent_hash(key))
