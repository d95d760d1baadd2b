"""The models people may chat with: ``CHAT_MODELS``, else the one model of
``OPENAI_*``/``CHAT_MODEL``, else the built-in offline model.

``CHAT_MODELS`` is a JSON list; each entry is ``{"name", "model"?, "base_url"?,
"api_key"?, "label"?}``: ``name`` is what people, the API and ``/v1`` call it, ``model``
what is sent to the server (default: ``name``), ``base_url``/``api_key`` default to
``OPENAI_BASE_URL``/``OPENAI_API_KEY``, ``label`` is shown in the chat (default:
``name``). The first entry is the default. An entry whose ``model`` is
``offline-demo`` is the built-in offline model.

Models are configured by the operator in the environment only (not in the admin): one
place, read at start, the same in every worker.
"""

import functools
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .. import errors
from .offline import OFFLINE_MODEL_NAME

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
OFFLINE_LABEL = "Offline demo model — set OPENAI_API_KEY or OPENAI_BASE_URL to connect a real one"
_FIELDS = {"name", "model", "base_url", "api_key", "label"}


@dataclass(frozen=True)
class ChatModel:
    name: str  # what people and the APIs call it
    model: str  # what the server is asked for
    base_url: str = ""
    api_key: str = ""
    label: str = ""

    @property
    def offline(self) -> bool:
        return self.model == OFFLINE_MODEL_NAME

    @property
    def shown(self) -> str:
        """What a person sees: the offline model always says what it is."""
        if self.label:
            return self.label
        return OFFLINE_LABEL if self.offline else self.name

    @property
    def short(self) -> str:
        """Its name in a list to pick from."""
        return self.label or ("Offline demo model" if self.offline else self.name)


def _entry(raw, index: int) -> ChatModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ImproperlyConfigured(f'CHAT_MODELS[{index}] needs a "name" (a string)')
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ImproperlyConfigured(f"CHAT_MODELS[{index}] has unknown fields: {sorted(unknown)}")
    if any(not isinstance(v, str) for v in raw.values()):
        raise ImproperlyConfigured(f"CHAT_MODELS[{index}]: every field is a string")
    return ChatModel(
        name=raw["name"],
        model=raw.get("model") or raw["name"],
        base_url=raw.get("base_url", settings.OPENAI_BASE_URL),
        api_key=raw.get("api_key", settings.OPENAI_API_KEY),
        label=raw.get("label", ""),
    )


@functools.cache
def models() -> tuple[ChatModel, ...]:
    """Every model, the default first."""
    configured = settings.CHAT_MODELS
    if isinstance(configured, str):
        try:
            configured = json.loads(configured) if configured.strip() else []
        except ValueError as exc:
            raise ImproperlyConfigured(f"CHAT_MODELS is not valid JSON: {exc}") from None
    if configured:
        if not isinstance(configured, list):
            raise ImproperlyConfigured("CHAT_MODELS must be a JSON list")
        found = tuple(_entry(raw, index) for index, raw in enumerate(configured))
        names = [m.name for m in found]
        if len(set(names)) != len(names):
            raise ImproperlyConfigured("CHAT_MODELS names a model twice")
        return found
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        name = settings.CHAT_MODEL or DEFAULT_OPENAI_MODEL
        return (ChatModel(name, name, settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY),)
    return (ChatModel(OFFLINE_MODEL_NAME, OFFLINE_MODEL_NAME),)


def default() -> ChatModel:
    return models()[0]


def find(name: str | None) -> ChatModel | None:
    return next((m for m in models() if m.name == name), None)


def names() -> list[str]:
    return [m.name for m in models()]


def check(name) -> str:
    """A model name people asked for, or ChatError model_not_found (400) with the list."""
    if not isinstance(name, str) or find(name) is None:
        raise errors.unknown_model(name, names())
    return name


def for_reply(name: str | None) -> ChatModel:
    """The model a conversation's next reply uses: its own, or the default when it names
    none or one no longer configured (a conversation never breaks because the operator
    removed a model)."""
    return find(name) or default()


@receiver(setting_changed)
def _forget(setting: str, **kwargs) -> None:
    if setting in {"CHAT_MODELS", "CHAT_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"}:
        models.cache_clear()
