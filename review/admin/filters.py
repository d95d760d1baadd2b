"""The conversation list's filters: by owner (typed, not listed), reviewed, failed
replies, tool calls (used, failed), feedback, "needs attention" (failed or thumbs-down)
and last activity."""

from django.contrib import admin

from .. import selectors
from ..models import Feedback


class OwnerFilter(admin.SimpleListFilter):
    """A username typed in, not a list of every user: there may be thousands."""

    title = "owner"
    parameter_name = "owner"
    template = "admin/review/input_filter.html"

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        yield {
            "value": self.value() or "",
            # The other filters, search and ordering stay as they are.
            "hidden": [
                (name, value)
                for name, values in changelist.filter_params.items()
                if name != self.parameter_name
                for value in values
            ],
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(owner__username__iexact=self.value().strip())
        return queryset


class ReviewedFilter(admin.SimpleListFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(reviewed_at__isnull=self.value() == "no")
        return queryset


class FailedRepliesFilter(admin.SimpleListFilter):
    title = "failed replies"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Has failed or interrupted replies"), ("no", "None")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.with_failed_replies())
        if self.value() == "no":
            return queryset.filter(~selectors.with_failed_replies())
        return queryset


class ToolCallsFilter(admin.SimpleListFilter):
    title = "tool calls"
    parameter_name = "tools"

    def lookups(self, request, model_admin):
        return [("used", "Replies that called tools"), ("failed", "A tool call failed")]

    def queryset(self, request, queryset):
        if self.value() in ("used", "failed"):
            return queryset.filter(selectors.with_tool_calls(failed=self.value() == "failed"))
        return queryset


class FeedbackFilter(admin.SimpleListFilter):
    title = "feedback"
    parameter_name = "feedback"

    def lookups(self, request, model_admin):
        return [
            ("down", "Has thumbs down"),
            ("up", "Has thumbs up"),
            ("any", "Has any rating"),
            ("none", "No rating"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "down":
                return queryset.filter(selectors.with_rating(Feedback.Rating.DOWN))
            case "up":
                return queryset.filter(selectors.with_rating(Feedback.Rating.UP))
            case "any":
                return queryset.filter(selectors.with_rating())
            case "none":
                return queryset.filter(~selectors.with_rating())
        return queryset


class AttentionFilter(admin.SimpleListFilter):
    """Failed replies *or* thumbs down in one list: filters combine with AND."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Failed reply or thumbs down")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(
                selectors.with_failed_replies() | selectors.with_rating(Feedback.Rating.DOWN)
            )
        return queryset


class LastActivityFilter(admin.DateFieldListFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "last activity"
