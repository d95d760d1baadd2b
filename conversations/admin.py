"""Presets and API keys in the admin. Staff define the shared presets (no owner), which
everyone can start a new chat from; people's own presets are listed too. Staff see
every API key (never the key itself: only its prefix) and revoke any. (Conversations'
admin is staff review's, in review/admin/.)"""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from .llm import catalog
from .models import ApiKey, Preset
from .services import apikeys


class PresetForm(forms.ModelForm):
    model = forms.ChoiceField(required=False, help_text="Empty: the default model.")

    class Meta:
        model = Preset
        fields = ["name", "owner", "model", "system_prompt", "temperature"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "The default model")] + [(m.name, m.short) for m in catalog.models()]
        current = self.initial.get("model")
        if current and current not in {name for name, _ in choices}:
            choices.append((current, f"{current} (no longer configured)"))
        self.fields["model"].choices = choices


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    form = PresetForm
    list_display = ["name", "owner", "model", "temperature", "created_at"]
    list_filter = [("owner", admin.EmptyFieldListFilter)]
    search_fields = ["name", "system_prompt"]
    autocomplete_fields = ["owner"]


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "In use"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        usable = queryset.filter(revoked_at__isnull=True)
        if self.value() == "expired":
            return usable.filter(expires_at__lte=now)
        if self.value() == "active":
            return usable.exclude(expires_at__lte=now)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Every key: whose, which, how used. Only its expiry is changed here; keys are made
    by their owners (or ``manage.py create_api_key``) and revoked with the action."""

    list_display = [
        "prefix",
        "name",
        "owner",
        "scope",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = [KeyStateFilter, "scope"]
    search_fields = ["prefix", "name", "owner__username"]
    list_select_related = ["owner"]
    fields = [
        "owner",
        "name",
        "prefix",
        "scope",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = [name for name in fields if name != "expires_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        count = apikeys.revoke_api_keys(keys=queryset)
        self.message_user(
            request,
            f"{count} key{'s' if count != 1 else ''} revoked; "
            "they stopped working within a second.",
            messages.SUCCESS,
        )
