"""The model zoo. ``create_model(name, num_classes=1000, **options)`` builds any registered model."""
from . import zoo  # noqa: F401  (registers the builders)
from .checkpoint import load_checkpoint, load_model
from .registry import create_model, get_entry, list_models, register_model

__all__ = ["create_model", "get_entry", "list_models", "load_checkpoint", "load_model", "register_model"]
