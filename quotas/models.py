"""Limits (for a group, for a person) and what each person has used so far."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

_EMPTY = "Empty: as the defaults say. 0: no limit."


class Limits(models.Model):
    """The five limits; an empty one is inherited (a person's from their groups, a
    group's from the defaults of the environment)."""

    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True, help_text=_EMPTY)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True, help_text=_EMPTY)
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Replies started per minute. " + _EMPTY
    )
    streaming_replies = models.PositiveIntegerField(
        null=True, blank=True, help_text="Replies streaming at once. " + _EMPTY
    )
    connections = models.PositiveIntegerField(
        null=True, blank=True, help_text="Live connections open at once. " + _EMPTY
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class GroupQuota(Limits):
    """A group's limits: its members' unless their own say otherwise. A person in several
    groups gets the most generous figure of each limit."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="quota")

    class Meta:
        verbose_name = "group quota"

    def __str__(self) -> str:
        return f"Quota of {self.group}"


class UserQuota(Limits):
    """One person's own limits, over their groups' and the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"Quota of {self.user}"


class Usage(models.Model):
    """What one person used: tokens today and this month (UTC; counted while a token
    limit applies to them), and the replies started in the current minute (while a
    limit on them applies)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    day = models.DateField()
    day_tokens = models.PositiveBigIntegerField(default=0)
    month = models.DateField(help_text="The first day of the month counted.")
    month_tokens = models.PositiveBigIntegerField(default=0)
    minute_start = models.DateTimeField(null=True, blank=True)
    minute_requests = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "usage"
        verbose_name_plural = "usage"

    def __str__(self) -> str:
        return f"Usage of {self.user}"
