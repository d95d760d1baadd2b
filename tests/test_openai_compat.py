"""The OpenAI-compatible endpoint, driven by clients nobody here wrote: the official
openai SDK (strict response validation on) and LangChain's ChatOpenAI, over real HTTP
to a real daphne worker whose own model is the stub server."""

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from conversations import llm
from conversations.models import Conversation, Message

from .fakes.openai_stub import TRICKY_CHUNKS
from .helpers.api import (
    bearer,
    new_key,
    stub_env,
    wait_until_final,
)
from .helpers.servers import start_daphne

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "stub-model"
MAX_COMPLETION_TOKENS = 40
MAX_MESSAGE_CHARS = 1000
MAX_SYSTEM_PROMPT_CHARS = 500
MAX_REQUEST_MESSAGES = 30


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, stub_server):
    # One streaming reply per user, so a 429 is easy to provoke; small limits, so that
    # requests over them stay small.
    env = stub_env(
        stub_server,
        CHAT_MAX_STREAMING_PER_USER="1",
        CHAT_MAX_COMPLETION_TOKENS=str(MAX_COMPLETION_TOKENS),
        CHAT_MAX_MESSAGE_CHARS=str(MAX_MESSAGE_CHARS),
        CHAT_MAX_SYSTEM_PROMPT_CHARS=str(MAX_SYSTEM_PROMPT_CHARS),
        CHAT_MAX_REQUEST_MESSAGES=str(MAX_REQUEST_MESSAGES),
    )
    worker = start_daphne(env=env, name="openai-compat")
    yield worker
    worker.stop()


@pytest.fixture
def client(server, key):
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, _strict_response_validation=True
    ) as sdk:
        yield sdk


def texts(n: int) -> str:
    return "".join(f"t{i} " for i in range(1, n + 1))


def test_the_sdk_streams_a_reply_with_usage_and_it_is_saved(server, client, key):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tokens=25"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    conversation_id = raw.headers["x-conversation-id"]
    chunks = list(raw.parse())

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == texts(25)
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishing[-1] == "stop" and set(finishing[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 25
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    assert all(c.usage is None for c in chunks[:-1])

    listed = httpx.get(f"{server.url}/api/conversations", headers=bearer(key)).json()
    assert listed["items"][0]["id"] == conversation_id
    assert listed["items"][0]["source"] == "api"
    detail = httpx.get(
        f"{server.url}/api/conversations/{conversation_id}", headers=bearer(key)
    ).json()
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "tokens=25"),
        ("assistant", text),
    ]
    assert detail["messages"][1]["status"] == "completed"


def test_the_sdk_gets_a_whole_completion_without_streaming(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "script=tricky"}]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "".join(TRICKY_CHUNKS)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len(TRICKY_CHUNKS)
    reply = Message.objects.get(conversation_id=raw.headers["x-conversation-id"], role="assistant")
    assert reply.content == completion.choices[0].message.content
    assert completion.id == f"chatcmpl-{reply.id.hex}"


def test_a_chat_history_starts_a_conversation_and_the_header_continues_it(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "tokens=3"},
        ],
    )
    conversation_id = raw.headers["x-conversation-id"]
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.system_prompt == "Answer briefly."
    assert conversation.title == "First question"

    again = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tokens=2"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert again.headers["x-conversation-id"] == conversation_id
    assert again.parse().choices[0].message.content == texts(2)
    stored = list(
        Message.objects.filter(conversation_id=conversation_id).values_list("role", "content")
    )
    assert stored == [
        ("user", "First question"),
        ("assistant", "First answer"),
        ("user", "tokens=3"),
        ("assistant", texts(3)),
        ("user", "tokens=2"),
        ("assistant", texts(2)),
    ]


def test_max_tokens_cuts_the_reply_and_says_so(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tokens=50"}], max_tokens=4
    )
    assert completion.choices[0].message.content == texts(4)
    assert completion.choices[0].finish_reason == "length"


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_above_the_configured_maximum_is_lowered_to_it(client, name):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tokens=50"}], **{name: 10**30}
    )
    assert completion.choices[0].message.content == texts(MAX_COMPLETION_TOKENS)
    assert completion.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tokens=45"}],
        stream=True,
        **{name: MAX_COMPLETION_TOKENS + 1},
    )
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == texts(40)
    assert chunks[-1].choices[0].finish_reason == "length"


def _refused(call, param: str | None, code: str | None, status=openai.BadRequestError):
    with pytest.raises(status) as refused:
        call()
    body = refused.value.body
    assert body["type"] == "invalid_request_error", body
    assert body["message"], body
    assert (body["param"], body["code"]) == (param, code) or (
        code is None and body["param"] == param
    ), body
    return body


# Tools are supported (tests/test_openai_tools.py); the legacy function calling is not.
UNSUPPORTED = [
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        "response_format",
    ),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"n": 2}, "n"),
    ({"stop": ["\n"]}, "stop"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"tool_choice": "auto"}, "tool_choice"),  # without tools
]


@pytest.mark.parametrize(("params", "param"), UNSUPPORTED, ids=[p for _, p in UNSUPPORTED])
def test_unsupported_parameters_are_refused_by_name_and_save_nothing(client, params, param):
    _refused(
        lambda: client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], **params
        ),
        param,
        "unsupported_parameter",
    )
    assert Conversation.objects.count() == 0


def test_legacy_function_calls_and_tool_results_answering_no_call_are_refused(client):
    for messages, param, code in (
        (
            [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "f", "arguments": ""},
                },
                {"role": "user", "content": "and?"},
            ],
            "messages.0.function_call",
            "unsupported_parameter",
        ),
        (
            [
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "user", "content": "and?"},
            ],
            "messages.0.tool_call_id",
            "invalid_messages",
        ),
    ):
        _refused(
            lambda m=messages: client.chat.completions.create(model=MODEL, messages=m),
            param,
            code,
        )
    assert Conversation.objects.count() == 0


def test_defaults_and_nulls_of_unsupported_parameters_are_accepted(client):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "first"},
            # An assistant message sent back as the SDK received it.
            {"role": "assistant", "content": "ok", "refusal": None, "tool_calls": None},
            {"role": "user", "content": "tokens=2"},
        ],
        n=1,
        logprobs=False,
        response_format={"type": "text"},
        extra_body={"tools": None, "functions": None},
        user="someone",
        seed=7,
    )
    assert completion.choices[0].message.content == texts(2)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", True),
        ("max_tokens", "10"),
        ("max_tokens", 1.5),
        ("max_completion_tokens", False),
        ("stream", "yes"),
        ("stream", 1),
        ("temperature", "1"),
        ("temperature", True),
        ("n", "1"),
        ("model", 5),
        ("messages", "hi"),
    ],
)
def test_parameters_of_the_wrong_type_are_400(server, key, field, value):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], field: value}
    response = httpx.post(f"{server.url}/v1/chat/completions", headers=bearer(key), json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert Conversation.objects.count() == 0


def test_every_message_and_the_system_prompt_are_held_to_the_limits(client):
    long = "x" * (MAX_MESSAGE_CHARS + 1)
    for messages, param, code, status in (
        (
            [{"role": "user", "content": long}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "hi"}],
            "messages.0.content", "message_too_long", 413,
        ),
        (
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": long},
             {"role": "user", "content": "hi"}],
            "messages.1.content", "message_too_long", 413,
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": long}]}],
            "messages.0.content", "message_too_long", 413,
        ),
        (
            [{"role": "system", "content": "s" * (MAX_SYSTEM_PROMPT_CHARS + 1)},
             {"role": "user", "content": "hi"}],
            "messages", "system_prompt_too_long", 400,
        ),
        (
            # Two system messages, each within the limit, together over it.
            [{"role": "system", "content": "s" * MAX_SYSTEM_PROMPT_CHARS},
             {"role": "developer", "content": "d"}, {"role": "user", "content": "hi"}],
            "messages", "system_prompt_too_long", 400,
        ),
        (
            [{"role": "user", "content": "hi"}] * (MAX_REQUEST_MESSAGES + 1),
            "messages", None, 400,
        ),
    ):  # fmt: skip
        kind = openai.BadRequestError if status == 400 else openai.APIStatusError
        body = _refused(
            lambda m=messages: client.with_options(max_retries=0).chat.completions.create(
                model=MODEL, messages=m
            ),
            param,
            code,
            kind,
        )
        assert body["param"] == param
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0
    # At the limits exactly, all is accepted and saved.
    at_limit = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "s" * MAX_SYSTEM_PROMPT_CHARS},
            {"role": "user", "content": "x" * MAX_MESSAGE_CHARS},
            {"role": "assistant", "content": "y" * MAX_MESSAGE_CHARS},
            *[{"role": "user", "content": "more"}] * (MAX_REQUEST_MESSAGES - 4),
            {"role": "user", "content": "tokens=1"},
        ],
    )
    conversation = Conversation.objects.get(pk=at_limit.headers["x-conversation-id"])
    assert len(conversation.system_prompt) == MAX_SYSTEM_PROMPT_CHARS


def test_models_lists_the_configured_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")


def test_refusals_are_openai_errors_and_save_nothing(server, client, other_user):
    other = str(Conversation.objects.create(owner=other_user).id)
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}]
        )
    assert unknown_model.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Conversation-Id": other},
        )
    with pytest.raises(openai.BadRequestError) as last_not_user:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "assistant", "content": "hi"}]
        )
    assert last_not_user.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model=MODEL, messages=[], temperature=3)
    assert invalid.value.body["param"] in {"messages", "temperature"}
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="chs_wrong_key") as stranger:
        with pytest.raises(openai.AuthenticationError) as bad_key:
            stranger.models.list()
    assert bad_key.value.code == "invalid_api_key"
    for method, path, status in (("GET", "/chat/completions", 405), ("GET", "/nope", 404)):
        answer = httpx.request(method, f"{server.url}/v1{path}", headers=bearer(client.api_key))
        assert answer.status_code == status
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert Message.objects.count() == 0
    assert Conversation.objects.exclude(pk=other).count() == 0


def test_a_rate_limited_request_retried_by_the_sdk_never_starts_a_reply(server, client, key):
    busy = httpx.post(
        f"{server.url}/api/conversations",
        headers=bearer(key),
        json={"title": "busy"},
    ).json()["id"]
    started = httpx.post(
        f"{server.url}/api/conversations/{busy}/messages",
        headers=bearer(key),
        json={"content": "tokens=400 gap_ms=10"},
    )
    assert started.status_code == 202
    with pytest.raises(openai.RateLimitError) as refused:
        client.with_options(max_retries=1).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "too_many_replies"
    assert Conversation.objects.count() == 1  # nor a conversation for the refused ones
    assert Message.objects.count() == 2
    httpx.post(f"{server.url}/api/conversations/{busy}/stop", headers=bearer(key))


def test_a_failing_model_is_reported_in_band_when_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "status=500"}], stream=True
    )
    with pytest.raises(openai.APIError) as failed:
        for _ in stream:
            pass
    assert failed.value.code == "model_error"
    reply = Message.objects.get(role="assistant")
    assert reply.status == "failed"


def test_a_failing_model_without_streaming_is_an_error_that_is_not_retried(client):
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "status=500"}]
        )
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert Message.objects.filter(role="assistant").count() == 1  # the SDK did not retry


async def test_langchain_chat_openai_streams_through_chatsite(server, user):
    key = await sync_to_async(new_key)(user)
    chain = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), ("human", "{question}")]
    ) | ChatOpenAI(base_url=f"{server.url}/v1", api_key=key, model=MODEL, max_retries=0)
    # 40 ms between the model's chunks: wider than chatsite's frame interval, so they
    # cannot all be coalesced into one frame.
    question = "script=tricky gap_ms=40"
    pieces = [chunk.content async for chunk in chain.astream({"question": question})]

    assert len([p for p in pieces if p]) > 1  # it streamed
    assert "".join(pieces) == "".join(TRICKY_CHUNKS)
    conversation = await Conversation.objects.aget(owner=user)
    assert conversation.source == "api"
    assert conversation.system_prompt == "You are terse."
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    assert reply.content == "".join(pieces)


def test_a_client_that_hangs_up_mid_stream_still_gets_the_reply_saved(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tokens=150 gap_ms=5"}], stream=True
    )
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    reply = Message.objects.get(role="assistant")
    assert wait_until_final(str(reply.id)).content == texts(150)


# --- in-process: the offline model honours max_tokens -----------------------------------


async def test_the_offline_model_stops_after_max_tokens(settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    chain = llm.get_chain({"max_tokens": 3, "temperature": 0.2})
    inputs = llm.chain_inputs(system_prompt="", turns=[], content="Hello there")
    pieces = [chunk.content async for chunk in chain.astream(inputs)]
    assert len([p for p in pieces if p]) == 3
    assert "".join(pieces) == "Hello! I am"
