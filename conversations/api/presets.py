"""The API's models and presets: what a conversation can be written by, and the named
starts (model, system prompt, temperature) a new conversation can take."""

from channels.db import database_sync_to_async
from ninja import Status

from ..llm import catalog
from ..models import Preset
from ..services import presets
from .schemas import CONVERSATIONS, REFUSALS, ModelOut, PresetIn, PresetOut
from .views import api


@api.get("/models", response=list[ModelOut], summary="List the models", tags=[CONVERSATIONS])
async def list_models(request):
    """The models a conversation may use (`"model"` on create and PATCH, and on a
    send); the default writes when none is chosen."""
    default = catalog.default().name
    return [
        {"name": m.name, "label": m.shown, "default": m.name == default} for m in catalog.models()
    ]


def preset_out(preset: Preset) -> dict:
    return {
        "id": preset.pk,
        "name": preset.name,
        "model": preset.model,
        "system_prompt": preset.system_prompt,
        "temperature": preset.temperature,
        "shared": preset.owner_id is None,
    }


@api.get("/presets", response=list[PresetOut], summary="List presets", tags=[CONVERSATIONS])
async def list_presets(request):
    """The shared presets (defined by staff in the admin) and yours."""
    found = await database_sync_to_async(lambda: list(presets.presets_for(request.auth)))()
    return [preset_out(p) for p in found]


@api.post(
    "/presets",
    response={201: PresetOut, **REFUSALS},
    summary="Save a preset",
    tags=[CONVERSATIONS],
)
async def create_preset(request, body: PresetIn):
    preset = await database_sync_to_async(presets.preset_create)(
        owner=request.auth, **body.model_dump()
    )
    return Status(201, preset_out(preset))


@api.delete(
    "/presets/{preset_id}",
    response={204: None, **REFUSALS},
    summary="Delete one of your presets",
    tags=[CONVERSATIONS],
)
async def delete_preset(request, preset_id: int):
    await database_sync_to_async(presets.preset_delete)(owner=request.auth, preset_id=preset_id)
    return Status(204, None)
