"""The model layer: which model answers and how it is reached (client.py), the chain that
feeds it (chain.py), and the built-in offline demo model (offline.py)."""

from . import catalog
from .chain import MODEL_OPTIONS, astream, chain_inputs, get_chain, history_messages
from .client import (
    ModelStalled,
    describe_failure,
    get_llm,
    model_label,
    model_name,
    uses_real_model,
)
from .offline import OFFLINE_MODEL_NAME

__all__ = [
    "MODEL_OPTIONS",
    "OFFLINE_MODEL_NAME",
    "ModelStalled",
    "astream",
    "catalog",
    "chain_inputs",
    "describe_failure",
    "get_chain",
    "get_llm",
    "history_messages",
    "model_label",
    "model_name",
    "uses_real_model",
]
