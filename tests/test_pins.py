"""Pins: each private API chatsite relies on, checked where it lives.

chatsite reaches into a few libraries' internals, each for a measured reason (a comment
at the call site says which). When an upgrade changes one, its test here fails and
names what changed and where chatsite uses it. Written against daphne 4.2.3, autobahn
26.10.2, Twisted 26.10.0, openai 3.57.0, channels 4.3.2, channels-redis 4.3.0,
django-ninja 1.7.1, langchain-core 1.8.3 and django-axes 8.3.1.
"""

import inspect
import uuid
from unittest import mock

# --- chatsite/server.py: daphne, autobahn, Twisted ------------------------------------------


def test_daphne_assigns_its_websocket_factory_and_checks_applications_every_second():
    import inspect

    from daphne.server import Server

    run = inspect.getsource(Server.run)
    assert "self.ws_factory = WebSocketFactory(" in run, "daphne's Server.run changed"
    assert "callLater(1, self.application_checker)" in inspect.getsource(
        Server.application_checker
    ), "daphne no longer checks its applications every second"
    assert inspect.iscoroutinefunction(Server.handle_reply), "daphne's handle_reply changed"


def test_autobahn_applies_the_message_size_limit_to_sends():
    import inspect

    from autobahn.websocket.protocol import WebSocketProtocol

    source = inspect.getsource(WebSocketProtocol.sendMessage)
    assert "self.maxMessagePayloadSize" in source, (
        "autobahn's sendMessage no longer reads maxMessagePayloadSize: "
        "ChatWebSocketProtocol.sendMessage may no longer be needed"
    )


def test_twisted_keeps_unsent_bytes_where_chatsite_reads_them():
    from twisted.internet import abstract

    from chatsite.server import discard_unsent, unsent_bytes

    transport = abstract.FileDescriptor()
    assert unsent_bytes(transport) == 0
    transport._tempDataBuffer.append(b"x" * 10)
    transport._tempDataLen += 10
    assert unsent_bytes(transport) == 10, "Twisted's FileDescriptor buffers changed"
    discard_unsent(transport)
    assert unsent_bytes(transport) == 0


# --- conversations/llm/client.py: the openai SDK --------------------------------------------


def test_the_openai_client_parses_each_streamed_chunk_in_process_response_data():
    import openai
    from openai.types.chat import ChatCompletionChunk

    from conversations.llm.client import _chunk_dict_client

    parameters = inspect.signature(openai.AsyncOpenAI._process_response_data).parameters
    assert {"data", "cast_to", "response"} <= set(parameters), (
        "openai's _process_response_data changed: llm/client.py's ChunkDictClient overrides it"
    )
    client = _chunk_dict_client()(api_key="unused", base_url="http://127.0.0.1:9")
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
    }
    same = client._process_response_data(data=chunk, cast_to=ChatCompletionChunk, response=None)
    assert same is chunk, "streamed chunks are no longer kept as the parsed dicts"


# --- conversations/live/layer.py: channels_redis --------------------------------------------


def test_channels_redis_finds_a_groups_connection_by_consistent_hash():
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"])
    assert callable(layer.consistent_hash) and callable(layer.connection), (
        "channels_redis' consistent_hash/connection changed: live/layer.py reachable() uses them"
    )
    assert layer.consistent_hash("conv.x") in range(len(layer.hosts))


async def test_channels_redis_keeps_a_groups_members_where_members_reads_them(redis_url):
    from channels_redis.core import RedisChannelLayer

    from conversations.live import layer

    redis_layer = RedisChannelLayer(hosts=[redis_url], prefix=f"pin-{uuid.uuid4().hex}")
    group = "conv.pin"
    with mock.patch.object(layer, "layer", return_value=redis_layer):
        await redis_layer.group_add(group, "specific.a!1")
        await redis_layer.group_add(group, "specific.b!2")
        assert sorted(await layer.members(group)) == ["specific.a!1", "specific.b!2"], (
            "channels_redis no longer keeps a group's channels in the sorted set at "
            "_group_key(group): live/layer.py members() reads it"
        )
        await redis_layer.group_discard(group, "specific.a!1")
        assert await layer.members(group) == ["specific.b!2"]
        await redis_layer.flush()


# --- conversations/consumers.py: Channels' dispatch -----------------------------------------


def test_channels_dispatches_every_message_through_the_consumers_dispatch():
    from channels.consumer import AsyncConsumer, get_handler_name

    assert get_handler_name({"type": "chat.frame"}) == "chat_frame"
    assert "self.dispatch" in inspect.getsource(AsyncConsumer.__call__), (
        "Channels no longer routes messages through AsyncConsumer.dispatch, which "
        "consumers.py overrides to skip a database hop per frame"
    )


# --- conversations/api/errors.py: django-ninja's URL patterns -------------------------------


def test_ninja_gives_its_url_patterns_with_their_views_as_callbacks():
    from django.urls import URLPattern
    from ninja import NinjaAPI

    api = NinjaAPI(urls_namespace="pin")

    @api.get("/x")
    async def x(request):
        return {}

    patterns, _, namespace = api.urls
    assert all(isinstance(p, URLPattern) and callable(p.callback) for p in patterns), (
        "django-ninja's api.urls changed: JsonAPI.urls (api/errors.py) wraps its callbacks"
    )
    assert namespace == "pin"


# --- conversations/llm/chain.py: LangChain's RunnableSequence -------------------------------


def test_a_two_step_sequence_exposes_its_first_and_last_steps():
    from langchain_core.runnables import RunnableLambda, RunnableSequence

    first, last = RunnableLambda(lambda x: x), RunnableLambda(lambda x: x)
    sequence = first | last
    assert isinstance(sequence, RunnableSequence)
    assert (sequence.first, sequence.last, len(sequence.steps)) == (first, last, 2), (
        "RunnableSequence.first/last changed: llm/chain.py astream() runs them itself"
    )


def test_axes_marks_a_login_refused_during_a_lockout_without_counting_it(user, settings, rf):
    """access/signals.py tells the failure that locked from the attempts refused after
    it by the request attributes axes sets (it records the first, not the others)."""
    from django.contrib.auth import authenticate
    from django.contrib.sessions.backends.db import SessionStore

    settings.AXES_FAILURE_LIMIT = 1
    seen = []

    for _ in range(2):
        request = rf.post("/login/", REMOTE_ADDR="10.6.6.6")
        request.session = SessionStore()
        assert authenticate(request, username="alice", password="wrong") is None
        seen.append((request.axes_locked_out, request.axes_failures_since_start))
    assert seen == [(True, 1), (True, None)]
