"""The integration API under ``/api/`` (views.py), its schemas and its JSON errors."""

from .views import api

__all__ = ["api"]
