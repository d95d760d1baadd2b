"""The API keys page: a person makes, names and revokes the keys their integrations use.

A new key is shown once, in the answer to the form that made it (never stored, never
cached, not carried over a redirect); afterwards only its prefix is.
"""

from datetime import UTC, datetime, time

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from . import llm, selectors
from .models import ApiKey
from .services import apikeys


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, required=False, help_text="What uses it, e.g. “backup script”."
    )
    scope = forms.ChoiceField(
        choices=ApiKey.Scope.choices, initial=ApiKey.Scope.CHAT, required=False
    )
    expires = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="optional; it stops working at the start of that day, UTC",
    )

    def clean_expires(self):
        day = self.cleaned_data["expires"]
        if day is None:
            return None
        if day <= timezone.now().date():
            raise forms.ValidationError("Choose a day after today.")
        return datetime.combine(day, time.min, tzinfo=UTC)


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request):
    new_key = None
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, new_key = apikeys.create_api_key(
            owner=request.user,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"] or ApiKey.Scope.CHAT,
            expires_at=form.cleaned_data["expires"],
        )
        form = ApiKeyForm()
    response = render(
        request,
        "conversations/api_keys.html",
        {
            "form": form,
            "keys": selectors.keys_for(request.user),
            "new_key": new_key,
            "now": timezone.now(),
            "base_url": request.build_absolute_uri("/"),
            "model": llm.model_name(),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def revoke(request, key_id: int):
    if apikeys.revoke_api_key(owner=request.user, key_id=key_id):
        messages.success(request, "The key is revoked; it stopped working at once.")
    return redirect("api-keys")
