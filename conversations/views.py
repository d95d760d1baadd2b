"""The pages: the chat page with its history sidebar, the sidebar's actions (search,
rename, delete), and the account pages (log in, sign up, settings with presets).

Thin edges: they parse and authorise, then call a selector or a service.
"""

import uuid

from channels.db import database_sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import registry

from . import events, llm, selectors
from .errors import ChatError, json_refusal
from .llm import catalog
from .models import Conversation
from .services import conversations, presets

HISTORY_LIMIT = 200


def _history(request: HttpRequest, query: str):
    """The sidebar's entries; API traffic only when the page asks (``?api=1``)."""
    shown = selectors.conversations_matching(request.user, query, api=_shows_api(request))
    return shown[:HISTORY_LIMIT]


def _shows_api(request: HttpRequest) -> bool:
    return request.GET.get("api") == "1"


def _page(
    request: HttpRequest,
    conversation: Conversation | None = None,
    *,
    refused: ChatError | None = None,
    draft: str = "",
    missing: bool = False,
    tools: list[str] | None = None,
) -> HttpResponse:
    """The chat page; ``refused`` (with the ``draft`` the person typed, given back in the
    composer) when a new chat was refused."""
    query = request.GET.get("q", "").strip()
    # The model the next reply will use; each reply shows its own.
    model = catalog.for_reply(conversation.model if conversation else None)
    if conversation is not None:
        tools = conversation.tools
    elif tools is None:  # a new chat starts with the default tools
        tools = registry.default_names()
    return render(
        request,
        "conversations/chat.html",
        {
            "conversation": conversation,
            "missing": missing,
            "draft": draft,
            "refusal": refused.detail if refused else "",
            "history": _history(request, query),
            "show_api": _shows_api(request),
            "current_id": conversation.id if conversation else None,
            "query": query,
            "models": catalog.models(),
            "model": model,
            "model_label": model.shown,
            "offline": model.offline,
            "offline_model": llm.OFFLINE_MODEL_NAME,
            "presets": [] if conversation else list(presets.presets_for(request.user)),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "max_system_prompt_chars": settings.CHAT_MAX_SYSTEM_PROMPT_CHARS,
            "default_system_prompt": settings.CHAT_SYSTEM_PROMPT,
            # The tools menu: the conversation's tools, or those a new chat starts with.
            "tools_enabled": tools,
        },
        status=404 if missing else refused.status if refused else 200,
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """A new chat: the composer, ready; the conversation exists once a message is sent."""
    return _page(request)


@login_required
def conversation_page(request: HttpRequest, conversation_id) -> HttpResponse:
    conversation = selectors.conversation_for(request.user, conversation_id)
    if conversation is None:
        # In the app's layout, with the sidebar: the way back is one click away.
        return _page(request, missing=True)
    return _page(request, conversation)


@login_required
@require_POST
async def conversation_new(request: HttpRequest) -> HttpResponse:
    """Start a conversation with its first message (the composer of the new-chat page);
    the reply runs on the server while the browser follows.

    A refusal saves nothing (services.conversations.conversation_start) and answers with
    the new-chat page, the reason shown and the text back in the composer.
    """
    user = await request.auser()
    # A submitted form sends its line breaks as CRLF; a message keeps plain newlines.
    content = request.POST.get("content", "").replace("\r\n", "\n")
    # The composer's tools menu, when the page had one (else the default tools).
    tools = request.POST.getlist("tools") if "tools_chosen" in request.POST else None
    try:
        started = await database_sync_to_async(_new_chat_settings)(user, request.POST)
        conversation, _ = await conversations.conversation_start(
            owner=user, content=content, tools=tools, **started
        )
    except ChatError as refused:
        return await database_sync_to_async(_page)(
            request, refused=refused, draft=content, tools=tools
        )
    return redirect("conversation", conversation_id=conversation.id)


def _new_chat_settings(user, form) -> dict:
    """What the new-chat form chose: a preset (its model, system prompt, temperature),
    and the model picker, which wins over the preset's model."""
    preset_id = form.get("preset", "")
    chosen = presets.preset_settings(presets.preset_for(user, preset_id) if preset_id else None)
    if model := form.get("model", ""):
        chosen["model"] = catalog.check(model)
    return chosen


async def _owned_conversation(request: HttpRequest, conversation_id) -> Conversation:
    conversation = await selectors.aconversation_for(await request.auser(), conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: HttpRequest, default: str) -> str:
    """Where a sidebar form returns to: its `next` field when it is one of ours."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@login_required
@require_POST
async def conversation_rename(request: HttpRequest, conversation_id) -> HttpResponse:
    conversation = await _owned_conversation(request, conversation_id)
    try:
        await conversations.conversation_rename(
            conversation=conversation, title=request.POST.get("title", "")
        )
    except ChatError as exc:
        if _wants_json(request):
            return json_refusal(exc)
        messages.error(request, exc.detail)
    if _wants_json(request):
        return JsonResponse({"conversation": events.conversation_out(conversation)})
    return redirect(_back(request, reverse("conversation", args=[conversation.id])))


@login_required
@require_POST
async def conversation_delete(request: HttpRequest, conversation_id) -> HttpResponse:
    conversation = await _owned_conversation(request, conversation_id)
    await conversations.conversation_delete(conversation=conversation)
    if _wants_json(request):
        return JsonResponse({"deleted": str(conversation_id)})
    # Never back to the page of the conversation just deleted.
    back = _back(request, reverse("home"))
    if str(conversation_id) in back:
        back = reverse("home")
    return redirect(back)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """The sidebar's entries matching `q` (all of them when it is empty), as the HTML
    fragment the page swaps in; `current` marks the open conversation."""
    query = request.GET.get("q", "").strip()
    return render(
        request,
        "conversations/_history.html",
        {
            "history": _history(request, query),
            "query": query,
            "current_id": _uuid_or_none(request.GET.get("current", "")),
        },
    )


# --- accounts ---------------------------------------------------------------------------


def signup(request: HttpRequest) -> HttpResponse:
    """Self sign-up, only where CHAT_SIGNUP_ENABLED is on; otherwise staff create users."""
    if not settings.CHAT_SIGNUP_ENABLED:
        raise Http404("Sign-up is off.")
    if request.user.is_authenticated:
        return redirect("home")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


# --- settings: the account menu's page --------------------------------------------------------


class PresetForm(forms.Form):
    name = forms.CharField(max_length=100)
    model = forms.ChoiceField(required=False)
    system_prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        max_length=settings.CHAT_MAX_SYSTEM_PROMPT_CHARS,
    )
    temperature = forms.FloatField(required=False, min_value=0, max_value=2)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "The default model")] + [
            (m.name, m.short) for m in catalog.models()
        ]


@login_required
@require_http_methods(["GET", "POST"])
def account_settings(request: HttpRequest) -> HttpResponse:
    """The account menu's Settings: the password, API keys, exports, and presets (yours
    to make and delete, and staff's shared ones)."""
    form = PresetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            presets.preset_create(owner=request.user, **form.cleaned_data)
        except ChatError as refused:
            form.add_error(None, refused.detail)
        else:
            messages.success(request, "The preset is saved: pick it when you start a new chat.")
            return redirect("settings")
    return render(
        request,
        "conversations/settings.html",
        {"form": form, "presets": list(presets.presets_for(request.user))},
    )


@login_required
@require_POST
def preset_delete(request: HttpRequest, preset_id: int) -> HttpResponse:
    try:
        presets.preset_delete(owner=request.user, preset_id=preset_id)
    except ChatError as refused:
        raise Http404(refused.detail) from None
    messages.success(request, "The preset is deleted.")
    return redirect("settings")
