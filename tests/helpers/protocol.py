"""The protocol as the tests hold clients to it: the final event types, a reference
viewer that applies events to a local state as a client must (docs/protocol.md), so a
test can compare what a viewer ends up holding with what the database holds, and a
WebSocket viewer of a real worker."""

import asyncio
import json

import websockets

FINAL_TYPES = {"message.completed", "message.failed", "message.cancelled", "message.interrupted"}
TOOL_TYPES = {"tool.started", "tool.completed"}


class ViewerState:
    def __init__(self):
        self.messages: dict[str, dict] = {}
        self.events: list[dict] = []
        self.gaps = 0  # tokens that arrived with a seq gap (the server should fill them)

    def apply(self, event: dict) -> bool:
        """Apply one event; False when the viewer must resync (it saw a gap)."""
        self.events.append(event)
        kind = event["type"]
        if kind == "snapshot":
            held = self.messages
            for message in event["messages"]:
                mine = held.get(message["id"])
                if mine and mine["status"] == "streaming" and mine["seq"] > message["seq"]:
                    return True  # an older snapshot: ignored
            self.messages = {m["id"]: dict(m) for m in event["messages"]}
        elif kind == "message.created":
            self.messages.setdefault(event["message"]["id"], dict(event["message"]))
        elif kind == "token":
            message = self.messages.get(event["message"])
            if message is None or event["seq"] > message["seq"] + 1:
                self.gaps += 1
                return False
            if event["seq"] == message["seq"] + 1:
                message["content"] += event["content"]
                message["seq"] = event["seq"]
        elif kind in TOOL_TYPES:
            # Tool events share the reply's seq with its tokens; they carry no text.
            message = self.messages.get(event["message"])
            if message is None or event["seq"] > message["seq"] + 1:
                self.gaps += 1
                return False
            if event["seq"] == message["seq"] + 1:
                message["seq"] = event["seq"]
                calls = message.setdefault("tool_calls", [])
                call = event["call"]
                if kind == "tool.started":
                    call = {**call, "status": "running", "output": None, "error": None}
                found = [i for i, held in enumerate(calls) if held["id"] == call["id"]]
                if found:
                    calls[found[0]] = call
                else:
                    calls.append(call)
        elif kind in FINAL_TYPES:
            self.messages[event["message"]["id"]] = dict(event["message"])
        return True

    def text_of(self, message_id: str) -> str:
        return self.messages[message_id]["content"]

    def status_of(self, message_id: str) -> str:
        return self.messages[message_id]["status"]

    def tokens(self, message_id: str) -> int:
        return sum(1 for e in self.events if e["type"] == "token" and e["message"] == message_id)


class WsViewer:
    """A WebSocket viewer of one conversation on one worker."""

    def __init__(self, server, cookie: str, conversation_id):
        self.url = f"{server.ws_url}/ws/conversations/{conversation_id}/"
        self.headers = {"Cookie": f"sessionid={cookie}", "Origin": server.url}
        self.state = ViewerState()
        self.ws = None

    async def open(self) -> "WsViewer":
        self.ws = await websockets.connect(self.url, additional_headers=self.headers)
        await self.until(lambda e: e["type"] == "snapshot", timeout=10)
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def next_event(self) -> dict:
        event = json.loads(await self.ws.recv())
        if not self.state.apply(event):
            await self.send({"type": "resync"})
        return event

    async def until(self, predicate, timeout: float = 20) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event()
                if predicate(event):
                    return event

    async def until_final(self, message_id: str | None = None, timeout: float = 20) -> dict:
        return await self.until(
            lambda e: (
                e["type"] in FINAL_TYPES
                and (message_id is None or e["message"]["id"] == message_id)
            ),
            timeout,
        )

    async def reply_started(self, timeout: float = 10) -> str:
        event = await self.until(
            lambda e: e["type"] == "message.created" and e["message"]["role"] == "assistant",
            timeout,
        )
        return event["message"]["id"]
