"""The Webhooks settings page, beside API keys: a person's endpoints, and for each its
deliveries with every attempt, and redelivery.

A new secret is shown once, in the answer to the form that made it (not stored in the
session, not carried over a redirect); afterwards only whether it exists is.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from conversations.errors import ChatError

from . import selectors, services
from .forms import EndpointForm
from .models import EVENT_TYPES

DELIVERIES_PER_PAGE = 20


def _no_store(response):
    response["Cache-Control"] = "no-store"
    return response


def _owned(request, endpoint_id):
    endpoint = selectors.endpoint_for(request.user, endpoint_id)
    if endpoint is None:
        raise Http404("No such webhook endpoint.")
    return endpoint


@login_required
@require_http_methods(["GET", "POST"])
def endpoints(request):
    form = EndpointForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = services.endpoint_create(
                owner=request.user,
                url=form.cleaned_data["url"],
                description=form.cleaned_data["description"],
                event_types=form.cleaned_data["event_types"],
            )
            form = EndpointForm()
        except ChatError as exc:
            form.add_error("url" if exc.code == "invalid_url" else None, exc.detail)
    return _no_store(
        render(
            request,
            "webhooks/endpoints.html",
            {
                "form": form,
                "endpoints": selectors.endpoints_for(request.user),
                "created": created,
                "event_types": EVENT_TYPES,
            },
        )
    )


@login_required
@require_http_methods(["GET", "POST"])
def endpoint(request, endpoint_id):
    """One endpoint: its settings, and its deliveries, newest first, with their attempts."""
    endpoint = _owned(request, endpoint_id)
    new_secret = None
    form = EndpointForm(
        request.POST or None,
        initial={
            "url": endpoint.url,
            "description": endpoint.description,
            "event_types": endpoint.event_types,
        },
    )
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "save" and form.is_valid():
                services.endpoint_update(
                    endpoint=endpoint,
                    url=form.cleaned_data["url"],
                    description=form.cleaned_data["description"],
                    event_types=form.cleaned_data["event_types"],
                )
                messages.success(request, "Saved.")
                return redirect("webhook", endpoint_id=endpoint.id)
            if action in ("enable", "disable"):
                services.endpoint_update(endpoint=endpoint, enabled=action == "enable")
                return redirect("webhook", endpoint_id=endpoint.id)
            if action == "rotate":
                new_secret = services.secret_rotate(endpoint=endpoint)
                endpoint.refresh_from_db()
        except ChatError as exc:
            form.add_error("url" if exc.code == "invalid_url" else None, exc.detail)
    page = Paginator(selectors.deliveries_of(endpoint), DELIVERIES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return _no_store(
        render(
            request,
            "webhooks/endpoint.html",
            {"endpoint": endpoint, "form": form, "page": page, "new_secret": new_secret},
        )
    )


@login_required
@require_POST
def delete(request, endpoint_id):
    services.endpoint_delete(endpoint=_owned(request, endpoint_id))
    messages.success(request, "The endpoint is deleted; nothing more is sent to it.")
    return redirect("webhooks")


@login_required
@require_POST
def redeliver(request, endpoint_id, delivery_id):
    endpoint = _owned(request, endpoint_id)
    delivery = selectors.delivery_of(endpoint, delivery_id)
    if delivery is None:
        raise Http404("No such delivery.")
    try:
        services.redeliver(delivery=delivery)
        messages.success(request, f"{delivery.event.type} is on its way again.")
    except ChatError as exc:
        messages.error(request, exc.detail)
    return redirect("webhook", endpoint_id=endpoint.id)
