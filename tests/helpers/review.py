"""Builders for the staff-review tests: staff users with given permissions, and
conversations with messages, ratings and dates set directly in the database."""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from conversations.models import Conversation, Message
from review.models import Feedback

READ = ("conversations", "view_conversation")
REVIEW = ("review", "review_conversation")


def staff(username: str, *perms: tuple[str, str]):
    user = get_user_model().objects.create_user(username, password=f"{username}-password-1")
    user.is_staff = True
    user.save()
    for app_label, codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def conversation(
    owner,
    title: str,
    *,
    source: str = Conversation.Source.WEB,
    model: str = "offline-demo",
    at: datetime | None = None,
    **fields,
) -> Conversation:
    conv = Conversation.objects.create(
        owner=owner, title=title, source=source, model=model, **fields
    )
    if at is not None:
        Conversation.objects.filter(pk=conv.pk).update(created_at=at, updated_at=at)
        conv.refresh_from_db()
    return conv


def message(
    conv: Conversation,
    role: str,
    content: str = "",
    *,
    status: str = Message.Status.COMPLETED,
    at: datetime | None = None,
    **fields,
) -> Message:
    msg = Message.objects.create(
        conversation=conv, role=role, content=content, status=status, **fields
    )
    if at is not None:
        Message.objects.filter(pk=msg.pk).update(created_at=at)
        msg.refresh_from_db()
    return msg


def exchange(conv: Conversation, question: str, answer: str, *, at=None, **reply_fields):
    """A user message and the assistant's reply to it."""
    at = at or timezone.now()
    asked = message(conv, Message.Role.USER, question, at=at)
    reply_fields.setdefault("model", conv.model)
    reply_fields.setdefault("usage", {"prompt_tokens": 10, "completion_tokens": 5})
    reply = message(
        conv,
        Message.Role.ASSISTANT,
        answer,
        reply_to=asked,
        at=at + timedelta(seconds=1),
        **reply_fields,
    )
    return asked, reply


def rate(reply: Message, user, rating: int, comment: str = "") -> Feedback:
    return Feedback.objects.create(message=reply, user=user, rating=rating, comment=comment)
