"""A conversation as a tree: edits and regenerated replies are siblings of what they
replace, and one branch — a path from the first message — is active: shown, paged,
exported as the conversation and sent to the model.

Each message knows the one it follows (``Message.parent``) and whether it is on the
active branch (``Message.active``). The flag is kept with the tree so that every read of
the branch (snapshots, history pages, the model's turns) is one indexed filter, not a
walk; it changes only here, when a branch is chosen (an edit, a regeneration, a switch).
Siblings are ordered by when they were written.
"""

from collections import defaultdict
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from .. import errors, events
from ..errors import ChatError
from ..live import control
from ..models import Conversation, Message


def activate(conversation_id: Any, message: Message) -> str:
    """Make the branch holding ``message`` active: its ancestors, itself, and below it
    the newest child at each step. Returns the new leaf's id. Call in a transaction."""
    rows = list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("created_at", "pk")
        .values_list("pk", "parent_id", "active")
    )
    parent_of = {pk: parent_id for pk, parent_id, _ in rows}
    children: dict = defaultdict(list)
    for pk, parent_id, _ in rows:
        children[parent_id].append(pk)
    branch = set()
    step = message.pk
    while step is not None and step not in branch:
        branch.add(step)
        step = parent_of.get(step)
    below = message.pk
    while children.get(below):
        below = children[below][-1]
        branch.add(below)
    was = {pk for pk, _, active in rows if active}
    if off := was - branch:
        Message.objects.filter(pk__in=off).update(active=False)
    if on := branch - was:
        Message.objects.filter(pk__in=on).update(active=True)
    return str(below)


@database_sync_to_async
def _switch(conversation: Conversation, message_id: str) -> str:
    with transaction.atomic():
        message = Message.objects.filter(conversation=conversation, pk=message_id).first()
        if message is None:
            raise errors.no_such_message()
        if Message.objects.filter(conversation=conversation, status="streaming").exists():
            raise ChatError(errors.CONVERSATION_BUSY)
        return activate(conversation.id, message)


async def branch_select(*, conversation: Conversation, message_id: str) -> str:
    """Show the branch holding a message (a switch between versions, ``< 2 / 3 >``);
    every open viewer hears ``branch.switched`` and reloads the branch. Refused while a
    reply streams. Returns the new leaf's id."""
    leaf_id = await _switch(conversation, message_id)
    await control.publish(conversation.id, events.branch_switched(conversation.id, leaf_id))
    return leaf_id
