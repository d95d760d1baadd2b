"""Staff review of conversations in the Django admin.

The list (annotated, one query per page whatever its length), the filters, the
transcript page (sanitised Markdown, live while a reply streams, every opening
audited), the review form, the exports and the usage overview. Reading needs
``conversations.view_conversation``; reviewing needs ``review.review_conversation`` too
(see review/selectors.py). The write paths are in review/services.py.
"""

from datetime import datetime, time, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import ngettext

from conversations.models import Conversation

from .. import exports, selectors, services, transcript
from ..models import TranscriptView
from .filters import (
    AttentionFilter,
    FailedRepliesFilter,
    FeedbackFilter,
    LastActivityFilter,
    OwnerFilter,
    ReviewedFilter,
    ToolCallsFilter,
)

USAGE_DAYS_DEFAULT = 14
USAGE_DAYS_MAX = 90
USAGE_ROWS_PER_PAGE = 200  # per user per day: a row per active user per day


# --- the review form --------------------------------------------------------------------


class ReviewForm(forms.ModelForm):
    reviewed = forms.BooleanField(
        required=False,
        label="Reviewed",
        help_text="Ticking records you and the time; unticking clears them.",
    )

    class Meta:
        model = Conversation
        fields = ["flagged", "review_notes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "reviewed" in self.fields:
            self.fields["reviewed"].initial = self.instance.reviewed_at is not None


# --- the admin --------------------------------------------------------------------------


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    form = ReviewForm
    list_display = [
        "display_title",
        "owner",
        "source",
        "model",
        "message_count",
        "tokens_used",
        "last_reply_status",
        "flagged",
        "reviewed",
        "created_at",
        "last_activity",
    ]
    list_display_links = ["display_title"]
    list_select_related = ["owner", "reviewed_by"]
    list_filter = [
        AttentionFilter,
        FailedRepliesFilter,
        ToolCallsFilter,
        FeedbackFilter,
        "flagged",
        ReviewedFilter,
        "source",
        "api_traffic",
        "model",
        ("created_at", admin.DateFieldListFilter),
        ("updated_at", LastActivityFilter),
        OwnerFilter,
    ]
    search_fields = ["title", "messages__content"]
    search_help_text = "Searches titles and the text of every message."
    date_hierarchy = "created_at"
    list_per_page = 50
    # Counts per filter choice would aggregate every conversation on each page view.
    show_facets = admin.ShowFacets.NEVER
    actions = ["export_json", "export_csv", "mark_reviewed", "flag", "unflag"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("owner", "source"),
                    "title",
                    "model",
                    ("message_count", "tokens_used"),
                    ("created_at", "last_activity"),
                    "system_prompt_shown",
                ]
            },
        ),
        (
            "Review",
            {"fields": ["flagged", "reviewed", "reviewed_by", "reviewed_at", "review_notes"]},
        ),
    ]
    _INFO_FIELDS = (
        "owner",
        "source",
        "title",
        "model",
        "message_count",
        "tokens_used",
        "created_at",
        "last_activity",
        "system_prompt_shown",
        "reviewed_by",
        "reviewed_at",
    )
    _REVIEW_FIELDS = ("flagged", "reviewed", "review_notes")

    # --- permissions --------------------------------------------------------------------

    def has_view_permission(self, request, obj=None) -> bool:
        return selectors.can_read_transcripts(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        # Conversations are never edited here; "change" is reviewing them.
        return selectors.can_review(request.user)

    def has_review_permission(self, request) -> bool:
        return selectors.can_review(request.user)

    def has_add_permission(self, request) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        if self.has_change_permission(request, obj):
            return self._INFO_FIELDS
        return self._INFO_FIELDS + self._REVIEW_FIELDS

    # --- the list -----------------------------------------------------------------------

    def get_queryset(self, request):
        return selectors.conversations_for_review()

    @admin.display(description="title", ordering="title")
    def display_title(self, obj: Conversation) -> str:
        return obj.title or "(untitled)"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count

    @admin.display(description="tokens", ordering="tokens_used")
    def tokens_used(self, obj: Conversation) -> int:
        return obj.tokens_used

    @admin.display(description="last reply", ordering="last_reply_status")
    def last_reply_status(self, obj: Conversation) -> str:
        return obj.last_reply_status or "—"

    @admin.display(description="reviewed", boolean=True, ordering="reviewed_at")
    def reviewed(self, obj: Conversation) -> bool:
        return obj.reviewed_at is not None

    @admin.display(description="last activity", ordering="updated_at")
    def last_activity(self, obj: Conversation) -> str:
        # Formatted here: the change page shows a method's value as plain text.
        return date_format(timezone.localtime(obj.updated_at), "DATETIME_FORMAT")

    # --- the transcript page ------------------------------------------------------------

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            # Every rendering of a transcript is recorded, before any of it is shown.
            services.transcript_views_record(
                user=request.user, conversation_ids=[obj.pk], via=TranscriptView.Via.PAGE
            )
            shown = transcript.page(obj, request.GET.get("page"))
            context.update(
                transcript=shown,
                # Live on the last page only: that is where new messages appear.
                live_path="" if shown.has_next() else f"/ws/admin/conversations/{obj.pk}/",
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="system prompt")
    def system_prompt_shown(self, obj: Conversation) -> str:
        prompt = obj.system_prompt
        if len(prompt) <= transcript.PREVIEW_CHARS:
            return prompt
        return format_html(
            '{}… <a href="{}">show all {} characters</a>',
            prompt[: transcript.PREVIEW_CHARS],
            reverse("admin:conversations_conversation_text", args=[obj.pk, "system-prompt"]),
            f"{len(prompt):,}",
        )

    def full_text_view(self, request, object_id, part):
        """The whole text of a message (or ``system-prompt``) as plain text: what the
        transcript page shows only the start of. Audited as a reading of the page."""
        conversation = self.get_object(request, object_id)
        if conversation is None or not self.has_view_permission(request, conversation):
            raise PermissionDenied
        if part == "system-prompt":
            text = conversation.system_prompt
        elif (text := selectors.message_text(conversation, part)) is None:
            raise Http404("No such message in this conversation.")
        services.transcript_views_record(
            user=request.user, conversation_ids=[conversation.pk], via=TranscriptView.Via.PAGE
        )
        # text/plain with nosniff (SecurityMiddleware): never taken for HTML.
        return HttpResponse(text, content_type="text/plain; charset=utf-8")

    def save_model(self, request, obj, form, change):
        services.conversation_review(
            conversation=obj,
            reviewer=request.user,
            flagged=form.cleaned_data["flagged"],
            notes=form.cleaned_data["review_notes"],
            reviewed=form.cleaned_data["reviewed"],
        )

    # --- actions ------------------------------------------------------------------------

    def _audit_export(self, request, queryset) -> None:
        services.transcript_views_record(
            user=request.user,
            conversation_ids=queryset.order_by().values_list("pk", flat=True).iterator(),
            via=TranscriptView.Via.EXPORT,
        )

    @admin.action(description="Export selected conversations as JSON", permissions=["view"])
    def export_json(self, request, queryset):
        self._audit_export(request, queryset)
        return exports.json_response(queryset)

    @admin.action(description="Export selected conversations as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        self._audit_export(request, queryset)
        return exports.csv_response(queryset)

    @admin.action(description="Mark selected conversations reviewed", permissions=["review"])
    def mark_reviewed(self, request, queryset):
        count = services.conversations_mark_reviewed(conversations=queryset, reviewer=request.user)
        self.message_user(
            request,
            ngettext("%d conversation marked reviewed.", "%d conversations marked reviewed.", count)
            % count,
            messages.SUCCESS,
        )

    @admin.action(description="Flag selected conversations", permissions=["review"])
    def flag(self, request, queryset):
        count = services.conversations_flag(conversations=queryset, flagged=True)
        self.message_user(request, f"{count} flagged.", messages.SUCCESS)

    @admin.action(description="Unflag selected conversations", permissions=["review"])
    def unflag(self, request, queryset):
        count = services.conversations_flag(conversations=queryset, flagged=False)
        self.message_user(request, f"{count} unflagged.", messages.SUCCESS)

    # --- the usage overview -------------------------------------------------------------

    def get_urls(self):
        usage = path(
            "usage/",
            self.admin_site.admin_view(self.usage_view),
            name="conversations_conversation_usage",
        )
        full_text = path(
            "<path:object_id>/text/<str:part>/",
            self.admin_site.admin_view(self.full_text_view),
            name="conversations_conversation_text",
        )
        return [usage, full_text, *super().get_urls()]

    def usage_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(max(int(request.GET.get("days", USAGE_DAYS_DEFAULT)), 1), USAGE_DAYS_MAX)
        except ValueError:
            days = USAGE_DAYS_DEFAULT
        today = timezone.localdate()
        since = timezone.make_aware(datetime.combine(today - timedelta(days=days - 1), time.min))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Usage overview",
            "days": days,
            "day_choices": [1, 7, 14, 30, 90],
            "since": since,
            "total": selectors.usage_total(since=since),
            "by_day": selectors.usage_by_day(since=since),
            "by_user_day": Paginator(
                selectors.usage_by_user_day(since=since), USAGE_ROWS_PER_PAGE
            ).get_page(request.GET.get("page")),
            "changelist_url": reverse("admin:conversations_conversation_changelist"),
        }
        return TemplateResponse(request, "admin/review/usage.html", context)
