"""A reply to an OpenAI client that offered its own tools (openai_tools.py): the plain
Run, whose model also streams tool calls. chatsite does not run them; their chunks
(the arguments come in pieces) are gathered as they stream and saved with the reply as
``requested`` calls, which ``/v1`` returns to the client."""

import json
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import Runnable

from ..models import Message
from ..text import sanitize
from .run import Run, launch


class _Gathering:
    """Stands in for the chain: the bound model's stream, with its tool-call chunks
    gathered on the side."""

    def __init__(self, model: Runnable) -> None:
        self.model = model
        self.gathered: AIMessageChunk | None = None

    async def astream(self, messages):
        async for chunk in self.model.astream(messages):
            if chunk.tool_call_chunks:
                self.gathered = chunk if self.gathered is None else self.gathered + chunk
            yield chunk

    def calls(self) -> list[dict]:
        if self.gathered is None:
            return []
        found = []
        for index, piece in enumerate(self.gathered.tool_call_chunks):
            raw = sanitize(piece.get("args") or "")  # model output: made storable
            try:
                args = json.loads(raw or "{}")
            except ValueError:
                args = {}
            found.append(
                {
                    "id": sanitize(piece.get("id") or f"call_{index}"),
                    "name": sanitize(piece.get("name") or ""),
                    "args": args if isinstance(args, dict) else {},
                    "arguments": raw,
                    "status": "requested",
                    "output": None,
                    "error": None,
                }
            )
        return found


class ClientToolsRun(Run):
    async def save_final(self, *, status: str, **fields: Any) -> Message | None:
        return await super().save_final(status=status, tool_calls=self.chain.calls(), **fields)


def start_client_tools_run(*, message: Message, messages: list, model: Runnable) -> Run:
    """Start a reply whose model may ask for the client's tools."""
    return launch(ClientToolsRun(message=message, inputs=messages, chain=_Gathering(model)))
