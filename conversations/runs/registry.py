"""The runs of this process: which replies it is running (by reply and by conversation),
and this worker's name, saved on every reply it runs.

A leaf module: the live transport looks runs up here (to stop one, or to fill a
viewer's gap from its frames) without depending on how a run works.
"""

import os
import socket
from typing import Any

from django.conf import settings

_runs: dict[str, Any] = {}
_by_conversation: dict[str, Any] = {}
_worker = {"id": ""}


def add(run) -> None:
    _runs[run.message_id] = run
    _by_conversation[run.conversation_id] = run


def remove(run) -> None:
    _runs.pop(run.message_id, None)
    if _by_conversation.get(run.conversation_id) is run:
        del _by_conversation[run.conversation_id]


def local_run(message_id: Any):
    return _runs.get(str(message_id))


def local_run_for_conversation(conversation_id: Any):
    return _by_conversation.get(str(conversation_id))


def local_message_ids() -> list[str]:
    return list(_runs)


def running() -> list:
    return list(_runs.values())


def worker_id() -> str:
    """The name of this worker, saved on each reply it runs: settings.CHAT_WORKER_ID,
    else what `manage.py serve` set (host name and port), else host name and process
    id, which a restart does not keep."""
    if not _worker["id"]:
        _worker["id"] = settings.CHAT_WORKER_ID or f"{socket.gethostname()}:pid{os.getpid()}"
    return _worker["id"]


def set_worker_id(name: str) -> None:
    _worker["id"] = name
