from django.urls import path, re_path

from review.consumers import TranscriptConsumer

from .consumers import ChatConsumer, NoSuchPath

websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", ChatConsumer.as_asgi()),
    # Staff's read-only live view of any conversation, from its admin page.
    path("ws/admin/conversations/<uuid:conversation_id>/", TranscriptConsumer.as_asgi()),
    re_path(r"", NoSuchPath.as_asgi()),
]
