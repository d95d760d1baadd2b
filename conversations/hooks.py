"""Extension points of the write paths: what another app must check or record in the
same transaction as a reply's start, its final state or a conversation's creation or
deletion, what it starts in every worker, and who may open a live connection.
Webhooks' outbox (webhooks/apps.py) and the quotas (quotas/apps.py) register here, so
the core depends on no app built on it.

Hooks run inside the transaction of the change they follow: an exception rolls the
change back, and a rolled-back change leaves no trace of theirs.
"""

from collections.abc import Awaitable, Callable
from typing import Any

# Called with (owner_id, conversation), inside the transaction that starts a reply,
# before anything of it is saved (conversation None: a new one); raises ChatError to
# refuse the reply. Every surface that starts a reply passes here.
reply_starting: list[Callable[[Any, Any], None]] = []
# Called with the Message, inside the transaction that saves its final state.
reply_final: list[Callable[[Any], None]] = []
# Called with the Conversation, inside the transaction that creates it.
conversation_created: list[Callable[[Any], None]] = []
# Called with the Conversation, inside the transaction that deletes it, before it goes.
conversation_deleted: list[Callable[[Any], None]] = []
# Called with no argument, on the event loop, when a worker starts its background tasks.
worker_started: list[Callable[[], None]] = []


# Awaited with (user_id, kind) before a live connection (``websocket`` or ``sse``) is
# served; raises ChatError to refuse it, else returns an async callable that releases
# the connection's place when it ends.
connection_opening: list[Callable[[Any, str], Awaitable[Callable[[], Awaitable[None]]]]] = []


async def open_connection(user_id: Any, kind: str) -> Callable[[], Awaitable[None]]:
    """Ask every gate whether a live connection may open; the release of all of them."""
    releases = []
    try:
        for gate in connection_opening:
            releases.append(await gate(user_id, kind))
    except BaseException:
        for release in releases:
            await release()
        raise

    async def release() -> None:
        for one in releases:
            await one()

    return release


def run(hooks: list[Callable[..., None]], *args: Any) -> None:
    for hook in hooks:
        hook(*args)
