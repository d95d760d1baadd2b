"""Checking a reply's start against its owner's limits, and counting what it spent.

Every surface that starts a reply saves it in one transaction (conversations/services
/replies.py, tool_exchanges.py), which calls check_reply_start first. That locks the
person's row (their user), so the starts of one person's replies pass one at a time, on
any number of workers, and each sees what the one before it saved: the replies
streaming are counted from the messages themselves (a reply that ends however it ends —
completed, failed, stopped, swept — frees its place with no bookkeeping), the replies of
the minute and the tokens of the day and month from their Usage row. A refusal rolls
the transaction back: nothing of the reply is saved and the model is not called. The
check costs no trip of its own, its queries run in the transaction's: with the default
limits, the lock and the count of streaming replies.

A reply's tokens are added to its owner's day and month when its final state is
committed, for people with a token limit (others' usage is on staff review's usage page,
from the replies themselves).
"""

import math
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Length
from django.utils import timezone

from conversations import errors
from conversations.models import Message

from .limits import Limits, limits_for
from .models import Usage

MINUTE = timedelta(seconds=60)
# Characters per token, for replies whose model reported no usage.
CHARS_PER_TOKEN = 4


def check_reply_start(owner_id: Any, conversation: Any) -> None:
    """Refuse a reply past one of the owner's limits (hooks.reply_starting); in the
    transaction that would start it."""
    limits = limits_for(owner_id)
    if not limits.on_replies:
        return
    # The person's lock, held until the transaction ends.
    get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk").first()
    now = timezone.now()
    usage = _usage(owner_id, now) if limits.on_usage else None
    if usage is not None:
        _check_tokens(usage, limits, now)
    if limits.streaming_replies:
        streaming = Message.objects.filter(
            conversation__owner_id=owner_id, status=Message.Status.STREAMING
        )
        if conversation is not None:
            streaming = streaming.exclude(conversation=conversation)
        if streaming.count() >= limits.streaming_replies:
            raise errors.too_many_replies(limits.streaming_replies)
    if limits.requests_per_minute:
        _count_request(usage, limits.requests_per_minute, now)


def _usage(owner_id: Any, now: datetime) -> Usage:
    """The person's Usage row (made when first needed)."""
    usage = Usage.objects.filter(user_id=owner_id).first()
    if usage is not None:
        return usage
    today = now.date()
    try:
        with transaction.atomic():
            return Usage.objects.create(user_id=owner_id, day=today, month=today.replace(day=1))
    except IntegrityError:  # a reply's tokens made it meanwhile
        return Usage.objects.get(user_id=owner_id)


def _check_tokens(usage: Usage, limits: Limits, now: datetime) -> None:
    today = now.date()
    if limits.tokens_per_day:
        used = usage.day_tokens if usage.day == today else 0
        if used >= limits.tokens_per_day:
            raise errors.quota_exceeded(
                "today", used, limits.tokens_per_day, _seconds_until(_next_day(today), now)
            )
    if limits.tokens_per_month:
        used = usage.month_tokens if usage.month == today.replace(day=1) else 0
        if used >= limits.tokens_per_month:
            raise errors.quota_exceeded(
                "this month", used, limits.tokens_per_month, _seconds_until(_next_month(today), now)
            )


def _count_request(usage: Usage, limit: int, now: datetime) -> None:
    """One more reply in the person's current minute (a window that opens with the
    first reply after the last one closed), or a refusal until the window closes."""
    start, count = usage.minute_start, usage.minute_requests
    if start is None or now - start >= MINUTE:
        start, count = now, 0
    if count >= limit:
        raise errors.requests_limited(limit, math.ceil((start + MINUTE - now).total_seconds()))
    Usage.objects.filter(pk=usage.pk).update(minute_start=start, minute_requests=count + 1)


def _next_day(today: date) -> date:
    return today + timedelta(days=1)


def _next_month(today: date) -> date:
    return (today.replace(day=28) + timedelta(days=4)).replace(day=1)


def _seconds_until(day: date, now: datetime) -> int:
    midnight = datetime(day.year, day.month, day.day, tzinfo=now.tzinfo)
    return max(1, math.ceil((midnight - now).total_seconds()))


# --- counting --------------------------------------------------------------------------


def spent(reply: Message) -> int:
    """The tokens a reply spent: prompt + completion as its model reported them, else an
    estimate from the characters of the reply and of the message it answers."""
    usage = reply.usage or {}
    reported = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    if reported:
        return reported
    asked = 0
    if reply.reply_to_id is not None:
        asked = (
            Message.objects.filter(pk=reply.reply_to_id)
            .values_list(Length("content"), flat=True)
            .first()
            or 0
        )
    return math.ceil((asked + len(reply.content or "")) / CHARS_PER_TOKEN)


def record_reply(reply: Message) -> None:
    """Add what a reply spent to its owner's day and month (hooks.reply_final), once its
    final state is committed, when a token limit applies to them.

    Not in that transaction: it holds the reply's row (the sweeper's, the rows of every
    reply it ends), and a start holds its owner's lock while it waits on a reply of its
    conversation; taking the Usage row there too could deadlock the two."""
    owner_id = reply.conversation.owner_id
    limits = limits_for(owner_id)
    if not (limits.tokens_per_day or limits.tokens_per_month):
        return
    tokens = spent(reply)
    if tokens:
        transaction.on_commit(lambda: _add_tokens(owner_id, tokens), robust=True)


def _add_tokens(owner_id: Any, tokens: int) -> None:
    """One update, which starts a new day or month when the row's is over."""
    today = timezone.now().date()
    month = today.replace(day=1)
    for _ in range(2):
        if Usage.objects.filter(user_id=owner_id).update(
            day_tokens=Case(When(day=today, then=F("day_tokens") + tokens), default=Value(tokens)),
            month_tokens=Case(
                When(month=month, then=F("month_tokens") + tokens), default=Value(tokens)
            ),
            day=today,
            month=month,
        ):
            return
        try:  # no row yet: it starts with this reply
            with transaction.atomic():
                Usage.objects.create(
                    user_id=owner_id, day=today, day_tokens=tokens, month=month, month_tokens=tokens
                )
            return
        except IntegrityError:
            continue  # made meanwhile: add to it
