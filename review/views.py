"""Users' ratings of replies, from the chat page (feedback.js).

``GET /feedback/?conversation=<uuid>`` → ``{"ratings": {message id: {"rating", "comment"}}}``
``POST /feedback/<message uuid>/`` with ``{"rating": 1 | -1 | null, "comment": "…"}``
(``null`` withdraws the rating) → ``{"message", "rating", "comment"}``.

A user rates only replies in their own conversations; anything else is 404.
"""

import json
from functools import wraps

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from conversations import selectors as conversation_selectors
from conversations.errors import ChatError, json_refusal

from . import selectors, services


def _refusal(code: str, detail: str, status: int) -> JsonResponse:
    return json_refusal(ChatError(code, detail, status))


def _login_required(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return _refusal("unauthenticated", "Log in to rate replies.", 401)
        return view(request, *args, **kwargs)

    return wrapped


def _out(message_id, feedback) -> dict:
    return {
        "message": str(message_id),
        "rating": feedback.rating if feedback else None,
        "comment": feedback.comment if feedback else "",
    }


@require_GET
@_login_required
def feedback_list(request):
    conversation = conversation_selectors.conversation_for(
        request.user, request.GET.get("conversation", "")
    )
    if conversation is None:
        raise Http404("No such conversation.")
    ratings = selectors.feedback_of(user=request.user, conversation=conversation)
    return JsonResponse(
        {"ratings": {message_id: _out(message_id, f) for message_id, f in ratings.items()}}
    )


@require_POST
@_login_required
def feedback_give(request, message_id):
    message = selectors.reply_to_rate(user=request.user, message_id=message_id)
    if message is None:
        raise Http404("No such reply.")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _refusal("invalid_json", "Send one JSON object.", 400)
    try:
        feedback = services.feedback_give(
            message=message,
            user=request.user,
            rating=body.get("rating"),
            comment=body.get("comment", ""),
        )
    except ChatError as exc:
        return json_refusal(exc)
    return JsonResponse(_out(message.pk, feedback))
