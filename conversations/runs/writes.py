"""What a run writes to the database: its text as it streams, and its final state.

Every ORM call of a process runs on one thread. The flushes that queue while it is busy
go to the database together, in one call and one transaction (a group commit): with
many replies streaming, one hop to that thread and one commit serve them all.
"""

import asyncio
import weakref
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from ..models import Message


class _Flushes:
    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, str, asyncio.Future, dict]] = {}
        self.writer: asyncio.Task | None = None

    async def write(self, message_id: str, *, seq: int, content: str, **fields: Any) -> bool:
        """Save a reply's text and seq (and ``fields``: an agent's tool calls)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending[message_id] = (seq, content, future, fields)
        if self.writer is None or self.writer.done():
            self.writer = loop.create_task(self._write_pending(), name="run-flushes")
        try:
            return await future
        finally:
            if message_id in self.pending and self.pending[message_id][2] is future:
                del self.pending[message_id]  # cancelled before its turn: nothing to save

    async def _write_pending(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                ended = await save_texts(
                    {k: (seq, text, more) for k, (seq, text, _, more) in batch.items()}
                )
            except Exception as exc:
                for _, _, future, _ in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for message_id, (_, _, future, _) in batch.items():
                if not future.done():
                    future.set_result(message_id not in ended)


_flushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flushes]" = (
    weakref.WeakKeyDictionary()
)


def flushes() -> _Flushes:
    loop = asyncio.get_running_loop()
    if (flushes := _flushers.get(loop)) is None:
        flushes = _flushers[loop] = _Flushes()
    return flushes


@database_sync_to_async
def save_texts(texts: dict[str, tuple[int, str, dict]]) -> set[str]:
    """Save streaming replies' text and seq; returns the ids of those that had ended
    (the sweeper or a stop in another process saved them first)."""
    now = timezone.now()
    ended = set()
    with transaction.atomic():
        for message_id, (seq, content, more) in texts.items():
            if not Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
                content=content, seq=seq, updated_at=now, **more
            ):
                ended.add(message_id)
    return ended


@database_sync_to_async
def save_final(message_id: str, *, status: str, **fields: Any) -> Message | None:
    """A reply's final state; None if it had ended already (a sweeper or a stop in
    another process saved it first, and told its viewers)."""
    updated = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        status=status, completed_at=timezone.now(), updated_at=timezone.now(), **fields
    )
    if not updated:
        return None
    return Message.objects.get(pk=message_id)
