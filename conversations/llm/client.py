"""Which chat model answers, and the client that reaches it: ``ChatOpenAI`` when an
OpenAI-compatible server is configured, else the built-in offline demo model; and what a
failure of the model means for people (``describe_failure``), which is knowledge of the
openai SDK and httpx.
"""

import asyncio
import functools
import weakref

import httpx
from django.conf import settings
from langchain_core.language_models import BaseChatModel

from . import catalog
from .offline import OFFLINE_MODEL_NAME, OfflineChatModel

# Upstream text kept for staff (the admin transcript, the log), never shown to users.
UPSTREAM_CHARS = 2000
OFFLINE_LABEL = catalog.OFFLINE_LABEL


def uses_real_model() -> bool:
    """Whether the default model is a real one (not the offline demo)."""
    return not catalog.default().offline


def model_name() -> str:
    """The default model's name, saved on each reply it writes and shown in the UI."""
    return catalog.default().name


def model_label(name: str | None = None) -> str:
    """What a person sees of a model: its label; the offline model says what it is."""
    found = catalog.find(name) if name else catalog.default()
    if found is None:
        return catalog.OFFLINE_LABEL if name == OFFLINE_MODEL_NAME else str(name)
    return found.shown


class per_loop:
    """Cache what ``factory`` makes for its arguments, one per event loop: a model's HTTP
    client (aiohttp) belongs to the loop it first ran on (tests run a loop each; a worker
    has one)."""

    def __init__(self, factory) -> None:
        functools.update_wrapper(self, factory)
        self.factory = factory
        self.made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.outside: dict = {}  # made with no loop running

    def __call__(self, *args):
        try:
            made = self.made.setdefault(asyncio.get_running_loop(), {})
        except RuntimeError:
            made = self.outside
        if args not in made:
            made[args] = self.factory(*args)
        return made[args]

    def cache_clear(self) -> None:
        self.made.clear()
        self.outside.clear()

    def made_here(self) -> list:
        """What was made for the running loop (and forget it)."""
        return list(self.made.pop(asyncio.get_running_loop(), {}).values())


def get_llm(name: str | None = None) -> BaseChatModel:
    """The chat model of a catalog name (the default when None or no longer configured),
    one client per model and event loop."""
    return _llm(catalog.for_reply(name))


@per_loop
def _llm(spec: catalog.ChatModel) -> BaseChatModel:
    if spec.offline:
        return OfflineChatModel(delay_ms=settings.CHAT_OFFLINE_DELAY_MS)
    from langchain_openai import ChatOpenAI

    client_options = {
        # Servers such as vLLM or llama.cpp accept any key; the SDK insists on one.
        "api_key": spec.api_key or "unused",
        "base_url": spec.base_url or None,
        # The read timeout bounds the silence between two chunks on the wire; the run's
        # watchdog bounds the silence between parsed chunks (see runs/run.py), so the
        # per-chunk wrapper, which costs a task per chunk, stays off.
        "timeout": httpx.Timeout(
            settings.CHAT_CHUNK_TIMEOUT_S, connect=settings.CHAT_CONNECT_TIMEOUT_S
        ),
        "max_retries": settings.CHAT_MODEL_RETRIES,
    }
    # aiohttp under the SDK (its own public option): about a quarter less CPU per
    # streamed chunk than its default httpx transport (bench/, figure 3).
    client = _chunk_dict_client()(**client_options, http_client=_aiohttp_client())
    return ChatOpenAI(
        model=spec.model,
        stream_usage=True,
        stream_chunk_timeout=None,
        root_async_client=client,
        async_client=client.chat.completions,
        **client_options,
    )


def preload() -> None:
    """Import what the first reply from a model server would (the openai SDK, its aiohttp
    transport, ``ChatOpenAI``), so that a worker can load it before it serves."""
    from langchain_openai import ChatOpenAI  # noqa: F401

    _chunk_dict_client()
    _aiohttp_client()


def forget_models() -> None:
    """Drop the kept clients (the settings changed)."""
    _llm.cache_clear()


async def close_clients() -> None:
    """Close the HTTP clients of this loop's models (before the loop itself ends)."""
    for found in _llm.made_here():
        client = getattr(found, "root_async_client", None)
        if client is not None:
            await client.close()


def _aiohttp_client():
    import openai

    return openai.DefaultAioHttpClient()


@functools.cache
def _chunk_dict_client() -> type:
    """The openai SDK's async client, except that streamed chat chunks stay the dicts
    parsed from the wire.

    ``ChatOpenAI`` reads a chunk as a dict, and calls ``model_dump()`` on anything else:
    building the SDK's object for every chunk only to dump it again was most of the CPU
    a reply cost (bench/, figure 3). Everything else is the SDK's own.
    """
    import openai
    from openai.types.chat import ChatCompletionChunk

    class ChunkDictClient(openai.AsyncOpenAI):
        def _process_response_data(self, *, data, cast_to, response):
            if cast_to is ChatCompletionChunk and isinstance(data, dict):
                return data
            return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    return ChunkDictClient


class ModelStalled(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _refused(exc: BaseException) -> bool:
    """Whether a connection to the model server was refused or could not be made, however
    the SDK reported it (its aiohttp transport reports a refused connection as a
    connect timeout; the cause it chains says what happened)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError) or type(exc).__name__ == "ClientConnectorError":
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def describe_failure(exc: BaseException, *, streaming: bool) -> dict:
    """What the reply's ``error`` says of anything the model raised: a ``code``, a
    ``detail`` a person can act on, and for staff only, ``upstream``: what the model
    server or the network said (its error body may hold anything, HTML included).
    ``streaming`` tells whether the model had started sending text."""
    import openai  # a dependency of langchain-openai

    def error(code: str, detail: str) -> dict:
        upstream = None if isinstance(exc, ModelStalled) else f"{type(exc).__name__}: {exc}"
        found = {"code": code, "detail": detail}
        if upstream:
            found["upstream"] = upstream[:UPSTREAM_CHARS]
        return found

    if isinstance(exc, ModelStalled):
        return error(exc.code, exc.detail)
    if _refused(exc):
        return error("model_unreachable", "Could not reach the model server.")
    timed_out = isinstance(exc, TimeoutError | openai.APITimeoutError) or (
        type(exc).__name__
        in {"ReadTimeout", "TimeoutException", "ServerTimeoutError", "SocketTimeoutError"}
    )
    if timed_out:
        if streaming:
            return error("chunk_timeout", "The model stopped sending text mid-reply.")
        return error("model_timeout", "The model server did not answer in time.")
    if isinstance(exc, openai.APIStatusError):
        return error(
            "model_error", f"The model server answered with an error (HTTP {exc.status_code})."
        )
    broken = isinstance(exc, openai.APIConnectionError) or type(exc).__module__.startswith(
        ("httpx", "httpcore", "aiohttp")
    )
    if broken and streaming:
        # The SDK reports a connection that breaks mid-stream as a connection error.
        return error("model_stream_broken", "The model's stream broke off mid-reply.")
    if broken:
        return error("model_unreachable", "Could not reach the model server.")
    return error("model_error", "The model failed to answer.")
