"""Agents: the tools a model may call in a reply — the built-in ones (builtin.py), those
of MCP servers staff register (models.py, mcp.py, admin.py), which are offered
(registry.py), and the loop that lets the model call them (loop.py). The run that
streams an agent's reply is conversations/runs/agent.py."""
