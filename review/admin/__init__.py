"""Staff review in the Django admin: conversations (conversations.py, the list's
filters in filters.py) and the audit log and ratings (audit.py)."""

from . import audit, conversations  # noqa: F401 - each registers its admin
