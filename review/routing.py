"""Staff review's WebSocket route: the read-only live view of any conversation, from its
admin page; chatsite/asgi.py joins it with the chat's."""

from django.urls import path

from .consumers import TranscriptConsumer

websocket_urlpatterns = [
    path("ws/admin/conversations/<uuid:conversation_id>/", TranscriptConsumer.as_asgi()),
]
