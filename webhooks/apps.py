"""The webhooks app: it records its events through the core's hooks (conversations/hooks.py),
in the transactions of the changes they report, and delivers them from every worker."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from conversations import hooks

        from . import outbox

        hooks.reply_final.append(outbox.record_reply_final)
        hooks.conversation_created.append(outbox.record_conversation_created)
        hooks.conversation_deleted.append(outbox.record_conversation_deleted)
        hooks.worker_started.append(outbox.start_delivery)
