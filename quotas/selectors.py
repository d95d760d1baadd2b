"""What people used against their limits: one person's (the chat shows it to them) and
everyone's, nearest their limits first (staff's usage page)."""

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from .limits import Limits, limits_for
from .models import Usage


@dataclass
class Standing:
    """Tokens used today and this month beside their limits (0: none)."""

    user: Any
    day_tokens: int
    month_tokens: int
    limits: Limits

    @property
    def nearest(self) -> float:
        """How close the person is to a token limit, as a fraction (1: reached)."""
        shares = [
            used / limit
            for used, limit in (
                (self.day_tokens, self.limits.tokens_per_day),
                (self.month_tokens, self.limits.tokens_per_month),
            )
            if limit
        ]
        return max(shares, default=0.0)

    @property
    def text(self) -> str:
        """What the chat shows, e.g. "12,300 of 100,000 tokens today"; empty with no
        token limit."""
        parts = []
        if self.limits.tokens_per_day:
            parts.append(f"{self.day_tokens:,} of {self.limits.tokens_per_day:,} tokens today")
        if self.limits.tokens_per_month:
            what = "this month" if parts else "tokens this month"
            parts.append(f"{self.month_tokens:,} of {self.limits.tokens_per_month:,} {what}")
        return " · ".join(parts)

    def as_json(self) -> dict:
        return {
            "day": {"used": self.day_tokens, "limit": self.limits.tokens_per_day},
            "month": {"used": self.month_tokens, "limit": self.limits.tokens_per_month},
            "text": self.text,
        }


def _standing(usage: Usage | None, user: Any, user_id: Any) -> Standing:
    today = timezone.now().date()
    day = usage.day_tokens if usage is not None and usage.day == today else 0
    month = usage.month_tokens if usage is not None and usage.month == today.replace(day=1) else 0
    return Standing(user, day, month, limits_for(user_id))


def standing_of(user) -> Standing:
    """One person's tokens today and this month against their limits."""
    return _standing(Usage.objects.filter(user_id=user.pk).first(), user, user.pk)


def nearest_limits(limit: int = 200) -> list[Standing]:
    """Everyone who used tokens this month, nearest a token limit first, then by tokens
    used today."""
    month = timezone.now().date().replace(day=1)
    found = [
        _standing(usage, usage.user, usage.user_id)
        for usage in Usage.objects.filter(month=month).select_related("user")
    ]
    found.sort(key=lambda s: (-s.nearest, -s.day_tokens, -s.month_tokens))
    return found[:limit]
