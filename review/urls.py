"""Ratings of replies from the chat page (views.py)."""

from django.urls import path

from . import views

urlpatterns = [
    path("feedback/", views.feedback_list, name="feedback-list"),
    path("feedback/<uuid:message_id>/", views.feedback_give, name="feedback-give"),
]
