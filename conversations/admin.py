"""Presets in the admin: staff define the shared ones (no owner), which everyone can
start a new chat from; people's own presets are listed too. (Conversations' admin is
staff review's, in review/admin/.)"""

from django import forms
from django.contrib import admin

from .llm import catalog
from .models import Preset


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
