"""Whose limits are what: a person's own (UserQuota), else their groups' (the most
generous figure among them), else the defaults of the environment (CHAT_QUOTA_*,
CHAT_MAX_STREAMING_PER_USER). 0 is no limit.

What staff set is read from the database at most every CACHE_S seconds per person and
process, so a reply's start costs no query for it; the defaults are read each time.
"""

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .models import GroupQuota, UserQuota

FIELDS = (
    "tokens_per_day",
    "tokens_per_month",
    "requests_per_minute",
    "streaming_replies",
    "connections",
)
CACHE_S = 5.0


@dataclass(frozen=True)
class Limits:
    tokens_per_day: int
    tokens_per_month: int
    requests_per_minute: int
    streaming_replies: int
    connections: int

    @property
    def on_usage(self) -> bool:
        """Whether a limit needs the person's Usage row (tokens, replies per minute)."""
        return bool(self.tokens_per_day or self.tokens_per_month or self.requests_per_minute)

    @property
    def on_replies(self) -> bool:
        """Whether any limit applies to a reply's start."""
        return self.on_usage or bool(self.streaming_replies)


def defaults() -> Limits:
    return Limits(
        tokens_per_day=settings.CHAT_QUOTA_TOKENS_PER_DAY,
        tokens_per_month=settings.CHAT_QUOTA_TOKENS_PER_MONTH,
        requests_per_minute=settings.CHAT_QUOTA_REQUESTS_PER_MINUTE,
        streaming_replies=settings.CHAT_MAX_STREAMING_PER_USER,
        connections=settings.CHAT_QUOTA_CONNECTIONS,
    )


_set: dict[Any, tuple[float, dict | None, list[dict]]] = {}


def _what_staff_set(user_id: Any) -> tuple[dict | None, list[dict]]:
    now = time.monotonic()
    found = _set.get(user_id)
    if found is not None and found[0] > now:
        return found[1], found[2]
    own = UserQuota.objects.filter(user_id=user_id).values(*FIELDS).first()
    groups = list(GroupQuota.objects.filter(group__user__id=user_id).values(*FIELDS))
    if len(_set) > 10_000:
        _set.clear()
    _set[user_id] = (now + CACHE_S, own, groups)
    return own, groups


def forget(user_id: Any = None) -> None:
    """Read what staff set again at the next check (of one person, or of everyone)."""
    if user_id is None:
        _set.clear()
    else:
        _set.pop(user_id, None)


def limits_for(user_id: Any) -> Limits:
    """A person's limits (database access: call it off the event loop)."""
    return _limits(*_what_staff_set(user_id))


def remembered_limits(user_id: Any) -> Limits | None:
    """A person's limits when what staff set for them was read less than CACHE_S ago,
    else None: no database access (the event loop may call it)."""
    found = _set.get(user_id)
    if found is None or found[0] <= time.monotonic():
        return None
    return _limits(found[1], found[2])


def _limits(own: dict | None, groups: list[dict]) -> Limits:
    base = defaults()
    chosen = {}
    for field in FIELDS:
        if own is not None and own[field] is not None:
            chosen[field] = own[field]
            continue
        given = [group[field] for group in groups if group[field] is not None]
        if given:
            chosen[field] = 0 if 0 in given else max(given)
        else:
            chosen[field] = getattr(base, field)
    return Limits(**chosen)
