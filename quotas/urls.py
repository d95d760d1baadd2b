from django.urls import path

from . import views

urlpatterns = [path("settings/usage/", views.usage, name="quota-usage")]
