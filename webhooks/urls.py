from django.urls import path

from . import views

urlpatterns = [
    path("settings/webhooks/", views.endpoints, name="webhooks"),
    path("settings/webhooks/<uuid:endpoint_id>/", views.endpoint, name="webhook"),
    path("settings/webhooks/<uuid:endpoint_id>/delete/", views.delete, name="webhook-delete"),
    path(
        "settings/webhooks/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>/redeliver/",
        views.redeliver,
        name="webhook-redeliver",
    ),
]
