"""The staff live view: ``/ws/admin/conversations/<uuid>/``.

The chat's viewer of a conversation's events (the same snapshot, frames and gap-free
joining), for staff who may read transcripts, on any conversation, and read-only: staff
never send, stop or regenerate as the user. Each connection is an audited reading.
"""

from channels.db import database_sync_to_async

from conversations import errors, events
from conversations.consumers import CLOSE_NOT_FOUND, Refused, ViewerConsumer
from conversations.errors import ChatError
from conversations.models import Conversation

from . import selectors, services
from .models import TranscriptView

CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _open_transcript(user, conversation_id) -> Conversation | None:
    """Any conversation, for staff allowed to read transcripts; the reading is logged."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is not None:
        services.transcript_views_record(
            user=user, conversation_ids=[conversation.pk], via=TranscriptView.Via.LIVE
        )
    return conversation


class TranscriptConsumer(ViewerConsumer):
    async def find_conversation(self, user, conversation_id) -> Conversation:
        if not await database_sync_to_async(selectors.can_read_transcripts)(user):
            raise Refused(CLOSE_FORBIDDEN)
        conversation = await _open_transcript(user, conversation_id)
        if conversation is None:
            raise Refused(CLOSE_NOT_FOUND)
        return conversation

    def handlers(self) -> dict:
        writes = (events.MESSAGE_SEND, events.REPLY_STOP, events.REPLY_REGENERATE)
        return {**super().handlers(), **dict.fromkeys(writes, self.refuse_writing)}

    async def refuse_writing(self, request: dict) -> None:
        raise ChatError(errors.READ_ONLY)
