"""The settings page's form for an endpoint; the rules themselves are in services.py."""

from django import forms

from .models import EVENT_TYPES


class EndpointForm(forms.Form):
    url = forms.CharField(
        label="URL", max_length=2000, help_text="https://… that receives the POSTs"
    )
    description = forms.CharField(
        max_length=200, required=False, help_text="What listens there, e.g. “billing job”."
    )
    event_types = forms.MultipleChoiceField(
        label="Events",
        choices=[(t, t) for t in EVENT_TYPES],
        initial=list(EVENT_TYPES),
        widget=forms.CheckboxSelectMultiple,
    )
