"""Staff's view of webhooks: every endpoint (editable, can be disabled), and every
delivery with its attempts (read-only, redeliverable). Secrets are never shown here."""

from django import forms
from django.contrib import admin, messages

from conversations.errors import ChatError

from . import services, signing
from .addresses import check_url
from .models import EVENT_TYPES, Attempt, Delivery, Endpoint


class EndpointAdminForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Endpoint
        fields = ["owner", "url", "description", "event_types", "enabled", "disabled_reason"]

    def clean_url(self):
        try:
            return check_url(self.cleaned_data["url"])
        except ChatError as exc:
            raise forms.ValidationError(exc.detail) from None


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointAdminForm
    list_display = ["url", "owner", "enabled", "failing_since", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "description", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = ["failing_since", "previous_secret_expires_at", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        if not obj.secret:
            # Shown to nobody here: the owner rotates it on their Webhooks page to see one.
            obj.secret = signing.new_secret()
        if obj.enabled and "enabled" in form.changed_data:
            obj.disabled_reason, obj.failing_since = "", None
        super().save_model(request, obj, form, change)


class AttemptInline(admin.TabularInline):
    model = Attempt
    fields = ["number", "started_at", "status_code", "error", "duration_ms", "response_excerpt"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["event_type", "endpoint", "owner", "status", "attempts", "created_at"]
    list_filter = ["status", "event__type", "created_at"]
    search_fields = ["endpoint__url", "endpoint__owner__username"]
    list_select_related = ["event", "endpoint__owner"]
    date_hierarchy = "created_at"
    inlines = [AttemptInline]
    readonly_fields = [
        "event_id_header",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "redelivery_of",
        "created_at",
        "finished_at",
        "payload",
    ]
    fields = readonly_fields
    actions = ["redeliver"]

    @admin.display(description="event", ordering="event__type")
    def event_type(self, obj):
        return obj.event.type

    @admin.display(description="webhook-id")
    def event_id_header(self, obj):
        return obj.event.webhook_id

    @admin.display(ordering="endpoint__owner__username")
    def owner(self, obj):
        return obj.endpoint.owner

    def payload(self, obj):
        return obj.event.payload

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redeliver_permission(self, request):
        return request.user.has_perm("webhooks.change_endpoint")

    @admin.action(description="Deliver the selected events again", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        sent = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                services.redeliver(delivery=delivery)
                sent += 1
            except ChatError as exc:
                self.message_user(request, f"{delivery.id}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"{sent} on their way again.")
