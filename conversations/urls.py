from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new/", views.conversation_new, name="conversation-new"),
    path("c/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
]
