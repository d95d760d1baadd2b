"""Presets: named starts for a conversation (model, system prompt, temperature). Staff
define shared ones in the admin (no owner); people define and delete their own."""

from django.db.models import Q, QuerySet

from .. import errors
from ..errors import ChatError
from ..llm import catalog
from ..models import Preset
from ..text import check_text
from .conversations import check_system_prompt


def presets_for(user) -> QuerySet[Preset]:
    """The presets a person may start from: the shared ones and their own."""
    if not user.is_authenticated:
        return Preset.objects.none()
    return Preset.objects.filter(Q(owner=None) | Q(owner=user))


def preset_for(user, preset_id) -> Preset:
    preset = presets_for(user).filter(pk=preset_id).first() if str(preset_id).isdigit() else None
    if preset is None:
        raise ChatError(errors.NOT_FOUND, "No such preset.")
    return preset


def preset_create(
    *, owner, name: str, model: str = "", system_prompt: str = "", temperature=None
) -> Preset:
    name = " ".join(check_text(name, "name").split())
    if not name:
        raise errors.invalid_field("name", "a name")
    if model:
        catalog.check(model)
    return Preset.objects.create(
        owner=owner,
        name=name[: Preset._meta.get_field("name").max_length],
        model=model,
        system_prompt=check_system_prompt(system_prompt),
        temperature=temperature,
    )


def preset_delete(*, owner, preset_id) -> None:
    """Delete one of the person's own presets (shared ones are staff's, in the admin)."""
    preset = preset_for(owner, preset_id)
    if preset.owner_id != owner.pk:
        raise ChatError(errors.NOT_FOUND, "No such preset of yours.")
    preset.delete()


def preset_settings(preset: Preset | None) -> dict:
    """What a preset gives a new conversation (conversation_create's arguments); a model
    no longer configured gives the default."""
    if preset is None:
        return {}
    return {
        "model": catalog.for_reply(preset.model).name,
        "system_prompt": preset.system_prompt,
        "temperature": preset.temperature,
    }
