"""A real MCP server (the ``mcp`` package's FastMCP) for tests, over stdio or Streamable
HTTP on loopback. Its tools: ``echo``, ``slow`` (sleeps), ``fail`` (raises), ``big``
(a long output) and ``hostile`` (markup that must stay text).

Run: ``python -m tests.fakes.mcp_server`` (stdio), or ``--http --port 0`` (the first
line printed is the port; the endpoint is ``/mcp``).
"""

import argparse
import asyncio
import socket

from mcp.server.fastmcp import FastMCP

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>**bold**'


def build(port: int = 0) -> FastMCP:
    server = FastMCP("chatsite-test", host="127.0.0.1", port=port, log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> str:
        """Answer with the text it is given."""
        return f"echo: {text}"

    @server.tool()
    async def slow(seconds: float) -> str:
        """Wait this many seconds, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds:g} s"

    @server.tool()
    async def fail(reason: str) -> str:
        """Always fails, saying why."""
        raise ValueError(reason)

    @server.tool()
    async def big(chars: int) -> str:
        """An answer this many characters long."""
        return "".join(str(i % 10) for i in range(chars))

    @server.tool()
    async def hostile() -> str:
        """Markup and script, as an untrusted tool might answer."""
        return HOSTILE

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if not args.http:
        build().run("stdio")
        return
    port = args.port
    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    print(port, flush=True)
    build(port).run("streamable-http")


if __name__ == "__main__":
    main()
