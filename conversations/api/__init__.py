"""The integration API under ``/api/`` (views.py; routes for models and presets,
branches, exports in their own modules), its schemas and its JSON errors."""

from . import branches, exports, presets  # noqa: F401  (their routes join the api)
from .views import api

__all__ = ["api"]
