"""The Run (conversations/runs/run.py) on its own: a scripted model, the in-memory
channel layer, the test database; no server process and no Redis.

What viewers receive is read from a subscription to the conversation (live/hub.py), as
a viewer's would be."""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from langchain_core.messages import AIMessageChunk

from conversations import events
from conversations.live import control
from conversations.live.hub import hub
from conversations.models import Message
from conversations.runs import registry, writes
from conversations.runs.run import start_run

pytestmark = pytest.mark.django_db(transaction=True)


class ScriptedModel:
    """Stands in for ``prompt | llm``: streams ``pieces``, ``gap_s`` apart, then stays
    silent for ``hang_s`` (a stalled model) before it ends."""

    def __init__(self, pieces: list[str], *, gap_s: float = 0.0, hang_s: float = 0.0):
        self.pieces = pieces
        self.gap_s = gap_s
        self.hang_s = hang_s
        self.closed = False

    async def astream(self, inputs):
        try:
            for piece in self.pieces:
                await asyncio.sleep(self.gap_s)
                yield AIMessageChunk(content=piece)
            await asyncio.sleep(self.hang_s)
            yield AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            )
        finally:
            self.closed = True


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    """These tests need no Redis, whatever REDIS_URL says."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def reply(conversation) -> Message:
    asked = Message.objects.create(conversation=conversation, role="user", content="hi")
    return Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", reply_to=asked
    )


async def watch(conversation_id):
    """A viewer's subscription to the conversation, as a consumer's would be."""
    return await hub().subscribe(conversation_id)


async def frames_until_final(watching, timeout: float = 10) -> list[dict]:
    received = []
    async with asyncio.timeout(timeout):
        while not received or not received[-1]["final"]:
            received.append(await watching.receive(timeout))
    return received


def events_of(frame: dict) -> dict:
    return json.loads(frame["json"])


def tokens(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["seq"]]


async def run_reply(reply: Message, model: ScriptedModel) -> list[dict]:
    """Every frame viewers get of a reply, to its final event; the run has ended."""
    watching = await watch(reply.conversation_id)
    run = start_run(message=reply, inputs={}, chain=model)
    frames = await frames_until_final(watching)
    await asyncio.wait_for(run.task, 5)
    return frames


async def test_text_that_comes_fast_is_coalesced_into_frames_the_first_at_once(settings, reply):
    settings.CHAT_FRAME_INTERVAL_MS = 30
    pieces = [f"w{i} " for i in range(60)]
    frames = await run_reply(reply, ScriptedModel(pieces, gap_s=0.002))
    sent = tokens(frames)
    assert [f["seq"] for f in sent] == list(range(1, len(sent) + 1))
    assert 1 < len(sent) < len(pieces) / 2  # coalesced
    texts = [events_of(f)["content"] for f in sent]
    assert texts[0] == "w0 "  # the first frame does not wait
    assert "".join(texts) == "".join(pieces)
    saved = await Message.objects.aget(pk=reply.pk)
    assert (saved.status, saved.content, saved.seq) == ("completed", "".join(pieces), len(sent))
    assert saved.usage == {"prompt_tokens": 3, "completion_tokens": 4}


async def test_a_reply_ends_with_exactly_one_final_event_carrying_the_saved_text(reply):
    frames = await run_reply(reply, ScriptedModel(["a", "b", "c"], gap_s=0.01))
    finals = [f for f in frames if f["final"]]
    assert len(finals) == 1
    assert events_of(finals[0])["type"] == events.MESSAGE_COMPLETED
    assert events_of(finals[0])["message"]["content"] == "abc"
    assert registry.local_run(reply.id) is None  # the run left the registry


async def test_stop_saves_exactly_the_text_viewers_were_sent(settings, reply):
    settings.CHAT_FRAME_INTERVAL_MS = 0
    model = ScriptedModel([f"{i} " for i in range(500)], gap_s=0.005)
    watching = await watch(reply.conversation_id)
    run = start_run(message=reply, inputs={}, chain=model)
    received = [await watching.receive(5) for _ in range(5)]
    run.stop()
    received += await frames_until_final(watching)
    await asyncio.wait_for(run.task, 5)
    shown = "".join(events_of(f)["content"] for f in tokens(received))
    final = events_of(received[-1])
    assert final["type"] == events.MESSAGE_CANCELLED
    assert final["message"]["content"] == shown
    assert model.closed  # the model's stream was closed at once


async def test_a_model_that_falls_silent_fails_the_reply_and_keeps_its_text(settings, reply):
    settings.CHAT_CHUNK_TIMEOUT_S = 0.3
    started = time.monotonic()
    frames = await run_reply(reply, ScriptedModel(["kept "], hang_s=30))
    final = events_of(frames[-1])
    assert final["type"] == events.MESSAGE_FAILED
    assert final["message"]["error"]["code"] == "chunk_timeout"
    assert final["message"]["content"] == "kept "
    assert time.monotonic() - started < 5


async def test_a_reply_past_its_time_limit_fails_with_what_it_wrote(settings, reply):
    settings.CHAT_REPLY_TIMEOUT_S = 0.4
    frames = await run_reply(reply, ScriptedModel(["x"] * 1000, gap_s=0.01))
    final = events_of(frames[-1])
    assert final["type"] == events.MESSAGE_FAILED
    assert final["message"]["error"]["code"] == "reply_timeout"
    assert 0 < len(final["message"]["content"]) < 1000


async def test_one_database_call_per_flush_interval_saves_every_streaming_reply(
    settings, conversation
):
    """Six replies streaming at once: each flush interval, one call saves all of them,
    so the writes follow the interval, not the number of replies."""
    settings.CHAT_FLUSH_INTERVAL_MS = 100
    settings.CHAT_FRAME_INTERVAL_MS = 0
    calls = []
    real = writes.save_texts

    async def counted(texts):
        calls.append(len(texts))
        return await real(texts)

    replies = []
    for _ in range(6):
        # One streaming reply per conversation: each reply gets its own.
        other = await sync_to_async(type(conversation).objects.create)(
            owner_id=conversation.owner_id
        )
        asked = await Message.objects.acreate(conversation=other, role="user", content="hi")
        replies.append(
            await Message.objects.acreate(
                conversation=other, role="assistant", status="streaming", reply_to=asked
            )
        )
    writes.save_texts = counted
    try:
        started = time.monotonic()
        runs = [
            start_run(message=r, inputs={}, chain=ScriptedModel(["t "] * 60, gap_s=0.01))
            for r in replies
        ]
        await asyncio.wait_for(asyncio.gather(*(r.task for r in runs)), 20)
        seconds = time.monotonic() - started
    finally:
        writes.save_texts = real
    assert max(calls) == 6  # every reply in one call
    assert len(calls) <= seconds / 0.1 + 1
    for r in replies:
        saved = await Message.objects.aget(pk=r.pk)
        assert (saved.status, saved.content) == ("completed", "t " * 60)


async def test_a_run_whose_reply_was_ended_elsewhere_stops_and_says_nothing(settings, reply):
    """The sweeper of another worker ended the reply (its heartbeat looked stale): the
    run's next flush learns it; it publishes and saves nothing more, and no final."""
    settings.CHAT_FLUSH_INTERVAL_MS = 50
    settings.CHAT_FRAME_INTERVAL_MS = 0
    watching = await watch(reply.conversation_id)
    model = ScriptedModel(["x "] * 400, gap_s=0.01)
    run = start_run(message=reply, inputs={}, chain=model)
    await watching.receive(5)  # it streams
    await Message.objects.filter(pk=reply.pk).aupdate(status="interrupted", content="swept")
    await asyncio.wait_for(run.task, 5)
    assert run.lost
    assert model.closed
    saved = await Message.objects.aget(pk=reply.pk)
    assert (saved.status, saved.content) == ("interrupted", "swept")
    later = []
    while (found := await watching.receive(0.3)) is not None:
        later.append(found)
    assert not [f for f in later if f["final"]]


def test_frames_say_which_reply_and_seq_they_carry():
    token = control.frame(events.token("c", "r", 4, "x"))
    assert (token["type"], token["message"], token["seq"], token["final"]) == (
        control.FRAME,
        "r",
        4,
        False,
    )
