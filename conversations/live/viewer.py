"""A viewer: one client's gap-free view of a conversation's live events.

Every surface that shows a conversation live (the WebSocket consumer, the SSE views)
feeds the channel layer's frames through a Viewer, which sends each token frame exactly
once and in order. The viewer subscribes before it reads its snapshot, so frames the
snapshot already covers are dropped here; frames the snapshot lags behind (it was read
from the database, up to one flush old) or that the lossy channel layer dropped are
filled from the run that published them, in this process or through its control group.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .. import events, metrics, selectors
from ..runs import registry
from . import control

log = logging.getLogger(__name__)

# How long a viewer holds frames back waiting for a fill before it resyncs from the
# database instead.
FILL_PATIENCE_S = 2.0
# How long a streaming reply may send a viewer nothing before the viewer asks the
# database whether it ended (its final event may have been dropped by the layer).
STALL_CHECK_S = 5.0


@dataclass
class _Gap:
    since: float
    held_back: list[dict] = field(default_factory=list)


class Viewer:
    def __init__(
        self,
        *,
        conversation_id,
        emit: Callable[[str], Awaitable[None]],
        resync: Callable[[], Awaitable[None]],
    ):
        self.conversation_id = str(conversation_id)
        # Where a fill's answer finds this viewer (its Subscriber.address); None when
        # this process is the only one (every run is local).
        self.address: dict | None = None
        self.emit = emit  # sends one event's JSON to the client
        self.resync = resync  # sends the client a fresh snapshot (and calls reset)
        self.held: dict[str, int] = {}  # streaming reply id → last seq the client holds
        # Replies whose final state the client has: nothing more of them is sent, however
        # late a frame of theirs arrives (from another worker, after a sweep, twice).
        self.ended: set[str] = set()
        self.gaps: dict[str, _Gap] = {}
        self.last_frame_at = time.monotonic()

    def reset(self, snapshot: events.Event) -> None:
        """The client now holds this snapshot. A streaming reply it shows older than the
        client holds it (read from the database, up to a flush behind the frames sent)
        does not take text back: the client ignores that copy, and the viewer goes on
        from what the client holds."""
        before, self.held = self.held, {}
        for message in snapshot["messages"]:
            if message["status"] == "streaming":
                if message["id"] not in self.ended:
                    self.held[message["id"]] = max(message["seq"], before.get(message["id"], 0))
            elif message["role"] == "assistant":
                self.ended.add(message["id"])
        self.gaps.clear()

    def resume(self, message_id: str, seq: int) -> None:
        """The client already holds a reply up to ``seq`` (SSE's Last-Event-ID)."""
        self.held[message_id] = seq

    def has_ended(self, message_id: str) -> bool:
        return message_id in self.ended

    async def emit_final(self, text: str, message_id: str) -> None:
        """Send a reply's final event, once: later copies (the run's own after one read
        from the database, a stall check's after the run's) are dropped."""
        if message_id in self.ended:
            return
        self.ended.add(message_id)
        self.held.pop(message_id, None)
        self.gaps.pop(message_id, None)
        await self.emit(text)

    async def on_message(self, message: dict) -> None:
        """Whatever the channel layer brought this viewer's channel."""
        if message["type"] == control.FRAME:
            await self.on_frame(message)
        elif message["type"] == control.FILLED:
            await self.on_filled(message)

    async def on_frame(self, frame: dict) -> None:
        self.last_frame_at = time.monotonic()
        message_id, seq = frame["message"], frame["seq"]
        if frame["final"]:
            await self.emit_final(frame["json"], message_id)
            return
        if message_id in self.ended:
            return  # a late frame of a reply the client holds whole
        if seq is None:
            await self.emit(frame["json"])
            return
        if seq == 0:  # a reply starts
            self.held.setdefault(message_id, 0)
            await self.emit(frame["json"])
            return
        if (gap := self.gaps.get(message_id)) is not None:
            gap.held_back.append(frame)
            if time.monotonic() - gap.since > FILL_PATIENCE_S:
                log.warning("no fill for reply %s; resyncing viewer from the database", message_id)
                await self._resync_and_replay(gap.held_back)
            return
        have = self.held.get(message_id)
        if have is None:
            # A reply this viewer never saw start: its message.created was lost.
            log.warning("viewer missed the start of reply %s; resyncing", message_id)
            await self._resync_and_replay([frame])
            return
        if seq <= have:
            return  # the client holds it already
        if seq > have + 1:
            await self._fill(message_id, have, frame)
            return
        self.held[message_id] = seq
        await self.emit(frame["json"])

    async def catch_up(self, message_id: str) -> None:
        """Send the frames of a streaming reply after the seq the client holds, at once
        (a resumed SSE stream), instead of when the next frame shows the gap."""
        await self._fill(message_id, self.held.get(message_id, 0), None)

    async def _fill(self, message_id: str, have: int, frame: dict | None) -> None:
        if frame is not None:
            log.warning(
                "viewer of reply %s missed frames %d..%d; filling them",
                message_id,
                have + 1,
                frame["seq"] - 1,
            )
        run = registry.local_run(message_id)
        if run is not None:
            metrics.FRAMES_FILLED.labels("local").inc()
            await self.on_filled(
                {"message": message_id, "after": have, "frames": run.frames_after(have)}
            )
            if frame is not None:
                await self.on_frame(frame)
            return
        self.gaps[message_id] = _Gap(since=time.monotonic(), held_back=[frame] if frame else [])
        if self.address is None:  # the only process, and the run is not here: it ended
            await self._resync_and_replay(self.gaps[message_id].held_back)
            return
        try:
            await control.ask_to_fill(
                self.conversation_id, message_id, after=have, address=self.address
            )
        except Exception:
            log.warning("could not ask for the frames of reply %s; resyncing", message_id)
            await self._resync_and_replay(self.gaps[message_id].held_back)

    async def on_filled(self, reply: dict) -> None:
        """The run's answer to a fill: every frame after ``after``."""
        message_id = reply["message"]
        gap = self.gaps.pop(message_id, None)
        if gap is not None:
            metrics.FRAMES_FILLED.labels("remote").inc()
        have = self.held.get(message_id)
        if have is None or message_id in self.ended:
            return  # the reply ended meanwhile; its final event carried the whole text
        for seq, text in enumerate(reply["frames"], start=reply["after"] + 1):
            if seq == have + 1:
                await self.emit(text)
                have = seq
        self.held[message_id] = have
        for frame in gap.held_back if gap else ():
            await self.on_frame(frame)

    async def check_stalled(self) -> None:
        """Call now and then: a reply that went quiet is looked up in the database, and
        if it ended (its final event was lost, or its worker died before the sweeper
        told anyone) the viewer gets its final event from there."""
        if not self.held or time.monotonic() - self.last_frame_at < STALL_CHECK_S:
            return
        self.last_frame_at = time.monotonic()
        for message in await selectors.aended_replies(list(self.held)):
            if str(message.id) in self.held:
                log.warning("reply %s ended without its final event reaching a viewer", message.id)
                await self.emit_final(events.dumps(events.message_final(message)), str(message.id))

    async def _resync_and_replay(self, frames: list[dict]) -> None:
        metrics.RESYNCS.inc()
        await self.resync()
        for frame in frames:
            if frame["message"] in self.held or frame["final"]:
                await self.on_frame(frame)
