"""MCP servers staff register: where chatsite reaches them, and the tools they offered
when last asked (so a server that is down still has its tools offered, and their calls
fail in-band with a clear error)."""

from django.core.validators import RegexValidator
from django.db import models


class McpServer(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (a command chatsite starts)"
        STREAMABLE_HTTP = "streamable_http", "Streamable HTTP (a URL)"

    # Tool names are `<server>__<tool>`: letters, digits, `-` and `_` only, as OpenAI's
    # function names must be, and no `__` inside a server's name.
    name = models.CharField(
        max_length=40,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9](?:[a-z0-9-]|_(?!_))*$",
                "Lower-case letters, digits, '-' and single '_' only.",
            )
        ],
        help_text="Its tools are named <name>__<tool>.",
    )
    transport = models.CharField(max_length=20, choices=Transport.choices)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the program to run.")
    args = models.JSONField(
        default=list, blank=True, help_text='stdio: its arguments, as a JSON list: ["-m", "x"].'
    )
    url = models.URLField(max_length=500, blank=True, help_text="Streamable HTTP: the endpoint.")
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Streamable HTTP: headers sent with every request, as a JSON object.",
    )
    enabled = models.BooleanField(default=True)
    # What the server offered when last listed: [{name, description, input_schema}].
    tools = models.JSONField(default=list, blank=True, editable=False)
    listed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name
