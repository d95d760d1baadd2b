"""Replies with tools, end to end: a real daphne worker whose model is the real
ChatOpenAI talking to the stub server (which streams OpenAI tool-call chunks), a real
MCP server (FastMCP) over Streamable HTTP and over stdio on loopback, and clients
over WebSocket and SSE. What viewers end with is compared with the database."""

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from httpx_sse import connect_sse

from agents import mcp
from agents.models import McpServer
from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .conftest import ROOT
from .fakes.mcp_server import HOSTILE
from .helpers.api import bearer, read_events, stub_env, wait_until_final
from .helpers.protocol import WsViewer
from .helpers.servers import free_port, start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough for a stdio MCP server to start on a loaded machine (each call starts it).
TOOL_TIMEOUT_S = 8
MAX_STEPS = 3
OUTPUT_MAX_CHARS = 2000


@pytest.fixture(scope="session")
def mcp_http():
    """The test MCP server over Streamable HTTP, in its own process on loopback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_server", "--http"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port = int(process.stdout.readline())
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=5)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, stub_server):
    env = stub_env(
        stub_server,
        CHAT_TOOL_TIMEOUT_S=str(TOOL_TIMEOUT_S),
        CHAT_AGENT_MAX_STEPS=str(MAX_STEPS),
        CHAT_TOOL_OUTPUT_MAX_CHARS=str(OUTPUT_MAX_CHARS),
    )
    worker = start_daphne(env=env, name="agents")
    yield worker
    worker.stop()


def register(name: str, **fields) -> McpServer:
    """An MCP server as staff register it: saved, and its tools listed."""
    server = McpServer.objects.create(name=name, **fields)
    asyncio.run(mcp.refresh(server))
    server.refresh_from_db()
    return server


async def aregister(name: str, **fields) -> McpServer:
    return await mcp.refresh(await McpServer.objects.acreate(name=name, **fields))


@pytest.fixture
def web(mcp_http):
    return register("web", transport="streamable_http", url=mcp_http)


def with_tools(user, *tools: str) -> Conversation:
    return conversation_create(owner=user, tools=list(tools))


async def viewer_of(server, user, conversation) -> WsViewer:
    return await WsViewer(server, await session_cookie(user), conversation.id).open()


async def exchange(server, user, conversation, content: str, timeout: float = 20):
    """Send a message over WebSocket and read its reply to the end: (viewer, reply id,
    final event)."""
    viewer = await viewer_of(server, user, conversation)
    await viewer.send({"type": "message.send", "content": content})
    reply_id = await viewer.reply_started()
    final = await viewer.until_final(reply_id, timeout=timeout)
    await viewer.close()
    return viewer, reply_id, final


async def saved(message_id) -> Message:
    return await Message.objects.aget(pk=message_id)


def tool_events(viewer: WsViewer) -> list[dict]:
    return [e for e in viewer.state.events if e["type"] in ("tool.started", "tool.completed")]


def numbered(viewer: WsViewer, reply_id: str) -> list[dict]:
    return [
        e
        for e in viewer.state.events
        if e["type"] in ("token", "tool.started", "tool.completed") and e["message"] == reply_id
    ]


# --- over WebSocket ---------------------------------------------------------------------


async def test_one_tool_call_streams_between_the_text_and_is_saved_with_the_reply(server, user):
    conversation = await sync_to_async(with_tools)(user, "calculator")
    viewer, reply_id, final = await exchange(
        server, user, conversation, 'tokens=3 call=calculator{"expression":"6*7"}'
    )

    events = numbered(viewer, reply_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    started, completed = kinds.index("tool.started"), kinds.index("tool.completed")
    assert "token" in kinds[:started] and "token" in kinds[completed:]  # text, call, text
    assert events[started]["call"]["name"] == "calculator"
    assert events[started]["call"]["args"] == {"expression": "6*7"}
    call = events[completed]["call"]
    assert (call["status"], call["output"], call["error"]) == ("completed", "42", None)

    reply = await saved(reply_id)
    assert final["type"] == "message.completed"
    assert reply.content == final["message"]["content"] == viewer.state.text_of(reply_id)
    assert reply.content.endswith("Tool results: 42")
    assert reply.seq == len(events)
    assert reply.tool_calls == final["message"]["tool_calls"] == [call]
    assert reply.usage["completion_tokens"] > 0


async def test_two_tool_calls_in_one_turn_each_start_and_complete(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "calculator", "web__echo")
    viewer, reply_id, final = await exchange(
        server,
        user,
        conversation,
        'call=calculator{"expression":"2**10"} call=web__echo{"text":"hi"}',
    )

    calls = tool_events(viewer)
    assert sorted(e["type"] for e in calls) == ["tool.completed"] * 2 + ["tool.started"] * 2
    stored = (await saved(reply_id)).tool_calls
    assert [c["name"] for c in stored] == ["calculator", "web__echo"]
    assert [c["output"] for c in stored] == ["1024", "echo: hi"]
    assert {c["status"] for c in stored} == {"completed"}
    assert final["message"]["content"].endswith("Tool results: 1024 | echo: hi")


async def test_a_viewer_joining_mid_call_sees_the_call_running_then_completed(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__slow")
    first = await viewer_of(server, user, conversation)
    await first.send({"type": "message.send", "content": 'call=web__slow{"seconds":2}'})
    reply_id = await first.reply_started()
    await first.until(lambda e: e["type"] == "tool.started")

    late = await viewer_of(server, user, conversation)  # its snapshot: mid-call
    snapshot = late.state.events[0]
    joined = next(m for m in snapshot["messages"] if m["id"] == reply_id)
    assert [c["status"] for c in joined["tool_calls"]] == ["running"]
    assert joined["tool_calls"][0]["args"] == {"seconds": 2}

    await asyncio.gather(first.until_final(reply_id), late.until_final(reply_id))
    for viewer in (first, late):
        assert viewer.state.gaps == 0
        after = [e["seq"] for e in numbered(viewer, reply_id) if e["seq"] > joined["seq"]]
        assert after == list(range(joined["seq"] + 1, joined["seq"] + 1 + len(after)))
        await viewer.close()
    assert late.state.messages[reply_id] == first.state.messages[reply_id]
    assert (await saved(reply_id)).tool_calls[0]["status"] == "completed"


async def test_stop_during_a_tool_call_cancels_it_and_keeps_what_was_saved(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__slow")
    viewer = await viewer_of(server, user, conversation)
    await viewer.send({"type": "message.send", "content": 'call=web__slow{"seconds":20}'})
    reply_id = await viewer.reply_started()
    await viewer.until(lambda e: e["type"] == "tool.started")
    stopped_at = time.monotonic()
    await viewer.send({"type": "reply.stop", "message": reply_id})
    final = await viewer.until_final(reply_id, timeout=10)
    await viewer.close()

    assert time.monotonic() - stopped_at < 8  # the 20 s call did not run out
    assert final["type"] == "message.cancelled"
    call = final["message"]["tool_calls"][0]
    assert call["status"] == "cancelled" and call["output"] is None
    reply = await saved(reply_id)
    assert reply.status == "cancelled" and reply.tool_calls == final["message"]["tool_calls"]


async def test_a_failing_tool_fails_its_call_only_and_the_reply_goes_on(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__fail")
    _viewer, _reply_id, final = await exchange(
        server, user, conversation, 'call=web__fail{"reason":"no disk"}'
    )

    assert final["type"] == "message.completed"
    call = final["message"]["tool_calls"][0]
    assert call["status"] == "failed" and call["output"] is None
    assert call["error"]["code"] == "tool_failed" and "no disk" in call["error"]["detail"]
    assert "no disk" in final["message"]["content"]  # the model was told


async def test_a_call_past_the_time_limit_fails_with_tool_timeout(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__slow")
    _viewer, _reply_id, final = await exchange(
        server,
        user,
        conversation,
        f'call=web__slow{{"seconds":{TOOL_TIMEOUT_S * 5}}}',
        timeout=TOOL_TIMEOUT_S * 4,
    )

    assert final["type"] == "message.completed"
    call = final["message"]["tool_calls"][0]
    assert call["status"] == "failed" and call["error"]["code"] == "tool_timeout"
    assert TOOL_TIMEOUT_S * 1000 <= call["duration_ms"] < TOOL_TIMEOUT_S * 3000


async def test_the_step_limit_ends_the_reply_failed_with_the_text_so_far(server, user):
    conversation = await sync_to_async(with_tools)(user, "calculator")
    _viewer, reply_id, final = await exchange(
        server, user, conversation, 'tokens=2 loop=1 call=calculator{"expression":"1+1"}'
    )

    assert final["type"] == "message.failed"
    assert final["message"]["error"]["code"] == "agent_step_limit"
    assert len(final["message"]["tool_calls"]) == MAX_STEPS
    assert final["message"]["content"] == "t1 t2 " * MAX_STEPS
    assert (await saved(reply_id)).content == final["message"]["content"]


async def test_a_long_output_is_cut_with_a_visible_marker(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__big")
    _viewer, _reply_id, final = await exchange(
        server, user, conversation, 'call=web__big{"chars":50000}'
    )

    output = final["message"]["tool_calls"][0]["output"]
    assert output.startswith("0123456789")
    assert "output truncated: 50,000 characters, the first 2,000 shown" in output
    assert len(output) < OUTPUT_MAX_CHARS + 100


# --- MCP transports ---------------------------------------------------------------------


async def test_an_mcp_server_over_stdio_answers_its_calls(server, user):
    await aregister(
        "local", transport="stdio", command=sys.executable, args=["-m", "tests.fakes.mcp_server"]
    )
    conversation = await sync_to_async(with_tools)(user, "local__echo")
    _viewer, _reply_id, final = await exchange(
        server, user, conversation, 'call=local__echo{"text":"stdio"}', timeout=30
    )
    call = final["message"]["tool_calls"][0]
    assert (call["status"], call["output"]) == ("completed", "echo: stdio"), call


async def test_an_mcp_server_that_is_down_fails_only_its_own_calls(server, user, web):
    down = await sync_to_async(McpServer.objects.create)(
        name="gone",
        transport="streamable_http",
        url=f"http://127.0.0.1:{free_port()}/mcp",
        tools=[{"name": "echo", "description": "", "input_schema": {"type": "object"}}],
    )
    listed = await mcp.refresh(down)
    assert "could not be reached" in listed.last_error
    assert listed.tools  # the last listing is kept: its tools are still offered

    conversation = await sync_to_async(with_tools)(user, "gone__echo", "web__echo")
    _viewer, _reply_id, final = await exchange(
        server,
        user,
        conversation,
        'call=gone__echo{"text":"a"} call=web__echo{"text":"b"}',
        timeout=30,
    )

    assert final["type"] == "message.completed"
    gone, web_call = final["message"]["tool_calls"]
    assert gone["status"] == "failed"
    assert "MCP server 'gone' could not be reached" in gone["error"]["detail"]
    assert (web_call["status"], web_call["output"]) == ("completed", "echo: b")


# --- over SSE ---------------------------------------------------------------------------


def test_tool_events_stream_as_sse_with_resumable_ids(server, user, key, web):
    conversation = with_tools(user, "web__slow", "calculator")
    url = f"{server.url}/api/conversations/{conversation.id}"
    content = 'tokens=2 call=web__slow{"seconds":2} call=calculator{"expression":"3*3"}'
    with httpx.Client(timeout=30) as client:
        with connect_sse(
            client, "POST", f"{url}/messages", json={"content": content}, headers=bearer(key)
        ) as source:
            before = []
            for sse in source.iter_sse():  # hang up at the first call, while it runs
                before.append({**json.loads(sse.data), "_id": sse.id})
                if before[-1]["type"] == "tool.started":
                    break
        last_id = before[-1]["_id"]
        reply_id, seq = last_id.split(":")
        with connect_sse(
            client, "GET", f"{url}/events", headers={**bearer(key), "Last-Event-ID": last_id}
        ) as source:
            after = read_events(source)

    numbered = [e for e in before if e["type"] in ("token", "tool.started", "tool.completed")]
    assert all(e["_id"] == f"{reply_id}:{e['seq']}" for e in numbered)
    resumed = [e for e in after if e["type"] in ("token", "tool.started", "tool.completed")]
    assert [e["seq"] for e in resumed] == list(range(int(seq) + 1, int(seq) + 1 + len(resumed)))
    assert after[-1]["type"] == "message.completed"
    reply = wait_until_final(reply_id)
    assert reply.tool_calls == after[-1]["message"]["tool_calls"]
    assert [c["output"] for c in reply.tool_calls] == ["slept 2 s", "9"]
    detail = httpx.get(url, headers=bearer(key)).json()
    assert detail["messages"][-1]["tool_calls"] == reply.tool_calls


# --- a worker killed mid-call -----------------------------------------------------------


async def test_a_worker_killed_mid_call_leaves_the_reply_interrupted_with_its_calls(
    django_db_setup, stub_server, user, web
):
    doomed = start_daphne(env=stub_env(stub_server, CHAT_RUN_LEASE_S="3"), name="agents-killed")
    try:
        conversation = await sync_to_async(with_tools)(user, "web__slow")
        viewer = await viewer_of(doomed, user, conversation)
        await viewer.send({"type": "message.send", "content": 'call=web__slow{"seconds":30}'})
        reply_id = await viewer.reply_started()
        await viewer.until(lambda e: e["type"] == "tool.started")
        await viewer.close()
        for _ in range(100):  # a flush saves the running call
            if (await saved(reply_id)).tool_calls:
                break
            await asyncio.sleep(0.1)
        assert [c["status"] for c in (await saved(reply_id)).tool_calls] == ["running"]
    finally:
        doomed.kill()
    await asyncio.sleep(3.5)  # past the lease
    await sync_to_async(subprocess.run)(
        [sys.executable, "manage.py", "sweep_replies"], cwd=ROOT, env=doomed.env, check=True
    )
    reply = await saved(reply_id)
    assert reply.status == "interrupted"
    assert [(c["name"], c["status"]) for c in reply.tool_calls] == [("web__slow", "interrupted")]
    assert reply.tool_calls[0]["args"] == {"seconds": 30}


# --- hostile output ---------------------------------------------------------------------


async def test_hostile_tool_output_is_kept_as_text(server, user, web):
    conversation = await sync_to_async(with_tools)(user, "web__hostile")
    _viewer, _reply_id, final = await exchange(server, user, conversation, "call=web__hostile")
    assert final["message"]["tool_calls"][0]["output"] == HOSTILE  # as sent; shown as text
