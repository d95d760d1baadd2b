"""A stub OpenAI-compatible model server on loopback, for tests and benchmarks.

Speaks enough of the Chat Completions API for ``ChatOpenAI`` and the openai SDK: SSE
``chat.completion.chunk`` events with chunked transfer encoding, a usage chunk and
``data: [DONE]``; non-streaming ``chat.completion``; ``GET /v1/models``.

What it answers is steered by words in the last user message, so a test says what it
needs in the message it sends::

    tokens=500       answer with 500 tokens "t1 t2 …" (default: echo the message)
    chars=250000     answer with 250,000 characters, in chunks of 1,000
    script=tricky    chunks with newlines, quotes, "data:" lines, emoji and CJK
    script=hostile   chunks holding NUL and unpaired surrogates (JSON escapes)
    gap_ms=20        pause between chunks (default: --gap-ms)
    ttft_ms=100      pause before the first chunk (default: --ttft-ms)
    drop_after=5     close the connection mid-stream after 5 chunks
    stall_after=3    stop sending after 3 chunks, keeping the connection open
    status=500       answer with this HTTP error status instead

Tool calls, when the request offers ``tools``::

    call=calculator{"expression":"6*7"}   call this tool with these arguments (repeat
                     the directive for several calls in one turn); the call streams as
                     ``delta.tool_calls`` chunks, its arguments split across chunks, and
                     the turn ends with ``finish_reason: "tool_calls"``
    loop=1           call again after every tool result (never answer)

A request whose last message is a ``tool`` result is answered with the results' text
("Tool results: …"), unless ``loop=1``.

``GET /stats`` tells how many streams are open and how many clients hung up early.
Run: ``python -m tests.fakes.openai_stub --port 0``; the first line printed is the port.
"""

import argparse
import asyncio
import json
import re
import time

TRICKY_CHUNKS = [
    "line one\nline two",
    " \"quoted\" and 'single' ",
    "data: this is not an event\n\n",
    "event: nor this\r\n",
    "emoji 😀🎉👩‍💻",
    " 中文字符 и кириллица",
    " back\\slash {braces} <b>tags</b>",
    "\nend.",
]

HOSTILE_CHUNKS = ["before ", "nul\x00here ", "lone\ud800surrogate ", "pair\ud83d\ude00ok ", "after"]

_DIRECTIVE = re.compile(
    r"\b(tokens|chars|gap_ms|ttft_ms|drop_after|stall_after|status|script)=(\w+)"
)
_CALL = re.compile(r"\bcall=([\w-]+)(\{[^{}]*\})?")
# Tool-call arguments go out in pieces of this many characters.
ARGUMENT_PIECE = 5


class Stub:
    def __init__(self, *, gap_ms: float, ttft_ms: float, model: str):
        self.gap_ms = gap_ms
        self.ttft_ms = ttft_ms
        self.model = model
        self.open_streams = 0
        self.hangups = 0
        self.requests = 0

    def plan(self, body: dict) -> dict:
        messages = body.get("messages") or []
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last.get("content") or ""
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content)
        opts = dict(_DIRECTIVE.findall(content))
        after_tool = bool(messages) and messages[-1].get("role") == "tool"
        calls = []
        if body.get("tools") and (not after_tool or re.search(r"\bloop=1\b", content)):
            calls = [(name, args or "{}") for name, args in _CALL.findall(content)]
        if after_tool and not calls:
            results = []
            for message in reversed(messages):
                if message.get("role") != "tool":
                    break
                results.insert(0, str(message.get("content")))
            content = "Tool results: " + " | ".join(results)
            opts = {k: v for k, v in opts.items() if k in ("gap_ms", "ttft_ms")}
        if opts.get("script") == "tricky":
            chunks = list(TRICKY_CHUNKS)
        elif opts.get("script") == "hostile":
            chunks = list(HOSTILE_CHUNKS)
        elif "chars" in opts:
            size = int(opts["chars"])
            text = "".join(f"{i % 10}" if i % 80 else "\n" for i in range(size))
            chunks = [text[i : i + 1000] for i in range(0, size, 1000)]
        elif "tokens" in opts:
            chunks = [f"t{i} " for i in range(1, int(opts["tokens"]) + 1)]
        else:
            chunks = re.findall(r"\s*\S+|\s+", f"You said: {content}")
        if body.get("max_tokens") or body.get("max_completion_tokens"):
            chunks = chunks[: int(body.get("max_tokens") or body["max_completion_tokens"])]
        if calls and "tokens" not in opts:
            chunks = []  # a turn that calls tools says nothing unless told to
        return {
            "chunks": chunks,
            "calls": calls,
            "gap": float(opts.get("gap_ms", self.gap_ms)) / 1000,
            "ttft": float(opts.get("ttft_ms", self.ttft_ms)) / 1000,
            "drop_after": int(opts["drop_after"]) if "drop_after" in opts else None,
            "stall_after": int(opts["stall_after"]) if "stall_after" in opts else None,
            "status": int(opts["status"]) if "status" in opts else None,
            # Unpaired surrogates travel only as JSON escapes.
            "ascii": opts.get("script") == "hostile",
            "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests += 1
                if not await self.route(method, path, body, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, reader, writer) -> bool:
        if method == "GET" and path.endswith("/models"):
            return await self.send_json(
                writer,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": self.model, "object": "model", "created": 0, "owned_by": "stub"}
                    ],
                },
            )
        if method == "GET" and path == "/stats":
            return await self.send_json(
                writer,
                200,
                {
                    "open_streams": self.open_streams,
                    "hangups": self.hangups,
                    "requests": self.requests,
                },
            )
        if method == "POST" and path.endswith("/chat/completions"):
            request = json.loads(body or b"{}")
            plan = self.plan(request)
            if plan["status"]:
                return await self.send_json(
                    writer,
                    plan["status"],
                    {
                        "error": {
                            "message": f"stub error {plan['status']}",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                )
            if request.get("stream"):
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                return await self.stream(reader, writer, plan, include_usage)
            await asyncio.sleep(plan["ttft"])
            text = "".join(plan["chunks"])
            message = {"role": "assistant", "content": text}
            if plan["calls"]:
                message["tool_calls"] = [
                    {
                        "id": f"call_stub_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                    for index, (name, arguments) in enumerate(plan["calls"])
                ]
            return await self.send_json(
                writer,
                200,
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if plan["calls"] else "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": self.usage(plan),
                },
            )
        return await self.send_json(writer, 404, {"error": {"message": "not found"}})

    def usage(self, plan: dict) -> dict:
        completion = len(plan["chunks"]) + len(plan["calls"])
        return {
            "prompt_tokens": plan["prompt_tokens"],
            "completion_tokens": completion,
            "total_tokens": plan["prompt_tokens"] + completion,
        }

    async def send_json(self, writer, status: int, payload: dict) -> bool:
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        return True

    def encode_events(self, plan: dict, include_usage: bool) -> list[bytes]:
        """Every chunk of the stream, encoded before the first is sent."""
        created = int(time.time())

        def event(payload: dict) -> bytes:
            text = json.dumps(payload, ensure_ascii=plan["ascii"])
            data = b"data: " + text.encode() + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(data), data)

        def chunk(delta: dict, finish=None) -> bytes:
            return event(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.model,
                    "choices": [
                        {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                    ],
                }
            )

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": text}) for text in plan["chunks"]]
        for index, (name, arguments) in enumerate(plan["calls"]):
            head = {"index": index, "id": f"call_stub_{index}", "type": "function"}
            out.append(
                chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            )
            for at in range(0, len(arguments), ARGUMENT_PIECE):
                piece = arguments[at : at + ARGUMENT_PIECE]
                out.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        out.append(chunk({}, finish="tool_calls" if plan["calls"] else "stop"))
        if include_usage:
            out.append(
                event(
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.model,
                        "choices": [],
                        "usage": self.usage(plan),
                    }
                )
            )
        done = b"data: [DONE]\n\n"
        out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        return out

    async def stream(self, reader, writer, plan: dict, include_usage: bool) -> bool:
        """Send the stream; notice at once when the client hangs up mid-way."""
        self.open_streams += 1
        sender = asyncio.ensure_future(self.send_stream(writer, plan, include_usage))
        hangup = asyncio.ensure_future(reader.read(1))  # EOF: the client closed
        try:
            await asyncio.wait({sender, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                self.hangups += 1
                sender.cancel()
                return False
            return sender.result()
        except ConnectionError:
            self.hangups += 1
            return False
        finally:
            hangup.cancel()
            sender.cancel()
            # Let the cancelled read end before the connection reads its next request.
            await asyncio.gather(hangup, sender, return_exceptions=True)
            self.open_streams -= 1
            # The next request on a kept-alive connection reads from the same reader,
            # which allows one waiter at a time: the hang-up watch must be gone first.
            await asyncio.wait({hangup})

    async def send_stream(self, writer, plan: dict, include_usage: bool) -> bool:
        encoded = self.encode_events(plan, include_usage)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await asyncio.sleep(plan["ttft"])
        for index, data in enumerate(encoded):
            # index 0 is the role chunk; content chunks are 1..n
            if plan["drop_after"] is not None and index > plan["drop_after"]:
                writer.transport.abort()
                return False
            if plan["stall_after"] is not None and index > plan["stall_after"]:
                await writer.drain()
                await asyncio.sleep(3600)
            writer.write(data)
            # Text and tool-call chunks are 1..n; then the finish, usage and [DONE].
            if plan["gap"] and 0 < index <= len(encoded) - 3 - include_usage:
                await writer.drain()
                await asyncio.sleep(plan["gap"])
        await writer.drain()
        return True


async def serve(host: str, port: int, stub: Stub) -> None:
    server = await asyncio.start_server(stub.handle, host, port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--gap-ms", type=float, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0)
    parser.add_argument("--model", default="stub-model")
    args = parser.parse_args()
    stub = Stub(gap_ms=args.gap_ms, ttft_ms=args.ttft_ms, model=args.model)
    try:
        asyncio.run(serve(args.host, args.port, stub))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
