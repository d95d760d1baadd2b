"""The core's whole view of webhooks: record an event in the transaction of the change
it reports, and start the delivery loop.

``record_*`` are called inside the transaction that saves the change (a reply's final
save, the sweeper marking a reply interrupted, a conversation created or deleted): the
event and its deliveries commit or roll back with it, so a crash never loses one and a
rolled-back change never sends one. They do database writes only — one query when the
owner has no endpoint — and no network: delivery happens later, elsewhere.
"""

import json
import logging

from django.db import transaction
from django.utils import timezone

from conversations import events as protocol
from conversations.models import Conversation, Message

from .models import CONVERSATION_CREATED, CONVERSATION_DELETED, Delivery, Endpoint, Event

log = logging.getLogger(__name__)


def record_reply_final(message: Message) -> None:
    """A reply reached its final state (completed, failed, cancelled, interrupted)."""
    event_type = protocol.FINAL_TYPES.get(message.status)
    if event_type is None:
        return
    endpoints = _wanting(
        Endpoint.objects.filter(owner__conversations=message.conversation_id), event_type
    )
    if endpoints:
        conversation = Conversation.objects.get(pk=message.conversation_id)
        data = {
            "conversation": protocol.conversation_out(conversation),
            "message": protocol.message_out(message),
        }
        _record(conversation.owner_id, event_type, data, endpoints)


def record_conversation_created(conversation: Conversation) -> None:
    _record_conversation(conversation, CONVERSATION_CREATED)


def record_conversation_deleted(conversation: Conversation) -> None:
    """Call before the delete, in its transaction: the payload is the conversation as it was."""
    _record_conversation(conversation, CONVERSATION_DELETED)


def start_delivery() -> None:
    """Start this process's delivery loop on the running event loop (once per loop)."""
    from . import delivery

    delivery.start()


def _record_conversation(conversation: Conversation, event_type: str) -> None:
    endpoints = _wanting(Endpoint.objects.filter(owner_id=conversation.owner_id), event_type)
    if endpoints:
        data = {"conversation": protocol.conversation_out(conversation)}
        _record(conversation.owner_id, event_type, data, endpoints)


def _wanting(endpoints, event_type: str) -> list[Endpoint]:
    # Few endpoints per user (CHAT_MAX_WEBHOOKS_PER_USER): filter the types here rather
    # than with JSON lookups that differ between databases.
    return [e for e in endpoints.filter(enabled=True) if event_type in e.event_types]


def _record(owner_id, event_type: str, data: dict, endpoints: list[Endpoint]) -> None:
    now = timezone.now()
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    event = Event.objects.create(
        owner_id=owner_id,
        type=event_type,
        payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
    )
    Delivery.objects.bulk_create(
        Delivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints
    )
    transaction.on_commit(_wake_delivery)


def _wake_delivery() -> None:
    from . import delivery

    delivery.wake()
