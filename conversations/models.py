"""Conversations and their messages: the durable copy of every reply."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    class Source(models.TextChoices):
        WEB = "web", "Web"
        API = "api", "API"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    # The catalog name (llm/catalog.py) of the model that writes the next reply.
    model = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    # The model's temperature for this conversation's replies (None: the server's own).
    temperature = models.FloatField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    # API traffic: made through an API key (the JSON API or /v1), which is kept here
    # while it exists. Left out of the owner's chat sidebar unless they ask for it.
    api_key = models.ForeignKey(
        "ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="conversations"
    )
    api_traffic = models.BooleanField(default=False)
    # The names of the tools the model may call in this conversation (agents/registry.py);
    # empty: replies take the plain path, with no agent.
    tools = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Last activity: bumped when a message is added, so the history sorts by it.
    updated_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # Staff review.
    flagged = models.BooleanField(default=False)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            # The sidebar: one user's conversations, newest activity first.
            models.Index(fields=["owner", "-updated_at"], name="conv_owner_recent"),
            models.Index(fields=["-created_at"], name="conv_created"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        SYSTEM = "system", "System"
        TOOL = "tool", "Tool"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        INTERRUPTED = "interrupted", "Interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    # The number of the last token frame whose text `content` holds.
    seq = models.PositiveIntegerField(default=0)
    # The user message an assistant reply answers.
    reply_to = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replies"
    )
    # The message this one follows: the conversation is a tree (an edit or a regenerated
    # reply is a sibling of what it replaces). NULL for the first message.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    # On the conversation's active branch: the one path from the first message that is
    # shown, paged and sent to the model (services/branches.py keeps it a path).
    active = models.BooleanField(default=True)
    # NULL, not "", when absent: unique per conversation only where given.
    client_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    model = models.CharField(max_length=200, blank=True)
    usage = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The run's heartbeat: refreshed at every flush while the reply streams.
    updated_at = models.DateTimeField(auto_now=True)
    # The worker that runs (or ran) the reply (settings.CHAT_WORKER_ID).
    worker = models.CharField(max_length=200, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # A reply's tool calls in order, each {id, name, args, status, output, error,
    # duration_ms}, saved with its text at every flush (runs/agent.py).
    tool_calls = models.JSONField(default=list, blank=True)
    # A ``tool`` message (an OpenAI client's tool result): the call it answers.
    tool_call_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique",
            ),
            # At most one streaming reply per conversation, enforced by the database so
            # that two sends racing in two processes cannot both start one.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="message_one_streaming_per_conversation",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conv_created"),
            # The active branch, newest first: snapshots, history pages, the model's turns.
            models.Index(
                fields=["conversation", "created_at"],
                condition=Q(active=True),
                name="msg_active_branch",
            ),
            # The sweeper: streaming replies whose heartbeat went stale.
            models.Index(
                fields=["updated_at"],
                condition=Q(status="streaming"),
                name="msg_streaming_heartbeat",
            ),
            models.Index(fields=["status", "created_at"], name="msg_status_created"),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.STREAMING


class ApiKey(models.Model):
    """A key an integration sends as ``Authorization: Bearer <key>``.

    Only a SHA-256 hash of the key is stored; ``prefix`` (the key's first characters,
    not secret) finds the row and tells a person which key is which.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_key = models.CharField(max_length=64)

    class Scope(models.TextChoices):
        READ = "read", "Read: list and read conversations, follow their events"
        CHAT = "chat", "Chat: also send, stop, edit, and /v1"

    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Refused from this moment on (None: never expires).
    expires_at = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.CHAT)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name or 'API key'} ({self.prefix}…)"


class Preset(models.Model):
    """A named start for a conversation: its model, system prompt and temperature.

    Staff define shared presets (no owner) in the admin; people define their own.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="presets",
        help_text="Empty: shared with everyone.",
    )
    name = models.CharField(max_length=100)
    model = models.CharField(
        max_length=200, blank=True, help_text="A name from CHAT_MODELS; empty: the default."
    )
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name
