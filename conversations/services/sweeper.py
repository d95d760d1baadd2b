"""Crash recovery: replies whose run died end as ``interrupted``, keeping what was saved.

Every worker sweeps every half lease (worker.py): a streaming reply whose heartbeat is
older than ``CHAT_RUN_LEASE_S`` was left by a worker that died or stalled. A worker
that starts again under the same name ends the replies it was running at once.
"""

import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import events, hooks, metrics
from ..live import control
from ..models import Message
from ..runs import registry
from ..runs.agent import ended_calls

log = logging.getLogger(__name__)


def sweep_in_the_way(conversation, alive: list[str]) -> list[Message]:
    """The conversation's dead streaming reply, swept in a transaction of its own: a
    send the database refused as busy tries once more when it found one."""
    with transaction.atomic():
        return sweep_stale(Message.objects.filter(conversation=conversation), alive)


def sweep_stale(replies, alive: list[str], *, stale_only: bool = True) -> list[Message]:
    """Mark streaming replies whose heartbeat went stale as interrupted (in a transaction).

    ``alive`` are the replies this process is running: never swept, however late.
    """
    stale = replies.filter(status=Message.Status.STREAMING).exclude(pk__in=alive)
    if stale_only:
        cutoff = timezone.now() - timedelta(seconds=settings.CHAT_RUN_LEASE_S)
        stale = stale.filter(updated_at__lt=cutoff)
    stale = list(stale.select_for_update())
    now = timezone.now()
    for message in stale:
        message.status = Message.Status.INTERRUPTED
        message.error = {
            "code": "interrupted",
            "detail": "The worker running this reply stopped; the text saved so far is kept.",
        }
        message.completed_at = now
        # Tool calls it was running when its worker died end with it.
        message.tool_calls = ended_calls(
            message.tool_calls or [],
            "interrupted",
            "interrupted",
            "The worker running this call stopped.",
        )
        message.save(update_fields=["status", "error", "completed_at", "updated_at", "tool_calls"])
        hooks.run(hooks.reply_final, message)
    return stale


@database_sync_to_async
def _sweep_all(alive: list[str]) -> list[Message]:
    with transaction.atomic():
        return sweep_stale(Message.objects.all(), alive)


async def sweep_replies() -> list[Message]:
    """End every reply whose run died, and tell its viewers."""
    swept = await _sweep_all(registry.local_message_ids())
    return await announce(swept, "its run stopped sending heartbeats")


@database_sync_to_async
def _sweep_worker(worker: str) -> list[Message]:
    with transaction.atomic():
        return sweep_stale(Message.objects.filter(worker=worker), [], stale_only=False)


async def sweep_own_replies() -> list[Message]:
    """At a worker's start: the replies it was running when it stopped (killed, crashed)
    end now, as interrupted with what was saved, rather than when their lease expires."""
    swept = await _sweep_worker(registry.worker_id())
    return await announce(swept, "its worker restarted")


async def announce(swept: list[Message], why: str) -> list[Message]:
    """Tell each swept reply's viewers that it ended (its final event)."""
    metrics.REPLIES_FINISHED.labels(Message.Status.INTERRUPTED).inc(len(swept))
    for message in swept:
        log.warning("reply %s interrupted: %s", message.id, why)
        await control.publish(message.conversation_id, events.message_final(message))
    return swept
