"""The Viewer (conversations/live/viewer.py) on its own: frames in, what one client is sent
out. No server, no channel layer: frames are built as runs and services build them."""

import json
import uuid

import pytest

from conversations import events
from conversations.live import control, viewer
from conversations.models import Conversation, Message

CONVERSATION = str(uuid.uuid4())


class Client:
    """What a viewer sent one client, and how often it asked for a resync."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.resyncs = 0
        self.snapshot: dict | None = None
        self.viewer = viewer.Viewer(
            conversation_id=CONVERSATION, emit=self.emit, resync=self.resync
        )

    async def emit(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def resync(self) -> None:
        self.resyncs += 1
        if self.snapshot is not None:
            self.viewer.reset(self.snapshot)

    def kinds(self) -> list[str]:
        return [f"{e['type']}:{e['seq']}" if e["type"] == "token" else e["type"] for e in self.sent]


def token(reply: str, seq: int, text: str = "x") -> dict:
    return control.frame(events.token(CONVERSATION, reply, seq, text))


def message(reply: str, *, status="streaming", seq=0, content="") -> Message:
    conversation = Conversation(id=uuid.UUID(CONVERSATION))
    return Message(
        id=uuid.UUID(reply),
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=status,
        seq=seq,
        content=content,
    )


def started(reply: str) -> dict:
    return control.frame(events.message_created(message(reply)))


def final(reply: str, content: str = "xxx", status="completed") -> dict:
    return control.frame(
        events.message_final(message(reply, status=status, seq=3, content=content))
    )


def snapshot(*messages: Message) -> dict:
    return events.snapshot(Conversation(id=uuid.UUID(CONVERSATION)), list(messages), has_more=False)


@pytest.fixture
def reply() -> str:
    return str(uuid.uuid4())


async def test_tokens_go_out_once_and_in_order(reply):
    client = Client()
    await client.viewer.on_frame(started(reply))
    for seq in (1, 2, 2, 1, 3):
        await client.viewer.on_frame(token(reply, seq))
    assert client.kinds() == ["message.created", "token:1", "token:2", "token:3"]


async def test_the_final_event_goes_out_once_and_nothing_of_the_reply_after_it(reply):
    client = Client()
    await client.viewer.on_frame(started(reply))
    await client.viewer.on_frame(token(reply, 1))
    await client.viewer.on_frame(final(reply))
    # The run's own final after a copy read from the database, and frames that reach
    # this worker late (from another worker, after a sweep).
    await client.viewer.on_frame(final(reply))
    await client.viewer.on_frame(token(reply, 2))
    await client.viewer.on_frame(started(reply))
    assert client.kinds() == ["message.created", "token:1", "message.completed"]
    assert client.resyncs == 0


async def test_a_final_frame_routes_by_its_reply(reply):
    frame = final(reply)
    assert frame["message"] == reply
    assert frame["final"] is True
    assert started(reply)["seq"] == 0
    assert token(reply, 4)["seq"] == 4


async def test_a_snapshot_older_than_what_the_client_holds_does_not_replay_tokens(reply):
    client = Client()
    await client.viewer.on_frame(started(reply))
    for seq in (1, 2, 3, 4):
        await client.viewer.on_frame(token(reply, seq))
    # A resync answered from the database, one flush behind the frames already sent.
    client.viewer.reset(snapshot(message(reply, seq=2, content="xx")))
    for seq in (3, 4, 5):
        await client.viewer.on_frame(token(reply, seq))
    assert client.kinds()[-2:] == ["token:4", "token:5"]
    assert [k for k in client.kinds() if k == "token:3"] == ["token:3"]


async def test_a_snapshot_showing_a_reply_ended_stops_its_late_frames(reply):
    client = Client()
    client.viewer.reset(snapshot(message(reply, status="completed", seq=3, content="xxx")))
    await client.viewer.on_frame(token(reply, 3))
    await client.viewer.on_frame(final(reply))
    assert client.sent == []


async def test_a_resumed_stream_that_holds_the_final_gets_nothing_more(reply):
    client = Client()
    client.viewer.ended.add(reply)  # Last-Event-ID <reply>:final
    for frame in (token(reply, 5), token(reply, 6), final(reply)):
        await client.viewer.on_frame(frame)
    assert client.sent == []


@pytest.mark.django_db(transaction=True)
async def test_a_stall_check_sends_the_saved_final_once(settings, user, reply):
    conversation = await Conversation.objects.acreate(owner=user, id=uuid.UUID(CONVERSATION))
    saved = await Message.objects.acreate(
        id=uuid.UUID(reply),
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
    )
    client = Client()
    await client.viewer.on_frame(started(reply))
    saved.status, saved.content, saved.seq = Message.Status.INTERRUPTED, "", 0
    await saved.asave()
    client.viewer.last_frame_at -= viewer.STALL_CHECK_S + 1
    await client.viewer.check_stalled()
    client.viewer.last_frame_at -= viewer.STALL_CHECK_S + 1
    await client.viewer.check_stalled()  # asks again: the reply is no longer held
    await client.viewer.on_frame(final(reply, content="", status="interrupted"))
    assert client.kinds() == ["message.created", "message.interrupted"]
