"""Randomized, seeded durability runs: many short conversations against real workers,
with viewers that join late, drop and resume, resync, stop and repeat their sends,
while workers are killed and restarted or paused past the lease.

Every connection's events are checked as they arrive against the protocol's promises
(no event of a reply after its final event, the final event once, token seqs
contiguous and never repeated, SSE ids that name what they carry); at the end every
viewer must hold exactly what the database holds, and every user message must have
exactly one reply. A campaign is reproducible from its seed: the plan of each
scenario and of the chaos comes from ``random.Random(seed)``; only the timing of the
machine varies.

Used by tests/test_durability.py (a few seeds in the suite) and by
``make durability`` (many more; see the README).
"""

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import websockets
from asgiref.sync import sync_to_async
from httpx_sse import aconnect_sse

from .protocol import FINAL_TYPES as FINALS

LEASE_S = 3.0
# How long after the database holds every reply final each viewer may take to show it.
CONVERGE_S = 15.0
SCENARIO_TIMEOUT_S = 90.0


_DROPPED = object()  # the client was told to drop its connection
_QUIET = object()  # nothing arrived for a second


# --- what one connection received ---------------------------------------------------------


class ConnectionLog:
    """One connection's events, checked one by one.

    ``held``: reply id → (seq, text) the client already holds when the connection
    opens (an SSE resume); ``ended``: replies whose final state it holds.
    """

    def __init__(self, name: str, violations: list, *, held=None, ended=()):
        self.name = name
        self.violations = violations
        self.seq: dict[str, int] = {r: s for r, (s, _) in (held or {}).items()}
        self.text: dict[str, str] = {r: t for r, (_, t) in (held or {}).items()}
        self.ended: set[str] = set(ended)
        self.finals: dict[str, dict] = {}
        self.events = 0

    def fail(self, what: str) -> None:
        self.violations.append(f"{self.name}: {what}")

    def check(self, event: dict, sse_id: str | None = None, sse_event: str | None = None):
        self.events += 1
        kind = event.get("type")
        if sse_event is not None and sse_event != kind:
            self.fail(f"SSE event name {sse_event!r} for a {kind} event")
        if kind == "snapshot":
            for message in event["messages"]:
                self._from_snapshot(message)
        elif kind == "history":
            pass
        elif kind == "message.created":
            message = event["message"]
            if message["role"] != "assistant":
                return
            reply = message["id"]
            if reply in self.ended:
                self.fail(f"message.created of reply {reply[:8]} after its final event")
            elif message["status"] != "streaming":
                self.fail(f"message.created of reply {reply[:8]} in state {message['status']}")
            elif reply not in self.seq:
                self.seq[reply], self.text[reply] = message["seq"], message["content"]
            if sse_id is not None and sse_id != f"{reply}:{message['seq']}":
                self.fail(f"message.created with SSE id {sse_id}")
        elif kind == "token":
            reply, seq = event["message"], event["seq"]
            if sse_id is not None and sse_id != f"{reply}:{seq}":
                self.fail(f"token {seq} with SSE id {sse_id}")
            if reply in self.ended:
                self.fail(f"token {seq} of reply {reply[:8]} after its final event")
                return
            if reply not in self.seq:
                self.fail(f"token {seq} of reply {reply[:8]}, which this connection never saw")
                return
            if seq != self.seq[reply] + 1:
                what = "repeated" if seq <= self.seq[reply] else "gap before"
                self.fail(f"token {seq} of reply {reply[:8]} {what} (held {self.seq[reply]})")
                if seq <= self.seq[reply]:
                    return
            self.seq[reply] = seq
            self.text[reply] = self.text.get(reply, "") + event["content"]
        elif kind in FINALS:
            message = event["message"]
            reply = message["id"]
            if sse_id is not None and sse_id != f"{reply}:final":
                self.fail(f"final event with SSE id {sse_id}")
            if reply in self.ended:
                self.fail(f"final event of reply {reply[:8]} again")
                return
            self.ended.add(reply)
            self.finals[reply] = message
            shown = self.text.get(reply, "")
            final = message["content"]
            if message["status"] == "interrupted":
                # At most what was flushed is kept: one is a prefix of the other.
                if not (final.startswith(shown) or shown.startswith(final)):
                    self.fail(f"interrupted reply {reply[:8]} contradicts what was shown")
            elif not final.startswith(shown):
                self.fail(
                    f"final text of reply {reply[:8]} ({len(final)} chars) does not continue "
                    f"what was shown ({len(shown)} chars)"
                )

    def _from_snapshot(self, message: dict) -> None:
        if message["role"] != "assistant":
            return
        reply = message["id"]
        if message["status"] == "streaming":
            if reply in self.ended:
                self.fail(f"snapshot shows reply {reply[:8]} streaming after its final event")
            elif message["seq"] >= self.seq.get(reply, -1):
                self.seq[reply], self.text[reply] = message["seq"], message["content"]
        else:
            self.ended.add(reply)
            self.finals[reply] = message


# --- what one client holds, across its connections ------------------------------------------


class ClientState:
    """The reference client of the protocol: what a viewer shows (DESIGN.md)."""

    def __init__(self) -> None:
        self.messages: dict[str, dict] = {}
        self.finals = Counter()  # final events received per reply, over every connection

    def apply(self, event: dict) -> bool:
        """False when the client would ask for a resync (a gap)."""
        kind = event.get("type")
        if kind in ("snapshot", "history"):
            for message in event["messages"]:
                held = self.messages.get(message["id"])
                older = (
                    held is not None
                    and message["status"] == "streaming"
                    and (held["status"] != "streaming" or message["seq"] < held["seq"])
                )
                if not older:
                    self.messages[message["id"]] = dict(message)
        elif kind == "message.created":
            held = self.messages.get(event["message"]["id"])
            if held is None or (
                held["status"] == "streaming" and event["message"]["seq"] > held["seq"]
            ):
                self.messages[event["message"]["id"]] = dict(event["message"])
        elif kind == "token":
            held = self.messages.get(event["message"])
            if held is None or held["status"] != "streaming":
                return held is not None
            if event["seq"] == held["seq"] + 1:
                held["content"] += event["content"]
                held["seq"] = event["seq"]
            elif event["seq"] > held["seq"] + 1:
                return False
        elif kind in FINALS:
            self.finals[event["message"]["id"]] += 1
            self.messages[event["message"]["id"]] = dict(event["message"])
        return True


# --- the campaign -------------------------------------------------------------------------


@dataclass
class Target:
    """Where clients connect: the workers, and a way to authenticate."""

    workers: list  # tests.helpers.servers.Server, restartable in place
    cookie: str
    key: str

    def pick(self, rng: random.Random):
        return rng.choice(self.workers)


@dataclass
class Report:
    seed: int
    scenarios: int = 0
    replies: int = 0
    statuses: Counter = field(default_factory=Counter)
    violations: list = field(default_factory=list)
    kills: int = 0
    pauses: int = 0
    connections: int = 0
    events: int = 0
    resumes: int = 0
    lost_chars: int = 0  # text viewers were shown that an interrupted reply did not keep

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.scenarios} scenarios, {self.replies} replies "
            f"{dict(self.statuses)}, {self.connections} connections, {self.events} events, "
            f"{self.resumes} resumes, {self.kills} kills, {self.pauses} pauses, "
            f"{len(self.violations)} violations"
        )


class Client:
    """One viewer of one conversation, over WebSocket or SSE, reconnecting as a page or
    an SSE client does until told to finish."""

    def __init__(self, scenario: "Scenario", name: str, kind: str, rng: random.Random):
        self.scenario = scenario
        self.name = name
        self.kind = kind  # "ws" or "sse"
        self.rng = rng
        self.state = ClientState()
        self.last_event_id: str | None = None
        self.ws = None
        self.connected = asyncio.Event()
        self.finishing = False
        self.drop_now = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.pending: dict[str, str] = {}  # client_id → content, sent but not confirmed

    @property
    def violations(self) -> list:
        return self.scenario.report.violations

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=self.name)

    async def run(self) -> None:
        attempt = 0
        while not (self.finishing and self.converged()):
            worker = self.scenario.target.pick(self.rng)
            try:
                if self.kind == "ws":
                    await self.run_ws(worker)
                else:
                    await self.run_sse(worker)
                attempt = 0
            except (OSError, websockets.WebSocketException, httpx.HTTPError, TimeoutError):
                attempt += 1
            self.connected.clear()
            if not (self.finishing and self.converged()):
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0) * (0.5 + self.rng.random()))

    def converged(self) -> bool:
        expected = self.scenario.expected
        if expected is None:
            return False
        for reply_id, saved in expected.items():
            held = self.state.messages.get(reply_id)
            if held is None or held["status"] != saved["status"]:
                return False
            if held["content"] != saved["content"]:
                return False
        return True

    def _connection(self, worker, held=None, ended=()) -> ConnectionLog:
        self.scenario.report.connections += 1
        return ConnectionLog(
            f"scenario {self.scenario.index} {self.name} on :{worker.port}",
            self.violations,
            held=held,
            ended=ended,
        )

    def _apply(self, log: ConnectionLog, event: dict, sse_id=None, sse_event=None) -> bool:
        log.check(event, sse_id, sse_event)
        self.scenario.report.events += 1
        if event.get("type") == "message.created" and event.get("client_id"):
            self.pending.pop(event["client_id"], None)
        if event.get("type") == "error" and event.get("client_id") in self.pending:
            if event.get("code") not in ("conversation_busy", "live_unavailable"):
                self.violations.append(f"{log.name}: send refused: {event}")
        return self.state.apply(event)

    async def run_ws(self, worker) -> None:
        url = f"{worker.ws_url}/ws/conversations/{self.scenario.conversation_id}/"
        headers = {"Cookie": f"sessionid={self.scenario.target.cookie}", "Origin": worker.url}
        async with websockets.connect(
            url, additional_headers=headers, max_size=None, open_timeout=5, close_timeout=1
        ) as ws:
            log = self._connection(worker)
            self.ws = ws
            self.connected.set()
            first = True
            for client_id, content in list(self.pending.items()):
                await ws.send(
                    json.dumps({"type": "message.send", "content": content, "client_id": client_id})
                )
            while True:
                raw = await self.next_or_drop(ws.recv())
                if raw is _DROPPED:
                    return
                if raw is _QUIET:
                    if self.finishing and self.converged():
                        return
                    continue
                event = json.loads(raw)
                if first and event.get("type") != "snapshot":
                    said = " ".join(filter(None, (event.get("type"), event.get("code"))))
                    log.fail(f"first event {said}, not a snapshot")
                first = False
                if not self._apply(log, event):
                    await ws.send(json.dumps({"type": "resync"}))
                if self.finishing and self.converged():
                    return

    async def run_sse(self, worker) -> None:
        url = f"{worker.url}/api/conversations/{self.scenario.conversation_id}/events"
        headers = {"Authorization": f"Bearer {self.scenario.target.key}"}
        held, ended = {}, set()
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
            self.scenario.report.resumes += 1
            reply, _, mark = self.last_event_id.rpartition(":")
            if mark == "final":
                ended.add(reply)
            else:
                message = self.state.messages.get(reply)
                held[reply] = (int(mark), message["content"] if message else "")
        timeout = httpx.Timeout(5.0, read=20.0)  # the server pings every 15 s
        async with httpx.AsyncClient(timeout=timeout) as http:
            async with aconnect_sse(http, "GET", url, headers=headers) as source:
                if source.response.status_code != 200:
                    raise httpx.HTTPError(f"HTTP {source.response.status_code}")
                log = self._connection(worker, held=held, ended=ended)
                self.connected.set()
                events = source.aiter_sse()
                while True:
                    try:
                        sse = await self.next_or_drop(anext(events))
                    except StopAsyncIteration:
                        return
                    if sse is _DROPPED:
                        return
                    if sse is _QUIET:
                        if self.finishing and self.converged():
                            return
                        continue
                    event = json.loads(sse.data)
                    if sse.id:
                        self.last_event_id = sse.id
                    self._apply(log, event, sse.id or None, sse.event)
                    if self.finishing and self.converged():
                        return

    async def next_or_drop(self, reading):
        """What ``reading`` gives within a second; _DROPPED when told to drop the
        connection meanwhile, _QUIET when nothing came."""
        reading = asyncio.ensure_future(reading)
        dropping = asyncio.ensure_future(self.drop_now.wait())
        done, _ = await asyncio.wait(
            {reading, dropping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
        )
        dropping.cancel()
        if dropping in done:
            self.drop_now.clear()
        if reading not in done:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            return _DROPPED if dropping in done else _QUIET
        return reading.result()

    async def send(self, content: str, client_id: str) -> None:
        """A send over this client's WebSocket; re-sent on every reconnect until the
        server confirms it, as the chat page does."""
        self.pending[client_id] = content
        if self.ws is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                await self.ws.send(
                    json.dumps({"type": "message.send", "content": content, "client_id": client_id})
                )

    async def request(self, event: dict) -> None:
        if self.ws is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                await self.ws.send(json.dumps(event))

    async def finish(self) -> None:
        self.finishing = True
        try:
            async with asyncio.timeout(CONVERGE_S):
                await self.task
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if not self.converged():
            expected = self.scenario.expected or {}
            for reply_id, saved in expected.items():
                held = self.state.messages.get(reply_id)
                shown = (held or {}).get("status"), len((held or {}).get("content", ""))
                if (
                    held is None
                    or held["status"] != saved["status"]
                    or (held["content"] != saved["content"])
                ):
                    self.violations.append(
                        f"scenario {self.scenario.index} {self.name}: ended showing reply "
                        f"{reply_id[:8]} as {shown}, the database holds "
                        f"({saved['status']!r}, {len(saved['content'])})"
                    )
        for reply_id, count in self.state.finals.items():
            if count > 1:
                self.violations.append(
                    f"scenario {self.scenario.index} {self.name}: {count} final events of "
                    f"reply {reply_id[:8]}"
                )


class Scenario:
    """One conversation: viewers, one or two sends, and what happens to them."""

    def __init__(self, index: int, target: Target, report: Report, rng: random.Random):
        self.index = index
        self.target = target
        self.report = report
        self.rng = rng
        self.conversation_id: str | None = None
        self.expected: dict | None = None  # reply id → the final message, once saved
        self.clients: list[Client] = []

    async def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """An API call to some worker, retried (with the same body) while workers restart."""
        for attempt in range(40):
            worker = self.target.pick(self.rng)
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.request(
                        method,
                        f"{worker.url}{path}",
                        headers={"Authorization": f"Bearer {self.target.key}"},
                        **kwargs,
                    )
                if response.status_code < 500:
                    return response
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1 + 0.05 * attempt)
        raise AssertionError(f"scenario {self.index}: {method} {path} never answered")

    async def run(self) -> None:
        rng = self.rng
        created = await self.api(
            "POST", "/api/conversations", json={"title": f"chaos {self.index}"}
        )
        assert created.status_code == 201, created.text
        self.conversation_id = created.json()["id"]
        kinds = ["ws"] * rng.randint(0, 2) + ["sse"] * rng.randint(0, 2)
        if "ws" not in kinds:
            kinds.append("ws")  # the sender's own page
        rng.shuffle(kinds)
        for number, kind in enumerate(kinds):
            self.clients.append(Client(self, f"{kind}{number}", kind, random.Random(rng.random())))
        sender = next(c for c in self.clients if c.kind == "ws")
        sender.start()
        late = [c for c in self.clients if c is not sender]
        joins = [asyncio.create_task(self.join_later(c, rng.uniform(0, 1.5))) for c in late]
        await asyncio.wait_for(sender.connected.wait(), 30)

        sends = 1 if rng.random() < 0.8 else 2
        user_messages = []
        for number in range(sends):
            client_id = f"chaos-{self.index}-{number}-{uuid.uuid4().hex[:6]}"
            tokens, gap = rng.randint(20, 400), rng.randint(2, 15)
            content = f"scenario {self.index} tokens={tokens} gap_ms={gap}"
            user_messages.append(client_id)
            how = rng.choice(["ws", "ws", "api"])
            if how == "ws":
                await sender.send(content, client_id)
            else:
                await self.api_send(content, client_id)
            actions = [
                asyncio.create_task(self.disturb(c, tokens * gap / 1000)) for c in self.clients
            ]
            if rng.random() < 0.3:
                actions.append(
                    asyncio.create_task(self.repeat_send(content, client_id, tokens * gap / 1000))
                )
            if rng.random() < 0.25:
                actions.append(
                    asyncio.create_task(self.stop_later(rng.uniform(0, tokens * gap / 1000)))
                )
            await self.until_ended(client_id)
            for action in actions:
                action.cancel()
            await asyncio.gather(*actions, return_exceptions=True)
        await asyncio.gather(*joins)
        self.expected = await self.saved_replies(user_messages)
        await asyncio.gather(*(c.finish() for c in self.clients))

    async def join_later(self, client: Client, delay: float) -> None:
        await asyncio.sleep(delay)
        client.start()

    async def api_send(self, content: str, client_id: str) -> None:
        """A send through the JSON API (answered 202), repeated until it is answered:
        a repeated client_id never starts a second reply."""
        while True:
            response = await self.api(
                "POST",
                f"/api/conversations/{self.conversation_id}/messages",
                json={"content": content, "client_id": client_id},
            )
            if response.status_code == 202:
                return
            if response.json().get("code") != "conversation_busy":
                self.report.violations.append(
                    f"scenario {self.index}: send refused: {response.text}"
                )
                return
            await asyncio.sleep(0.2)

    async def repeat_send(self, content: str, client_id: str, duration: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, duration + 0.5))
        clients = [c for c in self.clients if c.kind == "ws"]
        if self.rng.random() < 0.5 and clients:
            await self.rng.choice(clients).send(content, client_id)
        else:
            await self.api_send(content, client_id)

    async def stop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        clients = [c for c in self.clients if c.kind == "ws" and c.connected.is_set()]
        if clients and self.rng.random() < 0.5:
            await self.rng.choice(clients).request({"type": "reply.stop"})
        else:
            await self.api("POST", f"/api/conversations/{self.conversation_id}/stop", json={})

    async def disturb(self, client: Client, duration: float) -> None:
        """Now and then: drop the connection (the client resumes), or ask for a resync."""
        rng = client.rng
        for _ in range(rng.randint(0, 2)):
            await asyncio.sleep(rng.uniform(0, duration + 0.3))
            if rng.random() < 0.6:
                client.drop_now.set()
            elif client.kind == "ws":
                await client.request({"type": "resync"})

    async def until_ended(self, client_id: str) -> None:
        """Until the reply to the send with ``client_id`` is saved in a final state."""
        from conversations.models import Message

        def ended() -> bool:
            user = Message.objects.filter(
                conversation_id=self.conversation_id, client_id=client_id
            ).first()
            if user is None:
                return False
            replies = list(user.replies.values_list("status", flat=True))
            return bool(replies) and "streaming" not in replies

        deadline = time.monotonic() + SCENARIO_TIMEOUT_S
        while time.monotonic() < deadline:
            if await sync_to_async(ended)():
                return
            await asyncio.sleep(0.2)
        self.report.violations.append(f"scenario {self.index}: reply to {client_id} never ended")

    async def saved_replies(self, client_ids: list[str]) -> dict:
        """The database's word, checked: one user message per send, one reply each."""
        from conversations.models import Message

        def read():
            users = list(Message.objects.filter(conversation_id=self.conversation_id, role="user"))
            replies = list(
                Message.objects.filter(conversation_id=self.conversation_id, role="assistant")
            )
            return users, replies

        users, replies = await sync_to_async(read)()
        if sorted(u.client_id for u in users) != sorted(client_ids):
            self.report.violations.append(
                f"scenario {self.index}: user messages {[u.client_id for u in users]} "
                f"for sends {client_ids}"
            )
        expected = {}
        for user in users:
            answers = [r for r in replies if r.reply_to_id == user.id]
            if len(answers) != 1:
                self.report.violations.append(
                    f"scenario {self.index}: {len(answers)} replies to one user message"
                )
        for reply in replies:
            if reply.status == "streaming":
                self.report.violations.append(f"scenario {self.index}: reply still streaming")
            expected[str(reply.id)] = {"status": reply.status, "content": reply.content}
            self.report.statuses[reply.status] += 1
        self.report.replies += len(replies)
        return expected


async def chaos(
    target: Target,
    report: Report,
    rng: random.Random,
    done: asyncio.Event,
    every_s: tuple[float, float],
    restart,
) -> None:
    """Now and then, a worker is killed (-9) and restarted on its port, or paused (SIGSTOP)
    for longer than the lease and resumed."""
    kill_first = rng.random() < 0.5
    for number in itertools.count():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), rng.uniform(*every_s))
        if done.is_set():
            return
        index = rng.randrange(len(target.workers))
        worker = target.workers[index]
        if (number % 2 == 0) == kill_first:
            report.kills += 1
            worker.kill()
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            target.workers[index] = await asyncio.to_thread(restart, worker)
        else:
            report.pauses += 1
            os.kill(worker.process.pid, signal.SIGSTOP)
            await asyncio.sleep(LEASE_S + 1.5)
            os.kill(worker.process.pid, signal.SIGCONT)


async def campaign(
    target: Target,
    *,
    seed: int,
    scenarios: int,
    concurrency: int,
    restart,
    chaos_every_s: tuple[float, float] | None = (4.0, 8.0),
) -> Report:
    """Run ``scenarios`` scenarios, ``concurrency`` at a time, with chaos between."""
    rng = random.Random(seed)
    report = Report(seed=seed)
    done = asyncio.Event()
    troubles = None
    if chaos_every_s is not None:
        troubles = asyncio.create_task(
            chaos(target, report, random.Random(rng.random()), done, chaos_every_s, restart)
        )
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int, scenario_rng: random.Random) -> None:
        async with slots:
            scenario = Scenario(index, target, report, scenario_rng)
            try:
                await asyncio.wait_for(scenario.run(), SCENARIO_TIMEOUT_S + 2 * CONVERGE_S)
            except Exception as exc:  # a scenario that cannot finish is a finding too
                report.violations.append(f"scenario {index}: {type(exc).__name__}: {exc}")
            report.scenarios += 1

    try:
        await asyncio.gather(*(one(i, random.Random(rng.random())) for i in range(scenarios)))
    finally:
        done.set()
        if troubles is not None:
            await troubles
    return report
