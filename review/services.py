"""Write paths of staff review and of users' feedback on replies.

Views and the admin only parse and authorise, then call these.
"""

from collections.abc import Iterable
from itertools import islice
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from conversations import errors
from conversations.errors import ChatError
from conversations.models import Conversation, Message

from .models import Feedback, TranscriptView

FEEDBACK_COMMENT_CHARS = 2000
_AUDIT_BATCH = 1000


# --- feedback ---------------------------------------------------------------------------


def check_feedback(rating: Any, comment: Any) -> tuple[int | None, str]:
    """Validate a rating (1, -1, or None to withdraw it) and its optional comment."""
    if isinstance(rating, bool) or rating not in (Feedback.Rating.UP, Feedback.Rating.DOWN, None):
        raise errors.invalid_field("rating", "1, -1 or null")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise errors.invalid_field("comment", "a string")
    comment = comment.strip()
    if len(comment) > FEEDBACK_COMMENT_CHARS:
        raise ChatError(
            "comment_too_long",
            f"The comment has {len(comment)} characters; the limit is {FEEDBACK_COMMENT_CHARS}.",
            status=413,
        )
    return rating, comment


def feedback_give(*, message: Message, user, rating: Any, comment: Any = "") -> Feedback | None:
    """Rate a reply, change the rating, or withdraw it (``rating=None``)."""
    rating, comment = check_feedback(rating, comment)
    if message.role != Message.Role.ASSISTANT:
        raise ChatError("not_a_reply", "Only the assistant's replies can be rated.")
    if message.status == Message.Status.STREAMING:
        raise ChatError("not_final", "This reply is still streaming; rate it when it ends.", 409)
    if rating is None:
        Feedback.objects.filter(message=message, user=user).delete()
        return None
    feedback, _ = Feedback.objects.update_or_create(
        message=message, user=user, defaults={"rating": rating, "comment": comment}
    )
    return feedback


# --- review -----------------------------------------------------------------------------


def conversation_review(
    *, conversation: Conversation, reviewer, flagged: bool, notes: str, reviewed: bool
) -> Conversation:
    """Save a reviewer's judgement. Marking reviewed records who and when, once: saving
    notes later keeps the first mark; unmarking clears it."""
    conversation.flagged = flagged
    conversation.review_notes = notes
    if reviewed and conversation.reviewed_at is None:
        conversation.reviewed_by = reviewer
        conversation.reviewed_at = timezone.now()
    elif not reviewed:
        conversation.reviewed_by = None
        conversation.reviewed_at = None
    # Never `updated_at`: that is the conversation's last chat activity.
    conversation.save(update_fields=["flagged", "review_notes", "reviewed_by", "reviewed_at"])
    return conversation


def conversations_mark_reviewed(*, conversations: QuerySet[Conversation], reviewer) -> int:
    """Mark reviewed those not yet reviewed; returns how many were."""
    return Conversation.objects.filter(
        pk__in=conversations.values("pk"), reviewed_at__isnull=True
    ).update(reviewed_by=reviewer, reviewed_at=timezone.now())


def conversations_flag(*, conversations: QuerySet[Conversation], flagged: bool = True) -> int:
    return Conversation.objects.filter(pk__in=conversations.values("pk")).update(flagged=flagged)


# --- the audit log ----------------------------------------------------------------------


def transcript_views_record(*, user, conversation_ids: Iterable, via: str) -> None:
    """Record that ``user`` read these conversations' transcripts (page, live, export)."""
    ids = iter(conversation_ids)
    while batch := list(islice(ids, _AUDIT_BATCH)):
        TranscriptView.objects.bulk_create(
            TranscriptView(
                user=user,
                username=user.get_username(),
                conversation_id=conversation_id,
                conversation_ref=conversation_id,
                via=via,
            )
            for conversation_id in batch
        )
