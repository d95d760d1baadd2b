"""The audit log and the ratings, read-only in the admin.

Nobody adds, changes or deletes audit rows here, superusers included; only superusers
read them. Ratings are readable by whoever may read transcripts; only users change
theirs, and only holders of ``review.delete_feedback`` (superusers) delete one, as
deleting a conversation deletes its ratings.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .. import selectors
from ..models import Feedback, TranscriptView


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)


def _conversation_link(conversation_id, label) -> str:
    url = reverse("admin:conversations_conversation_change", args=[conversation_id])
    return format_html('<a href="{}">{}</a>', url, label)


@admin.register(TranscriptView)
class TranscriptViewAdmin(_ReadOnlyAdmin):
    list_display = ["viewed_at", "username", "conversation_link", "via"]
    list_filter = ["via", "viewed_at"]
    search_fields = ["username", "=conversation_ref"]
    date_hierarchy = "viewed_at"
    list_select_related = ["conversation"]
    show_facets = admin.ShowFacets.NEVER
    actions = None

    def has_view_permission(self, request, obj=None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="conversation", ordering="conversation_ref")
    def conversation_link(self, obj: TranscriptView) -> str:
        if obj.conversation is None:
            return f"{obj.conversation_ref} (deleted)"
        return _conversation_link(obj.conversation_ref, obj.conversation)


@admin.register(Feedback)
class FeedbackAdmin(_ReadOnlyAdmin):
    list_display = ["updated_at", "rating", "user", "comment", "conversation_link"]
    list_filter = ["rating", "updated_at"]
    search_fields = ["comment", "user__username"]
    list_select_related = ["user", "message__conversation"]
    show_facets = admin.ShowFacets.NEVER
    actions = None

    def has_view_permission(self, request, obj=None) -> bool:
        return selectors.can_read_transcripts(request.user)

    @admin.display(description="conversation")
    def conversation_link(self, obj: Feedback) -> str:
        conversation = obj.message.conversation
        return _conversation_link(conversation.pk, conversation)
