"""Which tools exist, by name: the built-in ones and those of enabled MCP servers.

The one place that says whether a tool name is known (``check_names``: ``unknown_tool``
otherwise), what ``GET /api/tools`` lists, and which LangChain tools a reply gets.
"""

from collections.abc import Iterable

from channels.db import database_sync_to_async
from django.conf import settings
from langchain_core.tools import BaseTool

from conversations import errors

from . import builtin, mcp

BUILTIN = tuple(builtin.DESCRIPTIONS)
MAX_TOOLS = 64


def available() -> list[dict]:
    """Every tool a conversation may enable: ``{name, description, source}``, the
    built-in ones first (source ``builtin``), then each MCP server's (``mcp:<server>``)."""
    tools = [
        {"name": n, "description": builtin.DESCRIPTIONS[n], "source": "builtin"} for n in BUILTIN
    ]
    for name, (server, listed) in mcp.offered(mcp.enabled_servers()).items():
        tools.append(
            {
                "name": name,
                "description": listed.get("description") or "",
                "source": f"mcp:{server}",
            }
        )
    return tools


async def available_now() -> list[dict]:
    """``available()``, with MCP servers' listings older than mcp.LISTING_TTL_S asked
    again first (each within CHAT_MCP_LIST_TIMEOUT_S; a failure keeps the old one)."""
    await mcp.refresh_stale(await mcp.aenabled_servers())
    return await database_sync_to_async(available)()


def check_names(names) -> list[str]:
    """The tool names a conversation asks for, each known, without repeats (in order);
    ChatError ``unknown_tool`` names the first unknown one."""
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise errors.invalid_field("tools", "a list of tool names")
    if len(names) > MAX_TOOLS:
        raise errors.invalid_field("tools", f"a list of at most {MAX_TOOLS} tool names")
    known = set(BUILTIN)
    if any(mcp.SEPARATOR in name for name in names):
        known |= set(mcp.offered(mcp.enabled_servers()))
    for name in names:
        if name not in known:
            raise errors.unknown_tool(name)
    return list(dict.fromkeys(names))


def default_names() -> list[str]:
    """CHAT_DEFAULT_TOOLS, as far as those tools exist now."""
    names = settings.CHAT_DEFAULT_TOOLS
    if not names:
        return []
    known = set(BUILTIN) | set(mcp.offered(mcp.enabled_servers()))
    return [name for name in dict.fromkeys(names) if name in known]


def tools_for(names: Iterable[str], *, owner_id) -> list[BaseTool]:
    """The LangChain tools of one reply. A tool that no longer exists (an MCP server
    removed or disabled since the conversation enabled it) is left out."""
    names = list(names)
    servers = mcp.offered(mcp.enabled_servers()) if any(mcp.SEPARATOR in n for n in names) else {}
    tools = []
    for name in names:
        if name in BUILTIN:
            tools.append(builtin.make(name, owner_id=owner_id))
        elif name in servers:
            tools.append(mcp.make(*servers[name]))
    return tools
