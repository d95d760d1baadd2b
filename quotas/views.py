"""The person's own usage as JSON (the chat's usage line reads it after each reply)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import selectors


@login_required
@require_GET
def usage(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(selectors.standing_of(request.user).as_json())
    response["Cache-Control"] = "no-store"
    return response
