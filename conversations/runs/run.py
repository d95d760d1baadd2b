"""The run: one assistant reply, streamed from the model to every viewer.

It reads like the data flow in docs/architecture.md::

    read_model      chain.astream() → text waiting to be published
    publish_frames  waiting text → one numbered token frame → every viewer
    flush           content + seq + heartbeat → the database, at most every 250 ms
    finish          the final save, then exactly one final event

A run belongs to the process that started it and outlives every connection. Other
processes reach it through its conversation's runner group (live/control.py): a stop
cancels it, a fill asks for frames a viewer missed. It publishes only while it holds
its lease (see ``lease_window``), so nothing it sends can follow a final event another
worker's sweeper sent.
"""

import asyncio
import logging
import time
from typing import Any

from django.conf import settings
from langchain_core.runnables import Runnable

from .. import events, llm, metrics
from ..live import control
from ..live.hub import hub
from ..models import Message
from ..text import sanitize
from . import registry, writes

log = logging.getLogger(__name__)

# Up to about a minute of retries.
FINAL_SAVE_ATTEMPTS = 16


def lease_window() -> float:
    """How long after a successful flush a run may go on publishing without another.

    The sweeper of any worker ends a streaming reply whose heartbeat is older than
    ``CHAT_RUN_LEASE_S``; a run stops publishing well before that (a fifth of the lease,
    at least a second, early: room for clocks of different hosts), so nothing it
    publishes can follow the final event the sweeper sends.
    """
    lease = settings.CHAT_RUN_LEASE_S
    return lease - max(1.0, lease * 0.2)


class Run:
    def __init__(self, *, message: Message, inputs: dict, chain: Runnable):
        self.message_id = str(message.id)
        self.conversation_id = str(message.conversation_id)
        self.inputs = inputs
        self.chain = chain
        # frames[i] is the JSON of the token event with seq i + 1; parts[i] its text.
        self.frames: list[str] = []
        self.parts: list[str] = []
        self.waiting: list[str] = []
        self.usage: dict | None = None
        self.stopped = False
        self.lost = False  # another worker ended the reply: say and save nothing more
        self.failure: llm.ModelStalled | None = None
        self.started = time.monotonic()
        # The reply's row was written a moment ago: its heartbeat is that fresh.
        self.lease_until = self.started + lease_window()
        self.first_token_at: float | None = None
        self.last_chunk_at = self.started
        self.flushed_seq = 0
        self.last_write = self.started
        self.finishing = False  # the final save has begun: flushes no longer matter
        self.layer_down = False  # logged once per run, not once per frame
        self.message: Message | None = None  # the final saved message
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._reader: asyncio.Task | None = None
        self.task: asyncio.Task | None = None

    # --- state ------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return len(self.frames)

    def text(self) -> str:
        return "".join(self.parts)

    def frames_after(self, seq: int) -> list[str]:
        return self.frames[seq:]

    def saved_fields(self) -> dict[str, Any]:
        """What a flush saves besides the text and seq, as of the frames published: an
        agent's tool calls (runs/agent.py); nothing for a plain reply."""
        return {}

    # --- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the model stream; the text already sent to viewers is what is saved."""
        if self._reader is None or self._reader.done():
            return
        self.stopped = True
        self._reader.cancel()

    def _fail(self, code: str, detail: str) -> None:
        if self._reader is not None and not self._reader.done():
            self.failure = llm.ModelStalled(code, detail)
            self._reader.cancel()

    def _lose(self) -> None:
        """Someone else ended this reply (a sweeper judged its heartbeat stale)."""
        if not self.lost:
            log.warning("reply %s was ended elsewhere; stopping its run", self.message_id)
        self.lost = True
        self.stopped = True
        if self._reader is not None:
            self._reader.cancel()

    # --- the flow ---------------------------------------------------------------------

    async def main(self) -> None:
        """read_model → publish_frames → finish, while the process's flusher saves the
        text and checks the time limits; the run leaves the registry when it ends."""
        self._reader = asyncio.create_task(self.read_model())
        flusher = writes.flusher()
        flusher.add(self)
        await self.join_runner_group()
        try:
            await self.publish_frames()
            flusher.remove(self)  # no flush is asked for after the final save
            await self.finish()
        finally:
            flusher.remove(self)
            self._reader.cancel()
            registry.remove(self)

    async def join_runner_group(self) -> None:
        """Join the conversation's runner group, so stops and fills from any process reach
        this run."""
        try:
            await hub().join_runner(self.conversation_id)
        except Exception:
            log.warning(
                "channel layer unreachable; reply %s can be stopped only from this process",
                self.message_id,
            )

    async def read_model(self) -> None:
        stream = None
        try:
            stream = await llm.astream(self.chain, self.inputs)
            async for chunk in stream:
                self.last_chunk_at = time.monotonic()
                if chunk.usage_metadata:
                    self.usage = {
                        "prompt_tokens": chunk.usage_metadata.get("input_tokens", 0),
                        "completion_tokens": chunk.usage_metadata.get("output_tokens", 0),
                    }
                text = chunk.content if isinstance(chunk.content, str) else chunk.text
                if text:
                    if self.first_token_at is None:
                        self.first_token_at = self.last_chunk_at
                        metrics.TIME_TO_FIRST_TOKEN.observe(self.first_token_at - self.started)
                    # Model output is untrusted: what no database stores or no encoder
                    # sends (NUL, unpaired surrogates) is replaced here, once.
                    self.waiting.append(sanitize(text))
                    self._wake.set()
        finally:
            # Closes the model's HTTP stream at once, on stop as on failure.
            if stream is not None:
                await stream.aclose()
            self._wake.set()

    async def publish_frames(self) -> None:
        """Coalesce waiting text into frames: the first at once, then at most one per
        frame interval while text keeps coming, and only while the run holds its lease."""
        interval = settings.CHAT_FRAME_INTERVAL_MS / 1000
        reader = self._reader
        while True:
            await self._wake.wait()
            self._wake.clear()
            if reader.done():
                break
            if not self.waiting:
                continue
            if not await self.holds_lease():
                if self.lost:
                    return
                # The database did not answer: keep the text, try again shortly.
                await asyncio.sleep(interval or 0.05)
                self._wake.set()
                continue
            await self.publish_frame()
            if interval:
                await asyncio.sleep(interval)
        if self.stopped or not self.waiting:
            # On stop, text no viewer has seen is dropped: the saved text is what they saw.
            return
        # What the model sent before it ended or failed is part of the reply. Viewers get
        # it as a frame while the run holds its lease; otherwise only in the final event.
        publish = await self.holds_lease()
        if not self.lost:
            await self.publish_frame(send=publish)

    async def holds_lease(self) -> bool:
        """Whether this run may still publish: its heartbeat is fresh, or a flush now
        renews it. A run that lost its reply learns it here and stops."""
        if time.monotonic() < self.lease_until:
            return True
        return await self.flush() is True

    async def publish_frame(self, *, send: bool = True) -> None:
        text = "".join(self.waiting)
        self.waiting.clear()
        seq = len(self.frames) + 1
        message = control.frame(
            events.token(self.conversation_id, self.message_id, seq, text), self.conversation_id
        )
        self.frames.append(message["json"])
        self.parts.append(text)
        if not send:
            return
        metrics.FRAMES_PUBLISHED.inc()
        try:
            await hub().publish(self.conversation_id, message)
        except Exception:
            # Viewers will resync from the database, which the flusher keeps current.
            if not self.layer_down:
                log.warning("channel layer unreachable; reply %s goes on", self.message_id)
            self.layer_down = True
        else:
            self.layer_down = False

    # --- what the process's flusher asks (runs/writes.py) ------------------------------

    def check_time_limits(self, now: float) -> None:
        """Fail the reply when it runs past CHAT_REPLY_TIMEOUT_S, or the model falls silent
        for CHAT_CHUNK_TIMEOUT_S mid-reply."""
        if now - self.started > settings.CHAT_REPLY_TIMEOUT_S:
            self._fail("reply_timeout", "The reply took longer than the time allowed.")
        elif now - self.last_chunk_at > settings.CHAT_CHUNK_TIMEOUT_S:
            self._fail("chunk_timeout", "The model stopped sending text mid-reply.")

    def needs_flush(self, now: float) -> bool:
        """New text to save, or the heartbeat due (every third of the lease)."""
        heartbeat_every = settings.CHAT_RUN_LEASE_S / 3
        return self.seq != self.flushed_seq or now - self.last_write >= heartbeat_every

    def flushed(self, *, seq: int, submitted: float, ended: bool) -> None:
        """A flush asked for at ``submitted`` saved ``seq``, or found the reply ended."""
        if self.finishing:
            return
        if ended:
            self._lose()
            return
        # The heartbeat was written no earlier than the flush was asked for.
        self.lease_until = max(self.lease_until, submitted + lease_window())
        self.flushed_seq = max(self.flushed_seq, seq)
        self.last_write = max(self.last_write, submitted)

    def flush_failed(self) -> None:
        """The database did not answer: the lease is not renewed, nothing else changes."""

    async def flush(self) -> bool | None:
        """Save the text now and renew the lease: True when saved, False when the reply
        is no longer streaming (the run stops), None when the database failed."""
        async with self._flushing:
            seq, text, more = self.seq, self.text(), self.saved_fields()
            submitted = time.monotonic()
            try:
                ended = await writes.save_texts({self.message_id: (seq, text, more)})
            except Exception:
                log.warning("could not flush reply %s; retrying", self.message_id, exc_info=True)
                return None
            self.flushed(seq=seq, submitted=submitted, ended=self.message_id in ended)
            return not self.lost

    async def finish(self) -> None:
        if self.lost:
            return  # its ender saved the reply and told the viewers
        self.finishing = True
        reader = self._reader
        error = None
        if self.stopped:
            status = Message.Status.CANCELLED
        elif self.failure is not None or (not reader.cancelled() and reader.exception()):
            status = Message.Status.FAILED
            error = llm.describe_failure(
                self.failure or reader.exception(), streaming=self.first_token_at is not None
            )
            log.info(
                "reply %s failed: %s %s", self.message_id, error["code"], error.get("upstream")
            )
            metrics.MODEL_ERRORS.labels(error["code"]).inc()
        else:
            status = Message.Status.COMPLETED
        now = time.monotonic()
        self.message = await self.save_final(
            status=status,
            error=error,
            time_to_first_token_ms=(
                round((self.first_token_at - self.started) * 1000) if self.first_token_at else None
            ),
            duration_ms=round((now - self.started) * 1000),
        )
        if self.message is not None:
            metrics.REPLIES_FINISHED.labels(self.message.status).inc()
            await control.publish(self.conversation_id, events.message_final(self.message))

    async def save_final(self, *, status: str, **fields: Any) -> Message | None:
        """The final save, retried while the database is unreachable: the reply's text
        exists only here until it lands."""
        for attempt in range(FINAL_SAVE_ATTEMPTS):
            try:
                return await writes.save_final(
                    self.message_id,
                    status=status,
                    content=self.text(),
                    seq=self.seq,
                    usage=self.usage,
                    **fields,
                )
            except Exception:
                log.warning(
                    "could not save reply %s (attempt %d)",
                    self.message_id,
                    attempt + 1,
                    exc_info=True,
                )
                await asyncio.sleep(min(2**attempt * 0.1, 5))
        log.error("gave up saving reply %s; the sweeper will end it", self.message_id)
        return None


def start_run(*, message: Message, inputs: dict, chain: Runnable) -> Run:
    """Start a reply as a task of this process; it never depends on a connection."""
    return launch(Run(message=message, inputs=inputs, chain=chain))


def launch(run: Run) -> Run:
    """Run a reply (of any kind: runs/agent.py, runs/client_tools.py) as a task of this
    process."""
    # The registry holds the run (and so its task) until it ends.
    registry.add(run)
    metrics.REPLIES_STARTED.inc()
    run.task = asyncio.get_running_loop().create_task(run.main(), name=f"run-{run.message_id}")
    return run
