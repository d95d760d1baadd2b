"""Staff review: users' ratings of replies, the audit log of who read which transcript,
and the permission to review."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from conversations.models import Conversation, Message


class Feedback(models.Model):
    """A user's thumbs up or down on an assistant reply: one per (reply, user),
    changeable."""

    class Rating(models.IntegerChoices):
        UP = 1, "Thumbs up"
        DOWN = -1, "Thumbs down"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rating = models.SmallIntegerField(choices=Rating.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="feedback_one_per_user"),
            models.CheckConstraint(condition=Q(rating__in=[1, -1]), name="feedback_rating_sign"),
        ]
        indexes = [models.Index(fields=["rating", "message"], name="feedback_rating_message")]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on {self.message_id}"


class TranscriptView(models.Model):
    """The audit log: one row each time staff read a conversation's transcript.

    The rows outlive what they point at: the viewer's name and the conversation's id are
    copied, so deleting a user or a conversation never erases who read what.
    """

    class Via(models.TextChoices):
        PAGE = "page", "Admin page"
        LIVE = "live", "Live view"
        EXPORT = "export", "Export"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    username = models.CharField(max_length=150)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    conversation_ref = models.UUIDField("conversation id", db_index=True)
    via = models.CharField(max_length=8, choices=Via.choices, default=Via.PAGE)
    viewed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-viewed_at"]
        verbose_name = "transcript view"

    def __str__(self) -> str:
        return f"{self.username} read {self.conversation_ref} ({self.via})"


class ConversationReview(Conversation):
    """Holds the permission to review (notes, flag, mark reviewed): granted apart from
    the permission to read conversations, which is ``conversations.view_conversation``."""

    class Meta:
        proxy = True
        default_permissions = ()
        permissions = [("review_conversation", "Can review conversations")]
        verbose_name = "conversation review"
