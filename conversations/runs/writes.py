"""What runs write to the database: their text as they stream, and their final state.

One flusher per process: every ``CHAT_FLUSH_INTERVAL_MS`` it saves the text, seq and
heartbeat of every run of the process that has new text or a heartbeat due, in one
database call and one transaction — so the writes per second of a worker follow the
flush interval, not the number of replies streaming. The same tick checks the runs'
time limits. A run may also flush on its own, when it must renew its lease at once
(see run.py, ``holds_lease``).

A save never takes a reply's text back: a row is updated only while the reply streams
and only with a seq at least as high as the one it holds.
"""

import asyncio
import logging
import time
import uuid
import weakref
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .. import hooks, metrics
from ..db import db
from ..models import Message

log = logging.getLogger(__name__)


class Flusher:
    """The process's flusher (one per event loop): runs join it while they stream."""

    def __init__(self) -> None:
        self.runs: set = set()
        self.task: asyncio.Task | None = None

    def add(self, run) -> None:
        self.runs.add(run)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._tick(), name="flusher")

    def remove(self, run) -> None:
        self.runs.discard(run)

    async def _tick(self) -> None:
        interval = settings.CHAT_FLUSH_INTERVAL_MS / 1000
        while self.runs:
            await asyncio.sleep(interval)
            now = time.monotonic()
            due = []
            for run in list(self.runs):
                run.check_time_limits(now)
                if run.needs_flush(now):
                    due.append(run)
            if due:
                await save(due)


async def save(runs: list) -> None:
    """Save these runs' text and seq in one call; tell each how it went."""
    texts = {run.message_id: (run.seq, run.text(), run.saved_fields()) for run in runs}
    submitted = time.monotonic()
    try:
        ended = await save_texts(texts)
        metrics.FLUSH_SECONDS.observe(time.monotonic() - submitted)
        metrics.FLUSH_REPLIES.observe(len(texts))
    except Exception:
        log.warning("could not flush %d replies; retrying", len(texts), exc_info=True)
        for run in runs:
            run.flush_failed()
        return
    for run in runs:
        run.flushed(
            seq=texts[run.message_id][0], submitted=submitted, ended=run.message_id in ended
        )


_flushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher]" = (
    weakref.WeakKeyDictionary()
)


def flusher() -> Flusher:
    loop = asyncio.get_running_loop()
    if (found := _flushers.get(loop)) is None:
        found = _flushers[loop] = Flusher()
    return found


@db
def save_texts(texts: dict[str, tuple[int, str, dict]]) -> set[str]:
    """Save streaming replies' text and seq (one statement for all, run for each row),
    and the other fields a run keeps (an agent's tool calls); returns the ids of those
    that had ended (a sweeper or a stop in another process saved them first)."""
    if not texts:
        return set()
    pk = Message._meta.pk
    table = connection.ops.quote_name(Message._meta.db_table)
    column = connection.ops.quote_name
    saved_at = timezone.now()
    now = connection.ops.adapt_datetimefield_value(saved_at)
    ids = {message_id: uuid.UUID(message_id) for message_id in texts}
    rows = [
        (content, seq, now, pk.get_db_prep_value(ids[message_id], connection), seq)
        for message_id, (seq, content, more) in texts.items()
        if not more
    ]
    with transaction.atomic():
        if rows:
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET {column('content')} = %s, {column('seq')} = %s, "
                    f"{column('updated_at')} = %s WHERE {column('id')} = %s "
                    f"AND {column('status')} = 'streaming' AND {column('seq')} <= %s",
                    rows,
                )
        for message_id, (seq, content, more) in texts.items():
            if more:  # rare (replies that call tools): one ORM update each
                Message.objects.filter(
                    pk=ids[message_id], status=Message.Status.STREAMING, seq__lte=seq
                ).update(content=content, seq=seq, updated_at=saved_at, **more)
        ended = (
            Message.objects.filter(pk__in=ids.values())
            .exclude(status=Message.Status.STREAMING)
            .values_list("pk", flat=True)
        )
        return {str(message_id) for message_id in ended}


@db
@transaction.atomic  # the final state and what hooks record of it commit together
def save_final(message_id: str, *, status: str, **fields: Any) -> Message | None:
    """A reply's final state; None if it had ended already (a sweeper or a stop in
    another process saved it first, and told its viewers)."""
    updated = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        status=status, completed_at=timezone.now(), updated_at=timezone.now(), **fields
    )
    if not updated:
        return None
    # With its conversation: the hooks ask whose reply it is (quotas/).
    message = Message.objects.select_related("conversation").get(pk=message_id)
    hooks.run(hooks.reply_final, message)
    return message
