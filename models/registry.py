"""A timm-style registry: small builder functions registered by name, looked up by ``create_model``."""
import difflib
from dataclasses import dataclass
from typing import Callable, Dict, List

from torch import nn

from deploy.errors import UserError
from deploy.preprocess import PreprocessSpec


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # "resnet" or "mobilenet_v2"
    attention: str  # "none", "eca", "se" or "cbam"
    preprocess: PreprocessSpec = PreprocessSpec()


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(family: str, attention: str = "none"):
    def decorate(builder):
        _REGISTRY[builder.__name__] = ModelEntry(builder.__name__, builder, family, attention)
        return builder
    return decorate


def list_models() -> List[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = " (did you mean {}?)".format(close[0]) if close else ""
        raise UserError("unknown model {!r}{}; known models: {}".format(name, hint, ", ".join(list_models())))
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 1000, **options) -> nn.Module:
    """Build a zoo model by name. The model carries ``arch`` and its ``preprocess`` spec."""
    entry = get_entry(name)
    if num_classes < 1:
        raise UserError("num_classes must be positive, got {}".format(num_classes))
    try:
        model = entry.builder(num_classes=num_classes, **options)
    except TypeError as exc:
        raise UserError("{} does not take these options: {}".format(name, exc)) from None
    except ValueError as exc:
        raise UserError("{}: {}".format(name, exc)) from None
    model.arch = name
    model.preprocess = entry.preprocess
    model.eval()
    return model
