"""MCP servers in the admin: superusers only (a stdio server is a command chatsite
runs). Saving a server lists its tools at once; "Refresh tools" lists them again."""

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages

from . import mcp
from .models import McpServer


class McpServerForm(forms.ModelForm):
    url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Streamable HTTP: the endpoint.",
    )

    class Meta:
        model = McpServer
        fields = ["name", "transport", "command", "args", "url", "headers", "enabled"]

    def clean(self):
        data = super().clean()
        transport = data.get("transport")
        if transport == McpServer.Transport.STDIO and not data.get("command"):
            self.add_error("command", "A stdio server needs the command that starts it.")
        if transport == McpServer.Transport.STREAMABLE_HTTP and not data.get("url"):
            self.add_error("url", "A Streamable HTTP server needs its URL.")
        if not isinstance(data.get("args") or [], list) or not all(
            isinstance(a, str) for a in data.get("args") or []
        ):
            self.add_error("args", 'A JSON list of strings, e.g. ["-m", "server"].')
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            self.add_error("headers", 'A JSON object of strings, e.g. {"Authorization": "…"}.')
        return data


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerForm
    list_display = ["name", "transport", "enabled", "tool_count", "listed_at", "last_error"]
    list_filter = ["enabled", "transport"]
    readonly_fields = ["tool_names", "listed_at", "last_error"]
    actions = ["refresh_tools"]

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    has_add_permission = has_change_permission = has_delete_permission = (
        lambda self, request, obj=None: self.has_module_permission(request)
    )

    @admin.display(description="tools")
    def tool_count(self, obj: McpServer) -> int:
        return len(obj.tools or [])

    @admin.display(description="tools offered")
    def tool_names(self, obj: McpServer) -> str:
        return ", ".join(mcp.tool_name(obj.name, t["name"]) for t in obj.tools or []) or "—"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self._refresh(request, obj)

    @admin.action(description="Refresh the tools of the selected servers")
    def refresh_tools(self, request, queryset):
        for server in queryset:
            self._refresh(request, server)

    def _refresh(self, request, server: McpServer) -> None:
        async_to_sync(mcp.refresh)(server)
        if server.last_error:
            self.message_user(request, f"{server.name}: {server.last_error}", messages.WARNING)
        else:
            self.message_user(
                request, f"{server.name}: {len(server.tools)} tools listed.", messages.SUCCESS
            )
