"""Extension points of the write paths: what another app must record in the same
transaction as a reply's final state or a conversation's creation or deletion, and
what it starts in every worker. Webhooks' outbox registers here (webhooks/apps.py), so
the core depends on no app built on it.

Hooks run inside the transaction of the change they follow: an exception rolls the
change back, and a rolled-back change leaves no trace of theirs.
"""

from collections.abc import Callable
from typing import Any

# Called with the Message, inside the transaction that saves its final state.
reply_final: list[Callable[[Any], None]] = []
# Called with the Conversation, inside the transaction that creates it.
conversation_created: list[Callable[[Any], None]] = []
# Called with the Conversation, inside the transaction that deletes it, before it goes.
conversation_deleted: list[Callable[[Any], None]] = []
# Called with no argument, on the event loop, when a worker starts its background tasks.
worker_started: list[Callable[[], None]] = []


def run(hooks: list[Callable[..., None]], *args: Any) -> None:
    for hook in hooks:
        hook(*args)
