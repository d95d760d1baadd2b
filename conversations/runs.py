"""The run: one assistant reply, streamed from the model to every viewer.

It reads like the data flow in DESIGN.md::

    read_model   chain.astream() → text waiting to be published
    publish      waiting text → one numbered token frame → the conversation's group
    flush        content + seq + heartbeat → the database, at most every 250 ms
    finish       the final save, then exactly one final event

A run belongs to the process that started it and outlives every connection. Other
processes reach it through its control group: ``run.stop`` cancels it, ``run.fill``
asks for frames a viewer missed.
"""

import asyncio
import logging
import os
import socket
import time
import weakref
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from langchain_core.runnables import Runnable

from webhooks import outbox

from . import events, llm
from .models import Message
from .text import sanitize

log = logging.getLogger(__name__)

# The runs of this process, by assistant message id and by conversation id.
_runs: dict[str, "Run"] = {}
_runs_by_conversation: dict[str, "Run"] = {}


_worker = {"id": ""}


def worker_id() -> str:
    """The name of this worker, saved on each reply it runs (settings.CHAT_WORKER_ID,
    else what `manage.py serve` set: host name and port; else host name and process id,
    which a restart does not keep)."""
    if not _worker["id"]:
        _worker["id"] = settings.CHAT_WORKER_ID or f"{socket.gethostname()}:pid{os.getpid()}"
    return _worker["id"]


def set_worker_id(name: str) -> None:
    _worker["id"] = name


def group_name(conversation_id: Any) -> str:
    """Every viewer of a conversation, in any process."""
    return f"conv.{conversation_id}"


def control_group(conversation_id: Any) -> str:
    """The process that runs the conversation's reply."""
    return f"run.{conversation_id}"


def local_run(message_id: Any) -> "Run | None":
    return _runs.get(str(message_id))


def local_message_ids() -> list[str]:
    return list(_runs)


def local_run_for_conversation(conversation_id: Any) -> "Run | None":
    return _runs_by_conversation.get(str(conversation_id))


def frame_message(event: events.Event) -> dict:
    """A channel-layer message carrying one event, encoded once for every viewer.

    Beside the JSON it says what a viewer needs to route the event: the reply it
    belongs to (``message``), its number in that reply's stream (``seq``: 0 for the
    reply's start, None outside the numbered stream) and whether it ends the reply.
    """
    kind = event["type"]
    message_id = seq = None
    if kind == events.TOKEN:
        message_id, seq = event["message"], event["seq"]
    elif kind == events.MESSAGE_CREATED and event["message"]["status"] == "streaming":
        message_id, seq = event["message"]["id"], 0
    elif kind in events.FINAL_EVENT_TYPES:
        message_id = event["message"]["id"]
    return {
        "type": "chat.frame",
        "json": events.dumps(event),
        "message": message_id,
        "seq": seq,
        "final": kind in events.FINAL_EVENT_TYPES,
    }


async def publish(conversation_id: Any, event: events.Event) -> bool:
    """Send an event to every viewer; False when the channel layer is unreachable.

    The layer is lossy by design: the database holds the durable copy, so a failed
    publish is logged, never raised into the run.
    """
    try:
        await get_channel_layer().group_send(group_name(conversation_id), frame_message(event))
    except Exception:
        log.warning("could not publish %s for conversation %s", event["type"], conversation_id)
        return False
    return True


async def layer_reachable(conversation_id: Any) -> bool:
    """Whether live events of a conversation can be delivered right now (Redis is up)."""
    layer = get_channel_layer()
    if not hasattr(layer, "consistent_hash"):
        return True  # the in-memory layer lives in this process
    try:
        async with asyncio.timeout(2):
            await layer.connection(layer.consistent_hash(group_name(conversation_id))).ping()
    except Exception:
        return False
    return True


class ModelStalled(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# Upstream text kept for staff (the admin transcript, the log), never shown to users.
UPSTREAM_CHARS = 2000


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
    timed_out = isinstance(exc, TimeoutError | openai.APITimeoutError) or (
        type(exc).__name__ in {"ReadTimeout", "TimeoutException"}
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
        ("httpx", "httpcore")
    )
    if broken and streaming:
        # The SDK reports a connection that breaks mid-stream as a connection error.
        return error("model_stream_broken", "The model's stream broke off mid-reply.")
    if broken:
        return error("model_unreachable", "Could not reach the model server.")
    return error("model_error", "The model failed to answer.")


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
        self.layer = get_channel_layer()
        # frames[i] is the JSON of the token event with seq i + 1; parts[i] its text.
        self.frames: list[str] = []
        self.parts: list[str] = []
        self.waiting: list[str] = []
        self.usage: dict | None = None
        self.stopped = False
        self.lost = False  # another worker ended the reply: say and save nothing more
        self.failure: ModelStalled | None = None
        self.started = time.monotonic()
        # The reply's row was written a moment ago: its heartbeat is that fresh.
        self.lease_until = self.started + lease_window()
        self.first_token_at: float | None = None
        self.last_chunk_at = self.started
        self.flushed_seq = 0
        self.last_write = self.started
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

    # --- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the model stream; the text already sent to viewers is what is saved."""
        if self._reader is None or self._reader.done():
            return
        self.stopped = True
        self._reader.cancel()

    def _fail(self, code: str, detail: str) -> None:
        if self._reader is not None and not self._reader.done():
            self.failure = ModelStalled(code, detail)
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
        self._reader = asyncio.create_task(self.read_model())
        flusher = asyncio.create_task(self.flush_periodically())
        await self.join_control_group()
        try:
            await self.publish_frames()
            # No flush may start after the final save (a queued one finds the reply ended).
            flusher.cancel()
            await self.finish()
        finally:
            for task in (flusher, self._reader):
                task.cancel()
            _runs.pop(self.message_id, None)
            if _runs_by_conversation.get(self.conversation_id) is self:
                del _runs_by_conversation[self.conversation_id]

    async def join_control_group(self) -> None:
        try:
            channel = await control_channel()
            await self.layer.group_add(control_group(self.conversation_id), channel)
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
        message = frame_message(events.token(self.conversation_id, self.message_id, seq, text))
        self.frames.append(message["json"])
        self.parts.append(text)
        if not send:
            return
        try:
            await self.layer.group_send(group_name(self.conversation_id), message)
        except Exception:
            # Viewers will resync from the database, which the flusher keeps current.
            if not self.layer_down:
                log.warning("channel layer unreachable; reply %s goes on", self.message_id)
            self.layer_down = True
        else:
            self.layer_down = False

    async def flush_periodically(self) -> None:
        """Flush the text every flush interval (and the heartbeat at least every third
        of the lease); also the watchdog of the reply and chunk timeouts."""
        interval = settings.CHAT_FLUSH_INTERVAL_MS / 1000
        heartbeat_every = max(interval, settings.CHAT_RUN_LEASE_S / 3)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - self.started > settings.CHAT_REPLY_TIMEOUT_S:
                self._fail("reply_timeout", "The reply took longer than the time allowed.")
            elif now - self.last_chunk_at > settings.CHAT_CHUNK_TIMEOUT_S:
                self._fail("chunk_timeout", "The model stopped sending text mid-reply.")
            if self.seq != self.flushed_seq or now - self.last_write >= heartbeat_every:
                if await self.flush() is False:
                    return

    async def flush(self) -> bool | None:
        """Save the text so far and renew the lease: True when saved, False when the
        reply is no longer streaming (the run stops), None when the database failed."""
        async with self._flushing:
            seq, text = self.seq, self.text()
            submitted = time.monotonic()
            try:
                saved = await _flushes().write(self.message_id, seq=seq, content=text)
            except Exception:
                log.warning("could not flush reply %s; retrying", self.message_id, exc_info=True)
                return None
            if not saved:
                self._lose()
                return False
            # The heartbeat was written no earlier than the flush was asked for.
            self.lease_until = max(self.lease_until, submitted + lease_window())
            self.flushed_seq = max(self.flushed_seq, seq)
            self.last_write = submitted
            return True

    async def finish(self) -> None:
        if self.lost:
            return  # its ender saved the reply and told the viewers
        reader = self._reader
        error = None
        if self.stopped:
            status = Message.Status.CANCELLED
        elif self.failure is not None or (not reader.cancelled() and reader.exception()):
            status = Message.Status.FAILED
            error = describe_failure(
                self.failure or reader.exception(), streaming=self.first_token_at is not None
            )
            log.info(
                "reply %s failed: %s %s", self.message_id, error["code"], error.get("upstream")
            )
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
            await publish(self.conversation_id, events.message_final(self.message))

    async def save_final(self, *, status: str, **fields: Any) -> Message | None:
        """The final save, retried while the database is unreachable: the reply's text
        exists only here until it lands."""
        for attempt in range(FINAL_SAVE_ATTEMPTS):
            try:
                return await _save_final(self, status=status, **fields)
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


# Up to about a minute of retries.
FINAL_SAVE_ATTEMPTS = 16


@database_sync_to_async
@transaction.atomic  # the final state and its webhook events commit together
def _save_final(run: Run, *, status: str, **fields: Any) -> Message | None:
    updated = Message.objects.filter(pk=run.message_id, status=Message.Status.STREAMING).update(
        status=status,
        content=run.text(),
        seq=run.seq,
        usage=run.usage,
        completed_at=timezone.now(),
        updated_at=timezone.now(),
        **fields,
    )
    if not updated:
        return None  # already ended elsewhere; its ender told the viewers
    message = Message.objects.get(pk=run.message_id)
    outbox.record_reply_final(message)
    return message


# --- flushes ------------------------------------------------------------------------------
# Every ORM call of a process runs on one thread. The flushes that queue while it is busy
# go to the database together, in one call and one transaction (a group commit): with
# many replies streaming, one hop to that thread and one commit serve them all.


class _Flushes:
    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, str, asyncio.Future]] = {}
        self.writer: asyncio.Task | None = None

    async def write(self, message_id: str, *, seq: int, content: str) -> bool:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending[message_id] = (seq, content, future)
        if self.writer is None or self.writer.done():
            self.writer = loop.create_task(self._write_pending(), name="run-flushes")
        try:
            return await future
        finally:
            if message_id in self.pending and self.pending[message_id][2] is future:
                del self.pending[message_id]  # cancelled before its turn: nothing to save

    async def _write_pending(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                ended = await _save_texts({k: (seq, text) for k, (seq, text, _) in batch.items()})
            except Exception as exc:
                for _, _, future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for message_id, (_, _, future) in batch.items():
                if not future.done():
                    future.set_result(message_id not in ended)


_flushers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flushes]" = (
    weakref.WeakKeyDictionary()
)


def _flushes() -> _Flushes:
    loop = asyncio.get_running_loop()
    if (flushes := _flushers.get(loop)) is None:
        flushes = _flushers[loop] = _Flushes()
    return flushes


@database_sync_to_async
def _save_texts(texts: dict[str, tuple[int, str]]) -> set[str]:
    """Save streaming replies' text and seq; returns the ids of those that had ended
    (the sweeper or a stop in another process saved them first)."""
    now = timezone.now()
    ended = set()
    with transaction.atomic():
        for message_id, (seq, content) in texts.items():
            if not Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
                content=content, seq=seq, updated_at=now
            ):
                ended.add(message_id)
    return ended


# --- the control listener -----------------------------------------------------------------
# One per process, never cancelled: channels_redis receives all of a process's channels
# through one blocking pop, and cancelling a receive mid-pop can lose a message meant for
# another channel of the process (a viewer's frame). Each run adds the process's channel
# to its conversation's control group; memberships are kept (group_expiry drops them),
# so two runs of one conversation in a row never race on a discard.

_control: dict = {"loop": None, "channel": None, "task": None}


async def control_channel() -> str:
    loop = asyncio.get_running_loop()
    if _control["loop"] is not loop or _control["task"].done():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        _control.update(
            loop=loop,
            channel=channel,
            task=loop.create_task(_listen(layer, channel), name="run-control"),
        )
    return _control["channel"]


async def _listen(layer, channel: str) -> None:
    """Answer other processes: stop a run, or resend frames a viewer missed."""
    while True:
        try:
            request = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("channel layer unreachable; control listener retries in 1 s")
            await asyncio.sleep(1)
            continue
        run = _runs.get(request.get("message"))
        if run is None:
            continue
        if request["type"] == "run.stop":
            run.stop()
        elif request["type"] == "run.fill":
            try:
                await layer.send(
                    request["reply_to"],
                    {
                        "type": "run.filled",
                        "message": run.message_id,
                        "after": request["after"],
                        "frames": run.frames_after(request["after"]),
                    },
                )
            except Exception:
                log.warning("could not answer a fill for reply %s", run.message_id)


def start_run(*, message: Message, inputs: dict, chain: Runnable) -> Run:
    """Start a reply as a task of this process; it never depends on a connection."""
    run = Run(message=message, inputs=inputs, chain=chain)
    run.task = asyncio.get_running_loop().create_task(run.main(), name=f"run-{run.message_id}")
    # The registry holds the run (and so its task) until it ends.
    _runs[run.message_id] = run
    _runs_by_conversation[run.conversation_id] = run
    return run
