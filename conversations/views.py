"""The pages: the chat page with the history sidebar."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import llm, selectors, services


def _page(request, conversation=None):
    return render(
        request,
        "conversations/chat.html",
        {
            "conversation": conversation,
            "history": selectors.conversations_for(request.user)[:200],
            "model_label": llm.model_label(conversation.model if conversation else None),
            "offline": not llm.uses_real_model(),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        },
    )


@login_required
def home(request):
    return _page(request)


@login_required
@require_POST
def conversation_new(request):
    conversation = services.conversation_create(owner=request.user)
    return redirect("conversation", conversation_id=conversation.id)


@login_required
def conversation_page(request, conversation_id):
    conversation = selectors.conversation_for(request.user, conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return _page(request, conversation)
