"""OpenAI tool calls through ``/v1/chat/completions``: the client's own tools.

A request that offers ``tools`` (or carries assistant ``tool_calls`` and ``role:
"tool"`` results) is answered here. chatsite does not run these tools: it passes them
to the model, returns the model's calls in OpenAI's format (``message.tool_calls``,
or streamed ``delta.tool_calls``, with ``finish_reason: "tool_calls"``), and the
client's next request, with the results as ``tool`` messages, continues. Every
exchange is saved like any other: the request's history and its new message(s) (a
user message, or the tool results) in a conversation of the key's owner, and the
reply with its calls (``status: "requested"``).

The model sees the request's messages as the client sends them (the client holds the
state, as with OpenAI); with ``X-Conversation-Id`` only the new message(s) are added
to that conversation.
"""

import json
from dataclasses import dataclass, field

from django.conf import settings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages import ToolMessage as LcToolMessage

from . import errors
from .errors import ChatError
from .openai_requests import ChatCompletionIn, ChatMessageIn, RequestRefused, _check_sizes, _text
from .text import check_text

REQUESTED = "requested"


def uses_tools(body: ChatCompletionIn) -> bool:
    return bool(body.tools) or any(m.role == "tool" or m.tool_calls for m in body.messages)


@dataclass
class ToolRequest:
    system: str
    # Rows to save: (role, content, {tool_calls | tool_call_id}).
    history: list[tuple] = field(default_factory=list)
    inputs: list[tuple] = field(default_factory=list)  # the new message(s), saved last
    messages: list[BaseMessage] = field(default_factory=list)  # what the model sees
    tools: list[dict] = field(default_factory=list)
    tool_choice: str | dict | None = None


def _arguments(raw: str) -> dict:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _calls(message: ChatMessageIn) -> list[dict]:
    """An assistant message's tool calls as saved on its row."""
    return [
        {
            "id": call.id,
            "name": call.function.name,
            "args": _arguments(call.function.arguments),
            "arguments": call.function.arguments,
            "status": REQUESTED,
            "output": None,
            "error": None,
        }
        for call in message.tool_calls or []
    ]


def _row(message: ChatMessageIn) -> tuple:
    role = "assistant" if message.role == "assistant" else message.role
    if role == "tool":
        return ("tool", _text(message), {"tool_call_id": message.tool_call_id or ""})
    return (role, _text(message), {"tool_calls": _calls(message)} if message.tool_calls else {})


def read(body: ChatCompletionIn) -> ToolRequest:
    """The request as the model sees it and as it is saved; a refusal names the message
    at fault."""
    _check_sizes(body.messages)
    messages = body.messages
    if messages[-1].role not in ("user", "tool"):
        raise ChatError(
            errors.INVALID_MESSAGES, "The last message must be the user's or a tool result."
        )
    asked: set[str] = set()
    for index, message in enumerate(messages):
        for call in message.tool_calls or []:
            for value in (call.id, call.function.name, call.function.arguments):
                try:
                    check_text(value, f"messages.{index}.tool_calls")
                except ChatError as refusal:
                    raise RequestRefused(
                        refusal.code, refusal.detail, param=f"messages.{index}.tool_calls"
                    ) from None
            asked.add(call.id)
        if message.role == "tool" and message.tool_call_id not in asked:
            raise RequestRefused(
                "invalid_messages",
                "A tool message must answer a tool call of an earlier assistant message.",
                param=f"messages.{index}.tool_call_id",
            )
    start = len(messages) - 1
    while messages[-1].role == "tool" and start > 0 and messages[start - 1].role == "tool":
        start -= 1
    system = "\n\n".join(_text(m) for m in messages if m.role in ("system", "developer"))
    dialogue = [m for m in messages if m.role not in ("system", "developer")]
    cut = len(dialogue) - (len(messages) - start)
    found = ToolRequest(
        system=system,
        history=[_row(m) for m in dialogue[:cut]],
        inputs=[_row(m) for m in dialogue[cut:]],
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
        tool_choice=body.tool_choice,
    )
    found.messages = [SystemMessage(system or settings.CHAT_SYSTEM_PROMPT)]
    for message in dialogue:
        text = _text(message)
        if message.role == "user":
            found.messages.append(HumanMessage(text))
        elif message.role == "assistant":
            calls = [{"id": c["id"], "name": c["name"], "args": c["args"]} for c in _calls(message)]
            found.messages.append(AIMessage(text, tool_calls=calls))
        else:
            found.messages.append(LcToolMessage(text, tool_call_id=message.tool_call_id))
    return found


def first_user_text(request: ToolRequest) -> str:
    return next(
        (content for role, content, _ in request.history + request.inputs if role == "user"), ""
    )


# --- answering: the calls in OpenAI's format --------------------------------------------


def requested(calls: list[dict] | None) -> list[dict]:
    return [call for call in calls or [] if call.get("status") == REQUESTED]


def tool_calls_out(calls: list[dict]) -> list[dict]:
    """A reply's requested calls as OpenAI's ``tool_calls``."""
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": call.get("arguments") or json.dumps(call.get("args") or {}),
            },
        }
        for call in calls
    ]


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    """The same calls as streamed ``delta.tool_calls`` (each whole, with its index)."""
    return [{"index": index, **call} for index, call in enumerate(tool_calls_out(calls))]
