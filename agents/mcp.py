"""MCP servers, reached through langchain-mcp-adapters: listing a server's tools, and
the tools of one reply.

A server's tools are listed when staff save it in the admin (or ask for a refresh) and
when ``GET /api/tools`` finds the listing older than ``LISTING_TTL_S``, with a time
limit; the listing is saved on the server's row. A reply never waits for a listing: it
offers what was saved, and each call opens its own session. So a server that is down
or slow fails only its own calls, in-band, with a clear error; nothing else waits.
"""

import asyncio
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from langchain_core.tools import BaseTool, ToolException

from .models import McpServer

# langchain_mcp_adapters and mcp are imported where used: every process checks tool
# names, few ever reach an MCP server.

log = logging.getLogger(__name__)

SEPARATOR = "__"
LISTING_TTL_S = 300


def tool_name(server: str, tool: str) -> str:
    """The name chatsite and the model know a server's tool by. Not ``server.tool``:
    OpenAI's function names allow letters, digits, ``_`` and ``-`` only."""
    return f"{server}{SEPARATOR}{tool}"


def connection(server: McpServer) -> dict:
    """The server as langchain-mcp-adapters' connection settings."""
    if server.transport == McpServer.Transport.STDIO:
        return {"transport": "stdio", "command": server.command, "args": list(server.args or [])}
    return {
        "transport": "streamable_http",
        "url": server.url,
        "headers": dict(server.headers or {}) or None,
        "timeout": settings.CHAT_TOOL_TIMEOUT_S,
    }


def describe_failure(server: str, exc: BaseException) -> str:
    """What went wrong reaching a server, for people: anyio wraps errors in groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    reason = str(exc) or type(exc).__name__
    return f"The MCP server {server!r} could not be reached or failed: {reason}"[:500]


async def list_tools(server: McpServer) -> list[dict]:
    """The tools a server offers now: [{name, description, input_schema}]."""
    from langchain_mcp_adapters.client import MultiServerMCPClient

    client = MultiServerMCPClient({server.name: connection(server)})
    async with asyncio.timeout(settings.CHAT_MCP_LIST_TIMEOUT_S):
        async with client.session(server.name) as session:
            listed = await session.list_tools()
    return [
        {"name": t.name, "description": t.description or "", "input_schema": t.inputSchema}
        for t in listed.tools
    ]


async def refresh(server: McpServer) -> McpServer:
    """List a server's tools and save the listing; a failure is saved as ``last_error``
    and the earlier listing kept."""
    try:
        server.tools = await list_tools(server)
        server.last_error = ""
    except Exception as exc:
        server.last_error = describe_failure(server.name, exc)
        log.warning("listing MCP server %s failed: %s", server.name, server.last_error)
    server.listed_at = timezone.now()
    await server.asave(update_fields=["tools", "last_error", "listed_at"])
    return server


def enabled_servers() -> list[McpServer]:
    return list(McpServer.objects.filter(enabled=True))


async def refresh_stale(servers: list[McpServer]) -> None:
    """Refresh the listings older than LISTING_TTL_S, all at once."""
    cutoff = timezone.now() - timedelta(seconds=LISTING_TTL_S)
    stale = [s for s in servers if s.listed_at is None or s.listed_at < cutoff]
    if stale:
        await asyncio.gather(*(refresh(server) for server in stale))


def offered(servers: list[McpServer]) -> dict[str, tuple[McpServer, dict]]:
    """Every tool of these servers by its chatsite name: (server, listed tool)."""
    return {tool_name(s.name, t["name"]): (s, t) for s in servers for t in s.tools or []}


def make(server: McpServer, listed: dict) -> BaseTool:
    """One of a server's tools for a reply: each call opens its own session."""
    from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
    from mcp.types import Tool as McpTool

    tool = convert_mcp_tool_to_langchain_tool(
        None,
        McpTool(
            name=listed["name"],
            description=listed.get("description") or "",
            inputSchema=listed.get("input_schema") or {"type": "object", "properties": {}},
        ),
        connection=connection(server),
        server_name=server.name,
    )
    tool.name = tool_name(server.name, listed["name"])
    call = tool.coroutine

    async def reached(*args, **kwargs):
        try:
            return await call(*args, **kwargs)
        except ToolException:
            raise
        except Exception as exc:  # down, refused, crashed: this call fails, nothing else
            raise ToolException(describe_failure(server.name, exc)) from exc

    tool.coroutine = reached
    return tool


aenabled_servers = database_sync_to_async(enabled_servers)
