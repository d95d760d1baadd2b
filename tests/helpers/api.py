"""Helpers for the integration API's tests: keys, a worker on the stub model, reading SSE."""

import json
import time

from conversations.models import Message
from conversations.services.apikeys import create_api_key

from .protocol import FINAL_TYPES


def stub_env(stub_server: str, **extra: str) -> dict:
    """Environment for a worker whose replies come from the stub OpenAI server."""
    return {
        "OPENAI_BASE_URL": f"{stub_server}/v1",
        "OPENAI_API_KEY": "sk-test",
        "CHAT_MODEL": "stub-model",
        "CHAT_MODEL_RETRIES": "0",
        **extra,
    }


def new_key(user, name: str = "test") -> str:
    return create_api_key(owner=user, name=name)[1]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def read_events(source, *, stop_after_tokens: int | None = None) -> list[dict]:
    """The events of an SSE response (an httpx-sse EventSource, or its ``iter_sse()``
    partly read) as dicts, with the SSE ``id`` and ``event`` kept under ``_id`` and
    ``_event``, up to the first final event, or until ``stop_after_tokens`` tokens."""
    received = []
    for sse in source.iter_sse() if hasattr(source, "iter_sse") else source:
        event = json.loads(sse.data)
        assert event["type"] == sse.event
        received.append({**event, "_id": sse.id, "_event": sse.event})
        if event["type"] in FINAL_TYPES:
            break
        tokens = sum(1 for e in received if e["type"] == "token")
        if stop_after_tokens is not None and tokens >= stop_after_tokens:
            break
    return received


def tokens_of(received: list[dict]) -> list[dict]:
    return [e for e in received if e["type"] == "token"]


def wait_until_final(message_id: str, timeout: float = 20) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = Message.objects.get(pk=message_id)
        if message.is_final:
            return message
        time.sleep(0.05)
    raise AssertionError(f"reply {message_id} still streaming after {timeout} s")
